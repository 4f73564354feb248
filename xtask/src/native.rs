//! The stack of deploy/docker-compose.yml without Docker: PostgreSQL, Redis and Prometheus (with deploy/'s alert
//! rules) from installed binaries, each on a free port with its files in one temporary directory, and bucket-api
//! through `cargo run`. Grafana has no Debian package, so only Docker mode runs it. The API's logs stream to the
//! terminal; Ctrl-C (or SIGTERM) stops everything in reverse order and removes the directory.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::process::{self, GroupChild};
use crate::redis_topology::{self, Topology, MASTER_NAME};
use crate::{apt, interrupt, paths, postgres};
use bucket_testkit::{PostgresOptions, PrivatePostgres, PrivateRedis, RedisOptions};

/// Time bucket-api gets to finish in-flight requests and flush its queues after SIGTERM.
const API_STOP_GRACE: Duration = Duration::from_secs(15);
/// The database the API uses in the native stack.
const DATABASE: &str = "bucket";

/// The stack's Redis: the servers (stopped when dropped), the URL the API gets and how a person reaches it.
struct Cache {
    url: String,
    cli: String,
    topology: Topology,
    /// One server, or the group; held to be stopped on drop.
    _one: Option<PrivateRedis>,
    _group: Option<redis_topology::Servers>,
}

/// Starts the stack, waits for Ctrl-C or for the API to exit, then stops everything.
pub fn run(store: &str, topology: Topology) -> Result<()> {
    let needs_postgres = matches!(store, "postgres" | "tiered");
    let needs_redis = matches!(store, "redis" | "tiered");
    if topology != Topology::Standalone && !needs_redis {
        bail!("`--redis {}` needs a store that uses Redis: `--store redis` or `--store tiered`", topology.mode());
    }
    // Declared first, dropped last: the directory goes only after every server in it has stopped.
    // Searchable by others: as root, PostgreSQL runs as the `postgres` user and must reach its directory inside.
    let temp = tempfile::Builder::new()
        .prefix("bucket-compose-")
        .permissions(std::fs::Permissions::from_mode(0o755))
        .tempdir()
        .context("cannot create the stack's temporary directory")?;
    println!("Native stack (store: {store}, redis: {}), files in {}", topology.mode(), temp.path().display());

    let database = start_postgres(temp.path(), needs_postgres)?;
    check_interrupt()?;
    let cache = start_redis(temp.path(), needs_redis, topology)?;
    check_interrupt()?;
    let api_port = process::free_port_preferring(8080)?;
    let metrics = start_prometheus(temp.path(), api_port)?;
    check_interrupt()?;

    let mut command = process::cargo();
    command
        .args(["run", "-p", "bucket-api"])
        .current_dir(paths::workspace_root())
        .env("BUCKET_STORE", store)
        .env("BUCKET_LISTEN", format!("127.0.0.1:{api_port}"));
    if std::env::var_os("BUCKET_LOG_FORMAT").is_none() {
        // A person reads these logs in a terminal; JSON is for the log shipper of a real deployment.
        command.env("BUCKET_LOG_FORMAT", "text");
    }
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // A refused configuration should read as its message, not as a page of anyhow backtrace.
        command.env("RUST_LIB_BACKTRACE", "0");
    }
    if let Some((url, _)) = &database {
        command.env("DATABASE_URL", url);
    }
    if let Some(cache) = &cache {
        command.env("REDIS_URL", &cache.url).env("BUCKET_REDIS_MODE", cache.topology.mode());
        if cache.topology == Topology::Sentinel {
            command.env("BUCKET_REDIS_SENTINEL_MASTER", MASTER_NAME);
        }
    }
    println!("  starting bucket-api: `{}` (the first build takes a few minutes)", process::display(&command));
    let mut api = GroupChild::spawn("bucket-api", &mut command)?;

    let api_addr = SocketAddr::from(([127, 0, 0, 1], api_port));
    let outcome = wait_for_api(&mut api, api_addr, store).and_then(|()| {
        print_urls(api_port, database.as_ref().map(|(url, _)| url.as_str()), cache.as_ref(), metrics.as_ref());
        supervise(&mut api, store)
    });

    println!("\nStopping the stack...");
    api.stop(API_STOP_GRACE);
    drop(metrics);
    if let Some(cache) = cache {
        let (url, topology) = (cache.url.clone(), cache.topology);
        drop(cache);
        println!("  stopped Redis ({}) at {url}", topology.mode());
    }
    if let Some((url, cluster)) = database {
        drop(cluster);
        println!("  stopped PostgreSQL at {url}");
    }
    let shown = temp.path().display().to_string();
    match temp.close() {
        Ok(()) => println!("  removed {shown}"),
        Err(error) => eprintln!("  could not remove {shown}: {error}"),
    }
    outcome
}

fn check_interrupt() -> Result<()> {
    if interrupt::requested() {
        bail!("interrupted");
    }
    Ok(())
}

fn start_postgres(temp: &Path, needed: bool) -> Result<Option<(String, PrivatePostgres)>> {
    if !postgres::server_installed() {
        let install = "apt-get install --no-install-recommends postgresql";
        if needed {
            bail!("this store needs PostgreSQL, whose server programs are not installed: run `{install}` as root");
        }
        println!("  skipped PostgreSQL: not installed ({install})");
        return Ok(None);
    }
    let port = process::free_port()?;
    let options = PostgresOptions { dir: Some(temp.join("postgres")), port, ..Default::default() };
    let cluster = PrivatePostgres::launch(options).context("could not start PostgreSQL")?;
    let url = cluster.url_for(DATABASE);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    postgres::ensure_database(&url::Url::parse(&url)?, addr, DATABASE)?;
    println!("  PostgreSQL answering at {url}");
    Ok(Some((url, cluster)))
}

fn start_redis(temp: &Path, needed: bool, topology: Topology) -> Result<Option<Cache>> {
    if which::which("redis-server").is_err() {
        let install = "apt-get install --no-install-recommends redis-server";
        if needed {
            bail!("this store needs Redis, and redis-server is not installed: run `{install}` as root");
        }
        println!("  skipped Redis: not installed ({install})");
        return Ok(None);
    }
    let dir = temp.join("redis");
    let group = match topology {
        Topology::Standalone => None,
        Topology::Cluster => Some(redis_topology::start_cluster(&dir).context("could not start a Redis Cluster")?),
        Topology::Sentinel => Some(redis_topology::start_sentinel(&dir).context("could not start a Sentinel group")?),
    };
    let cache = match group {
        Some(group) => {
            Cache { url: group.url.clone(), cli: group.cli.clone(), topology, _one: None, _group: Some(group) }
        }
        None => {
            let port = process::free_port()?;
            let options = RedisOptions { port, dir: Some(dir), own_process_group: true, ..RedisOptions::default() };
            let server = PrivateRedis::launch(options).context("could not start Redis")?;
            let (url, cli) = (server.url(), format!("redis-cli -u {}", server.url()));
            Cache { url, cli, topology, _one: Some(server), _group: None }
        }
    };
    match topology {
        Topology::Standalone => println!("  Redis answering at {}", cache.url),
        Topology::Cluster => println!("  Redis Cluster (3 masters, 3 replicas) formed: {}", cache.url),
        Topology::Sentinel => {
            println!("  Redis Sentinel group (master set `{MASTER_NAME}`, 2 replicas) formed; sentinels: {}", cache.url)
        }
    }
    Ok(Some(cache))
}

/// Prometheus scraping the API every 5 s with a generated config and deploy/'s alert rules; installed first when
/// missing and we are root, skipped with the install command otherwise (the stack is still useful without it).
fn start_prometheus(temp: &Path, api_port: u16) -> Result<Option<(u16, GroupChild)>> {
    if which::which("prometheus").is_err() && bucket_testkit::process::is_root() {
        if let Err(error) = apt::install("Prometheus", &["prometheus"]) {
            println!("  could not install Prometheus: {error:#}");
        }
    }
    let Some(prometheus) = which::which("prometheus").ok() else {
        println!("  skipped Prometheus: not installed (apt-get install --no-install-recommends prometheus)");
        return Ok(None);
    };
    let dir = temp.join("prometheus");
    std::fs::create_dir_all(&dir)?;
    let rules = paths::in_workspace("deploy/prometheus/alerts.yml");
    // Same job name as deploy/prometheus/prometheus.yml: the alerts select `up{job="bucket-api"}`.
    let config = format!(
        "# generated by cargo xtask compose\nglobal:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n\
         rule_files:\n  - \"{}\"\nscrape_configs:\n  - job_name: bucket-api\n    static_configs:\n\
         \x20     - targets: [\"127.0.0.1:{api_port}\"]\n",
        rules.display()
    );
    let config_file = dir.join("prometheus.yml");
    std::fs::write(&config_file, config)?;
    let port = process::free_port_preferring(9090)?;
    let log = std::fs::File::create(dir.join("prometheus.log"))?;
    let mut command = Command::new(prometheus);
    command
        .arg(format!("--config.file={}", config_file.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    let mut child = GroupChild::spawn("Prometheus", &mut command)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    if !process::wait_until(Duration::from_secs(30), || {
        process::port_open(addr) || matches!(child.try_wait(), Ok(Some(_)))
    }) || !process::port_open(addr)
    {
        bail!("Prometheus did not start\n{}", bucket_testkit::process::log_tail(&dir.join("prometheus.log"), 20));
    }
    println!("  Prometheus answering at http://127.0.0.1:{port}/");
    Ok(Some((port, child)))
}

/// Waits until the API accepts connections; its own error (a store it refuses, say) ends the wait.
fn wait_for_api(api: &mut GroupChild, addr: SocketAddr, store: &str) -> Result<()> {
    loop {
        if let Some(status) = api.try_wait()? {
            return Err(api_exit_error(status, store));
        }
        if process::port_open(addr) {
            return Ok(());
        }
        check_interrupt()?;
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Streams the API's logs (it writes to our terminal) until Ctrl-C, or until it exits on its own.
fn supervise(api: &mut GroupChild, store: &str) -> Result<()> {
    loop {
        if interrupt::requested() {
            return Ok(());
        }
        if let Some(status) = api.try_wait()? {
            return Err(api_exit_error(status, store));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn api_exit_error(status: std::process::ExitStatus, store: &str) -> anyhow::Error {
    let hint = if store == "memory" { String::new() } else { " (`--store memory` needs no other service)".to_string() };
    anyhow!("bucket-api exited with {status} with store `{store}`; its output above says why{hint}")
}

fn print_urls(api_port: u16, database: Option<&str>, cache: Option<&Cache>, metrics: Option<&(u16, GroupChild)>) {
    let api = format!("http://127.0.0.1:{api_port}");
    println!("\nbucket is up. Ctrl-C stops everything.");
    println!("  API          {api}/");
    println!("  try it       curl -i -H 'X-User-ID: alice' {api}/");
    println!("  Swagger UI   {api}/swagger-ui/");
    println!("  metrics      {api}/metrics");
    println!("  health       {api}/healthz   {api}/readyz");
    println!("  check it     cargo run -p bucket-tester -- --target {api}");
    match metrics {
        Some((port, _)) => {
            let prometheus = format!("http://127.0.0.1:{port}");
            println!("  Prometheus   {prometheus}/   (scrapes the API every 5 s)");
            println!("  alerts       {prometheus}/alerts   (rules from deploy/prometheus/alerts.yml)");
            println!("  targets      {prometheus}/targets");
            println!("  a query      {prometheus}/graph?g0.expr=sum+by+(outcome)+(rate(bucket_decisions_total[1m]))");
        }
        None => println!("  Prometheus   not running (not installed)"),
    }
    println!("  Grafana      not running natively (no Debian package). With Docker (`cargo xtask compose` where");
    println!(
        "               an engine answers) it is at http://localhost:3000/ with the bucket dashboard as home page;"
    );
    println!("               login GRAFANA_ADMIN_USER / GRAFANA_ADMIN_PASSWORD from deploy/.env (user admin).");
    match database {
        Some(url) => println!("  PostgreSQL   psql {url}"),
        None => println!("  PostgreSQL   not running (not installed)"),
    }
    match cache {
        Some(cache) => {
            println!("  Redis        {}", cache.cli);
            if cache.topology != Topology::Standalone {
                println!(
                    "  per node     curl -s {api}/readyz   (nodes with role and state; bucket_dependency_up by node)"
                );
            }
        }
        None => println!("  Redis        not running (not installed)"),
    }
    println!();
}
