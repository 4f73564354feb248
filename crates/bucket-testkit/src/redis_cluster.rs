//! A real Redis Cluster of this machine's `redis-server`s on loopback: 3 masters and 3 replicas for the tests that
//! prove the store in cluster mode, started once per test binary ([`RedisCluster::shared`]) or per test
//! ([`RedisCluster::start`]) for a test that kills nodes; or any [`ClusterShape`] ([`RedisCluster::start_shaped`]),
//! such as the bench's 1 and 3 masters without replicas.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use deadpool_redis::redis;

use crate::ports::free_cluster_port;
use crate::private_redis::{PrivateRedis, RedisOptions};
use crate::process;
use crate::redis_security::RedisSecurity;

/// How long the cluster may take to agree on its slots after `redis-cli --cluster create` (about 2 s here).
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// The node timeout: a master unreachable this long is failed over to its replica.
pub const NODE_TIMEOUT: Duration = Duration::from_millis(2_000);

/// How many masters a [`RedisCluster`] has, and how many replicas each master has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterShape {
    /// Masters, which share the 16,384 hash slots evenly (at least 1).
    pub masters: usize,
    /// Replicas of each master (0: nothing to fail over to, every node serves).
    pub replicas_per_master: usize,
}

impl ClusterShape {
    /// `masters` masters and no replica: every node serves, so a bench measures the masters alone.
    pub fn masters_only(masters: usize) -> Self {
        Self { masters, replicas_per_master: 0 }
    }

    /// Every node of the cluster: the masters, then each master's replicas.
    pub fn nodes(&self) -> usize {
        self.masters * (1 + self.replicas_per_master)
    }
}

/// 3 masters with 1 replica each: the smallest cluster `redis-cli --cluster create` accepts that can fail over.
impl Default for ClusterShape {
    fn default() -> Self {
        Self { masters: 3, replicas_per_master: 1 }
    }
}

/// `redis-server --cluster-enabled yes` nodes formed into one cluster (by default 3 masters, 1 replica each).
pub struct RedisCluster {
    nodes: Vec<Mutex<PrivateRedis>>,
    security: RedisSecurity,
    shape: ClusterShape,
}

impl RedisCluster {
    /// The cluster every test of this test binary shares, started on first use and killed when the process ends.
    pub fn shared() -> &'static RedisCluster {
        static SHARED: OnceLock<RedisCluster> = OnceLock::new();
        SHARED.get_or_init(|| Self::launch(true, ClusterShape::default(), RedisSecurity::default()))
    }

    /// A cluster of the caller's own, killed when dropped: for a test that kills or reshards.
    pub fn start() -> Self {
        Self::launch(false, ClusterShape::default(), RedisSecurity::default())
    }

    /// A cluster of the caller's own behind a password and/or TLS (replication and the cluster bus included).
    pub fn start_with(security: RedisSecurity) -> Self {
        Self::launch(false, ClusterShape::default(), security)
    }

    /// A cluster of the caller's own with `shape`'s masters and replicas, killed when dropped. `redis-cli
    /// --cluster create` refuses fewer than 3 masters, so a smaller cluster is formed by hand
    /// (`CLUSTER MEET`, `ADDSLOTSRANGE`, `REPLICATE`).
    pub fn start_shaped(shape: ClusterShape) -> Self {
        assert!(shape.masters >= 1, "a cluster needs at least one master");
        Self::launch(false, shape, RedisSecurity::default())
    }

    /// The masters and replicas it was started with.
    pub fn shape(&self) -> ClusterShape {
        self.shape
    }

    fn launch(tied_to_process: bool, shape: ClusterShape, security: RedisSecurity) -> Self {
        let nodes: Vec<PrivateRedis> = (0..shape.nodes())
            .map(|_| {
                let options = RedisOptions {
                    port: free_cluster_port(),
                    tied_to_process,
                    // No delay before a replica's first sync: a replica that never synced cannot be promoted.
                    args: [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-node-timeout",
                        "2000",
                        "--repl-diskless-sync-delay",
                        "0",
                    ]
                    .map(String::from)
                    .into_iter()
                    .chain(security.server_args(true))
                    .collect(),
                    tls: security.tls.clone(),
                    ..RedisOptions::default()
                };
                PrivateRedis::launch(options).unwrap_or_else(|e| panic!("cluster node: {e}"))
            })
            .collect();
        if shape.masters >= 3 {
            // redis-cli makes the first `masters` nodes masters and gives each the same number of replicas.
            let program = process::program("redis-cli", "redis-server").unwrap_or_else(|e| panic!("{e}"));
            let mut create = Command::new(program);
            create.args(security.cli_args()).args(["--cluster", "create"]).args(nodes.iter().map(PrivateRedis::addr));
            create.args(["--cluster-replicas", &shape.replicas_per_master.to_string(), "--cluster-yes"]);
            process::run(&mut create).unwrap_or_else(|e| panic!("redis-cli --cluster create: {e}"));
        }
        let cluster = Self { nodes: nodes.into_iter().map(Mutex::new).collect(), security, shape };
        if shape.masters < 3 {
            cluster.form_by_hand(FORM_TIMEOUT);
        }
        cluster.wait_until_ok(FORM_TIMEOUT);
        cluster.wait_until_replicated(FORM_TIMEOUT);
        cluster
    }

    /// Waits until every replica has completed its sync with its master (`master_link_status:up`), so that any
    /// master can be failed over.
    pub fn wait_until_replicated(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let ports: Vec<u16> = (0..self.nodes.len()).map(|i| self.node(i).port()).collect();
            let synced = ports.iter().all(|&port| {
                let info: String = self.query(port, redis::cmd("INFO").arg("replication")).unwrap_or_default();
                info.contains("role:master") || info.contains("master_link_status:up")
            });
            if synced {
                return;
            }
            assert!(Instant::now() < deadline, "the replicas did not sync in {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Seed URLs of every node, comma-separated: what `REDIS_URL` holds in cluster mode.
    pub fn url(&self) -> String {
        self.urls().join(",")
    }

    /// One URL per node (`rediss://` with TLS, with the password if there is one).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|node| self.security.url(lock(node).port())).collect()
    }

    /// How the nodes are secured: the CA file a `rediss://` store must trust, a client for one node.
    pub fn security(&self) -> &RedisSecurity {
        &self.security
    }

    /// Node `i` (0..6 by default), to kill, freeze or restart it.
    pub fn node(&self, i: usize) -> MutexGuard<'_, PrivateRedis> {
        lock(&self.nodes[i])
    }

    /// Ports of the nodes that are masters now, as the first live node reports them (`CLUSTER NODES`).
    pub fn master_ports(&self) -> Vec<u16> {
        live_masters(&self.cluster_nodes())
    }

    /// The index of the node with this port.
    pub fn index_of(&self, port: u16) -> usize {
        (0..self.nodes.len()).find(|&i| self.node(i).port() == port).expect("a node of this cluster")
    }

    /// Runs `command` on the node at `port` (e.g. `INFO commandstats` to count what each master served).
    pub fn query<T: redis::FromRedisValue>(&self, port: u16, command: &redis::Cmd) -> redis::RedisResult<T> {
        command.query(&mut self.security.connection(port)?)
    }

    /// Commands each master executed (`INFO stats`, `total_commands_processed`), by port.
    pub fn commands_per_master(&self) -> HashMap<u16, u64> {
        self.master_ports()
            .into_iter()
            .map(|port| {
                let info: String = self.query(port, redis::cmd("INFO").arg("stats")).expect("INFO stats");
                let total = info
                    .lines()
                    .find_map(|line| line.strip_prefix("total_commands_processed:"))
                    .and_then(|n| n.trim().parse().ok())
                    .expect("total_commands_processed in INFO stats");
                (port, total)
            })
            .collect()
    }

    /// Error replies every running node has sent, by kind (`INFO errorstats`: `MOVED`, `ASK`, `TRYAGAIN`, …),
    /// summed over the nodes: how often clients were redirected or told to retry.
    pub fn error_replies(&self) -> HashMap<String, u64> {
        let mut total: HashMap<String, u64> = HashMap::new();
        for i in 0..self.nodes.len() {
            let port = {
                let mut node = self.node(i);
                if !node.is_running() {
                    continue;
                }
                node.port()
            };
            let info: String = self.query(port, redis::cmd("INFO").arg("errorstats")).unwrap_or_default();
            for line in info.lines() {
                // errorstat_MOVED:count=12
                let Some((kind, count)) = line.strip_prefix("errorstat_").and_then(|l| l.split_once(":count=")) else {
                    continue;
                };
                *total.entry(kind.to_owned()).or_default() += count.trim().parse::<u64>().unwrap_or(0);
            }
        }
        total
    }

    /// Waits until every running node says `cluster_state:ok` and sees the same live masters, as many as the shape
    /// has (a node of a cluster just formed may still list a replica as a master for a moment); panics after
    /// `timeout`.
    pub fn wait_until_ok(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let ports: Vec<u16> = (0..self.nodes.len())
                .filter_map(|i| {
                    let mut node = self.node(i);
                    node.is_running().then(|| node.port())
                })
                .collect();
            let ok = ports.iter().all(|&port| {
                let state = self.query::<String>(port, &redis::cmd("CLUSTER").arg("INFO").to_owned());
                let nodes = self.query::<String>(port, &redis::cmd("CLUSTER").arg("NODES").to_owned());
                state.is_ok_and(|info| info.contains("cluster_state:ok"))
                    && nodes.is_ok_and(|nodes| live_masters(&nodes).len() == self.shape.masters)
            });
            if ok && self.master_ports().len() == self.shape.masters {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster is not ok after {timeout:?}:\n{}", self.cluster_nodes());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `CLUSTER NODES` as the first node that answers sees it.
    pub fn cluster_nodes(&self) -> String {
        (0..self.nodes.len())
            .find_map(|i| {
                let port = self.node(i).port();
                self.query::<String>(port, &redis::cmd("CLUSTER").arg("NODES").to_owned()).ok()
            })
            .unwrap_or_default()
    }

    /// SIGKILLs the master serving `key`'s slot, so that its replica takes over after [`NODE_TIMEOUT`]; returns
    /// the killed node's index (restart it with [`RedisCluster::node`]).
    pub fn kill_master_of(&self, key: &str) -> usize {
        let port = self.master_port_of(key);
        let index = self.index_of(port);
        self.node(index).kill();
        index
    }

    /// Waits until a node other than `old` serves `key`'s slot as master (the replica took over) and the cluster
    /// is ok again; returns the new master's port.
    pub fn wait_for_failover(&self, key: &str, old: u16, timeout: Duration) -> u16 {
        let deadline = Instant::now() + timeout;
        loop {
            let port = self.master_port_of(key);
            if port != old {
                self.wait_until_ok(deadline.saturating_duration_since(Instant::now()));
                return port;
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = (0..self.nodes.len())
                    .map(|i| {
                        let node = self.node(i);
                        process::log_tail(&node.dir().join(format!("redis-{}.log", node.port())), 8)
                    })
                    .collect();
                panic!("no failover of {key}'s slot after {timeout:?}:\n{}\n{}", self.cluster_nodes(), logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs the masters on `ports` and all their replicas, so that no replica can take over their slots: the
    /// cluster loses coverage (and, with 2 of 3 masters gone, its quorum), and the surviving nodes answer
    /// `CLUSTERDOWN` once they notice. Returns the killed nodes' indices, for [`RedisCluster::restart_nodes`].
    pub fn kill_shards(&self, ports: &[u16]) -> Vec<usize> {
        let mut doomed: Vec<u16> = ports.to_vec();
        for &port in ports {
            doomed.extend(self.replica_ports_of(port));
        }
        let indices: Vec<usize> = doomed.iter().map(|&port| self.index_of(port)).collect();
        for &i in &indices {
            self.node(i).kill();
        }
        indices
    }

    /// Starts the nodes at `indices` again on their ports, with their directories and so their `nodes.conf`
    /// (`cluster-config-file`): each rejoins with its identity, role and slots, without its data (no persistence).
    pub fn restart_nodes(&self, indices: &[usize]) {
        for &i in indices {
            self.node(i).restart();
        }
    }

    /// `cluster_state` (`ok` or `fail`) as the node on `port` reports it in `CLUSTER INFO`; `None` when it does
    /// not answer.
    pub fn state_at(&self, port: u16) -> Option<String> {
        let info: String = self.query(port, &redis::cmd("CLUSTER").arg("INFO").to_owned()).ok()?;
        info.lines().find_map(|line| line.strip_prefix("cluster_state:")).map(|state| state.trim().to_owned())
    }

    /// Waits until the node on `port` reports `cluster_state:<state>`; panics after `timeout`.
    pub fn wait_for_state(&self, port: u16, state: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.state_at(port).as_deref() != Some(state) {
            assert!(
                Instant::now() < deadline,
                "node {port} is not `{state}` after {timeout:?}:\n{}",
                self.cluster_nodes()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `command`'s answer from the first running node that gives one.
    fn ask_any<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> T {
        (0..self.nodes.len())
            .find_map(|i| {
                let port = {
                    let mut node = self.node(i);
                    if !node.is_running() {
                        return None;
                    }
                    node.port()
                };
                self.query(port, command).ok()
            })
            .expect("a running node answers")
    }

    /// The port of the master serving `key`'s slot now, as the first running node sees it.
    pub fn master_port_of(&self, key: &str) -> u16 {
        let slot: u16 = self.ask_any(redis::cmd("CLUSTER").arg("KEYSLOT").arg(key));
        let slots: Vec<redis::Value> = self.ask_any(&redis::cmd("CLUSTER").arg("SLOTS").to_owned());
        for range in slots {
            let redis::Value::Array(fields) = range else { continue };
            let number = |v: &redis::Value| match v {
                redis::Value::Int(n) => *n,
                _ => -1,
            };
            let (start, end) = (number(&fields[0]), number(&fields[1]));
            if (start..=end).contains(&i64::from(slot)) {
                if let redis::Value::Array(master) = &fields[2] {
                    return u16::try_from(number(&master[1])).expect("a port");
                }
            }
        }
        panic!("no master serves slot {slot}");
    }
}

fn lock(node: &Mutex<PrivateRedis>) -> MutexGuard<'_, PrivateRedis> {
    node.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Ports of the masters a `CLUSTER NODES` reply lists as not failed, sorted.
fn live_masters(cluster_nodes: &str) -> Vec<u16> {
    let mut masters: Vec<u16> = cluster_nodes
        .lines()
        .filter(|line| {
            let flags = line.split(' ').nth(2).unwrap_or("");
            flags.contains("master") && !flags.contains("fail")
        })
        .filter_map(|line| line.split(' ').nth(1)?.split(['@', ':']).nth(1)?.parse().ok())
        .collect();
    masters.sort_unstable();
    masters
}
