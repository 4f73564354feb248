//! Forming a [`RedisCluster`] of fewer than 3 masters by hand, which `redis-cli --cluster create` refuses: the
//! nodes meet, each master takes its even share of the 16,384 slots (`CLUSTER ADDSLOTSRANGE`), each replica follows
//! its master (`CLUSTER REPLICATE`). The caller then waits for `cluster_state:ok`.

use std::time::{Duration, Instant};

use deadpool_redis::redis;

use crate::redis_cluster::RedisCluster;

/// Hash slots of every Redis Cluster.
const SLOTS: usize = 16_384;

impl RedisCluster {
    /// Joins the nodes into one cluster and hands out slots and replicas as [`RedisCluster::shape`] says: node `i <
    /// masters` is a master, the replicas of master `m` follow after the masters, `replicas_per_master` each.
    pub(crate) fn form_by_hand(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let shape = self.shape();
        let ports: Vec<u16> = (0..shape.nodes()).map(|i| self.node(i).port()).collect();
        for &port in &ports[1..] {
            let mut meet = redis::cmd("CLUSTER");
            meet.arg("MEET").arg("127.0.0.1").arg(ports[0]);
            self.query::<()>(port, &meet).unwrap_or_else(|e| panic!("CLUSTER MEET from {port}: {e}"));
        }
        for (i, &port) in ports.iter().enumerate().take(shape.masters) {
            let (first, last) = (i * SLOTS / shape.masters, (i + 1) * SLOTS / shape.masters - 1);
            let mut add = redis::cmd("CLUSTER");
            add.arg("ADDSLOTSRANGE").arg(first).arg(last);
            self.query::<()>(port, &add).unwrap_or_else(|e| panic!("CLUSTER ADDSLOTSRANGE on {port}: {e}"));
        }
        if shape.replicas_per_master == 0 {
            return;
        }
        // A replica can follow only a master it has heard of through the cluster bus.
        self.wait_until_all_known(&ports, deadline);
        for m in 0..shape.masters {
            let id: String = self
                .query(ports[m], &redis::cmd("CLUSTER").arg("MYID").to_owned())
                .unwrap_or_else(|e| panic!("CLUSTER MYID on {}: {e}", ports[m]));
            for r in 0..shape.replicas_per_master {
                let port = ports[shape.masters + m * shape.replicas_per_master + r];
                let mut replicate = redis::cmd("CLUSTER");
                replicate.arg("REPLICATE").arg(&id);
                self.query::<()>(port, &replicate).unwrap_or_else(|e| panic!("CLUSTER REPLICATE on {port}: {e}"));
            }
        }
    }

    /// Waits until every node's `CLUSTER NODES` lists every node; panics at `deadline`.
    fn wait_until_all_known(&self, ports: &[u16], deadline: Instant) {
        loop {
            let known = ports.iter().all(|&port| {
                self.query::<String>(port, &redis::cmd("CLUSTER").arg("NODES").to_owned())
                    .is_ok_and(|nodes| nodes.lines().count() == ports.len())
            });
            if known {
                return;
            }
            assert!(Instant::now() < deadline, "the nodes did not meet:\n{}", self.cluster_nodes());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
