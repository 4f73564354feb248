//! The proxy configurations users paste from `deploy/proxies/`, with their example addresses replaced by a test's,
//! so the tests prove the very files the README shows.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Where a test's pieces listen.
#[derive(Debug, Clone, Copy)]
pub struct SnippetAddrs {
    /// bucket-api (the snippets say `127.0.0.1:8080`).
    pub bucket: SocketAddr,
    /// The application (the snippets say `127.0.0.1:3000`).
    pub app: SocketAddr,
    /// Where the proxy listens (the snippets say port 8000).
    pub listen_port: u16,
}

/// `deploy/proxies/<name>` of this repository.
pub fn snippet_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/proxies").join(name)
}

/// The text of `deploy/proxies/<name>`.
pub fn snippet(name: &str) -> String {
    let path = snippet_path(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `deploy/proxies/nginx.conf` for `addrs`.
pub fn nginx_site(addrs: SnippetAddrs) -> String {
    rewrite("nginx.conf", &[("listen 8000;", format!("listen 127.0.0.1:{};", addrs.listen_port))], addrs)
}

/// `deploy/proxies/Caddyfile` for `addrs`.
pub fn caddy_site(addrs: SnippetAddrs) -> String {
    rewrite("Caddyfile", &[("\n:8000 {", format!("\nhttp://127.0.0.1:{} {{", addrs.listen_port))], addrs)
}

/// Replaces each example address, failing when one is not in the file: a snippet edited away from the addresses
/// the tests know must fail here, not test something else.
fn rewrite(name: &str, listen: &[(&str, String)], addrs: SnippetAddrs) -> String {
    let mut text = snippet(name);
    let replacements = listen
        .iter()
        .cloned()
        .chain([("127.0.0.1:8080", addrs.bucket.to_string()), ("127.0.0.1:3000", addrs.app.to_string())]);
    for (from, to) in replacements {
        assert!(text.contains(from), "deploy/proxies/{name} no longer contains {from:?}: update the test kit");
        text = text.replace(from, &to);
    }
    text
}
