//! Who owns which hash slots in a [`RedisCluster`], and moving slots between masters with `redis-cli --cluster
//! reshard`, for the test that reshards under load and checks that the slots (and the keys in them) really moved.

use std::process::Command;
use std::time::{Duration, Instant};

use deadpool_redis::redis;

use crate::process;
use crate::redis_cluster::RedisCluster;

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// The node's 40-character id, which `redis-cli --cluster reshard` names masters by.
    pub id: String,
    /// Its client port.
    pub port: u16,
    /// A master (else a replica).
    pub master: bool,
    /// A replica's master, by id.
    pub master_id: Option<String>,
    /// Flagged `fail` or `fail?` by the node that answered.
    pub failing: bool,
    /// The slots it serves (stable ones only: the `[slot->-id]` migration marks are left out).
    pub slots: Vec<u16>,
}

impl ClusterNode {
    fn parse(line: &str) -> Option<Self> {
        let fields: Vec<&str> = line.split(' ').collect();
        let port = fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
        let flags = fields.get(2)?;
        let mut slots = Vec::new();
        for range in fields.iter().skip(8).filter(|r| !r.starts_with('[')) {
            let (start, end) = range.split_once('-').unwrap_or((range, range));
            slots.extend(start.parse::<u16>().ok()?..=end.parse::<u16>().ok()?);
        }
        Some(Self {
            id: fields[0].to_owned(),
            port,
            master: flags.contains("master"),
            master_id: fields.get(3).filter(|m| **m != "-").map(|m| (*m).to_owned()),
            failing: flags.contains("fail"),
            slots,
        })
    }
}

impl RedisCluster {
    /// Every node, as the first node that answers sees the cluster (`CLUSTER NODES`).
    pub fn view(&self) -> Vec<ClusterNode> {
        self.cluster_nodes().lines().filter_map(ClusterNode::parse).collect()
    }

    /// The node listening on `port`, as [`RedisCluster::view`] shows it.
    pub fn node_at(&self, port: u16) -> ClusterNode {
        let view = self.view();
        view.iter().find(|n| n.port == port).cloned().unwrap_or_else(|| panic!("no node on port {port}: {view:?}"))
    }

    /// The ports of the replicas of the master on `port`.
    pub fn replica_ports_of(&self, port: u16) -> Vec<u16> {
        let id = self.node_at(port).id;
        self.view().into_iter().filter(|n| n.master_id.as_deref() == Some(id.as_str())).map(|n| n.port).collect()
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`, asked of the first node listed).
    pub fn slot_of(&self, key: &str) -> u16 {
        let port = self.view().first().map(|n| n.port).expect("a node answers");
        self.query(port, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)).expect("CLUSTER KEYSLOT")
    }

    /// Moves `slots` slots, keys included, from the master on port `from` to the master on port `to` with
    /// `redis-cli --cluster reshard` (which takes the lowest-numbered slots of `from` and migrates each slot's keys
    /// with `MIGRATE` while clients are redirected with `ASK`), then waits until every node agrees. Returns how long
    /// `redis-cli` took.
    pub fn reshard(&self, from: u16, to: u16, slots: usize) -> Duration {
        let (from_id, to_id) = (self.node_at(from).id, self.node_at(to).id);
        let program = process::program("redis-cli", "redis-server").unwrap_or_else(|e| panic!("{e}"));
        let mut reshard = Command::new(program);
        reshard
            .args(["--cluster", "reshard", &format!("127.0.0.1:{from}")])
            .args(["--cluster-from", &from_id, "--cluster-to", &to_id])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"]);
        let started = Instant::now();
        process::run(&mut reshard).unwrap_or_else(|e| panic!("redis-cli --cluster reshard: {e}"));
        let took = started.elapsed();
        self.wait_until_ok(Duration::from_secs(30));
        took
    }

    /// Opens `slot` for a move from the master on `from` to the one on `to` (`CLUSTER SETSLOT … IMPORTING` on
    /// `to`, `MIGRATING` on `from`), as `redis-cli --cluster reshard` does before it moves the slot's keys: `from`
    /// then answers `ASK` for a key it no longer holds, and `TRYAGAIN` for a command over several keys of which
    /// it holds only some.
    pub fn open_slot_move(&self, slot: u16, from: u16, to: u16) {
        let (from_id, to_id) = (self.node_at(from).id, self.node_at(to).id);
        let set = |port: u16, how: &str, id: &str| {
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("SETSLOT").arg(slot).arg(how).arg(id);
            self.query::<()>(port, &cmd).unwrap_or_else(|e| panic!("CLUSTER SETSLOT {slot} {how} on {port}: {e}"));
        };
        set(to, "IMPORTING", &from_id);
        set(from, "MIGRATING", &to_id);
    }

    /// Moves one key from the master on `from` to the one on `to` (`MIGRATE`), its slot opened by
    /// [`RedisCluster::open_slot_move`].
    pub fn migrate_key(&self, from: u16, to: u16, key: &str) {
        let mut migrate = redis::cmd("MIGRATE");
        migrate.arg("127.0.0.1").arg(to).arg("").arg(0).arg(5_000).arg("KEYS").arg(key);
        let reply: String = self.query(from, &migrate).unwrap_or_else(|e| panic!("MIGRATE {key}: {e}"));
        assert_eq!(reply, "OK", "MIGRATE {key} from {from} to {to}");
    }

    /// Gives `slot` to the master on `to` on every master (`CLUSTER SETSLOT … NODE`), closing a move opened by
    /// [`RedisCluster::open_slot_move`] once its keys have migrated, and waits until the nodes agree.
    pub fn close_slot_move(&self, slot: u16, to: u16) {
        let to_id = self.node_at(to).id;
        let mut masters = self.master_ports();
        // The new owner first, as redis-cli does, so that the slot is never without a master that takes it.
        masters.sort_by_key(|&port| port != to);
        for port in masters {
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("SETSLOT").arg(slot).arg("NODE").arg(&to_id);
            self.query::<()>(port, &cmd).unwrap_or_else(|e| panic!("CLUSTER SETSLOT {slot} NODE on {port}: {e}"));
        }
        self.wait_until_ok(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_are_read_with_their_slots_and_roles() {
        let master = "07c3 127.0.0.1:30004@40004 myself,master - 0 0 1 connected 0-2 7 [9->-e7d1]";
        let node = ClusterNode::parse(master).unwrap();
        assert_eq!((node.port, node.master, node.failing, node.slots), (30004, true, false, vec![0, 1, 2, 7]));
        let replica = "e7d1 127.0.0.1:30001@40001 slave,fail 07c3 0 0 1 disconnected";
        let node = ClusterNode::parse(replica).unwrap();
        assert_eq!((node.master, node.failing, node.master_id.as_deref()), (false, true, Some("07c3")));
        assert!(node.slots.is_empty());
    }
}
