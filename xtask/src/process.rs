//! Running other programs: finding them, reporting what ran and why it failed, and stopping whole process groups,
//! so that nothing the xtask starts outlives it by accident.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::interrupt;

/// How often wait loops look at their condition: fast enough to feel instant, slow enough to cost nothing.
const POLL: Duration = Duration::from_millis(100);

/// The cargo that runs the xtask (cargo sets `CARGO`), so children use the same toolchain.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The command line as a person would type it, for banners and error messages.
pub fn display(command: &Command) -> String {
    let words: Vec<String> = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|word| word.to_string_lossy().into_owned())
        .collect();
    shlex::try_join(words.iter().map(String::as_str)).unwrap_or_else(|_| words.join(" "))
}

/// Runs `command` to completion with its output captured, failing only when it cannot be started. It runs in a
/// process group of its own, so a terminal's Ctrl-C cannot cut a short step (initdb, pg_ctl, apt-get) in half; the
/// xtask notices the interrupt after it.
pub fn capture(command: &mut Command) -> Result<Output> {
    command.process_group(0).stdin(Stdio::null());
    command.output().with_context(|| format!("could not run `{}`", display(command)))
}

/// Runs `command` with its output captured and fails, quoting that output, unless it exits with success.
pub fn run_checked(command: &mut Command) -> Result<Output> {
    let output = capture(command)?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}):\n{}{}",
            display(command),
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
    }
    Ok(output)
}

/// Runs `command` with the terminal, like a shell would. On SIGTERM or Ctrl-C the child is asked to stop too
/// (a terminal's Ctrl-C already reached it; a SIGTERM sent to the xtask alone did not).
pub fn run_foreground(command: &mut Command) -> Result<ExitStatus> {
    let mut child = command.spawn().with_context(|| format!("could not start `{}`", display(command)))?;
    let mut forwarded = false;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if interrupt::requested() && !forwarded {
            signal_process(child.id(), Signal::SIGTERM);
            forwarded = true;
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `ready` until it holds or `timeout` passes; gives up early when the user interrupts, as waiting for
/// something to come up is pointless then.
pub fn wait_until(timeout: Duration, ready: impl FnMut() -> bool) -> bool {
    poll(timeout, true, ready)
}

/// Polls `done` until it holds or `timeout` passes, interrupted or not: stopping must finish even after Ctrl-C.
pub fn wait_regardless(timeout: Duration, done: impl FnMut() -> bool) -> bool {
    poll(timeout, false, done)
}

fn poll(timeout: Duration, interruptible: bool, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline || (interruptible && interrupt::requested()) {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Whether something accepts TCP connections at `addr`.
pub fn port_open(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// A TCP port on 127.0.0.1 that nobody listens on right now.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("could not find a free TCP port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

/// `preferred` if it is free on 127.0.0.1, else any free port: people expect well-known ports when they can have them.
pub fn free_port_preferring(preferred: u16) -> Result<u16> {
    match TcpListener::bind(("127.0.0.1", preferred)) {
        Ok(_) => Ok(preferred),
        Err(_) => free_port(),
    }
}

/// Sends `signal` to a process; one that is already gone is not an error.
pub fn signal_process(pid: u32, signal: Signal) {
    let _ = kill(as_pid(pid), signal);
}

/// Sends `signal` to every process of the group led by `leader`; a group that is already gone is not an error.
pub fn signal_group(leader: u32, signal: Signal) {
    let _ = killpg(as_pid(leader), signal);
}

fn as_pid(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX))
}

/// A child running in its own process group, so that one signal reaches it and everything it started (cargo and
/// the binary it builds, a server and its workers), and a terminal's Ctrl-C reaches only the xtask, which then stops
/// its children in the right order. Stopped when dropped.
pub struct GroupChild {
    name: String,
    child: Child,
    stopped: bool,
}

impl GroupChild {
    /// Starts `command` in a new process group with no standard input (a background group must not read the terminal).
    pub fn spawn(name: &str, command: &mut Command) -> Result<Self> {
        command.process_group(0).stdin(Stdio::null());
        let child = command.spawn().with_context(|| format!("could not start {name}: `{}`", display(command)))?;
        Ok(Self { name: name.to_string(), child, stopped: false })
    }

    /// The exit status if the child has exited, without waiting.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child.try_wait().map_err(|error| anyhow!("could not check on {}: {error}", self.name))
    }

    /// SIGTERM to the whole group, SIGKILL after `grace`, then reaps the child. Idempotent.
    pub fn stop(&mut self, grace: Duration) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let group = self.child.id();
        let already_exited = matches!(self.child.try_wait(), Ok(Some(_)));
        // Even when the leader is gone, stragglers in its group get the signal.
        signal_group(group, Signal::SIGTERM);
        if !already_exited && !wait_regardless(grace, || matches!(self.child.try_wait(), Ok(Some(_)) | Err(_))) {
            eprintln!("  {} did not stop within {}s; killing it", self.name, grace.as_secs());
            signal_group(group, Signal::SIGKILL);
            let _ = self.child.wait();
        }
        println!("  stopped {}", self.name);
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}
