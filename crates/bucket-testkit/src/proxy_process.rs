//! What the nginx and Caddy launchers share: finding the binary (or failing with how to install it), a private
//! directory, and a child process that is killed, and its directory removed, when the test ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary `name`, from `PATH` or the system directories a non-root `PATH` often lacks (`/usr/sbin/nginx`).
///
/// Panics when it is missing: `cargo xtask test` installs nginx and caddy, so a missing one is a broken setup,
/// never a reason to skip.
pub fn find_binary(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed, and this test needs the real one. `cargo xtask test` installs it; \
                 by hand: apt-get install -y --no-install-recommends {package}"
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// A directory of this process's own under the system temp dir, removed by [`ProxyProcess`]'s `Drop`.
pub fn private_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bucket-{what}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("create a private directory");
    dir
}

/// A proxy server started for one test.
pub struct ProxyProcess {
    name: &'static str,
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    /// The file that says why it failed to start (its error log or captured stderr).
    log: PathBuf,
}

impl ProxyProcess {
    /// Spawns `command` (stdout and stderr to `dir/<name>.out`) and waits until `port` accepts connections; panics
    /// with the log when the process exits or the port stays closed.
    pub fn spawn(name: &'static str, mut command: Command, dir: PathBuf, port: u16, log: PathBuf) -> Self {
        let out = std::fs::File::create(dir.join(format!("{name}.out"))).expect("create the output file");
        let err = out.try_clone().expect("clone the output file");
        let child = command.stdin(Stdio::null()).stdout(out).stderr(err).spawn().unwrap_or_else(|e| {
            panic!("cannot start {name}: {e}");
        });
        let mut process = Self { name, child: Some(child), dir, port, log };
        process.wait_listening();
        process
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            let exited = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!("{} exited with {status} before listening on {}:\n{}", self.name, self.port, self.logs());
            }
            if Instant::now() > deadline {
                panic!("{} did not listen on {} within 20 s:\n{}", self.name, self.port, self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The proxy's own logs so far, for an assertion message.
    pub fn logs(&self) -> String {
        let out = std::fs::read_to_string(self.dir.join(format!("{}.out", self.name))).unwrap_or_default();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("{out}{log}")
    }

    /// The private directory (configuration, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
