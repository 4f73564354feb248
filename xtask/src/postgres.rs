//! PostgreSQL from the installed binaries: checking that a server answers, starting the machine's Debian cluster,
//! or running a private cluster (trust auth, no Unix socket, durability off: it only ever holds test data) in a
//! directory of ours. PostgreSQL refuses to run as root, so as root every server command runs as `postgres`.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use url::Url;

use crate::process;

/// How long a starting server may take before we call it failed.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A PostgreSQL program: on `PATH`, else in the newest `/usr/lib/postgresql/<version>/bin`, where Debian keeps the
/// server programs (only the client wrappers are on `PATH` there).
pub fn tool(name: &str) -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
        .collect();
    versions.sort();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(versions.into_iter().rev().map(|(_, dir)| dir));
    which::which_in(name, std::env::join_paths(dirs).ok(), "/").ok()
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

/// A PostgreSQL cluster in a directory of ours, stopped when dropped unless told to keep running.
pub struct PrivateCluster {
    data: PathBuf,
    log: PathBuf,
    port: u16,
    as_postgres: bool,
    running: bool,
    keep: bool,
}

impl PrivateCluster {
    /// Creates the cluster under `dir` if needed (superuser `superuser`, trust auth) and starts it on
    /// `listen:port`. A server already running on this data directory (say, from an interrupted run) is restarted
    /// so that it listens where asked.
    pub fn start(dir: &Path, listen: &str, port: u16, superuser: &str) -> Result<Self> {
        let (initdb, pg_ctl) = match (tool("initdb"), tool("pg_ctl")) {
            (Some(initdb), Some(pg_ctl)) => (initdb, pg_ctl),
            _ => bail!("the PostgreSQL server programs (initdb, pg_ctl) are not installed"),
        };
        let as_postgres = process::is_root();
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        if as_postgres {
            if which::which("runuser").is_err() {
                bail!("as root, PostgreSQL must run as the `postgres` user, and `runuser` (util-linux) is missing");
            }
            let (uid, gid) = process::user_ids("postgres")?;
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .with_context(|| format!("cannot give {} to the postgres user", dir.display()))?;
        }
        let mut cluster = Self {
            data: dir.join("data"),
            log: dir.join("server.log"),
            port,
            as_postgres,
            running: false,
            keep: false,
        };
        let pg_ctl_command = |args: &[&str]| {
            let mut command = cluster.server_command(&pg_ctl, dir);
            command.arg("-D").arg(&cluster.data).args(args);
            command
        };

        if !cluster.data.join("PG_VERSION").exists() {
            println!("  creating a PostgreSQL cluster in {}", cluster.data.display());
            let mut command = cluster.server_command(&initdb, dir);
            command.arg("-D").arg(&cluster.data);
            command.args(["-U", superuser, "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"]);
            process::run_checked(&mut command)?;
            // Appended by whoever we are; the file keeps its owner. Test data needs no durability.
            let settings = "\n# set by cargo xtask\nunix_socket_directories = ''\nmax_connections = 200\n\
                            fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n";
            let conf = cluster.data.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf).with_context(|| format!("cannot read {}", conf.display()))?;
            text.push_str(settings);
            std::fs::write(&conf, text).with_context(|| format!("cannot write {}", conf.display()))?;
        }
        if process::capture(&mut pg_ctl_command(&["status"]))?.status.success() {
            println!("  a server from an earlier run is using {}: restarting it", cluster.data.display());
            process::run_checked(&mut pg_ctl_command(&["-m", "fast", "-w", "stop"]))?;
        }
        let options = format!("-p {port} -c listen_addresses={listen}");
        let log = cluster.log.clone();
        let mut start = pg_ctl_command(&["-w", "-t", &START_TIMEOUT.as_secs().to_string(), "-o", &options, "-l"]);
        start.arg(&log).arg("start");
        if let Err(error) = process::run_checked(&mut start) {
            bail!("{error:#}\n{}", process::log_tail(&log, 20));
        }
        cluster.running = true;
        Ok(cluster)
    }

    /// Leaves the server running after the xtask exits, and says how to stop it.
    pub fn keep_running(&mut self) {
        self.keep = true;
        let prefix = if self.as_postgres { "runuser -u postgres -- " } else { "" };
        let pg_ctl = tool("pg_ctl").unwrap_or_else(|| "pg_ctl".into());
        println!(
            "  PostgreSQL on port {} keeps running; stop it with: {prefix}{} -D {} stop",
            self.port,
            pg_ctl.display(),
            self.data.display()
        );
    }

    /// Stops the server (fast shutdown: it only holds test data). Idempotent.
    pub fn stop(&mut self) {
        if !self.running || self.keep {
            return;
        }
        self.running = false;
        let Some(pg_ctl) = tool("pg_ctl") else { return };
        let dir = self.data.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut command = self.server_command(&pg_ctl, &dir);
        command.arg("-D").arg(&self.data).args(["-m", "fast", "-w", "-t", "30", "stop"]);
        match process::run_checked(&mut command) {
            Ok(_) => println!("  stopped PostgreSQL on port {}", self.port),
            Err(error) => eprintln!("  could not stop PostgreSQL on port {}: {error:#}", self.port),
        }
    }

    /// A server program run as the `postgres` user when we are root, from a directory that user may enter.
    fn server_command(&self, program: &Path, cwd: &Path) -> Command {
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.current_dir(cwd);
        command
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.stop();
    }
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
