//! `cargo xtask proto`: the protobuf descriptors gRPC server reflection serves for Envoy's rate limit service,
//! compiled (by protox, pure Rust, no `protoc`) from the `.proto` files envoy-types ships, and committed as
//! `crates/bucket-api/src/rls/rls_descriptor.bin` so that building bucket needs neither. `--check` (a step of
//! `cargo xtask test`) fails when the committed file differs from what the locked envoy-types version gives.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use prost::Message;
use serde_json::Value;

use crate::paths;

/// The service's file and the directories its imports are found in, inside envoy-types' `proto/`.
const ENTRY: &str = "envoy/service/ratelimit/v3/rls.proto";
const INCLUDES: [&str; 4] = ["data-plane-api", "xds", "protoc-gen-validate", "googleapis"];
/// Where the descriptor set is committed, from the workspace root.
pub const OUTPUT: &str = "crates/bucket-api/src/rls/rls_descriptor.bin";

/// Arguments of `cargo xtask proto`.
#[derive(clap::Args)]
pub struct Args {
    /// Compare with the committed file instead of writing it.
    #[arg(long)]
    pub check: bool,
}

/// Writes (or checks) the descriptor set.
pub fn run(args: &Args) -> Result<()> {
    let generated = descriptor_set()?;
    let path = paths::workspace_root().join(OUTPUT);
    if args.check {
        let committed = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if committed != generated {
            bail!("{OUTPUT} is out of date with envoy-types' protos: run `cargo xtask proto` and commit the result");
        }
        println!("  {OUTPUT} matches envoy-types' protos ({} bytes)", generated.len());
        return Ok(());
    }
    std::fs::write(&path, &generated).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {OUTPUT} ({} bytes)", generated.len());
    Ok(())
}

/// The encoded `FileDescriptorSet` of the rate limit service and everything it imports, without source info.
fn descriptor_set() -> Result<Vec<u8>> {
    let root = envoy_types_protos()?;
    let includes: Vec<PathBuf> = INCLUDES.iter().map(|dir| root.join(dir)).collect();
    let mut compiler = protox::Compiler::new(includes).context("cannot set up the proto compiler")?;
    compiler.include_imports(true).include_source_info(false);
    compiler.open_file(ENTRY).with_context(|| format!("cannot compile {ENTRY}"))?;
    Ok(compiler.file_descriptor_set().encode_to_vec())
}

/// envoy-types' `proto/` directory, for the version Cargo.lock pins (`cargo metadata` names its manifest).
fn envoy_types_protos() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // This machine's platform only: the packages of other platforms (Windows crates) are never downloaded here,
    // and --offline would refuse to resolve them.
    let rustc = Command::new("rustc").arg("-vV").output().context("cannot run rustc -vV")?;
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: ").map(str::to_owned))
        .context("rustc -vV names no host")?;
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline", "--filter-platform", &host])
        .current_dir(paths::workspace_root())
        .output()
        .context("cannot run cargo metadata")?;
    if !output.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let metadata: Value = serde_json::from_slice(&output.stdout).context("cargo metadata printed no JSON")?;
    let manifest = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "envoy-types")
        .and_then(|p| p["manifest_path"].as_str())
        .context("envoy-types is not a dependency of the workspace")?;
    let dir = PathBuf::from(manifest).parent().map(|d| d.join("proto")).context("envoy-types has no directory")?;
    if !dir.join("data-plane-api").join(ENTRY).is_file() {
        bail!("{} does not hold {ENTRY}", dir.display());
    }
    Ok(dir)
}
