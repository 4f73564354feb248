//! The PostgreSQL and Redis that the tests talk to: used as they are when they answer, otherwise started here from
//! the installed binaries (installed first when missing and we are root), so `cargo xtask test` works on a fresh
//! machine as well as on one whose servers run already. nginx and Caddy, which the forward-auth tests start
//! themselves, are only installed here.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bucket_testkit::{PostgresOptions, PrivatePostgres, PrivateRedis, RedisOptions};
use url::{Host, Url};

use crate::{apt, paths, postgres, process};

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
    postgres: Option<PrivatePostgres>,
    redis: Option<PrivateRedis>,
}

impl TestServices {
    /// Leaves the servers started here running after the xtask exits (for repeated local runs).
    pub fn keep_running(&mut self) {
        if let Some(cluster) = &mut self.postgres {
            let stop = cluster.keep_running();
            println!("  PostgreSQL on port {} keeps running; stop it with: {stop}", cluster.port());
        }
        if let Some(server) = &mut self.redis {
            let stop = server.keep_running();
            println!("  Redis on port {} keeps running; stop it with: {stop}", server.port());
        }
    }
}

/// Servers this run started stop here (the launchers' own drops), unless kept running; say so, as a person watching
/// the log wonders what became of them.
impl Drop for TestServices {
    fn drop(&mut self) {
        if let Some(server) = self.redis.take() {
            let port = server.port();
            drop(server);
            println!("  stopped Redis on port {port} (unless kept running)");
        }
        if let Some(cluster) = self.postgres.take() {
            let port = cluster.port();
            drop(cluster);
            println!("  stopped PostgreSQL on port {port} (unless kept running)");
        }
    }
}

/// Other programs the tests start themselves, as `(program, Debian package)`: installed with apt-get when missing
/// (as root; anyone else is told the command). One line per program. nginx and Caddy: the forward-auth tests start
/// real ones (bucket-testkit's launchers, on free ports, unprivileged) and fail rather than skip without them.
const TEST_PROGRAMS: &[(&str, &str)] = &[("nginx", "nginx"), ("caddy", "caddy")];

/// Makes sure both servers answer at their URLs, starting them when they do not, and that the other programs the
/// tests start are installed.
pub fn ensure() -> Result<TestServices> {
    for (program, package) in TEST_PROGRAMS {
        // nginx lives in /usr/sbin, which a non-root PATH often lacks; the test kit looks there too.
        if which::which(program).is_err() && !std::path::Path::new("/usr/sbin").join(program).exists() {
            apt::install(program, &[package])?;
        }
    }
    let database_url = env_or("BUCKET_TEST_DATABASE_URL", DEFAULT_DATABASE_URL);
    let redis_url = env_or("BUCKET_TEST_REDIS_URL", DEFAULT_REDIS_URL);
    let database = Url::parse(&database_url).context("BUCKET_TEST_DATABASE_URL")?;
    let cache = Url::parse(&redis_url).context("BUCKET_TEST_REDIS_URL")?;

    let postgres = ensure_postgres(&database)
        .with_context(|| format!("PostgreSQL is not reachable at {} and could not be started", redacted(&database)))?;
    let redis = ensure_redis(&cache)
        .with_context(|| format!("Redis is not reachable at {} and could not be started", redacted(&cache)))?;
    Ok(TestServices { database_url, redis_url, postgres, redis })
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|value| !value.is_empty()).unwrap_or_else(|| default.to_string())
}

fn ensure_postgres(url: &Url) -> Result<Option<PrivatePostgres>> {
    let addr = socket_addr(url, 5432)?;
    let database = match url.path().trim_start_matches('/') {
        "" => "postgres",
        name => name,
    };
    // An open port may be a server still starting up: give it a moment before judging.
    let answering = process::port_open(addr) && postgres::wait_accepting(url, addr, Duration::from_secs(10));
    if answering {
        println!("  PostgreSQL: answering at {}", redacted(url));
        postgres::ensure_database(url, addr, database)?;
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
    if let Some((version, name)) = postgres::debian_cluster_on_port(addr.port()) {
        println!("  PostgreSQL: starting the machine's cluster {version}/{name}");
        postgres::start_debian_cluster(&version, &name)?;
    } else {
        let preferred = paths::state_dir().join("pg");
        let dir = if !bucket_testkit::process::is_root() || postgres::reachable_by_other_users(&preferred) {
            preferred
        } else {
            std::env::temp_dir().join(format!("bucket-xtask-pg-{}", addr.port()))
        };
        println!("  PostgreSQL: starting a private server on port {} (data in {})", addr.port(), dir.display());
        let superuser = Some(url.username()).filter(|user| !user.is_empty()).unwrap_or("postgres").to_string();
        let options = PostgresOptions {
            dir: Some(dir),
            listen: listen_host(url),
            port: addr.port(),
            superuser,
            ..Default::default()
        };
        started = Some(PrivatePostgres::launch(options)?);
    }
    if !postgres::wait_accepting(url, addr, Duration::from_secs(30)) {
        bail!("the server started but does not accept connections at {addr}");
    }
    postgres::ensure_database(url, addr, database)?;
    println!("  PostgreSQL: answering at {}", redacted(url));
    Ok(started)
}

fn ensure_redis(url: &Url) -> Result<Option<PrivateRedis>> {
    let addr = socket_addr(url, 6379)?;
    if answers_ping(addr) {
        println!("  Redis: answering at {}", redacted(url));
        return Ok(None);
    }
    if process::port_open(addr) {
        bail!("something listens on {addr} but does not answer PING as Redis; free the port or change the URL");
    }
    refuse_remote(url, "BUCKET_TEST_REDIS_URL")?;
    if which::which("redis-server").is_err() {
        apt::install("redis-server", &["redis-server"])?;
    }
    let dir = paths::state_dir().join("redis");
    println!("  Redis: starting a private server on port {} (files in {})", addr.port(), dir.display());
    let options = RedisOptions {
        bind: listen_host(url),
        port: addr.port(),
        dir: Some(dir),
        tls: None,
        // A terminal's Ctrl-C must reach only the xtask, which stops the server (or keeps it running) itself.
        own_process_group: true,
        ..RedisOptions::default()
    };
    let server = PrivateRedis::launch(options)?;
    if !process::wait_until(Duration::from_secs(20), || answers_ping(addr)) {
        bail!("redis-server listens on {addr} but does not answer PING");
    }
    println!("  Redis: answering at {}", redacted(url));
    Ok(Some(server))
}

/// Servers are only ever started on this machine; a remote URL that does not answer is the user's to fix.
fn refuse_remote(url: &Url, variable: &str) -> Result<()> {
    if !is_local(url) {
        bail!(
            "{} is not on this machine, so it cannot be started here: start that server or change {variable}",
            url.host_str().unwrap_or("(no host)")
        );
    }
    Ok(())
}

/// Whether the URL's host is this machine. `postgres://` and `redis://` are not schemes the URL standard knows, so
/// their IPv4 hosts arrive as names.
fn is_local(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain("localhost")) => true,
        Some(Host::Domain(name)) => name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The address the URL's host resolves to first, with `default_port` when the URL names no port.
fn socket_addr(url: &Url, default_port: u16) -> Result<SocketAddr> {
    let addrs = url.socket_addrs(|| Some(default_port)).with_context(|| format!("cannot resolve {}", redacted(url)))?;
    addrs.into_iter().next().ok_or_else(|| anyhow!("{} resolves to no address", redacted(url)))
}

/// The URL with its password masked, for messages.
pub fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

/// The address a private server listens on: the URL's host (IPv4 loopback for `localhost`), without brackets.
fn listen_host(url: &Url) -> String {
    match url.host() {
        Some(Host::Ipv6(ip)) => ip.to_string(),
        Some(Host::Domain("localhost")) | None => "127.0.0.1".to_string(),
        Some(host) => host.to_string(),
    }
}

/// Whether a Redis server answers at `addr`: PING spoken directly over TCP, so no `redis-cli` is needed. A server that
/// demands a password answers `-NOAUTH`, which still proves it is Redis and up; logging in is the tests' business.
pub fn answers_ping(addr: SocketAddr) -> bool {
    let ping = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"PING\r\n")?;
        let mut reply = [0u8; 64];
        let read = stream.read(&mut reply)?;
        let reply = &reply[..read];
        Ok(reply.starts_with(b"+PONG") || reply.starts_with(b"-NOAUTH"))
    };
    ping().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn loopback_hosts_are_local_and_others_are_not() {
        for local in ["postgres://postgres@127.0.0.1:5433/test", "redis://localhost", "redis://:secret@[::1]:6380/0"] {
            assert!(is_local(&url(local)), "{local}");
        }
        assert!(!is_local(&url("postgres://db.example:5432/x")));
        assert!(!is_local(&url("redis://10.0.0.1:6379")));
    }

    #[test]
    fn ports_default_per_service_and_hosts_lose_their_brackets() {
        assert_eq!(socket_addr(&url("redis://127.0.0.1"), 6379).unwrap().port(), 6379);
        assert_eq!(socket_addr(&url("postgres://127.0.0.1:5433/test"), 5432).unwrap().port(), 5433);
        assert_eq!(listen_host(&url("redis://[::1]:6380")), "::1");
        assert_eq!(listen_host(&url("redis://localhost:6380")), "127.0.0.1");
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(redacted(&url("redis://:secret@[::1]:6380/0")), "redis://:***@[::1]:6380/0");
        assert_eq!(redacted(&url("postgres://u@h/db")), "postgres://u@h/db");
    }
}
