//! Clusters of other shapes than the default 3 masters / 3 replicas, as the test kit starts them for the
//! `cluster_masters` bench: one master holding every slot (formed by hand, which `redis-cli --cluster create`
//! refuses), three masters without replicas, and one master with a replica. In each, the store in cluster mode
//! decides on keys spread over every slot range.

use bucket_core::Policy;
use bucket_store::redis::{RedisMode, RedisStore};
use bucket_store::Store;
use bucket_testkit::redis_server::config;
use bucket_testkit::{ClusterShape, RedisCluster};

/// Starts a cluster of `shape`, checks its masters, slots and replicas, and runs a decision on 300 keys through the
/// store in cluster mode (each key's first check allowed, the second refused at capacity 1).
async fn cluster_of(shape: ClusterShape) -> RedisCluster {
    let cluster = tokio::task::spawn_blocking(move || RedisCluster::start_shaped(shape)).await.unwrap();
    let view = cluster.view();
    let masters: Vec<_> = view.iter().filter(|n| n.master).collect();
    assert_eq!(masters.len(), shape.masters, "{view:?}");
    let mut slots: Vec<u16> = masters.iter().flat_map(|m| m.slots.iter().copied()).collect();
    slots.sort_unstable();
    assert_eq!(slots, (0..16_384).collect::<Vec<u16>>(), "every slot served exactly once");
    for master in &masters {
        let share = master.slots.len();
        assert!(share >= 16_384 / shape.masters - 1, "master {} serves only {share} slots", master.port);
        assert_eq!(cluster.replica_ports_of(master.port).len(), shape.replicas_per_master, "{view:?}");
    }

    let mut cfg = config(&cluster.urls()[0]);
    cfg.mode = RedisMode::Cluster;
    let store = RedisStore::connect(cfg).expect("valid configuration");
    let policy = Policy::from_interval_us(1, 3_600_000_000).unwrap();
    for i in 0..300 {
        let key = format!("user-{i}");
        assert!(store.check(&key, &policy, 1).await.unwrap().decision.allowed, "{key} first check");
        assert!(!store.check(&key, &policy, 1).await.unwrap().decision.allowed, "{key} second check");
    }
    cluster
}

#[tokio::test]
async fn one_master_formed_by_hand_serves_every_slot() {
    let cluster = cluster_of(ClusterShape::masters_only(1)).await;
    assert_eq!(cluster.master_ports().len(), 1);
}

#[tokio::test]
async fn three_masters_without_replicas_split_the_slots() {
    let cluster = cluster_of(ClusterShape::masters_only(3)).await;
    assert_eq!(cluster.urls().len(), 3, "no replica started");
}

#[tokio::test]
async fn one_master_with_a_replica_formed_by_hand() {
    let cluster = cluster_of(ClusterShape { masters: 1, replicas_per_master: 1 }).await;
    cluster.wait_until_replicated(std::time::Duration::from_secs(30));
    let master = cluster.master_ports()[0];
    assert_eq!(cluster.replica_ports_of(master).len(), 1);
}
