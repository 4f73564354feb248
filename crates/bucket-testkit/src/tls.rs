//! TLS servers for tests: a throw-away CA with a certificate for `127.0.0.1`, and a private PostgreSQL
//! and `redis-server` that present it, each on a free port in a directory of its own, stopped and removed on drop.
//!
//! PostgreSQL refuses to run as root, so as root its programs run as the `postgres` user (`runuser`), which must
//! then own the data directory and the key file.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

use crate::free_port;

/// A CA and a server certificate it signed for `127.0.0.1` (not `localhost`), as PEM files in a fresh directory.
pub struct TestCa {
    dir: PathBuf,
}

impl TestCa {
    /// A new CA, unrelated to any other (so a second one is a "wrong CA").
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("bucket-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create the certificate directory");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        // A name of its own: two test CAs must not look like one to a verifier that finds issuers by name.
        ca.distinguished_name.push(DnType::CommonName, format!("bucket test CA {}", uuid::Uuid::new_v4()));
        let ca_cert = ca.self_signed(&ca_key).expect("self-sign the CA");
        let key = KeyPair::generate().expect("server key");
        // Only the address (rcgen makes it an IP SAN): `localhost` reaches the same server under a name the
        // certificate does not hold, which is how tests show the name is checked.
        let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        server.distinguished_name.push(DnType::CommonName, "127.0.0.1");
        let cert = server.signed_by(&key, &ca_cert, &ca_key).expect("sign the server certificate");
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write ca.pem");
        std::fs::write(dir.join("server.crt"), cert.pem()).expect("write server.crt");
        std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("write server.key");
        Self { dir }
    }

    /// The CA certificate a client should trust (`tls_ca_file`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server's certificate (PEM).
    pub fn cert_file(&self) -> PathBuf {
        self.dir.join("server.crt")
    }

    /// The server's private key (PEM).
    pub fn key_file(&self) -> PathBuf {
        self.dir.join("server.key")
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `redis-server` that speaks only TLS (`--port 0`), with the CA's server certificate, killed when dropped.
pub struct TlsRedis {
    port: u16,
    child: Child,
}

impl TlsRedis {
    /// Starts one on a free port and waits until it accepts TCP connections.
    pub fn start(ca: &TestCa) -> Self {
        let port = free_port();
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        let child = Command::new(crate::redis_server::redis_server_binary())
            .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--tls-auth-clients", "no"])
            .args(["--tls-cert-file", &path(ca.cert_file()), "--tls-key-file", &path(ca.key_file())])
            .args(["--tls-ca-cert-file", &path(ca.ca_file())])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start redis-server (Debian: apt-get install redis-server)");
        let mut server = Self { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                let output = server.child.stdout.take().map(std::io::read_to_string);
                panic!("redis-server with TLS exited ({status}); does this build support TLS? {output:?}");
            }
            assert!(Instant::now() < deadline, "redis-server with TLS on port {port} did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }

    /// `rediss://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// The same port as `redis://`: what a client that forgot TLS would use.
    pub fn plain_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PostgreSQL cluster of this test's own (trust auth, superuser `postgres`, database `postgres`), with `ssl=on`
/// and the CA's server certificate when given one; stopped and deleted when dropped.
pub struct PrivatePostgres {
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    /// initdb and start, waiting until it accepts connections (`pg_ctl -w`); about a second.
    pub fn start(tls: Option<&TestCa>) -> Self {
        let dir = std::env::temp_dir().join(format!("bucket-pg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create the cluster directory");
        let as_postgres = is_root();
        let server = Self { dir, port: free_port(), as_postgres };
        if as_postgres {
            server.give_to_postgres(&server.dir);
        }
        let data = server.dir.join("data");
        let mut initdb = server.command("initdb");
        initdb.arg("-D").arg(&data).args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"]);
        run(&mut initdb, "initdb");
        let mut options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c fsync=off -c max_connections=40",
            server.port
        );
        if let Some(ca) = tls {
            // The server wants its key readable by itself only.
            for (from, to) in [(ca.cert_file(), "server.crt"), (ca.key_file(), "server.key")] {
                let target = server.dir.join(to);
                std::fs::copy(from, &target).expect("copy the server certificate");
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).expect("chmod the key");
                if as_postgres {
                    server.give_to_postgres(&target);
                }
            }
            let file = |name: &str| server.dir.join(name).to_string_lossy().into_owned();
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                file("server.crt"),
                file("server.key")
            ));
        } else {
            options.push_str(" -c ssl=off");
        }
        let mut start = server.command("pg_ctl");
        start.arg("-D").arg(&data).args(["-w", "-t", "30", "-o", &options, "-l"]).arg(server.dir.join("log"));
        start.arg("start");
        run(&mut start, "pg_ctl start");
        server
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`, with no `sslmode`: tests add their own.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn command(&self, program: &str) -> Command {
        let program = pg_tool(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.current_dir(&self.dir);
        command
    }

    fn give_to_postgres(&self, path: &Path) {
        let status = Command::new("chown").arg("postgres:postgres").arg(path).status().expect("run chown");
        assert!(status.success(), "chown postgres {}", path.display());
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D").arg(self.dir.join("data")).args(["-m", "immediate", "-w", "stop"]);
        let _ = stop.stdout(Stdio::null()).stderr(Stdio::null()).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A PostgreSQL server program: on `PATH`, else in the newest `/usr/lib/postgresql/<version>/bin` (Debian).
fn pg_tool(name: &str) -> PathBuf {
    let on_path = Command::new("sh").args(["-c", &format!("command -v {name}")]).output();
    if let Ok(out) = on_path {
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && !path.is_empty() {
            return PathBuf::from(path);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin").join(name))))
        .filter(|(_, p)| p.exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p).unwrap_or_else(|| panic!("{name} not found: install the PostgreSQL server"))
}

fn run(command: &mut Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
