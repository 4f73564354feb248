//! Which server of a Redis Cluster or a Sentinel group is down, not only that Redis is: the per-node detail of
//! `/readyz` and the `node`/`role` series of `bucket_dependency_up`.
//!
//! Cost is bounded: one probe reads the topology (`CLUSTER NODES` and `CLUSTER INFO` asked of every known master
//! at once, the first answer taken; `SENTINEL GET-MASTER-ADDR-BY-NAME` from each sentinel, `SENTINEL REPLICAS`
//! from one), then pings every node at once, each within the command timeout and all within the probe deadline.
//! A scrape therefore waits about one round trip, or one timeout when a node hangs, never one per node. Cluster
//! nodes are asked over the probe's own connections ([`DirectNodes`]), not redis-rs's, whose slot refresh stalls
//! every call while one node hangs. Each sentinel is asked over a connection opened for the probe (a group has a
//! handful, and a sentinel that stopped answering must not be trusted from an old connection); the replicas of a
//! Sentinel group are reported as the sentinels see them, without a connection of ours. A one-server Redis is not
//! probed node by node at all.

use std::collections::HashMap;

use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{self, Client, FromRedisValue, RedisError};
use futures::future::join_all;
use tokio::time::{timeout, timeout_at, Instant};

use super::RedisStore;
use crate::{NodeHealth, NodeRole};

/// What a health check probes besides the shared connections.
pub(super) enum Probes {
    /// One server: the pool's `PING` says it all.
    Single,
    /// Every node of the cluster, found through any of them.
    Cluster(DirectNodes),
    /// The sentinels at the configured URLs, and the master and replicas they name for `master`.
    Sentinel {
        /// The master set name.
        master: String,
        /// `host:port` and a client (the configured credentials and TLS) of each sentinel.
        sentinels: Vec<(String, Client)>,
    },
}

/// The health probe's own connections to cluster nodes, one per node, opened with the seed URL's credentials and
/// TLS and kept while they answer. Not redis-rs's: its cluster connection refreshes the slot map when a node stops
/// answering, and every call waits meanwhile, so a probe through it would report the whole cluster down because
/// one node hangs.
pub(super) struct DirectNodes {
    /// The first seed URL: its scheme, user and password apply to every node.
    seed: String,
    /// Where to ask for the topology before the first probe has listed the nodes.
    seeds: Vec<(String, u16)>,
    roots: Option<Vec<u8>>,
    open: std::sync::Mutex<HashMap<(String, u16), MultiplexedConnection>>,
}

impl DirectNodes {
    /// For the nodes of the cluster whose seed nodes are `urls`, trusting `roots` for `rediss://`.
    pub(super) fn new(urls: &[&str], roots: Option<Vec<u8>>) -> Self {
        let seeds = urls
            .iter()
            .filter_map(|url| {
                let url = url::Url::parse(url).ok()?;
                Some((
                    url.host_str()?.trim_start_matches('[').trim_end_matches(']').to_owned(),
                    url.port().unwrap_or(6379),
                ))
            })
            .collect();
        let seed = urls.first().copied().unwrap_or_default().to_owned();
        Self { seed, seeds, roots, open: std::sync::Mutex::default() }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u16), MultiplexedConnection>> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `pipe` over this probe's own connection to `host:port`, opened if need be; a connection that failed is
    /// dropped, so the next probe opens a new one.
    async fn query<T: FromRedisValue>(&self, host: &str, port: u16, pipe: &redis::Pipeline) -> Result<T, RedisError> {
        let key = (host.to_owned(), port);
        let cached = self.open().get(&key).cloned();
        let mut conn = match cached {
            Some(conn) => conn,
            None => {
                let conn = self.client(host, port)?.get_multiplexed_async_connection().await?;
                self.open().insert(key.clone(), conn.clone());
                conn
            }
        };
        let answer = pipe.query_async::<T>(&mut conn).await;
        if answer.is_err() {
            self.open().remove(&key);
        }
        answer
    }

    fn client(&self, host: &str, port: u16) -> Result<Client, RedisError> {
        let invalid =
            |what: &str| RedisError::from(std::io::Error::other(format!("cannot address {host}:{port}: {what}")));
        let mut url = url::Url::parse(&self.seed).map_err(|_| invalid("the seed URL does not parse"))?;
        url.set_host(Some(host)).map_err(|_| invalid("not a host"))?;
        url.set_port(Some(port)).map_err(|()| invalid("no port"))?;
        match &self.roots {
            None => Client::open(url.as_str()),
            Some(root) => Client::build_with_tls(
                url.as_str(),
                redis::TlsCertificates { client_tls: None, root_cert: Some(root.clone()) },
            ),
        }
    }
}

/// What one probe of the whole dependency found.
pub(super) struct Report {
    /// Whether decisions can be made: every slot served (cluster), the master answering (sentinel, standalone).
    pub(super) up: bool,
    /// One line for `/readyz`.
    pub(super) summary: String,
    /// Each server, masters first.
    pub(super) nodes: Vec<NodeHealth>,
}

impl Report {
    fn down(summary: String) -> Self {
        Self { up: false, summary, nodes: Vec::new() }
    }
}

/// One line of `CLUSTER NODES`: `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link>
/// [<slot> ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ClusterNode {
    host: String,
    port: u16,
    role: NodeRole,
    /// Flagged `fail` by the cluster (a majority of masters agree it is unreachable).
    failed: bool,
    /// Serves at least one slot.
    slots: bool,
    /// The node that answered `CLUSTER NODES`.
    myself: bool,
}

impl ClusterNode {
    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The nodes of a `CLUSTER NODES` reply that have an address (a node still in handshake or without one is skipped).
fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (host, port) = host_port(fields.get(1)?.split(['@', ',']).next()?)?;
            let flags: Vec<&str> = fields.get(2)?.split(',').collect();
            if flags.iter().any(|flag| matches!(*flag, "noaddr" | "handshake")) {
                return None;
            }
            Some(ClusterNode {
                host,
                port,
                role: if flags.contains(&"master") { NodeRole::Master } else { NodeRole::Replica },
                failed: flags.contains(&"fail"),
                slots: fields.len() > 8,
                myself: flags.contains(&"myself"),
            })
        })
        .collect()
}

/// `host:port` (`[v6]:port` too) split; `None` without a host or with port 0.
fn host_port(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().ok().filter(|&port| port != 0)?;
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// `cluster_state` of a `CLUSTER INFO` reply.
fn cluster_state(info: &str) -> Option<&str> {
    info.lines().find_map(|line| line.trim().strip_prefix("cluster_state:"))
}

impl RedisStore {
    /// Probes every node of the cluster (see the module comment). Ready when the cluster says `cluster_state:ok`
    /// and every master that owns slots answers.
    pub(super) async fn probe_cluster(&self, direct: &DirectNodes) -> Report {
        let bound = self.inner.probe_timeout;
        let deadline = Instant::now() + bound;
        // The masters the last probe found (else the seeds) are asked at once; the first answer wins, so a dead or
        // hung node costs nothing here.
        let mut candidates: Vec<(String, u16)> = self
            .last_nodes()
            .iter()
            .filter(|node| node.role == NodeRole::Master && node.up)
            .filter_map(|node| host_port(&node.addr))
            .collect();
        if candidates.is_empty() {
            candidates.clone_from(&direct.seeds);
        }
        let mut topology = redis::pipe();
        topology.cmd("CLUSTER").arg("NODES").cmd("CLUSTER").arg("INFO");
        let asked = candidates.iter().map(|(host, port)| {
            let topology = &topology;
            Box::pin(async move { direct.query::<(String, String)>(host, *port, topology).await })
        });
        let (nodes, info) = match timeout_at(deadline, futures::future::select_ok(asked)).await {
            Ok(Ok(((nodes, info), _))) => (parse_cluster_nodes(&nodes), info),
            Ok(Err(e)) => return Report::down(format!("no node answers CLUSTER NODES: {e}")),
            Err(_) => return Report::down(format!("no node answered CLUSTER NODES within {} ms", bound.as_millis())),
        };
        let command_timeout = self.inner.command_timeout;
        let mut ping = redis::pipe();
        ping.cmd("PING");
        let mut probed = join_all(nodes.iter().map(|node| {
            let ping = &ping;
            async move {
                let bound = command_timeout.min(deadline.saturating_duration_since(Instant::now()));
                let answer = timeout(bound, direct.query::<(String,)>(&node.host, node.port, ping)).await;
                let pong = matches!(&answer, Ok(Ok((reply,))) if reply == "PONG");
                let detail = match (answer, node.failed) {
                    (Ok(Ok(_)), false) if pong => "PONG".to_owned(),
                    (Ok(Ok(_)), true) if pong => "PONG, but the cluster flags it as failed".to_owned(),
                    (Ok(Ok((other,))), _) => format!("answered {other:?}"),
                    (Ok(Err(e)), _) => e.to_string(),
                    (Err(_), _) => format!("no answer within {} ms", bound.as_millis()),
                };
                let served = match (node.role, node.slots) {
                    (NodeRole::Master, true) => "; owns slots",
                    (NodeRole::Master, false) => "; owns no slots",
                    _ => "",
                };
                NodeHealth { addr: node.addr(), role: node.role, up: pong && !node.failed, detail: detail + served }
            }
        }))
        .await;
        let state = cluster_state(&info).unwrap_or("unknown");
        let serving_down = nodes
            .iter()
            .zip(&probed)
            .filter(|(node, health)| node.role == NodeRole::Master && node.slots && !health.up)
            .count();
        let count = |role: NodeRole| {
            let of_role = probed.iter().filter(|n| n.role == role);
            (of_role.clone().filter(|n| n.up).count(), of_role.count())
        };
        let ((masters_up, masters), (replicas_up, replicas)) = (count(NodeRole::Master), count(NodeRole::Replica));
        probed.sort_by(|a, b| (a.role != NodeRole::Master, &a.addr).cmp(&(b.role != NodeRole::Master, &b.addr)));
        Report {
            up: state == "ok" && serving_down == 0,
            summary: format!(
                "cluster_state {state}; {masters_up} of {masters} masters and {replicas_up} of {replicas} replicas \
                 answer"
            ),
            nodes: probed,
        }
    }

    /// Asks every sentinel for the master, pings the master through the shared connections, and lists the replicas
    /// as the first answering sentinel sees them. Ready when the master answers.
    pub(super) async fn probe_sentinel(&self, master: &str, sentinels: &[(String, Client)]) -> Report {
        let bound = self.inner.probe_timeout;
        let deadline = Instant::now() + bound;
        let asked = join_all(sentinels.iter().map(|(addr, client)| async move {
            let answer = timeout_at(deadline, async {
                let mut conn = client.get_multiplexed_async_connection().await?;
                let named: Option<(String, u16)> =
                    redis::cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg(master).query_async(&mut conn).await?;
                Ok::<_, RedisError>((named, conn))
            })
            .await;
            match answer {
                Ok(Ok((Some((host, port)), conn))) => (addr, Ok((format!("{host}:{port}"), conn))),
                Ok(Ok((None, _))) => (addr, Err(format!("does not know master set {master:?}"))),
                Ok(Err(e)) => (addr, Err(e.to_string())),
                Err(_) => (addr, Err(format!("no answer within {} ms", bound.as_millis()))),
            }
        }));
        let (asked, ping) = futures::join!(asked, self.ping());
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for (_, answer) in &asked {
            if let Ok((named, _)) = answer {
                *votes.entry(named.as_str()).or_default() += 1;
            }
        }
        let named = votes.iter().max_by_key(|(addr, votes)| (**votes, std::cmp::Reverse(**addr))).map(|(a, _)| *a);
        let mut nodes = Vec::new();
        let summary = match (named, &ping) {
            (Some(addr), Ok(())) => {
                format!("master {addr} answers (named by {} of {} sentinels)", votes[addr], sentinels.len())
            }
            (Some(addr), Err(e)) => format!("master {addr} does not answer: {e}"),
            (None, Ok(())) => "the master answers, but no sentinel names it".to_owned(),
            (None, Err(e)) => format!("no sentinel names the master, which does not answer: {e}"),
        };
        if let Some(addr) = named {
            let detail = match &ping {
                Ok(()) => "PONG".to_owned(),
                Err(e) => e.to_string(),
            };
            nodes.push(NodeHealth { addr: addr.to_owned(), role: NodeRole::Master, up: ping.is_ok(), detail });
            let conn = asked.iter().find_map(|(_, answer)| answer.as_ref().ok().map(|(_, conn)| conn.clone()));
            if let Some(mut conn) = conn {
                let replicas = redis::cmd("SENTINEL").arg("REPLICAS").arg(master).to_owned();
                if let Ok(Ok(replicas)) =
                    timeout_at(deadline, replicas.query_async::<Vec<HashMap<String, String>>>(&mut conn)).await
                {
                    nodes.extend(replicas.iter().filter_map(replica_health));
                }
            }
        }
        nodes.extend(asked.iter().map(|(addr, answer)| NodeHealth {
            addr: (*addr).clone(),
            role: NodeRole::Sentinel,
            up: answer.is_ok(),
            detail: match answer {
                Ok((named, _)) => format!("names master {named}"),
                Err(e) => e.clone(),
            },
        }));
        Report { up: ping.is_ok(), summary, nodes }
    }
}

/// A replica from `SENTINEL REPLICAS`: up unless the sentinels flag it down or disconnected.
fn replica_health(fields: &HashMap<String, String>) -> Option<NodeHealth> {
    let (ip, port) = (fields.get("ip")?, fields.get("port")?);
    let flags = fields.get("flags").map_or("", String::as_str);
    let down = flags.split(',').any(|flag| matches!(flag, "s_down" | "o_down" | "disconnected"));
    let link = fields.get("master-link-status").map_or("unknown", String::as_str);
    Some(NodeHealth {
        addr: format!("{ip}:{port}"),
        role: NodeRole::Replica,
        up: !down,
        detail: format!("as the sentinels see it: flags {flags}, master link {link}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host-a slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master,fail - 0 1426238318243 3 disconnected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 10923-16383
6ec23923021cf3ffec47632106199cb7f496ce01 :0@0 master,noaddr - 0 0 0 disconnected
";

    #[test]
    fn cluster_nodes_lines_give_address_role_and_state() {
        let nodes = parse_cluster_nodes(NODES);
        assert_eq!(nodes.len(), 4, "the node without an address is skipped");
        assert_eq!(nodes[0].addr(), "127.0.0.1:30004");
        assert_eq!((nodes[0].role, nodes[0].slots, nodes[0].failed), (NodeRole::Replica, false, false));
        assert_eq!((nodes[1].role, nodes[1].slots, nodes[1].myself), (NodeRole::Master, true, false));
        assert_eq!((nodes[2].role, nodes[2].slots, nodes[2].failed), (NodeRole::Master, false, true));
        assert!(nodes[3].myself && nodes[3].slots);
        let v6 = parse_cluster_nodes("id ::1:7000@17000 master - 0 0 1 connected 0-100\n");
        assert_eq!((v6[0].host.as_str(), v6[0].addr()), ("::1", "[::1]:7000".to_owned()));
    }

    #[test]
    fn seeds_and_addresses_split_into_host_and_port() {
        assert_eq!(host_port("10.0.0.1:7000"), Some(("10.0.0.1".to_owned(), 7000)));
        assert_eq!(host_port("[::1]:7000"), Some(("::1".to_owned(), 7000)));
        assert_eq!(host_port(":0"), None);
        assert_eq!(host_port("host:0"), None);
        let direct = DirectNodes::new(&["redis://:pw@10.0.0.1:7000", "rediss://h2", "not a url"], None);
        assert_eq!(direct.seeds, [("10.0.0.1".to_owned(), 7000), ("h2".to_owned(), 6379)]);
        let client = direct.client("10.0.0.9", 7005).unwrap();
        let info = client.get_connection_info();
        assert_eq!(info.addr().to_string(), "10.0.0.9:7005");
        assert_eq!(info.redis_settings().password(), Some("pw"), "every node gets the seed's credentials");
    }

    #[test]
    fn cluster_info_gives_the_state() {
        assert_eq!(
            cluster_state("cluster_enabled:1\r\ncluster_state:fail\r\ncluster_slots_assigned:16384\r\n"),
            Some("fail")
        );
        assert_eq!(cluster_state("cluster_enabled:1\r\n"), None);
    }

    #[test]
    fn sentinel_replicas_are_down_when_flagged() {
        let fields = |flags: &str| {
            [("ip", "127.0.0.1"), ("port", "7001"), ("flags", flags), ("master-link-status", "ok")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect::<HashMap<_, _>>()
        };
        let up = replica_health(&fields("slave")).unwrap();
        assert_eq!((up.addr.as_str(), up.role, up.up), ("127.0.0.1:7001", NodeRole::Replica, true));
        assert!(!replica_health(&fields("slave,s_down,disconnected")).unwrap().up);
        assert!(replica_health(&HashMap::new()).is_none());
    }
}
