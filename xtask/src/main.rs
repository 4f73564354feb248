//! Project automation, run as `cargo xtask <command>` (the alias is in .cargo/config.toml), so that users and CI
//! test and run the whole project with one command each and need nothing but cargo to start.

mod apt;
mod compose;
mod compose_check;
mod interrupt;
mod native;
mod paths;
mod postgres;
mod process;
mod redis;
mod services;
mod test;
mod url;

use std::process::ExitCode;

const USAGE: &str = "\
Usage: cargo xtask <command> [options]

Commands:
  test       ensure PostgreSQL and Redis, then run fmt, clippy, the tests and the deploy checks
             options: --no-lint (skip fmt and clippy), --keep-services (leave servers it started running),
                      -- <args> (passed to `cargo test`)
  compose    run the whole stack: Docker Compose from deploy/ when a Docker engine answers, else natively
             options: --store memory|postgres|redis|tiered (default tiered), --native (never use Docker),
                      --check (validate deploy/ and exit)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test::run(&args[1..]),
        Some("compose") => compose::run(&args[1..]),
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
