//! `bucket-api`: reads the configuration, starts the server, waits for SIGINT/SIGTERM, exits.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bucket_api::{config::Config, logging, openapi, start};
use clap::{Parser, Subcommand};

/// mimalloc, not the system allocator: every request allocates its key, body and header buffers and frees them on
/// the same worker, and new keys are freed by the evictor on another thread; on the memory store this took 5 to 8 %
/// off the CPU per decision (docs/perf.md §18).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// bucket: token-bucket rate limiting over HTTP.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file; `BUCKET_*` variables override it.
    #[arg(long, env = "BUCKET_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the OpenAPI document and exit.
    Openapi,
}

#[actix_web::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        // One line naming the cause chain, e.g. "cannot start: store `tiered` is not available in this build yet":
        // a startup error is a configuration problem for an operator, not a crash to debug.
        Err(e) => {
            eprintln!("bucket-api: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Command::Openapi) = args.command {
        print!("{}", openapi::spec_json().context("cannot serialize the OpenAPI document")?);
        return Ok(());
    }
    let env: HashMap<String, String> = std::env::vars().collect();
    let config = Config::load(args.config.as_deref(), &env).context("invalid configuration")?;
    let (log, guard) = logging::build(&config.log_level, config.log_format);
    let running = start(config, log).await;
    // Dropped last, after the final log lines, so the logging thread flushes them.
    let _guard = guard;
    running.context("cannot start")?.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_process_allocates_through_mimalloc() {
        let block = vec![7u8; 4096];
        // SAFETY: the call only compares the address with mimalloc's own heap regions; it reads no memory.
        let ours = unsafe { libmimalloc_sys::mi_is_in_heap_region(block.as_ptr().cast()) };
        assert!(ours, "a Vec's buffer is not in mimalloc's heap: the global allocator is not mimalloc");
    }
}
