//! PostgreSQL from the installed binaries: checking that a server answers, starting the machine's Debian cluster,
//! and creating the database the tests use. A private cluster is `bucket_testkit::PrivatePostgres`.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use url::Url;

use crate::process;

/// A PostgreSQL program, on `PATH` or where Debian keeps the server programs.
pub fn tool(name: &str) -> Option<PathBuf> {
    bucket_testkit::process::postgres_program(name).ok()
}

/// Whether the server programs we need to run a cluster of our own are installed.
pub fn server_installed() -> bool {
    tool("initdb").is_some() && tool("pg_ctl").is_some()
}

/// Whether a PostgreSQL server accepts connections at the URL's address: a TCP connect, then `pg_isready` when it is
/// installed (a port can be open while the server is still starting, or be something else entirely).
pub fn accepts_connections(url: &Url, addr: SocketAddr) -> bool {
    if !process::port_open(addr) {
        return false;
    }
    let Some(pg_isready) = tool("pg_isready") else { return true };
    let mut command = Command::new(pg_isready);
    command.args(["-q", "-t", "2", "-h", &addr.ip().to_string(), "-p", &addr.port().to_string()]);
    if !url.username().is_empty() {
        command.args(["-U", url.username()]);
    }
    process::capture(&mut command).map(|output| output.status.success()).unwrap_or(false)
}

/// Waits until the server answers, or `timeout` passes.
pub fn wait_accepting(url: &Url, addr: SocketAddr, timeout: Duration) -> bool {
    process::wait_until(timeout, || accepts_connections(url, addr))
}

/// The Debian cluster (`/etc/postgresql/<version>/<name>`) configured for `port`, newest version first, so that a
/// machine whose own server merely stopped gets that server back rather than a second one.
pub fn debian_cluster_on_port(port: u16) -> Option<(String, String)> {
    let mut found = Vec::new();
    for version in std::fs::read_dir("/etc/postgresql").ok()?.flatten() {
        for cluster in std::fs::read_dir(version.path()).into_iter().flatten().flatten() {
            let conf = std::fs::read_to_string(cluster.path().join("postgresql.conf")).unwrap_or_default();
            if configured_port(&conf) == Some(port) {
                let version = version.file_name().to_string_lossy().into_owned();
                found.push((
                    version.parse::<u32>().unwrap_or(0),
                    version,
                    cluster.file_name().to_string_lossy().into(),
                ));
            }
        }
    }
    found.sort();
    found.pop().map(|(_, version, name)| (version, name))
}

/// The `port = N` setting of a postgresql.conf, 5432 when it sets none.
fn configured_port(conf: &str) -> Option<u16> {
    let mut port = Some(5432);
    for line in conf.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some((key, value)) = line.split_once('=') {
            if key.trim() == "port" {
                port = value.trim().trim_matches('\'').parse().ok();
            }
        }
    }
    port
}

/// Starts a Debian cluster the way the machine's own boot does.
pub fn start_debian_cluster(version: &str, name: &str) -> Result<()> {
    process::run_checked(Command::new("pg_ctlcluster").args(["--skip-systemctl-redirect", version, name, "start"]))?;
    Ok(())
}

/// Whether a user other than root can reach `dir`: every existing ancestor must be searchable by others, or the
/// `postgres` user cannot open its own data directory inside it (a checkout under /root, for instance).
pub fn reachable_by_other_users(dir: &Path) -> bool {
    dir.ancestors()
        .skip(1)
        .filter_map(|ancestor| ancestor.metadata().ok())
        .all(|meta| meta.permissions().mode() & 0o001 != 0)
}

/// Creates database `name` unless it exists, with `psql`/`createdb` (skipped with a note when the clients are missing).
pub fn ensure_database(url: &Url, addr: SocketAddr, name: &str) -> Result<()> {
    let (Some(psql), Some(createdb)) = (tool("psql"), tool("createdb")) else {
        println!("  note: psql/createdb not installed; not checking that database `{name}` exists");
        return Ok(());
    };
    let client = |program: &Path| {
        let mut command = Command::new(program);
        command.args(["-w", "-h", &addr.ip().to_string(), "-p", &addr.port().to_string()]);
        if !url.username().is_empty() {
            command.args(["-U", url.username()]);
        }
        if let Some(password) = url.password() {
            command.env("PGPASSWORD", password);
        }
        command
    };
    let query = format!("SELECT 1 FROM pg_database WHERE datname = '{}'", name.replace('\'', "''"));
    let output = process::run_checked(client(&psql).args(["-d", "postgres", "-Atc", &query]))?;
    if String::from_utf8_lossy(&output.stdout).trim() != "1" {
        process::run_checked(client(&createdb).arg(name))?;
        println!("  created database `{name}`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_is_read_from_postgresql_conf() {
        let conf = "#port = 1\nport = 5433\t\t# (change requires restart)\n";
        assert_eq!(configured_port(conf), Some(5433));
        assert_eq!(configured_port("listen_addresses = '*'"), Some(5432));
    }
}
