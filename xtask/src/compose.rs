//! `cargo xtask compose`: the whole stack (API, PostgreSQL, Redis, Prometheus, Grafana) in one command. Docker
//! Compose runs deploy/docker-compose.yml where a Docker engine answers; elsewhere the same services start natively
//! (native.rs). `--check` validates deploy/ instead (compose_check.rs).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Result};

use crate::process::{self, GroupChild};
use crate::redis_topology::Topology;
use crate::{compose_check, interrupt, native, paths};

/// Options of `cargo xtask compose`.
#[derive(clap::Args)]
pub struct Args {
    /// The store bucket-api uses.
    #[arg(long, value_enum, default_value_t = Store::Tiered)]
    store: Store,
    /// Start the services from installed binaries even when a Docker engine answers.
    #[arg(long)]
    native: bool,
    /// The Redis behind the store: one server, a 3+3 Redis Cluster, or a master with 2 replicas and 3 sentinels
    /// (natively; with Docker, `cluster` runs the compose file's `cluster` profile).
    #[arg(long, value_enum, default_value_t = Topology::Standalone)]
    redis: Topology,
    /// Validate deploy/ (compose file, Prometheus config and alert rules, Grafana provisioning and dashboard, and
    /// that every dashboard and alert query names a metric bucket-api exports) and exit.
    #[arg(long)]
    check: bool,
    /// With --check: validate DIR (a copy of deploy/) instead.
    #[arg(long, value_name = "DIR", requires = "check")]
    dir: Option<PathBuf>,
}

/// The stores bucket-api knows (DESIGN §3).
#[derive(Clone, Copy, clap::ValueEnum)]
enum Store {
    Memory,
    Postgres,
    Redis,
    Tiered,
}

impl Store {
    fn as_str(self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::Postgres => "postgres",
            Store::Redis => "redis",
            Store::Tiered => "tiered",
        }
    }
}

/// How long compose may take to stop its containers after Ctrl-C.
const DOCKER_STOP_GRACE: Duration = Duration::from_secs(60);

/// Runs the stack (or the check).
pub fn run(args: &Args) -> Result<()> {
    if args.check {
        return match &args.dir {
            Some(dir) => compose_check::run_in(dir),
            None => compose_check::run(),
        };
    }
    let store = args.store.as_str();
    interrupt::install()?;
    if !args.native && docker_engine_answers() {
        if args.redis == Topology::Sentinel {
            bail!("the compose file has no Sentinel group: run `cargo xtask compose --native --redis sentinel`");
        }
        return docker_up(store, args.redis);
    }
    if !args.native {
        println!("No Docker engine answers (`docker info` failed): starting the stack natively.");
    }
    native::run(store, args.redis)
}

/// Whether `docker info` succeeds: the client alone (as on machines without an engine) is not enough.
fn docker_engine_answers() -> bool {
    if which::which("docker").is_err() {
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
    which::which("docker-compose").ok().map(Command::new)
}

/// `REDIS_URL` of the compose file's `cluster` profile: its six nodes as seeds.
const COMPOSE_CLUSTER_URL: &str = "redis://redis-node-1:6379,redis://redis-node-2:6379,redis://redis-node-3:6379,\
                                   redis://redis-node-4:6379,redis://redis-node-5:6379,redis://redis-node-6:6379";

fn docker_up(store: &str, redis: Topology) -> Result<()> {
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
    if redis == Topology::Cluster {
        // The nodes and the one-shot `redis-cli --cluster create` of the `cluster` profile; the API starts
        // degraded and decides in Redis once the cluster is formed.
        command
            .env("COMPOSE_PROFILES", "cluster")
            .env("BUCKET_REDIS_MODE", "cluster")
            .env("REDIS_URL", COMPOSE_CLUSTER_URL);
    }
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
