//! A PostgreSQL cluster of our own (trust auth, durability off: it only ever holds test data), from the installed
//! server programs: for the TLS tests, and for `cargo xtask` on a machine whose PostgreSQL is not running. One
//! launcher for both. PostgreSQL refuses to run as root, so as root its programs run as the `postgres` user
//! (`runuser`), which then owns the cluster's files.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{self, LaunchError};

/// How to start a [`PrivatePostgres`].
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Directory of the cluster (`data/` and `server.log` inside), reused when it holds one already (kept); `None`:
    /// a temporary one, removed on drop.
    pub dir: Option<PathBuf>,
    /// Address to listen on (no Unix socket).
    pub listen: String,
    /// Port to listen on.
    pub port: u16,
    /// The superuser initdb creates.
    pub superuser: String,
    /// Extra `name=value` server settings, on top of the test-data ones.
    pub settings: Vec<String>,
    /// Files copied into the data directory, readable by the server only (a TLS key): `(source, file name)`.
    pub data_files: Vec<(PathBuf, String)>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            dir: None,
            listen: "127.0.0.1".into(),
            port: crate::free_port(),
            superuser: "postgres".into(),
            settings: Vec::new(),
            data_files: Vec::new(),
        }
    }
}

/// Settings for a cluster that holds only test data.
const TEST_SETTINGS: [&str; 5] =
    ["unix_socket_directories=", "fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=200"];

/// A running cluster, stopped when dropped unless kept running.
pub struct PrivatePostgres {
    dir: PathBuf,
    options: PostgresOptions,
    as_postgres: bool,
    running: bool,
    keep: bool,
    _temp: Option<tempfile::TempDir>,
}

impl PrivatePostgres {
    /// Creates the cluster if its directory holds none, and starts it (`pg_ctl -w`: it accepts connections when
    /// this returns). A server an interrupted run left on the same directory is stopped first.
    pub fn launch(options: PostgresOptions) -> Result<Self, LaunchError> {
        let (dir, temp) = match &options.dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("bucket-pg-")
                    .tempdir()
                    .map_err(|e| LaunchError(format!("cannot create a directory for PostgreSQL: {e}")))?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        std::fs::create_dir_all(&dir).map_err(|e| LaunchError(format!("cannot create {}: {e}", dir.display())))?;
        let as_postgres = process::is_root();
        if as_postgres {
            process::program("runuser", "util-linux")?;
            process::give_to_postgres(&dir)?;
        }
        let mut cluster = Self { dir, options, as_postgres, running: false, keep: false, _temp: temp };
        let data = cluster.data();
        if !data.join("PG_VERSION").exists() {
            let mut initdb = cluster.command("initdb")?;
            initdb.arg("-D").arg(&data).args(["-U", &cluster.options.superuser, "--auth=trust", "-E", "UTF8"]);
            process::run(initdb.args(["--no-locale", "--no-sync"]))?;
        }
        for (source, name) in &cluster.options.data_files {
            let target = data.join(name);
            std::fs::copy(source, &target)
                .map_err(|e| LaunchError(format!("cannot copy {}: {e}", source.display())))?;
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600));
            if as_postgres {
                process::give_to_postgres(&target)?;
            }
        }
        if process::run(cluster.pg_ctl(&["status"])?.stdout(std::process::Stdio::null())).is_ok() {
            process::run(&mut cluster.pg_ctl(&["-m", "fast", "-w", "stop"])?)?;
        }
        let o = &cluster.options;
        let settings = TEST_SETTINGS.iter().map(|s| s.to_string()).chain(o.settings.iter().cloned());
        let mut server_options = format!("-p {} -c listen_addresses={}", o.port, o.listen);
        settings.for_each(|setting| server_options.push_str(&format!(" -c {setting}")));
        let log = cluster.log();
        let mut start = cluster.pg_ctl(&["-w", "-t", "60", "-o", &server_options, "-l"])?;
        if let Err(error) = process::run(start.arg(&log).arg("start")) {
            return Err(LaunchError::with_log(error, &log));
        }
        cluster.running = true;
        Ok(cluster)
    }

    /// `postgres://<superuser>@<listen>:<port>/postgres`: the database every cluster has.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// `postgres://<superuser>@<listen>:<port>/<database>`.
    pub fn url_for(&self, database: &str) -> String {
        let o = &self.options;
        let host = if o.listen.contains(':') { format!("[{}]", o.listen) } else { o.listen.clone() };
        format!("postgres://{}@{host}:{}/{database}", o.superuser, o.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.options.port
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Leaves the server running after we exit; returns the command that stops it.
    pub fn keep_running(&mut self) -> String {
        self.keep = true;
        let prefix = if self.as_postgres { "runuser -u postgres -- " } else { "" };
        let pg_ctl = process::postgres_program("pg_ctl").unwrap_or_else(|_| "pg_ctl".into());
        format!("{prefix}{} -D {} stop", pg_ctl.display(), self.data().display())
    }

    /// Stops the server (fast shutdown: it only holds test data). Idempotent; nothing when kept running.
    pub fn stop(&mut self) -> Result<(), LaunchError> {
        if !self.running || self.keep {
            return Ok(());
        }
        self.running = false;
        process::run(&mut self.pg_ctl(&["-m", "fast", "-w", "-t", "30", "stop"])?).map(drop)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<Command, LaunchError> {
        let mut command = self.command("pg_ctl")?;
        command.arg("-D").arg(self.data()).args(args);
        Ok(command)
    }

    /// A server program, run as `postgres` when we are root, from a directory that user may enter.
    fn command(&self, name: &str) -> Result<Command, LaunchError> {
        let program = process::postgres_program(name)?;
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.current_dir(&self.dir);
        Ok(command)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("could not stop PostgreSQL on port {}: {error}", self.options.port);
        }
    }
}
