//! `cargo xtask test`: the project's one test command, the same for a person and for CI. It makes sure PostgreSQL
//! and Redis answer, then runs each check in order and stops at the first failure, with a banner and a duration per
//! step so a log shows at a glance what failed and what is slow.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::{compose_check, interrupt, paths, process, proto, schemathesis, services};

/// Options of `cargo xtask test`.
#[derive(clap::Args)]
#[command(after_help = "Environment: BUCKET_TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test),
             BUCKET_TEST_REDIS_URL (default redis://127.0.0.1:6379),
             BUCKET_FUZZ_SEED (replay a schemathesis run by the seed it printed)")]
pub struct Args {
    /// Skip `cargo fmt --check` and `cargo clippy`.
    #[arg(long)]
    no_lint: bool,
    /// Skip schema fuzzing (schemathesis against a running bucket-api).
    #[arg(long)]
    no_fuzz: bool,
    /// Leave PostgreSQL/Redis servers started by this run running afterwards.
    #[arg(long)]
    keep_services: bool,
    /// Extra arguments for `cargo test --workspace` (`-- -p bucket-core` tests one package).
    #[arg(last = true)]
    test_args: Vec<String>,
}

/// One step of the run.
enum Step {
    /// `cargo <args>`
    Cargo(Vec<String>),
    /// `cargo xtask compose --check`, run in-process.
    ComposeCheck,
    /// schemathesis against a running bucket-api (schemathesis.rs).
    Fuzz,
    /// `cargo xtask proto --check`, run in-process.
    ProtoCheck,
}

/// Runs the whole sequence and prints the total time, passed or not.
pub fn run(options: &Args) -> Result<()> {
    interrupt::install()?;
    let started = Instant::now();
    let result = run_steps(options);
    let verdict = if result.is_ok() { "passed" } else { "FAILED" };
    println!("\nxtask test: {verdict} in {}", seconds(started.elapsed()));
    result
}

fn run_steps(options: &Args) -> Result<()> {
    let mut steps: Vec<(String, Step)> = Vec::new();
    if !options.no_lint {
        steps.push(cargo_step(&["fmt", "--all", "--", "--check"]));
        steps.push(cargo_step(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]));
        steps.push(("cargo xtask proto --check".to_string(), Step::ProtoCheck));
    }
    let mut test = vec!["test".to_string()];
    // `--workspace` would override a package selection passed after `--`.
    if !options.test_args.iter().any(|arg| arg == "-p" || arg.starts_with("--package") || arg.starts_with("-p")) {
        test.push("--workspace".to_string());
    }
    test.extend(options.test_args.iter().cloned());
    steps.push((format!("cargo {}", test.join(" ")), Step::Cargo(test)));
    if !options.no_fuzz {
        steps.push(("schemathesis against bucket-api".to_string(), Step::Fuzz));
    }
    steps.push(("cargo xtask compose --check".to_string(), Step::ComposeCheck));
    let total = steps.len() + 1;

    banner_start(1, total, "services: PostgreSQL, Redis, nginx and Caddy");
    let clock = Instant::now();
    let mut services = match services::ensure() {
        Ok(services) => services,
        Err(error) => {
            banner_failed(1, total, "services", clock.elapsed());
            return Err(error);
        }
    };
    banner_passed(1, total, "services", clock.elapsed());
    if options.keep_services {
        services.keep_running();
    }

    for (index, (label, step)) in steps.iter().enumerate() {
        let number = index + 2;
        if interrupt::requested() {
            bail!("interrupted");
        }
        banner_start(number, total, label);
        let clock = Instant::now();
        let result = match step {
            Step::Cargo(args) => run_cargo(args, &services),
            Step::ComposeCheck => compose_check::run(),
            Step::Fuzz => schemathesis::run(),
            Step::ProtoCheck => proto::run(&proto::Args { check: true }),
        };
        match result {
            Ok(()) => banner_passed(number, total, label, clock.elapsed()),
            Err(error) => {
                banner_failed(number, total, label, clock.elapsed());
                return Err(error.context(format!("step {number}/{total} `{label}` failed")));
            }
        }
    }
    Ok(())
    // `services` drops here: servers this run started are stopped.
}

fn cargo_step(args: &[&str]) -> (String, Step) {
    (format!("cargo {}", args.join(" ")), Step::Cargo(args.iter().map(|arg| arg.to_string()).collect()))
}

fn run_cargo(args: &[String], services: &services::TestServices) -> Result<()> {
    let mut command = process::cargo();
    command
        .args(args)
        .current_dir(paths::workspace_root())
        .env("BUCKET_TEST_DATABASE_URL", &services.database_url)
        .env("BUCKET_TEST_REDIS_URL", &services.redis_url);
    let status = process::run_foreground(&mut command)?;
    if !status.success() {
        bail!("`{}` exited with {status}", process::display(&command));
    }
    Ok(())
}

fn banner_start(number: usize, total: usize, label: &str) {
    println!("\n==> [{number}/{total}] {label}");
}

fn banner_passed(number: usize, total: usize, label: &str, took: Duration) {
    println!("<== [{number}/{total}] {label}: ok in {}", seconds(took));
}

fn banner_failed(number: usize, total: usize, label: &str, took: Duration) {
    println!("!!! [{number}/{total}] {label}: FAILED after {}", seconds(took));
}

fn seconds(took: Duration) -> String {
    format!("{:.1}s", took.as_secs_f64())
}
