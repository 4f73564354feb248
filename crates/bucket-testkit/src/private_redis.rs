//! A `redis-server` of our own (no persistence, loopback): for a test that kills, freezes or restarts it, for the
//! TLS tests, and for `cargo xtask` on a machine whose Redis is not running. One launcher for all of them.

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::process::{self, LaunchError};

/// How long a starting server may take before it counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How to start a [`PrivateRedis`].
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Address to listen on.
    pub bind: String,
    /// Port to listen on (the TLS port with `tls`).
    pub port: u16,
    /// Directory for its log (kept); `None`: a temporary one, removed on drop.
    pub dir: Option<PathBuf>,
    /// Listen with TLS only (`--port 0 --tls-port <port>`), with these PEM files.
    pub tls: Option<RedisTls>,
    /// Run in a process group of its own, so a terminal's Ctrl-C reaches only the caller, which stops it in order
    /// (or keeps it running).
    pub own_process_group: bool,
    /// A configuration file, given before every other argument (a sentinel needs one it can rewrite).
    pub config_file: Option<PathBuf>,
    /// More arguments after the usual ones (`--cluster-enabled yes`, `--replicaof`, `--sentinel`).
    pub args: Vec<String>,
    /// Dies with this process even if never dropped (a server in a `static`, shared by a test binary's tests):
    /// see [`process::spawn_tied_to_process`].
    pub tied_to_process: bool,
}

/// The certificate files of a TLS-only server.
#[derive(Debug, Clone)]
pub struct RedisTls {
    /// Server certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The CA clients may present certificates from (client certificates are not required).
    pub ca: PathBuf,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1".into(),
            port: crate::free_port(),
            dir: None,
            tls: None,
            own_process_group: false,
            config_file: None,
            args: Vec::new(),
            tied_to_process: false,
        }
    }
}

/// A `redis-server` started here, killed when dropped unless kept running.
pub struct PrivateRedis {
    options: RedisOptions,
    log: PathBuf,
    child: Option<Child>,
    keep: bool,
    _temp: Option<tempfile::TempDir>,
}

impl PrivateRedis {
    /// Starts one on a free port and waits until it accepts connections; panics when it cannot (test helper).
    pub fn start() -> Self {
        Self::launch(RedisOptions::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts one on `port` (e.g. again after [`PrivateRedis::kill`]); panics when it cannot.
    pub fn start_on(port: u16) -> Self {
        Self::launch(RedisOptions { port, ..RedisOptions::default() }).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts one as `options` say and waits until it accepts TCP connections.
    pub fn launch(options: RedisOptions) -> Result<Self, LaunchError> {
        let (dir, temp) = match &options.dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("bucket-redis-")
                    .tempdir()
                    .map_err(|e| LaunchError(format!("cannot create a directory for redis-server: {e}")))?;
                if options.tied_to_process {
                    process::remove_at_exit(temp.path().to_path_buf());
                }
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        std::fs::create_dir_all(&dir).map_err(|e| LaunchError(format!("cannot create {}: {e}", dir.display())))?;
        let log = dir.join(format!("redis-{}.log", options.port));
        let mut server = Self { options, log, child: None, keep: false, _temp: temp };
        server.relaunch()?;
        Ok(server)
    }

    /// Starts the server again on the same port after [`PrivateRedis::kill`].
    pub fn restart(&mut self) {
        self.relaunch().unwrap_or_else(|e| panic!("{e}"));
    }

    fn relaunch(&mut self) -> Result<(), LaunchError> {
        assert!(self.child.is_none(), "server already running");
        let o = &self.options;
        let log = std::fs::File::create(&self.log)
            .map_err(|e| LaunchError(format!("cannot create {}: {e}", self.log.display())))?;
        let mut command = Command::new(process::program("redis-server", "redis-server")?);
        if let Some(file) = &o.config_file {
            command.arg(file);
        }
        match &o.tls {
            None => command.args(["--port", &o.port.to_string()]),
            Some(tls) => command
                .args(["--port", "0", "--tls-port", &o.port.to_string(), "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca),
        };
        command.args(["--bind", &o.bind, "--save", "", "--appendonly", "no"]);
        command.arg("--dir").arg(self.log.parent().expect("the log is in a directory"));
        command.args(&o.args);
        command.stdin(Stdio::null()).stdout(log.try_clone().map_err(|e| LaunchError(e.to_string()))?).stderr(log);
        if o.own_process_group {
            command.process_group(0);
        }
        let child = if o.tied_to_process { process::spawn_tied_to_process(command) } else { command.spawn() }
            .map_err(|e| LaunchError(format!("could not start redis-server: {e}")))?;
        self.child = Some(child);
        let addr = self.socket_addr()?;
        let child = self.child.as_mut().expect("just started");
        if !process::wait_for_port(addr, START_TIMEOUT, || !matches!(child.try_wait(), Ok(None))) {
            self.kill();
            return Err(LaunchError::with_log(format!("redis-server did not start on {addr}"), &self.log));
        }
        Ok(())
    }

    fn socket_addr(&self) -> Result<SocketAddr, LaunchError> {
        let bind = self.options.bind.as_str();
        (bind, self.options.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| LaunchError(format!("cannot listen on `{bind}`")))
    }

    /// The URL to give a store (`rediss://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://{}", self.addr())
    }

    /// `host:port`: what a [`crate::FaultProxy`] in front of it forwards to.
    pub fn addr(&self) -> String {
        match self.socket_addr() {
            Ok(addr) => addr.to_string(),
            Err(_) => format!("{}:{}", self.options.bind, self.options.port),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.options.port
    }

    /// SIGKILL: the process is gone, every connection reset.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::forget_at_exit(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process runs (it was not killed and has not exited).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// The directory holding its log (and what the server writes: `nodes.conf`, a sentinel's configuration).
    pub fn dir(&self) -> &std::path::Path {
        self.log.parent().expect("the log is in a directory")
    }

    /// SIGSTOP: the server still accepts TCP connections (the kernel does that) but answers nothing.
    pub fn freeze(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// SIGCONT after [`PrivateRedis::freeze`].
    pub fn thaw(&self) {
        self.signal(Signal::SIGCONT);
    }

    fn signal(&self, signal: Signal) {
        let pid = self.child.as_ref().expect("server running").id();
        kill(Pid::from_raw(pid as i32), signal).unwrap_or_else(|e| panic!("{signal} to redis-server {pid}: {e}"));
    }

    /// Leaves the server running after we exit; returns the command that stops it.
    pub fn keep_running(&mut self) -> String {
        self.keep = true;
        format!("redis-cli -p {} shutdown nosave", self.options.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        // SIGKILL works on a stopped process too, so a test that fails while the server is frozen leaves nothing.
        if !self.keep {
            self.kill();
        }
    }
}
