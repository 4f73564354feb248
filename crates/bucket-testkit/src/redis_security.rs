//! A password and TLS for the kit's clusters and sentinel groups, so tests prove the store's `redis://:pass@` and
//! `rediss://` URLs against real replicated Redis: the servers' arguments, the URLs a store is given, and the
//! kit's own connections for inspecting them.

use std::path::PathBuf;

use deadpool_redis::redis::{self, TlsCertificates};

use crate::private_redis::RedisTls;

/// How the servers of a test cluster or sentinel group are secured; the default is neither password nor TLS.
#[derive(Debug, Clone, Default)]
pub struct RedisSecurity {
    /// `requirepass` of every server and sentinel, and `masterauth` of replicas (one password for the group).
    pub password: Option<String>,
    /// TLS only, replication and the cluster bus included, with these PEM files (a [`crate::tls::TestCa`]'s).
    pub tls: Option<RedisTls>,
}

impl RedisSecurity {
    /// Only a password.
    pub fn password(password: &str) -> Self {
        Self { password: Some(password.to_owned()), tls: None }
    }

    /// `redis-server` arguments beyond the launcher's own (which turn TLS on for clients).
    pub(crate) fn server_args(&self, cluster: bool) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(password) = &self.password {
            args.extend(["--requirepass", password, "--masterauth", password].map(String::from));
        }
        if self.tls.is_some() {
            args.extend(["--tls-replication", "yes"].map(String::from));
            if cluster {
                args.extend(["--tls-cluster", "yes"].map(String::from));
            }
        }
        args
    }

    /// `redis-cli` options to reach such a server.
    pub(crate) fn cli_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(password) = &self.password {
            args.extend(["-a", password, "--no-auth-warning"].map(String::from));
        }
        if let Some(tls) = &self.tls {
            args.extend(["--tls".to_owned(), "--cacert".to_owned(), tls.ca.display().to_string()]);
        }
        args
    }

    /// `redis[s]://[:password@]127.0.0.1:<port>`: what a store (or the kit) is given.
    pub fn url(&self, port: u16) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        match &self.password {
            Some(password) => format!("{scheme}://:{password}@127.0.0.1:{port}"),
            None => format!("{scheme}://127.0.0.1:{port}"),
        }
    }

    /// The CA file a `rediss://` client must trust (`tls_ca_file`), with TLS.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|tls| tls.ca.clone())
    }

    /// A client for the server at `port`, trusting the test CA with TLS.
    pub fn client(&self, port: u16) -> redis::RedisResult<redis::Client> {
        match &self.tls {
            None => redis::Client::open(self.url(port)),
            Some(tls) => {
                // The redis crate's rustls needs a process-wide provider; another one installed first is as good.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let root = std::fs::read(&tls.ca)?;
                redis::Client::build_with_tls(
                    self.url(port),
                    TlsCertificates { client_tls: None, root_cert: Some(root) },
                )
            }
        }
    }

    /// A plain connection to the server at `port`.
    pub fn connection(&self, port: u16) -> redis::RedisResult<redis::Connection> {
        self.client(port)?.get_connection()
    }
}
