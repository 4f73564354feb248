//! A master of a real Redis Cluster is killed under load: how many tokens the cluster grants per bucket, against
//! capacity (nothing refills during the test), with asynchronous replication (`wait_replicas = 0`: the figure is
//! printed, since a grant acknowledged but not yet replicated is lost with the master and granted again by the
//! promoted replica) and with `wait_replicas = 1` (every grant answered is on a replica: never over capacity).
//! Each test owns its cluster, since it kills a node.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bucket_core::Policy;
use bucket_store::redis::{RedisConfig, RedisMode, RedisStore};
use bucket_testkit::redis_cluster::NODE_TIMEOUT;
use bucket_testkit::redis_server::config;
use bucket_testkit::RedisCluster;
use common::failover_load::{Load, Run};

const CAPACITY: u64 = 200;
const KEYS: usize = 8;

/// Load on `KEYS` buckets served by one master, the master killed after the first grants, the load kept until
/// every bucket is empty; restarts the killed node so that the promoted replica gets a replica again.
async fn kill_a_master_under_load(wait_replicas: u32) -> Run {
    let cluster = Arc::new(tokio::task::spawn_blocking(RedisCluster::start).await.unwrap());
    let mut config: RedisConfig = config(&cluster.url());
    config.mode = RedisMode::Cluster;
    config.command_timeout = Duration::from_millis(400);
    config.wait_replicas = wait_replicas;
    let store = RedisStore::connect(config).unwrap();
    let victim = cluster.master_port_of(&store.bucket_key("probe"));
    let keys: Vec<String> = (0..)
        .map(|i| format!("user-{i}"))
        .filter(|k| cluster.master_port_of(&store.bucket_key(k)) == victim)
        .take(KEYS)
        .collect();
    let policy = Policy::from_interval_us(CAPACITY, 3_600_000_000).unwrap();
    let load = Load::start(std::slice::from_ref(&store), keys.clone(), policy, 16);
    // Kill the master while grants are flowing.
    load.until_granted(CAPACITY).await;
    load.killed();
    let index = cluster.kill_master_of(&store.bucket_key(&keys[0]));
    // The replica takes over after the node timeout; only then does the old master come back (empty: no
    // persistence), as the new master's replica. Restarted earlier, it would still own its slots, empty.
    let (c, key) = (Arc::clone(&cluster), store.bucket_key(&keys[0]));
    tokio::task::spawn_blocking(move || c.wait_for_failover(&key, victim, Duration::from_secs(30))).await.unwrap();
    let c = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || c.node(index).restart()).await.unwrap();
    load.until_spent(&store, Duration::from_secs(20)).await;
    load.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_replication_over_admission_is_measured() {
    let run = kill_a_master_under_load(0).await;
    println!(
        "wait_replicas=0: {} tokens granted on {KEYS} buckets of {CAPACITY}, {} over capacity, {} failed checks, \
         served again {:?} after the kill",
        run.granted, run.over, run.failed, run.recovered
    );
    assert!(run.recovered < NODE_TIMEOUT * 10, "no grant after the failover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_replica_never_over_admits_across_a_failover() {
    let run = kill_a_master_under_load(1).await;
    println!(
        "wait_replicas=1: {} tokens granted on {KEYS} buckets of {CAPACITY}, {} over capacity, {} failed checks, \
         served again {:?} after the kill",
        run.granted, run.over, run.failed, run.recovered
    );
    assert_eq!(run.over, 0, "a grant acknowledged by a replica was lost in the failover");
    assert!(run.recovered < NODE_TIMEOUT * 10, "no grant after the failover");
}
