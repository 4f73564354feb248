//! A real nginx for tests, on a port of the test's choosing, unprivileged-friendly: its own prefix directory for
//! configuration, pid, logs and temp files, one process (`master_process off`) so killing it leaves nothing behind.

use std::process::Command;

use crate::proxy_process::{find_binary, private_dir, ProxyProcess};

/// An nginx serving one site; killed and its directory removed when dropped.
pub struct Nginx {
    process: ProxyProcess,
}

impl Nginx {
    /// Starts nginx with `http_config` (what goes inside `http { }`: upstreams and servers, one of which listens
    /// on `port`) and waits until it listens. Panics with nginx's error log when it cannot start.
    pub fn start(http_config: &str, port: u16) -> Self {
        let binary = find_binary("nginx", "nginx");
        let dir = private_dir("nginx");
        let d = dir.display();
        std::fs::write(dir.join("site.conf"), http_config).expect("write site.conf");
        let main = format!(
            "error_log {d}/error.log warn;\n\
             pid {d}/nginx.pid;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
             \x20   access_log off;\n\
             \x20   client_body_temp_path {d}/client_body;\n\
             \x20   proxy_temp_path {d}/proxy;\n\
             \x20   fastcgi_temp_path {d}/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/uwsgi;\n\
             \x20   scgi_temp_path {d}/scgi;\n\
             \x20   include {d}/site.conf;\n\
             }}\n"
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, main).expect("write nginx.conf");
        let mut command = Command::new(binary);
        command
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .args(["-g", "daemon off; master_process off;"]);
        let log = dir.join("error.log");
        Self { process: ProxyProcess::spawn("nginx", command, dir, port, log) }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.process.port())
    }

    /// nginx's error log so far (why a request failed).
    pub fn logs(&self) -> String {
        self.process.logs()
    }
}
