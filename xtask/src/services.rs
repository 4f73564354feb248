//! The PostgreSQL and Redis that the tests talk to: used as they are when they answer, otherwise started here from
//! the installed binaries (installed first when missing and we are root), so `cargo xtask test` works on a fresh
//! machine as well as on one whose servers run already. nginx and Caddy, which the forward-auth tests start
//! themselves, are only installed here.

use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::url::ServiceUrl;
use crate::{apt, paths, postgres, process, redis};

/// Where the tests find PostgreSQL unless `BUCKET_TEST_DATABASE_URL` says otherwise.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Where the tests find Redis unless `BUCKET_TEST_REDIS_URL` says otherwise.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The URLs the tests get, and the servers started for them (stopped on drop unless kept).
pub struct TestServices {
    /// Value for `BUCKET_TEST_DATABASE_URL`.
    pub database_url: String,
    /// Value for `BUCKET_TEST_REDIS_URL`.
    pub redis_url: String,
    postgres: Option<postgres::PrivateCluster>,
    redis: Option<redis::PrivateServer>,
}

impl TestServices {
    /// Leaves the servers started here running after the xtask exits (for repeated local runs).
    pub fn keep_running(&mut self) {
        if let Some(cluster) = &mut self.postgres {
            cluster.keep_running();
        }
        if let Some(server) = &mut self.redis {
            server.keep_running();
        }
    }
}

/// Makes sure both servers answer at their URLs, starting them when they do not.
pub fn ensure() -> Result<TestServices> {
    let database_url = env_or("BUCKET_TEST_DATABASE_URL", DEFAULT_DATABASE_URL);
    let redis_url = env_or("BUCKET_TEST_REDIS_URL", DEFAULT_REDIS_URL);
    let database = ServiceUrl::parse(&database_url, 5432).context("BUCKET_TEST_DATABASE_URL")?;
    let cache = ServiceUrl::parse(&redis_url, 6379).context("BUCKET_TEST_REDIS_URL")?;

    let postgres = ensure_postgres(&database)
        .with_context(|| format!("PostgreSQL is not reachable at {} and could not be started", database.redacted()))?;
    let redis = ensure_redis(&cache)
        .with_context(|| format!("Redis is not reachable at {} and could not be started", cache.redacted()))?;
    ensure_proxies()?;
    Ok(TestServices { database_url, redis_url, postgres, redis })
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|value| !value.is_empty()).unwrap_or_else(|| default.to_string())
}

fn ensure_postgres(url: &ServiceUrl) -> Result<Option<postgres::PrivateCluster>> {
    let addr = url.socket_addr()?;
    let database = if url.path.is_empty() { "postgres" } else { url.path.as_str() };
    // An open port may be a server still starting up: give it a moment before judging.
    let answering = process::port_open(addr) && postgres::wait_accepting(url, addr, Duration::from_secs(10));
    if answering {
        println!("  PostgreSQL: answering at {}", url.redacted());
        postgres::ensure_database(url, database)?;
        return Ok(None);
    }
    if process::port_open(addr) {
        bail!("something listens on {addr} but does not answer as PostgreSQL; free the port or change the URL");
    }
    refuse_remote(url, "BUCKET_TEST_DATABASE_URL")?;
    if !postgres::server_installed() {
        apt::install("the PostgreSQL server", &["postgresql"])?;
    }

    let mut started = None;
    if let Some((version, name)) = postgres::debian_cluster_on_port(url.port) {
        println!("  PostgreSQL: starting the machine's cluster {version}/{name}");
        postgres::start_debian_cluster(&version, &name)?;
    } else {
        let preferred = paths::state_dir().join("pg");
        let dir = if !process::is_root() || postgres::reachable_by_other_users(&preferred) {
            preferred
        } else {
            std::env::temp_dir().join(format!("bucket-xtask-pg-{}", url.port))
        };
        println!("  PostgreSQL: starting a private server on port {} (data in {})", url.port, dir.display());
        let user = url.user.as_deref().unwrap_or("postgres");
        started = Some(postgres::PrivateCluster::start(&dir, listen_host(url), url.port, user)?);
    }
    if !postgres::wait_accepting(url, addr, Duration::from_secs(30)) {
        bail!("the server started but does not accept connections at {addr}");
    }
    postgres::ensure_database(url, database)?;
    println!("  PostgreSQL: answering at {}", url.redacted());
    Ok(started)
}

fn ensure_redis(url: &ServiceUrl) -> Result<Option<redis::PrivateServer>> {
    let addr = url.socket_addr()?;
    if redis::answers_ping(addr) {
        println!("  Redis: answering at {}", url.redacted());
        return Ok(None);
    }
    if process::port_open(addr) {
        bail!("something listens on {addr} but does not answer PING as Redis; free the port or change the URL");
    }
    refuse_remote(url, "BUCKET_TEST_REDIS_URL")?;
    if !redis::server_installed() {
        apt::install("redis-server", &["redis-server"])?;
    }
    let dir = paths::state_dir().join("redis");
    println!("  Redis: starting a private server on port {} (files in {})", url.port, dir.display());
    let server = redis::PrivateServer::start(&dir, listen_host(url), url.port)?;
    println!("  Redis: answering at {}", url.redacted());
    Ok(Some(server))
}

/// The real nginx and Caddy the forward-auth tests start (bucket-testkit's launchers, on free ports, unprivileged):
/// installed from Debian when missing, since those tests fail rather than skip without them.
fn ensure_proxies() -> Result<()> {
    for (program, package) in [("nginx", "nginx"), ("caddy", "caddy")] {
        // nginx lives in /usr/sbin, which a non-root PATH often lacks; the test kit looks there too.
        let found = process::find_program(program)
            .or_else(|| Some(std::path::Path::new("/usr/sbin").join(program)).filter(|p| process::is_executable(p)));
        match found {
            Some(path) => println!("  {program}: {}", path.display()),
            None => apt::install(program, &[package])?,
        }
    }
    Ok(())
}

/// Servers are only ever started on this machine; a remote URL that does not answer is the user's to fix.
fn refuse_remote(url: &ServiceUrl, variable: &str) -> Result<()> {
    if !url.is_local() {
        bail!(
            "{} is not on this machine, so it cannot be started here: start that server or change {variable}",
            url.host
        );
    }
    Ok(())
}

/// The address a private server listens on: the URL's, with `localhost` as IPv4 loopback.
fn listen_host(url: &ServiceUrl) -> &str {
    if url.host == "localhost" {
        "127.0.0.1"
    } else {
        &url.host
    }
}
