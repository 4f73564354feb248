//! The tiered store on a real Redis Cluster that loses two of its three shards, masters and replicas alike: no
//! replica can take over, the surviving master loses its quorum and answers `CLUSTERDOWN`, the dead ones nothing.
//! PostgreSQL decides meanwhile, exactly, without one error reaching the caller; when the nodes come back (empty,
//! with their `nodes.conf`) Redis decides again, and a bucket PostgreSQL spent during the outage is not granted again
//! from the copy the surviving master kept. This binary owns its cluster.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bucket_core::Policy;
use bucket_store::redis::{RedisConfig, RedisMode, RedisStore};
use bucket_store::tiered::{no_events, TieredConfig, TieredStore};
use bucket_store::{Source, Store};
use bucket_testkit::redis_server::config;
use bucket_testkit::{RedisCluster, TestSchema};
use deadpool_redis::redis;

/// Capacity `n`, one token an hour: nothing refills during the test.
fn per_hour(n: u64) -> Policy {
    Policy::from_interval_us(n, 3_600_000_000).unwrap()
}

/// What the background load saw: answers by source, errors, and when PostgreSQL first answered.
#[derive(Default)]
struct Seen {
    sources: Mutex<HashMap<Source, u64>>,
    errors: Mutex<Vec<String>>,
    first_postgres: Mutex<Option<Instant>>,
    calls: AtomicU64,
}

/// Checks on `keys` (on every master) until `stop`, one task of several.
async fn load(store: TieredStore, keys: Vec<String>, seen: Arc<Seen>, stop: Arc<AtomicBool>) {
    let policy = per_hour(1_000_000);
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let key = &keys[i % keys.len()];
        seen.calls.fetch_add(1, Ordering::Relaxed);
        match store.check(key, &policy, 1).await {
            Ok(outcome) => {
                if outcome.source == Source::Postgres {
                    seen.first_postgres.lock().unwrap().get_or_insert_with(Instant::now);
                }
                *seen.sources.lock().unwrap().entry(outcome.source).or_default() += 1;
            }
            Err(e) => seen.errors.lock().unwrap().push(format!("{key}: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn check(store: &TieredStore, key: &str, policy: &Policy) -> (bool, Source, u64) {
    let outcome = store.check(key, policy, 1).await.unwrap();
    (outcome.decision.allowed, outcome.source, outcome.decision.remaining)
}

/// Polls `condition` every 10 ms; the time it took, or a panic after `within`.
async fn eventually(within: Duration, what: &str, mut condition: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_decides_while_the_cluster_is_down_and_redis_never_regrants_what_it_spent() {
    let cluster = Arc::new(tokio::task::spawn_blocking(RedisCluster::start).await.unwrap());
    let schema = TestSchema::new();
    let pg = schema.store().await;
    let mut redis_config: RedisConfig = config(&cluster.url());
    redis_config.mode = RedisMode::Cluster;
    redis_config.command_timeout = Duration::from_millis(200);
    redis_config.connect_timeout = Duration::from_millis(200);
    let redis = RedisStore::connect(redis_config).unwrap();
    let tiered = TieredConfig { retry_interval: Duration::from_millis(50), ..TieredConfig::default() };
    let store = TieredStore::new(redis.clone(), pg, tiered, no_events()).await;

    let masters = cluster.master_ports();
    let survivor = masters[0];
    let on_survivor = |prefix: &str| {
        (0..)
            .map(|i| format!("{prefix}-{i}"))
            .find(|k| cluster.master_port_of(&redis.bucket_key(k)) == survivor)
            .unwrap()
    };
    // `stale` will be spent in PostgreSQL while the surviving master keeps its older copy; `witness` shows the
    // surviving master kept its data through the outage.
    let (stale, witness) = (on_survivor("stale"), on_survivor("witness"));
    let load_keys: Vec<String> = (0..6).map(|i| format!("load-{i}")).collect();
    let spread: std::collections::HashSet<u16> =
        load_keys.iter().map(|k| cluster.master_port_of(&redis.bucket_key(k))).collect();
    assert_eq!(spread.len(), 3, "the load must reach every master");
    let (five, exact_policy) = (per_hour(5), per_hour(21));

    assert_eq!(check(&store, &stale, &five).await, (true, Source::NewUser, 4));
    assert_eq!(check(&store, &stale, &five).await, (true, Source::Redis, 3));
    assert_eq!(check(&store, &witness, &five).await, (true, Source::NewUser, 4));
    assert_eq!(check(&store, "exact", &exact_policy).await, (true, Source::NewUser, 20));
    for key in &load_keys {
        store.check(key, &per_hour(1_000_000), 1).await.unwrap();
    }
    let (seen, stop) = (Arc::new(Seen::default()), Arc::new(AtomicBool::new(false)));
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let keys: Vec<String> = load_keys.iter().cycle().skip(t).take(load_keys.len()).cloned().collect();
            tokio::spawn(load(store.clone(), keys, Arc::clone(&seen), Arc::clone(&stop)))
        })
        .collect();
    eventually(Duration::from_secs(5), "the load runs on Redis", || {
        seen.sources.lock().unwrap().get(&Source::Redis).is_some_and(|&n| n > 20)
    })
    .await;
    let fallbacks_before = store.stats().fallbacks_to_postgres;

    // Two shards gone: both masters and their replicas.
    let c = Arc::clone(&cluster);
    let killed = tokio::task::spawn_blocking(move || c.kill_shards(&masters[1..])).await.unwrap();
    let killed_at = Instant::now();
    assert_eq!(killed.len(), 4);
    eventually(Duration::from_secs(5), "redis marked down", || !store.stats().redis_up).await;
    eventually(Duration::from_secs(5), "postgres answers the load", || seen.first_postgres.lock().unwrap().is_some())
        .await;
    let fell_back = seen.first_postgres.lock().unwrap().unwrap() - killed_at;
    let c = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || c.wait_for_state(survivor, "fail", Duration::from_secs(20))).await.unwrap();
    let failed_after = killed_at.elapsed();
    let refused = cluster.query::<redis::Value>(survivor, redis::cmd("HGETALL").arg(redis.bucket_key(&witness)));
    assert_eq!(refused.unwrap_err().code(), Some("CLUSTERDOWN"), "the surviving master still serves its slots");

    // PostgreSQL decides, exactly: 60 concurrent checks on a bucket holding 20 tokens.
    let racing = (0..60).map(|_| check(&store, "exact", &exact_policy));
    let outcomes = futures::future::join_all(racing).await;
    assert_eq!(outcomes.iter().filter(|o| o.0).count(), 20, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| o.1 == Source::Postgres), "{outcomes:?}");
    // `stale` spent to the last token in PostgreSQL; Redis (unreachable) still holds 3.
    for expected in [(true, 2), (true, 1), (true, 0), (false, 0)] {
        let (allowed, source, remaining) = check(&store, &stale, &five).await;
        assert_eq!((allowed, source, remaining), (expected.0, Source::Postgres, expected.1));
    }
    let during = store.stats();
    assert!(!during.redis_up);
    assert!(during.fallbacks_to_postgres >= fallbacks_before + 64, "{during:?}");

    // The nodes come back on their ports with their cluster configuration, without data.
    let c = Arc::clone(&cluster);
    let restarted_at = Instant::now();
    tokio::task::spawn_blocking(move || {
        c.restart_nodes(&killed);
        c.wait_until_ok(Duration::from_secs(30));
    })
    .await
    .unwrap();
    let ok_after = restarted_at.elapsed();
    eventually(Duration::from_secs(10), "redis marked up again", || store.stats().redis_up).await;
    let back_after = restarted_at.elapsed();
    let on_redis = |seen: &Seen| seen.sources.lock().unwrap().get(&Source::Redis).copied().unwrap_or(0);
    let before_recovery = on_redis(&seen);
    eventually(Duration::from_secs(5), "the load runs on Redis again", || on_redis(&seen) > before_recovery + 20).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }

    // The surviving master kept its data, `stale`'s old copy included, but that copy was deleted before Redis
    // decided again: the bucket is reloaded from PostgreSQL's row (empty), then served by Redis.
    let witness_state: HashMap<String, u64> =
        cluster.query(survivor, redis::cmd("HGETALL").arg(redis.bucket_key(&witness))).unwrap();
    assert_eq!(witness_state.get("t"), Some(&4), "the surviving master lost its data: {witness_state:?}");
    assert_eq!(check(&store, &stale, &five).await, (false, Source::Postgres, 0), "reloaded from PostgreSQL");
    assert_eq!(check(&store, &stale, &five).await, (false, Source::Redis, 0), "then served by Redis again");
    assert_eq!(check(&store, &witness, &five).await, (true, Source::Redis, 3));
    let after = store.stats();
    assert!(after.keys_invalidated >= 2, "{after:?}");
    let errors = seen.errors.lock().unwrap().clone();
    let sources = seen.sources.lock().unwrap().clone();
    println!(
        "load answered {} checks by source {sources:?}, {} errors; first PostgreSQL answer {fell_back:?} after the \
         kill; cluster_state:fail {failed_after:?} after it; after the restart the cluster was ok in {ok_after:?} \
         and Redis in use again in {back_after:?}; {} fallbacks, {} keys invalidated",
        seen.calls.load(Ordering::Relaxed),
        errors.len(),
        after.fallbacks_to_postgres,
        after.keys_invalidated
    );
    assert!(errors.is_empty(), "errors reached the caller: {errors:?}");
    assert!(sources.get(&Source::Postgres).is_some_and(|&n| n > 0));
}
