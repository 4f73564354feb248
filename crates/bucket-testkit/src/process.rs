//! What the server launchers share: finding server programs, the user a server runs as, waiting for a port, and
//! an error that quotes the server's log, so `cargo xtask` can print why a server did not start and a test can
//! panic with it.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
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

/// A request to the keeper thread: a command to spawn, and where to send the child.
type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `command` so that it dies with this process, however the process ends: a server shared by every test of
/// a test binary sits in a `static`, which Rust never drops.
///
/// The child gets `PR_SET_PDEATHSIG` (SIGKILL), which the kernel sends when the *thread* that forked it ends. Test
/// threads end with their test, so the fork happens on a keeper thread that lives as long as the process. A normal
/// exit also kills it explicitly (`atexit`), so nothing lingers even where the signal cannot be delivered.
pub fn spawn_tied_to_process(mut command: Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe system calls (prctl, getppid).
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)?;
            // The keeper died between fork and prctl: the signal will never come, so do not start at all.
            if nix::unistd::getppid().as_raw() == 1 {
                return Err(std::io::Error::other("the parent process is gone"));
            }
            Ok(())
        });
    }
    let (reply, answer) = mpsc::channel();
    keeper()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send((command, reply))
        .map_err(|_| std::io::Error::other("the keeper thread is gone"))?;
    let child = answer.recv().map_err(|_| std::io::Error::other("the keeper thread did not answer"))??;
    kill_at_exit(child.id());
    Ok(child)
}

fn keeper() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    KEEPER.get_or_init(|| {
        let (send, receive) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testkit-keeper".into())
            .spawn(move || {
                for (mut command, reply) in receive {
                    let _ = reply.send(command.spawn());
                }
                // Every sender is in the static, so this is never reached; park instead of ending, just in case.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawn the keeper thread");
        Mutex::new(send)
    })
}

/// Processes and directories to remove when the process exits normally (statics are never dropped).
static AT_EXIT: Mutex<(Vec<u32>, Vec<PathBuf>)> = Mutex::new((Vec::new(), Vec::new()));

/// SIGKILLs `pid` at exit (a no-op if it already ended; pids of ended children are not reused while unreaped,
/// and an explicitly killed child is reaped by its owner, which removes it from the list first).
fn kill_at_exit(pid: u32) {
    register_at_exit();
    AT_EXIT.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0.push(pid);
}

/// Forgets `pid`: its owner killed and reaped it, so the number may belong to another process soon.
pub fn forget_at_exit(pid: u32) {
    AT_EXIT.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0.retain(|&p| p != pid);
}

/// Removes `dir` at exit, after every tied process is killed.
pub fn remove_at_exit(dir: PathBuf) {
    register_at_exit();
    AT_EXIT.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1.push(dir);
}

fn register_at_exit() {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| {
        extern "C" fn cleanup() {
            let Ok(mut state) = AT_EXIT.try_lock() else { return };
            for pid in state.0.drain(..) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
            }
            for dir in state.1.drain(..) {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        // SAFETY: registering a plain function; it runs once, at exit, on the exiting thread.
        unsafe { libc::atexit(cleanup) };
    });
}
