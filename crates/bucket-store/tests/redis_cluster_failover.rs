//! A master of a real Redis Cluster is killed under load: how many tokens the cluster grants per bucket, against
//! capacity (nothing refills during the test), with asynchronous replication (`wait_replicas = 0`: the figure is
//! printed, since a grant acknowledged but not yet replicated is lost with the master and granted again by the
//! promoted replica) and with `wait_replicas = 1` (every grant answered is on a replica: never over capacity).
//! Each test owns its cluster, since it kills a node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bucket_core::Policy;
use bucket_store::redis::{RedisConfig, RedisMode, RedisStore};
use bucket_store::Store;
use bucket_testkit::redis_cluster::NODE_TIMEOUT;
use bucket_testkit::redis_server::config;
use bucket_testkit::RedisCluster;

const CAPACITY: u64 = 200;
const KEYS: usize = 8;

struct Run {
    /// Grants beyond capacity, summed over the keys.
    over: u64,
    /// Tokens granted in all.
    granted: u64,
    /// Checks that failed (the failover window, or too few replicas).
    failed: u64,
    /// From the kill to the first grant on the promoted replica.
    recovered: Duration,
}

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
    let granted: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let (stop, failed) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(0u64)));
    let first_grant_after: Arc<Mutex<Option<Instant>>> = Arc::default();
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let (store, keys, granted, stop, failed) =
                (store.clone(), keys.clone(), Arc::clone(&granted), Arc::clone(&stop), Arc::clone(&failed));
            let (killed_at, first) = (Arc::clone(&killed_at), Arc::clone(&first_grant_after));
            tokio::spawn(async move {
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    let key = &keys[i % keys.len()];
                    i += 1;
                    match store.check(key, &policy, 1).await {
                        Ok(o) if o.decision.allowed => {
                            *granted.lock().unwrap().entry(key.clone()).or_default() += 1;
                            if let Some(at) = *killed_at.lock().unwrap() {
                                first.lock().unwrap().get_or_insert(Instant::now().max(at));
                            }
                        }
                        Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                        Err(_) => {
                            *failed.lock().unwrap() += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            })
        })
        .collect();
    // Kill the master while grants are flowing.
    while granted.lock().unwrap().values().sum::<u64>() < CAPACITY {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let index = cluster.kill_master_of(&store.bucket_key(&keys[0]));
    let killed = Instant::now();
    *killed_at.lock().unwrap() = Some(killed);
    // The replica takes over after the node timeout; only then does the old master come back (empty: no
    // persistence), as the new master's replica. Restarted earlier, it would still own its slots, empty.
    let (c, key) = (Arc::clone(&cluster), store.bucket_key(&keys[0]));
    tokio::task::spawn_blocking(move || c.wait_for_failover(&key, victim, Duration::from_secs(30))).await.unwrap();
    let c = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || c.node(index).restart()).await.unwrap();
    // Until every bucket is empty (a promoted replica that lost grants has more left), or 20 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let empty = futures::future::join_all(keys.iter().map(|k| store.peek(k, &policy))).await;
        if empty.iter().all(|p| p.as_ref().is_ok_and(|o| o.decision.remaining == 0)) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let granted = granted.lock().unwrap().clone();
    let recovered = first_grant_after.lock().unwrap().map_or(Duration::MAX, |at| at - killed);
    let failed = *failed.lock().unwrap();
    Run {
        over: granted.values().map(|g| g.saturating_sub(CAPACITY)).sum(),
        granted: granted.values().sum(),
        failed,
        recovered,
    }
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
