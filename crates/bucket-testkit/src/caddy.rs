//! A real Caddy for tests, on a port of the test's choosing: admin API and automatic HTTPS off, and `HOME` and the
//! XDG directories inside a private directory, so it writes nothing outside it and needs no privileges.

use std::process::Command;

use crate::proxy_process::{find_binary, private_dir, ProxyProcess};

/// A Caddy serving one Caddyfile; killed and its directory removed when dropped.
pub struct Caddy {
    process: ProxyProcess,
}

impl Caddy {
    /// Starts Caddy with `caddyfile` (snippets and sites, no global options block: the launcher writes that), one
    /// site listening on `port`, and waits until it listens. Panics with Caddy's output when it cannot start.
    pub fn start(caddyfile: &str, port: u16) -> Self {
        let binary = find_binary("caddy", "caddy");
        let dir = private_dir("caddy");
        let global = "{\n\tadmin off\n\tauto_https off\n}\n\n";
        let file = dir.join("Caddyfile");
        std::fs::write(&file, format!("{global}{caddyfile}")).expect("write the Caddyfile");
        let mut command = Command::new(binary);
        command
            .arg("run")
            .arg("--config")
            .arg(&file)
            .args(["--adapter", "caddyfile"])
            .env("HOME", &dir)
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config"));
        let log = dir.join("caddy.out");
        Self { process: ProxyProcess::spawn("caddy", command, dir, port, log) }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.process.port())
    }

    /// Caddy's output so far (its error lines say why a request failed).
    pub fn logs(&self) -> String {
        self.process.logs()
    }
}
