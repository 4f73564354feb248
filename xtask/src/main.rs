//! Project automation, run as `cargo xtask <command>` (the alias is in .cargo/config.toml), so that users and CI
//! test and run the whole project with one command each and need nothing but cargo to start.

mod apt;
mod bench;
mod compose;
mod compose_check;
mod interrupt;
mod native;
mod paths;
mod postgres;
mod process;
mod redis;
mod schemathesis;
mod services;
mod test;
mod url;

use std::process::ExitCode;

const USAGE: &str = "\
Usage: cargo xtask <command> [options]

Commands:
  test       ensure PostgreSQL and Redis, then run fmt, clippy, the tests, schema fuzzing and the deploy checks
             options: --no-lint (skip fmt and clippy), --no-fuzz (skip schemathesis),
                      --keep-services (leave servers it started running), -- <args> (passed to `cargo test`)
  compose    run the whole stack: Docker Compose from deploy/ when a Docker engine answers, else natively
             options: --store memory|postgres|redis|tiered (default tiered), --native (never use Docker),
                      --check (validate deploy/ and exit)
  bench      measure: criterion vs governor, wrk per store vs /healthz, API memory per key; rewrites
             docs/perf.md, loadtest/README.md and docs/http-bench.png
             options: --only micro,http,memory, --duration SECS, --warmup SECS, --connections N, --no-docs,
                      --docs-only (redo the tables and chart from the last results)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test::run(&args[1..]),
        Some("compose") => compose::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(anyhow::anyhow!("unknown command `{other}`\n\n{USAGE}")),
        None => Err(anyhow::anyhow!("no command given\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
