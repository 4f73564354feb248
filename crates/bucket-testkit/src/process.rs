//! What the server launchers share: finding server programs, the user a server runs as, waiting for a port, and
//! an error that quotes the server's log, so `cargo xtask` can print why a server did not start and a test can
//! panic with it.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Why a server could not be started or stopped, with the command or log lines that say so.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LaunchError(pub String);

impl LaunchError {
    /// `what` went wrong, followed by the last lines of `log` when it has any.
    pub fn with_log(what: impl std::fmt::Display, log: &Path) -> Self {
        LaunchError(format!("{what}\n{}", log_tail(log, 20)))
    }
}

/// A program on `PATH`, else `Err` naming the Debian package that provides it.
pub fn program(name: &str, package: &str) -> Result<PathBuf, LaunchError> {
    which::which(name).map_err(|_| LaunchError(format!("{name} is not installed (Debian: apt-get install {package})")))
}

/// Whether we run as root: PostgreSQL then has to run as its own user.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Hands `path` to the `postgres` user, which must own a cluster's files when we are root.
pub fn give_to_postgres(path: &Path) -> Result<(), LaunchError> {
    let user = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .ok_or_else(|| LaunchError("there is no `postgres` user on this machine".into()))?;
    std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
        .map_err(|e| LaunchError(format!("cannot give {} to the postgres user: {e}", path.display())))
}

/// Runs `command` to completion in a process group of its own (a terminal's Ctrl-C must not cut initdb or pg_ctl
/// in half), failing with its output unless it succeeds.
pub fn run(command: &mut Command) -> Result<Output, LaunchError> {
    use std::os::unix::process::CommandExt;
    let shown = format!("{command:?}");
    let output = command
        .process_group(0)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LaunchError(format!("could not run {shown}: {e}")))?;
    if !output.status.success() {
        return Err(LaunchError(format!(
            "{shown} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        )));
    }
    Ok(output)
}

/// Polls until something accepts TCP connections at `addr`, `gone` says the server exited, or `timeout` passes.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration, mut gone: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        if gone() || Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The last `lines` lines of a log file, to quote in an error message.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    if tail.is_empty() {
        format!("(the log {} is empty)", path.display())
    } else {
        format!("last lines of {}:\n{tail}", path.display())
    }
}

/// A PostgreSQL program: on `PATH`, else in the newest `/usr/lib/postgresql/<version>/bin`, where Debian keeps the
/// server programs (only the client wrappers are on `PATH` there).
pub fn postgres_program(name: &str) -> Result<PathBuf, LaunchError> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
        .collect();
    versions.sort();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(versions.into_iter().rev().map(|(_, dir)| dir));
    which::which_in(name, std::env::join_paths(dirs).ok(), "/")
        .map_err(|_| LaunchError(format!("{name} is not installed (Debian: apt-get install postgresql)")))
}
