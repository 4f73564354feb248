//! Free TCP ports for servers a test starts itself.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// A loopback port nothing listens on (just released by the OS; another process could take it, which only makes
/// the caller's bind fail loudly).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind an ephemeral port").port()
}

/// Lowest port [`free_cluster_port`] hands out; it hands out ports below `CLUSTER_PORTS + 10_000`, so their bus
/// ports (`+ 10_000`) are never another node's client port.
const CLUSTER_PORTS: u16 = 20_000;

/// A loopback port `P` for a Redis Cluster node: `P` and its cluster-bus port `P + 10_000` are both free now, and
/// neither was handed out before by this process. An ephemeral port from the OS is usually above 55535, where the
/// bus port cannot exist, so candidates come from 20000..30000, starting at a place that depends on the process.
pub fn free_cluster_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let given = given.get_or_insert_with(HashSet::new);
    let start = (std::process::id() as u64).wrapping_mul(7_919) ^ u64::from(free_port());
    for i in 0..10_000u64 {
        let port = CLUSTER_PORTS + ((start + i * 97) % 10_000) as u16;
        if given.contains(&port) {
            continue;
        }
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            given.insert(port);
            return port;
        }
    }
    panic!("no port P in 20000..30000 with P and P + 10000 free");
}
