//! The Redis store in cluster mode, against a real 3-master / 3-replica Redis Cluster the test kit starts once for
//! this binary. The Store contract suite runs against cluster mode in `contract.rs`; this file proves what is
//! specific to a cluster: instances sharing one key, several limits across slots (debit in key order, refund on
//! refusal), keys spread over every master, SCAN visiting every master, and scripts reloaded per node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bucket_core::Policy;
use bucket_store::redis::{RedisConfig, RedisMode, RedisStore};
use bucket_store::{Limit, PolicyStore, Store};
use bucket_testkit::redis_server::config;
use bucket_testkit::RedisCluster;
use deadpool_redis::redis;

/// Capacity `n`, one token an hour: nothing refills during a test.
fn per_hour(n: u64) -> Policy {
    Policy::from_interval_us(n, 3_600_000_000).unwrap()
}

/// A cluster-mode configuration under a fresh prefix, seeded with one node only: the rest is discovered.
fn cluster_config() -> RedisConfig {
    let cluster = RedisCluster::shared();
    let mut config = config(&cluster.urls()[0]);
    config.mode = RedisMode::Cluster;
    config
}

fn store(config: &RedisConfig) -> RedisStore {
    RedisStore::connect(config.clone()).expect("valid configuration")
}

async fn remaining(store: &RedisStore, key: &str, policy: &Policy) -> u64 {
    store.peek(key, policy).await.unwrap().decision.remaining
}

/// Keys of the whole prefix on each master (a SCAN per master), by port.
fn keys_per_master(cluster: &RedisCluster, prefix: &str) -> HashMap<u16, usize> {
    cluster
        .master_ports()
        .into_iter()
        .map(|port| {
            let (mut cursor, mut count) = (0u64, 0usize);
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor).arg("MATCH").arg(format!("{prefix}*")).arg("COUNT").arg(1000);
                let (next, keys): (u64, Vec<String>) = cluster.query(port, &scan).unwrap();
                count += keys.len();
                if next == 0 {
                    break (port, count);
                }
                cursor = next;
            }
        })
        .collect()
}

/// Two instances (two API processes), 400 concurrent checks on one key of capacity 100: exactly 100 allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_grant_exactly_capacity_on_one_key() {
    let config = cluster_config();
    let (a, b) = (store(&config), store(&config));
    let policy = per_hour(100);
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { store.check("hot", &policy, 1).await.unwrap().decision.allowed })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        allowed += usize::from(task.await.unwrap());
    }
    assert_eq!(allowed, 100);
    assert_eq!(remaining(&b, "hot", &policy).await, 0);
}

/// Three buckets on three slots, the scarce one last in key order, 120 concurrent requests over two instances:
/// never more allowed than the scarce bucket holds, and once every call has returned, each bucket has lost
/// exactly what the allowed requests took (every refused request's debits were refunded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_across_slots_never_over_admit_and_refusals_are_refunded() {
    let config = cluster_config();
    let (a, b) = (store(&config), store(&config));
    let (wide, scarce) = (per_hour(60), per_hour(20));
    let cluster = RedisCluster::shared();
    let port = cluster.master_ports()[0];
    let slots: std::collections::HashSet<u16> = ["alpha", "mike", "zulu"]
        .iter()
        .map(|k| cluster.query(port, redis::cmd("CLUSTER").arg("KEYSLOT").arg(a.bucket_key(k))).unwrap())
        .collect();
    assert_eq!(slots.len(), 3, "the keys must be in three slots");
    let granted = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..120)
        .map(|i| {
            let (store, granted) = (if i % 2 == 0 { a.clone() } else { b.clone() }, Arc::clone(&granted));
            tokio::spawn(async move {
                let limits =
                    [Limit { key: "alpha", policy: wide, cost: 1 }, Limit { key: "mike", policy: wide, cost: 1 }];
                let limits = [limits[0], limits[1], Limit { key: "zulu", policy: scarce, cost: 1 }];
                let out = store.check_all(&limits).await.unwrap();
                if out.allowed {
                    granted.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let granted = granted.load(Ordering::Relaxed) as u64;
    assert!(granted <= 20, "over-admitted: {granted} of 20");
    assert!(granted >= 1, "nothing granted");
    assert_eq!(remaining(&a, "zulu", &scarce).await, 20 - granted);
    assert_eq!(remaining(&b, "alpha", &wide).await, 60 - granted, "a refused request kept a debit on alpha");
    assert_eq!(remaining(&b, "mike", &wide).await, 60 - granted, "a refused request kept a debit on mike");
}

/// A refused request across slots reports each bucket as a standalone Redis would: the one that refused with
/// its wait, the others (debited then refunded, or never reached) untouched.
#[tokio::test]
async fn a_refused_request_across_slots_reports_untouched_buckets() {
    let s = store(&cluster_config());
    let policy = per_hour(5);
    assert!(s.check("mike", &policy, 5).await.unwrap().decision.allowed);
    let limits = [
        Limit { key: "alpha", policy, cost: 2 },
        Limit { key: "mike", policy, cost: 1 },
        Limit { key: "zulu", policy, cost: 3 },
    ];
    let out = s.check_all(&limits).await.unwrap();
    assert!(!out.allowed);
    let shown: Vec<(bool, u64)> = out.decisions.iter().map(|d| (d.allowed, d.remaining)).collect();
    assert_eq!(shown, vec![(true, 5), (false, 0), (true, 5)]);
    assert_eq!(remaining(&s, "alpha", &policy).await, 5, "alpha was debited then not refunded");
    assert_eq!(remaining(&s, "zulu", &policy).await, 5);
}

/// 3,000 users, one check each: every master holds its share of the buckets, within 20 % of the mean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_spread_over_every_master() {
    let config = cluster_config();
    let s = store(&config);
    let policy = per_hour(10);
    futures::future::join_all((0..3_000).map(|i| {
        let s = s.clone();
        async move { s.check(&format!("user-{i}"), &policy, 1).await.unwrap() }
    }))
    .await;
    let per_master = keys_per_master(RedisCluster::shared(), &config.key_prefix);
    assert_eq!(per_master.len(), 3, "{per_master:?}");
    assert_eq!(per_master.values().sum::<usize>(), 3_000, "{per_master:?}");
    for (port, &count) in &per_master {
        assert!((800..=1_200).contains(&count), "master {port} holds {count} of 3000 buckets: {per_master:?}");
    }
}

/// Policies written before the index set existed are found by a SCAN of every master, not of one node.
#[tokio::test]
async fn the_policy_index_upgrade_scans_every_master() {
    let config = cluster_config();
    let s = store(&config);
    let cluster = RedisCluster::shared();
    let keys: Vec<String> = (0..30).map(|i| format!("legacy-{i}")).collect();
    for key in &keys {
        let name = s.policy_key(key);
        let port = cluster.master_port_of(&name);
        let _: () = cluster.query(port, redis::cmd("HSET").arg(&name).arg("c").arg(7).arg("i").arg(1_000_000)).unwrap();
    }
    let masters: std::collections::HashSet<u16> =
        keys.iter().map(|k| cluster.master_port_of(&s.policy_key(k))).collect();
    assert_eq!(masters.len(), 3, "the legacy policies must span every master");
    s.policy_version().await.unwrap();
    let mut found: Vec<String> = s.all_policies().await.unwrap().into_iter().map(|(key, _)| key).collect();
    found.sort();
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(found, expected);
}

/// Every node forgets its scripts (a restart, a promoted replica that never ran them): checks, multi-key checks
/// and refunds load them again, on whichever node serves the key.
#[tokio::test]
async fn scripts_are_loaded_again_on_every_node() {
    let s = store(&cluster_config());
    let policy = per_hour(3);
    assert!(s.check("flush", &policy, 1).await.unwrap().decision.allowed);
    let cluster = RedisCluster::shared();
    for port in cluster.master_ports() {
        let _: () = cluster.query(port, redis::cmd("SCRIPT").arg("FLUSH")).unwrap();
    }
    assert_eq!(s.check("flush", &policy, 1).await.unwrap().decision.remaining, 1);
    let limits = [Limit { key: "alpha", policy, cost: 1 }, Limit { key: "flush", policy, cost: 2 }];
    assert!(!s.check_all(&limits).await.unwrap().allowed);
    assert_eq!(remaining(&s, "alpha", &policy).await, 3);
    assert!(s.ping().await.is_ok());
}
