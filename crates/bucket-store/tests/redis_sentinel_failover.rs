//! The master of a real Sentinel group is killed under load from two store instances: how many tokens are granted
//! per bucket against capacity + refill, with asynchronous replication (`wait_replicas = 0`: the figure is printed,
//! since a grant acknowledged but not yet replicated is lost with the master and granted again by the promoted
//! replica) and with `wait_replicas = 1` (every grant answered is on a replica: never over). Each test owns its group,
//! since it kills the master.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bucket_core::Policy;
use bucket_store::redis::{RedisConfig, RedisMode, RedisStore};
use bucket_testkit::redis_sentinel::{DOWN_AFTER, FAILOVER_TIMEOUT, MASTER_NAME};
use bucket_testkit::redis_server::config;
use bucket_testkit::RedisSentinelGroup;
use common::failover_load::{Load, Run};

const CAPACITY: u64 = 200;
const KEYS: usize = 8;
/// Slow refill: one token a second per bucket, so that the allowance moves during the run but stays near capacity.
const REFILL_INTERVAL_US: u64 = 1_000_000;

/// Service must be back once a sentinel has called the master down and the election has finished: an election not
/// finished within the failover timeout is abandoned and started again, so a longer outage is a failed failover.
const SERVED_AGAIN_WITHIN: Duration = DOWN_AFTER.saturating_add(FAILOVER_TIMEOUT);

/// 16 workers over two store instances on `KEYS` buckets, the master killed after the first `CAPACITY` grants, the
/// load kept until the new master serves and every bucket is empty.
async fn kill_the_master_under_load(wait_replicas: u32) -> Run {
    let group = Arc::new(tokio::task::spawn_blocking(RedisSentinelGroup::start).await.unwrap());
    // One configuration (one key prefix) for both instances: they share the buckets.
    let mut config: RedisConfig = config(&group.url());
    config.mode = RedisMode::Sentinel;
    config.sentinel_master = Some(MASTER_NAME.to_owned());
    config.command_timeout = Duration::from_millis(400);
    config.wait_replicas = wait_replicas;
    let connect = || RedisStore::connect(config.clone()).unwrap();
    let stores = [connect(), connect()];
    let keys: Vec<String> = (0..KEYS).map(|i| format!("sentinel-user-{i}")).collect();
    let policy = Policy::from_interval_us(CAPACITY, REFILL_INTERVAL_US).unwrap();
    let load = Load::start(&stores, keys, policy, 16);
    load.until_granted(CAPACITY).await;
    let old = group.master_port();
    // Marked just before the SIGKILL: every failure after the mark is the failover's.
    load.killed();
    let g = Arc::clone(&group);
    tokio::task::spawn_blocking(move || g.kill_master()).await.unwrap();
    let g = Arc::clone(&group);
    tokio::task::spawn_blocking(move || g.wait_for_new_master(old, SERVED_AGAIN_WITHIN)).await.unwrap();
    load.until_spent(&stores[0], Duration::from_secs(15)).await;
    load.finish().await
}

fn report(wait_replicas: u32, run: &Run) {
    println!(
        "sentinel wait_replicas={wait_replicas}: {} tokens granted on {KEYS} buckets of {CAPACITY} (+ refill: {} each \
         at most), {} over, {} failed checks (the last {:?} after the kill), served again {:?} after the kill",
        run.granted, run.allowance, run.over, run.failed, run.last_failure, run.recovered
    );
    assert!(run.unexpected.is_empty(), "failures other than the failover's: {:?}", run.unexpected);
    assert!(
        run.recovered >= DOWN_AFTER,
        "served {:?} after the kill, before a sentinel could call it down",
        run.recovered
    );
    assert!(run.recovered < SERVED_AGAIN_WITHIN, "no grant within {SERVED_AGAIN_WITHIN:?} of the kill");
    assert!(run.last_failure < SERVED_AGAIN_WITHIN, "checks still failing {:?} after the kill", run.last_failure);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_replication_over_admission_is_measured_across_a_sentinel_failover() {
    let run = kill_the_master_under_load(0).await;
    report(0, &run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_replica_never_over_admits_across_a_sentinel_failover() {
    let run = kill_the_master_under_load(1).await;
    report(1, &run);
    assert_eq!(run.over, 0, "a grant acknowledged by a replica was lost in the failover");
}
