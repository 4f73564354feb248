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
mod proto;
mod redis_topology;

mod schemathesis;
mod services;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Test, run and measure bucket.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ensure PostgreSQL and Redis, then run fmt, clippy, the tests, schema fuzzing and the deploy checks.
    Test(test::Args),
    /// Run the whole stack: Docker Compose from deploy/ when a Docker engine answers, else natively.
    Compose(compose::Args),
    /// Measure (criterion vs governor, wrk per store vs /healthz, API memory per key) and rewrite docs/perf.md,
    /// loadtest/README.md and docs/http-bench.svg.
    Bench(bench::Args),
    /// Compile Envoy's rate limit service descriptors for gRPC reflection (`--check`: compare with the committed).
    Proto(proto::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Test(args) => test::run(&args),
        Command::Compose(args) => compose::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Proto(args) => proto::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
