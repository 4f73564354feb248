//! Free TCP ports for servers a test starts itself.

use std::net::TcpListener;

/// A loopback port nothing listens on (just released by the OS; another process could take it, which only makes
/// the caller's bind fail loudly).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind an ephemeral port").port()
}
