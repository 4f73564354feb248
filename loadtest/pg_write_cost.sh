#!/bin/bash
# PostgreSQL's CPU per row of the tiered store's batched writes, measured with pgbench on a schema of the project's
# migrations (docs/perf.md §13, §16). Three variants, alternated ROUNDS times: `batch` is `save_batch.sql` as
# shipped (sync mode's group commit: an answer per write, durable commit), `batch-exact` the same with `full_at`
# stored exact instead of rounded up to whole 10 s (the column then changes on every write, so no update is HOT),
# `answered` is `save_answered.sql` (write-behind's flushes: no answer, lazy commit). Each pgbench run: -M
# prepared, CLIENTS sessions, ROWS writes per statement over USERS keys that all exist (returning users), versions
# from the clock so every write lands. CPU = utime+stime of pgbench's own server sessions (sampled every 0.2 s
# while they live) plus the WAL writer and checkpointer, over the rows written; building the arrays in SQL is
# part of every variant's figure.
#   usage: loadtest/pg_write_cost.sh [ROWS=50] [CLIENTS=1] [SECONDS=6] [ROUNDS=2] [USERS=10000]
set -euo pipefail
ROWS=${1:-50}; CLIENTS=${2:-1}; SECS=${3:-6}; ROUNDS=${4:-2}; USERS=${5:-10000}
DB=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
cd "$(dirname "$0")/.."
SCHEMA=pgcost_$RANDOM$RANDOM; TMP=$(mktemp -d)
trap 'psql -q "$DB" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1; rm -rf "$TMP"' EXIT
psql -q "$DB" -c "CREATE SCHEMA $SCHEMA"
for up in $(ls -d migrations/*/ | sort); do PGOPTIONS="-c search_path=$SCHEMA" psql -q -v ON_ERROR_STOP=1 "$DB" -f "$up/up.sql"; done
PGOPTIONS="-c search_path=$SCHEMA" psql -q "$DB" -c "INSERT INTO rate_limits (user_id, tokens, last_refill_time, version, full_at) SELECT 'u' || g, 9, now(), 1, now() FROM generate_series(1, $USERS) AS g"
# The statement without comments, its parameters as pgbench expressions: ROWS consecutive keys from a random one.
python3 - "$TMP" "$ROWS" "$USERS" <<'PY'
import sys
tmp, rows, users = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def body(name):
    sql = open(f"crates/bucket-store/src/postgres/{name}.sql").read()
    return "\n".join(l.split("--")[0].rstrip() for l in sql.splitlines() if l.split("--")[0].strip())
n = "(:n)::int"
now = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
params = {
    "$1::text[]": f"ARRAY(SELECT 'u' || ((:base + g) % {users} + 1) FROM generate_series(1, {n}) AS g)",
    "$2::int[]": f"array_fill(5, ARRAY[{n}])",
    "$3::bigint[]": f"array_fill({now}, ARRAY[{n}])",
    "$4::bigint[]": f"array_fill({now}, ARRAY[{n}])",
    "$5::bigint[]": f"array_fill(1000000000::bigint, ARRAY[{n}])",
}
for variant, name in (("batch", "save_batch"), ("batch-exact", "save_batch"), ("answered", "save_answered")):
    text = body(name)
    for p, v in params.items():
        assert p in text, p
        text = text.replace(p, v)
    if variant == "batch-exact":
        assert "bucket_prunable_at(w.full_at)" in text
        text = text.replace("bucket_prunable_at(w.full_at)", "w.full_at")
    with open(f"{tmp}/{variant}.sql", "w") as f:
        f.write(f"\\set base random(0, {users - 1})\n\\set n {rows}\n{text};\n")
PY
sessions() { psql -tA "$DB" -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench' OR backend_type IN ('walwriter', 'checkpointer')"; }
ticks() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}'; }
for round in $(seq "$ROUNDS"); do
  for variant in batch batch-exact answered; do
    declare -A first=() last=()
    for p in $(sessions); do t=$(ticks "$p") && first[$p]=$t && last[$p]=$t; done
    PGOPTIONS="-c search_path=$SCHEMA" pgbench -n -M prepared -c "$CLIENTS" -j 1 -T "$SECS" -f "$TMP/$variant.sql" "$DB" > "$TMP/out" 2>&1 &
    PID=$!
    while kill -0 $PID 2>/dev/null; do
      for p in $(sessions); do t=$(ticks "$p") || continue; [ -n "$t" ] || continue; [ -z "${first[$p]:-}" ] && first[$p]=0; last[$p]=$t; done
      sleep 0.2
    done
    wait $PID || { cat "$TMP/out"; exit 1; }
    used=0; for p in "${!last[@]}"; do used=$((used + last[$p] - first[$p])); done
    tps=$(grep "^tps" "$TMP/out" | awk '{print $3}')
    python3 -c "tps=$tps; rows=tps*$ROWS; print(f'round $round  {\"$variant\":16} rows/s {rows:9.0f}  PostgreSQL CPU µs/row {$used*1e4/(rows*$SECS):5.1f}')"
    unset first last
  done
done
psql -tA "$DB" -c "SELECT 'HOT updates ' || n_tup_hot_upd || ' of ' || n_tup_upd FROM pg_stat_user_tables WHERE schemaname = '$SCHEMA' AND relname = 'rate_limits'"
