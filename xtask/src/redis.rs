//! Redis from the installed `redis-server`: checking that a server answers PING, and running a private one
//! (no persistence, loopback only) whose pid file and log live in a directory of ours.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::process;

/// How long a starting server may take before we call it failed.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Whether `redis-server` is installed.
pub fn server_installed() -> bool {
    which::which("redis-server").is_ok()
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

/// A `redis-server` started here, stopped when dropped unless told to keep running.
pub struct PrivateServer {
    pid_file: PathBuf,
    port: u16,
    running: bool,
    keep: bool,
}

impl PrivateServer {
    /// Starts a daemonized `redis-server` bound to `bind:port`, with its pid file and log in `dir`.
    pub fn start(dir: &Path, bind: &str, port: u16) -> Result<Self> {
        let Some(redis_server) = which::which("redis-server").ok() else {
            bail!("redis-server is not installed");
        };
        std::fs::create_dir_all(dir)?;
        let pid_file = dir.join(format!("redis-{port}.pid"));
        let log = dir.join(format!("redis-{port}.log"));
        // A pid file left by an earlier run that was killed would make us stop a stranger later.
        let _ = std::fs::remove_file(&pid_file);
        let mut command = Command::new(redis_server);
        command.args(["--daemonize", "yes", "--bind", bind, "--port", &port.to_string()]);
        command.args(["--save", "", "--appendonly", "no"]);
        command.arg("--dir").arg(dir).arg("--pidfile").arg(&pid_file).arg("--logfile").arg(&log);
        process::run_checked(&mut command)?;
        let server = Self { pid_file, port, running: true, keep: false };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let addr = if bind == "::1" { SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)) } else { addr };
        if !process::wait_until(START_TIMEOUT, || answers_ping(addr)) {
            bail!(
                "redis-server did not answer PING on port {port} within {}s\n{}",
                START_TIMEOUT.as_secs(),
                process::log_tail(&log, 20)
            );
        }
        Ok(server)
    }

    /// Leaves the server running after the xtask exits, and says how to stop it.
    pub fn keep_running(&mut self) {
        self.keep = true;
        println!(
            "  Redis on port {} keeps running; stop it with: redis-cli -p {} shutdown nosave",
            self.port, self.port
        );
    }

    /// Stops the server through its pid file. Idempotent.
    pub fn stop(&mut self) {
        if !self.running || self.keep {
            return;
        }
        self.running = false;
        let pid = std::fs::read_to_string(&self.pid_file).ok().and_then(|text| text.trim().parse::<u32>().ok());
        match pid {
            Some(pid) => {
                process::stop_pid(pid, Duration::from_secs(10));
                println!("  stopped Redis on port {}", self.port);
            }
            None => eprintln!("  could not stop Redis on port {}: no pid in {}", self.port, self.pid_file.display()),
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.stop();
    }
}
