#!/bin/bash
# Makes limitador-fixed/: the published limitador 0.14.0 crate with a two-line build fix, which Cargo.toml's
# `[patch.crates-io]` points at. Run once before any cargo command in this directory (limitador_compare.sh does).
#
# Why: limitador 0.14.0 does not compile without its `disk_storage` feature (RocksDB): src/storage/keys.rs calls
# `bin::key_for_counter_v2` unconditionally while `mod bin`, and the `Counter::variables_for_key` it calls, are
# behind `#[cfg(feature = "disk_storage")]`. Both only need serde and postcard, so dropping those two `cfg` lines
# builds the crate without RocksDB; nothing else changes, and the bench's limit has no id, so that code is never on
# its path (a limit without an id keeps the text keys). The fixed copy is made from the registry's own crate at build
# time and is not committed.
set -euo pipefail
cd "$(dirname "$0")"
[ -f limitador-fixed/.prepared ] && exit 0
probe=target/fetch-limitador
mkdir -p "$probe/src"
cat > "$probe/Cargo.toml" <<'TOML'
[package]
name = "fetch-limitador"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

[dependencies]
limitador = { version = "=0.14.0", default-features = false }
TOML
echo 'fn main() {}' > "$probe/src/main.rs"
manifest=$(cargo metadata --quiet --format-version 1 --manifest-path "$probe/Cargo.toml" |
  python3 -c 'import json,sys; m=json.load(sys.stdin); print(next(p["manifest_path"] for p in m["packages"] if p["name"]=="limitador"))')
rm -rf limitador-fixed
cp -r "$(dirname "$manifest")" limitador-fixed
# Drops the `cfg` line above each item; fails unless both are found exactly once.
python3 - limitador-fixed <<'PY'
import sys
root = sys.argv[1]
gate = '#[cfg(feature = "disk_storage")]\n'
for path, item in [("src/storage/keys.rs", "pub mod bin {"),
                   ("src/counter.rs", "    pub(crate) fn variables_for_key(")]:
    with open(f"{root}/{path}") as f:
        text = f.read()
    indent = item[: len(item) - len(item.lstrip())]
    gated = indent + gate + item
    if text.count(gated) != 1:
        sys.exit(f"prepare.sh: {path} is not the limitador 0.14.0 this fix expects")
    with open(f"{root}/{path}", "w") as f:
        f.write(text.replace(gated, item))
PY
touch limitador-fixed/.prepared
echo "prepared $(pwd)/limitador-fixed from $manifest"
