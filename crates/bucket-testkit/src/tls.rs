//! TLS servers for tests: a throw-away CA with a certificate for `127.0.0.1`, and a private PostgreSQL
//! and `redis-server` that present it, each on a free port in a directory of its own, stopped and removed on drop.
//!
//! The servers are the kit's launchers ([`crate::private_postgres`], [`crate::private_redis`]) with TLS settings.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

use crate::private_postgres::PostgresOptions;
pub use crate::private_postgres::PrivatePostgres;
use crate::private_redis::{PrivateRedis, RedisOptions, RedisTls};

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
    server: PrivateRedis,
}

impl TlsRedis {
    /// Starts one on a free port and waits until it accepts TCP connections.
    pub fn start(ca: &TestCa) -> Self {
        let tls = RedisTls { cert: ca.cert_file(), key: ca.key_file(), ca: ca.ca_file() };
        let server = PrivateRedis::launch(RedisOptions { tls: Some(tls), ..RedisOptions::default() })
            .unwrap_or_else(|e| panic!("redis-server with TLS (does this build support TLS?): {e}"));
        Self { server }
    }

    /// `rediss://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The same port as `redis://`: what a client that forgot TLS would use.
    pub fn plain_url(&self) -> String {
        format!("redis://{}", self.server.addr())
    }
}

impl PrivatePostgres {
    /// A cluster of this test's own (trust auth, superuser `postgres`), with `ssl=on` and the CA's server
    /// certificate when given one; [`PrivatePostgres::url`] has no `sslmode`: tests add their own.
    pub fn start(tls: Option<&TestCa>) -> Self {
        let mut options = PostgresOptions::default();
        match tls {
            Some(ca) => {
                options.data_files =
                    vec![(ca.cert_file(), "server.crt".to_string()), (ca.key_file(), "server.key".to_string())];
                options.settings =
                    ["ssl=on", "ssl_cert_file=server.crt", "ssl_key_file=server.key"].map(String::from).to_vec();
            }
            None => options.settings = vec!["ssl=off".to_string()],
        }
        Self::launch(options).unwrap_or_else(|e| panic!("{e}"))
    }
}
