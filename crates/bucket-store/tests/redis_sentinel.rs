//! The Redis store in sentinel mode, against a real group the test kit starts (one master, two replicas, three
//! sentinels). The Store contract suite runs against sentinel mode in `contract.rs`; this file proves that the store
//! follows the master the sentinels elect when the old one dies.

use std::time::{Duration, Instant};

use bucket_core::Policy;
use bucket_store::redis::{RedisConfig, RedisMode, RedisStore};
use bucket_store::Store;
use bucket_testkit::redis_sentinel::{DOWN_AFTER, MASTER_NAME};
use bucket_testkit::redis_server::config;
use bucket_testkit::RedisSentinelGroup;

fn sentinel_config(group: &RedisSentinelGroup) -> RedisConfig {
    let mut config = config(&group.url());
    config.mode = RedisMode::Sentinel;
    config.sentinel_master = Some(MASTER_NAME.to_owned());
    config.command_timeout = Duration::from_millis(500);
    config
}

/// The master is killed: checks fail (transiently) until the sentinels promote a replica, then succeed on it,
/// within the failover time; the store never needs restarting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_follows_the_master_the_sentinels_elect() {
    let group = tokio::task::spawn_blocking(RedisSentinelGroup::start).await.unwrap();
    let store = RedisStore::connect(sentinel_config(&group)).unwrap();
    let policy = Policy::from_interval_us(1_000, 3_600_000_000).unwrap();
    assert!(store.check("k", &policy, 1).await.unwrap().decision.allowed);
    let old = group.master_port();
    group.kill_master();
    let killed = Instant::now();
    let mut failures = 0;
    let recovered = loop {
        match store.check("k", &policy, 1).await {
            Ok(outcome) => {
                assert!(outcome.decision.allowed);
                break killed.elapsed();
            }
            Err(e) => {
                assert!(e.is_transient(), "a failover is an outage, not a wrong answer: {e}");
                failures += 1;
            }
        }
        assert!(killed.elapsed() < Duration::from_secs(20), "no new master served after 20 s ({failures} failures)");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let new = group.master_port();
    assert_ne!(new, old, "the check succeeded on the killed master?");
    assert!(recovered >= DOWN_AFTER, "served after {recovered:?}, before a sentinel could call the master down");
    println!("sentinel failover: served again {recovered:?} after the kill, {failures} failed checks meanwhile");
    assert!(store.ping().await.is_ok());
}
