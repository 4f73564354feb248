//! `cargo xtask compose`: the whole stack (API, PostgreSQL, Redis, Prometheus, Grafana) in one command. Docker
//! Compose runs deploy/docker-compose.yml where a Docker engine answers; elsewhere the same services start natively
//! (native.rs). `--check` validates deploy/ instead (compose_check.rs).

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Result};

use crate::process::{self, GroupChild};
use crate::{compose_check, interrupt, native, paths};

const USAGE: &str = "\
Usage: cargo xtask compose [--store memory|postgres|redis|tiered] [--native]
       cargo xtask compose --check [--dir DIR]

  --store S    the store bucket-api uses (default tiered)
  --native     start the services from installed binaries even when a Docker engine answers
  --check      validate deploy/ (compose file, Prometheus config and alert rules, Grafana provisioning and
               dashboard, and that every dashboard and alert query names a metric bucket-api exports) and exit
  --dir DIR    with --check: validate DIR (a copy of deploy/) instead
";

/// The stores bucket-api knows (DESIGN §3).
const STORES: [&str; 4] = ["memory", "postgres", "redis", "tiered"];

/// How long compose may take to stop its containers after Ctrl-C.
const DOCKER_STOP_GRACE: Duration = Duration::from_secs(60);

/// Parses the options and runs the stack (or the check).
pub fn run(args: &[String]) -> Result<()> {
    let mut store = "tiered".to_string();
    let mut native_only = false;
    let mut check = false;
    let mut dir = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--store" => match args.next() {
                Some(value) => store = value.clone(),
                None => bail!("--store needs a value: one of {}", STORES.join(", ")),
            },
            "--native" => native_only = true,
            "--check" => check = true,
            "--dir" => match args.next() {
                Some(value) => dir = Some(std::path::PathBuf::from(value)),
                None => bail!("--dir needs a directory"),
            },
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            other => match other.strip_prefix("--store=") {
                Some(value) => store = value.to_string(),
                None => bail!("unknown option `{other}` for `cargo xtask compose`\n\n{USAGE}"),
            },
        }
    }
    if check {
        return match dir {
            Some(dir) => compose_check::run_in(&dir),
            None => compose_check::run(),
        };
    }
    if dir.is_some() {
        bail!("--dir only goes with --check");
    }
    if !STORES.contains(&store.as_str()) {
        bail!("unknown store `{store}`: use one of {}", STORES.join(", "));
    }
    interrupt::install()?;
    if !native_only && docker_engine_answers() {
        return docker_up(&store);
    }
    if !native_only {
        println!("No Docker engine answers (`docker info` failed): starting the stack natively.");
    }
    native::run(&store)
}

/// Whether `docker info` succeeds: the client alone (as on machines without an engine) is not enough.
fn docker_engine_answers() -> bool {
    if process::find_program("docker").is_none() {
        return false;
    }
    let spawned =
        Command::new("docker").arg("info").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
    let Ok(mut info) = spawned else { return false };
    let mut status = None;
    process::wait_until(Duration::from_secs(15), || {
        status = info.try_wait().ok().flatten();
        status.is_some()
    });
    if status.is_none() {
        let _ = info.kill();
        let _ = info.wait();
    }
    status.is_some_and(|status| status.success())
}

/// `docker compose` (v2 plugin) when present, else `docker-compose` (v1).
fn compose_program() -> Option<Command> {
    let plugin = process::capture(Command::new("docker").args(["compose", "version"]).stdout(Stdio::null()));
    if plugin.map(|output| output.status.success()).unwrap_or(false) {
        let mut command = Command::new("docker");
        command.arg("compose");
        return Some(command);
    }
    process::find_program("docker-compose").map(Command::new)
}

fn docker_up(store: &str) -> Result<()> {
    let Some(mut command) = compose_program() else {
        bail!("a Docker engine answers but neither `docker compose` nor `docker-compose` is installed");
    };
    let env_file = paths::in_workspace("deploy/.env");
    if !env_file.exists() {
        bail!(
            "{} is missing: copy deploy/.env.example to deploy/.env and set the passwords in it (it is not committed)",
            env_file.display()
        );
    }
    command
        .arg("-f")
        .arg(paths::in_workspace("deploy/docker-compose.yml"))
        .args(["up", "--build"])
        .env("BUCKET_STORE", store)
        .current_dir(paths::workspace_root());
    println!("Starting the stack with Docker Compose (store: {store}): `{}`", process::display(&command));
    println!("  API         http://localhost:8080/   (BUCKET_PORT in deploy/.env)");
    println!("  Swagger UI  http://localhost:8080/swagger-ui/");
    println!("  metrics     http://localhost:8080/metrics");
    println!("  Prometheus  http://localhost:9090/   alerts http://localhost:9090/alerts   (PROMETHEUS_PORT)");
    println!("  Grafana     http://localhost:3000/   dashboard \"bucket\" is the home page   (GRAFANA_PORT)");
    println!("              login GRAFANA_ADMIN_USER / GRAFANA_ADMIN_PASSWORD from deploy/.env (admin / ...)");
    println!("  PostgreSQL  docker compose -f deploy/docker-compose.yml exec postgres psql -U bucket bucket");
    println!("  Redis       docker compose -f deploy/docker-compose.yml exec redis redis-cli");
    println!("Ctrl-C stops the containers.");
    let mut compose = GroupChild::spawn("docker compose", &mut command)?;
    loop {
        if interrupt::requested() {
            println!("\nStopping the containers...");
            compose.stop(DOCKER_STOP_GRACE);
            return Ok(());
        }
        if let Some(status) = compose.try_wait()? {
            if status.success() {
                return Ok(());
            }
            bail!("docker compose exited with {status}; its output above says why");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
