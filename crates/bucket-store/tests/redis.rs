//! The Redis store through its public interface, against a real Redis: the shared one (each test under its own key
//! prefix) or, for tests that stop, freeze or kill Redis, a private `redis-server` on a port of its own.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bucket_core::{BucketState, Policy, Wait};
use bucket_store::redis::{OnMiss, RedisConfig, RedisStore};
use bucket_store::{Limit, PolicyStore, Source, Store, StoreError, VersionedState};
use bucket_testkit::redis_server::{config, raw};
use bucket_testkit::{free_port, PrivateRedis, Shared};
use common::redis_proxy::ReplyTrap;
use deadpool_redis::redis::{self, aio::MultiplexedConnection};

/// Capacity 50, one token an hour: nothing refills during a test.
fn fifty_per_hour() -> Policy {
    Policy::from_interval_us(50, 3_600_000_000).unwrap()
}

fn wall_clock_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

async fn hash(conn: &mut MultiplexedConnection, key: &str) -> HashMap<String, String> {
    redis::cmd("HGETALL").arg(key).query_async(conn).await.unwrap()
}

async fn pttl(conn: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap()
}

async fn exists(conn: &mut MultiplexedConnection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query_async(conn).await.unwrap()
}

#[tokio::test]
async fn ttl_is_the_time_to_refill_from_empty() {
    let shared = Shared::new();
    let mut conn = shared.raw().await;
    // 7 × 1,000,001 µs = 7,000.007 ms, rounded up so the key cannot expire before the bucket is full.
    let policy = Policy::from_interval_us(7, 1_000_001).unwrap();
    assert!(shared.store.check("ttl", &policy, 1).await.unwrap().decision.allowed);
    let ttl = pttl(&mut conn, &shared.store.bucket_key("ttl")).await;
    assert!((5_001..=7_001).contains(&ttl), "PTTL {ttl}");
}

/// The multi-key script keeps one bucket's layout, version and TTL exactly as the single-key script does, and a
/// refused request leaves every key as it was: not created, not touched, TTL unchanged.
#[tokio::test]
async fn multi_key_script_keeps_the_layout_and_ttl_and_a_refusal_touches_nothing() {
    let shared = Shared::new();
    let store = &shared.store;
    let mut conn = shared.raw().await;
    let policy = Policy::from_interval_us(7, 1_000_001).unwrap();
    store.check("one", &policy, 2).await.unwrap();
    let out = store.check_all(&[Limit { key: "all", policy, cost: 2 }, Limit { key: "one", policy, cost: 1 }]).await;
    assert!(out.unwrap().allowed);
    let (one, all) = (hash(&mut conn, &store.bucket_key("one")).await, hash(&mut conn, &store.bucket_key("all")).await);
    assert_eq!((one["t"].as_str(), one["v"].as_str()), ("4", "2"), "{one:?}");
    assert_eq!((all["t"].as_str(), all["v"].as_str()), ("5", "1"), "{all:?}");
    assert!(all["l"].parse::<u64>().unwrap() > 1_700_000_000_000_000, "µs since the epoch: {all:?}");
    let ttl = pttl(&mut conn, &store.bucket_key("all")).await;
    assert!((5_001..=7_001).contains(&ttl), "PTTL {ttl}");

    let _: () = redis::cmd("PEXPIRE").arg(store.bucket_key("one")).arg(600_000).query_async(&mut conn).await.unwrap();
    let out =
        store.check_all(&[Limit { key: "one", policy, cost: 1 }, Limit { key: "new", policy, cost: 8 }]).await.unwrap();
    assert!(!out.allowed && out.decisions[0].allowed && out.decisions[1].retry_after == Some(Wait::Never));
    assert_eq!(hash(&mut conn, &store.bucket_key("one")).await, one);
    let ttl = pttl(&mut conn, &store.bucket_key("one")).await;
    assert!((598_000..=600_000).contains(&ttl), "the refused request changed the TTL to {ttl}");
    assert!(!exists(&mut conn, &store.bucket_key("new")).await, "a refused request created a key");
}

#[tokio::test]
async fn refused_check_neither_creates_nor_touches_the_key() {
    let shared = Shared::new();
    let store = &shared.store;
    let mut conn = shared.raw().await;
    let policy = Policy::from_interval_us(2, 3_600_000_000).unwrap();

    // Missing key and a cost that can never fit: refused, and still no key.
    let outcome = store.check("never", &policy, 3).await.unwrap();
    assert!(!outcome.decision.allowed);
    assert_eq!(outcome.decision.retry_after, Some(Wait::Never));
    assert!(!exists(&mut conn, &store.bucket_key("never")).await);

    // Empty the bucket, then mark the key with a TTL that no check would set.
    for _ in 0..2 {
        assert!(store.check("empty", &policy, 1).await.unwrap().decision.allowed);
    }
    let bucket = store.bucket_key("empty");
    let _: () = redis::cmd("PEXPIRE").arg(&bucket).arg(600_000).query_async(&mut conn).await.unwrap();
    let before = hash(&mut conn, &bucket).await;
    let outcome = store.check("empty", &policy, 1).await.unwrap();
    assert!(!outcome.decision.allowed);
    assert_eq!(hash(&mut conn, &bucket).await, before);
    let ttl = pttl(&mut conn, &bucket).await;
    assert!((598_000..=600_000).contains(&ttl), "the refused check changed the TTL to {ttl}");
}

#[tokio::test]
async fn missing_key_is_a_full_bucket() {
    let shared = Shared::new();
    let store = &shared.store;
    let mut conn = shared.raw().await;
    let peeked = store.peek("fresh", &fifty_per_hour()).await.unwrap();
    assert_eq!(peeked.source, Source::Redis);
    assert_eq!(peeked.decision.remaining, 50);
    assert_eq!(peeked.decision.reset_after_us, 0);
    assert!(!exists(&mut conn, &store.bucket_key("fresh")).await, "peek must not write");
    let checked = store.check("fresh", &fifty_per_hour(), 5).await.unwrap();
    assert!(checked.decision.allowed);
    assert_eq!(checked.decision.remaining, 45);
    assert_eq!(checked.decision.reset_after_us, 5 * 3600 * 1_000_000);
}

#[tokio::test]
async fn report_mode_returns_a_miss_and_creates_nothing() {
    let shared = Shared::new();
    let store = &shared.store;
    let mut conn = shared.raw().await;
    let policy = fifty_per_hour();
    assert_eq!(store.decide_at("cold", &policy, 1, None, OnMiss::Report).await.unwrap(), None);
    assert!(!exists(&mut conn, &store.bucket_key("cold")).await);

    // Once the key exists, report mode decides like full mode.
    let first = store.decide_at("cold", &policy, 1, None, OnMiss::Full).await.unwrap().unwrap();
    assert_eq!((first.decision.remaining, first.after.version), (49, 1));
    let second = store.decide_at("cold", &policy, 1, None, OnMiss::Report).await.unwrap().unwrap();
    assert_eq!((second.decision.remaining, second.after.version), (48, 2));
    assert!(!second.created);
}

#[tokio::test]
async fn seeding_never_clobbers_an_existing_key() {
    let shared = Shared::new();
    let store = &shared.store;
    let mut conn = shared.raw().await;
    let policy = fifty_per_hour();
    let now = wall_clock_us();
    let first_seed = VersionedState { state: BucketState { tokens: 5, last_refill_us: now }, version: 7 };
    let first = store.seed_and_decide("user", &policy, 1, &first_seed, Some(now)).await.unwrap();
    assert!(first.created && first.decision.allowed);
    assert_eq!(first.after, VersionedState { state: BucketState { tokens: 4, last_refill_us: now }, version: 8 });

    // A second seeder with a different (fuller, newer-looking) state decides against the first one's result.
    let second_seed = VersionedState { state: BucketState { tokens: 50, last_refill_us: now }, version: 100 };
    let second = store.seed_and_decide("user", &policy, 1, &second_seed, Some(now)).await.unwrap();
    assert!(!second.created && second.decision.allowed);
    assert_eq!(second.after, VersionedState { state: BucketState { tokens: 3, last_refill_us: now }, version: 9 });
    let stored = hash(&mut conn, &store.bucket_key("user")).await;
    assert_eq!((stored["t"].as_str(), stored["v"].as_str()), ("3", "9"));

    // A seed that refuses changes no state, but is cached as loaded (same version) so the next refusal is a hit.
    let empty_seed = VersionedState { state: BucketState { tokens: 0, last_refill_us: now }, version: 3 };
    let refused = store.seed_and_decide("broke", &policy, 1, &empty_seed, Some(now)).await.unwrap();
    assert!(refused.created && !refused.decision.allowed);
    assert_eq!(refused.after, empty_seed);
    let cached = hash(&mut conn, &store.bucket_key("broke")).await;
    assert_eq!((cached["t"].as_str(), cached["v"].as_str()), ("0", "3"));
    let again = store.decide_at("broke", &policy, 1, Some(now), OnMiss::Report).await.unwrap();
    assert!(again.is_some_and(|d| !d.decision.allowed && d.after == empty_seed), "a hit, still refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_seeders_grant_exactly_capacity() {
    let shared = Shared::new();
    let mut second_config = config(&shared.url);
    second_config.key_prefix = shared.prefix.clone();
    let stores = [shared.store.clone(), RedisStore::connect(second_config).unwrap()];
    let policy = fifty_per_hour();
    let seed = VersionedState { state: BucketState { tokens: 50, last_refill_us: wall_clock_us() }, version: 0 };
    let mut tasks = Vec::new();
    for store in &stores {
        for _ in 0..100 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move { store.seed_and_decide("seeded", &policy, 1, &seed, None).await }));
        }
    }
    let (mut allowed, mut created) = (0, 0);
    for task in tasks {
        let decided = task.await.unwrap().unwrap();
        allowed += usize::from(decided.decision.allowed);
        created += usize::from(decided.created);
    }
    assert_eq!(allowed, 50);
    assert_eq!(created, 1, "only the first seeder finds the key missing");
    let mut conn = shared.raw().await;
    assert_eq!(hash(&mut conn, &shared.store.bucket_key("seeded")).await["v"], "50");
}

#[tokio::test]
async fn script_is_loaded_again_after_script_flush() {
    let server = PrivateRedis::start();
    let store = RedisStore::connect(config(&server.url())).unwrap();
    let mut conn = raw(&server.url()).await;
    let cached = |info: String| -> u64 {
        info.lines()
            .find_map(|line| line.strip_prefix("number_of_cached_scripts:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("INFO memory reports number_of_cached_scripts")
    };
    let policy = fifty_per_hour();
    assert_eq!(store.check("k", &policy, 1).await.unwrap().decision.remaining, 49);
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await.unwrap();
    assert_eq!(cached(info), 1);

    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await.unwrap();
    assert_eq!(cached(info), 0);

    assert_eq!(store.check("k", &policy, 1).await.unwrap().decision.remaining, 48);
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await.unwrap();
    assert_eq!(cached(info), 1);

    // The multi-key script is loaded beside it, and again after a flush.
    let both = [Limit { key: "k", policy, cost: 1 }, Limit { key: "m", policy, cost: 1 }];
    assert_eq!(store.check_all(&both).await.unwrap().decisions[0].remaining, 47);
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await.unwrap();
    assert_eq!(cached(info), 2);
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
    assert_eq!(store.check_all(&both).await.unwrap().decisions[1].remaining, 48);
}

#[tokio::test]
async fn microsecond_timestamps_round_trip_exactly() {
    let shared = Shared::new();
    let store = &shared.store;
    let mut conn = shared.raw().await;
    // Slow refill, so the key's TTL (the fill time) cannot run out between the two checks.
    let policy = fifty_per_hour();
    // An odd µs timestamp of today, and the largest integer a Lua double holds exactly.
    for (key, now) in [("today", 1_767_225_600_123_457_u64), ("limit", (1 << 53) - 1)] {
        let decided = store.decide_at(key, &policy, 1, Some(now), OnMiss::Full).await.unwrap().unwrap();
        assert_eq!(decided.after.state.last_refill_us, now);
        let stored = hash(&mut conn, &store.bucket_key(key)).await;
        assert_eq!(stored["l"], now.to_string());
        assert_eq!((stored["t"].as_str(), stored["v"].as_str()), ("49", "1"));
        // Read back by the script at the same instant: nothing refilled, nothing lost.
        let again = store.decide_at(key, &policy, 1, Some(now), OnMiss::Full).await.unwrap().unwrap();
        assert_eq!(again.after.state, BucketState { tokens: 48, last_refill_us: now });
    }

    // With Redis's own clock, the stored instant lies between two TIME readings around the check.
    let time_us = |conn: &mut MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            let (s, us): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
            s * 1_000_000 + us
        }
    };
    let before = time_us(&mut conn).await;
    let slow = fifty_per_hour();
    let decided = store.decide_at("server-clock", &slow, 1, None, OnMiss::Full).await.unwrap().unwrap();
    let after = time_us(&mut conn).await;
    let last: String =
        redis::cmd("HGET").arg(store.bucket_key("server-clock")).arg("l").query_async(&mut conn).await.unwrap();
    assert_eq!(last, decided.after.state.last_refill_us.to_string());
    assert!((before..=after).contains(&decided.after.state.last_refill_us), "{before} <= {last} <= {after}");
}

#[tokio::test]
async fn policies_live_beside_the_bucket_without_touching_it() {
    let shared = Shared::new();
    let store = &shared.store;
    let mut conn = shared.raw().await;
    let policy = fifty_per_hour();
    assert_eq!(store.policy("p").await.unwrap(), None);
    assert!(store.check("p", &policy, 3).await.unwrap().decision.allowed);
    let bucket = hash(&mut conn, &store.bucket_key("p")).await;

    let custom = Policy::per_minute(100).unwrap();
    store.set_policy("p", &custom).await.unwrap();
    assert_eq!(store.policy("p").await.unwrap(), Some(custom));
    assert_eq!(hash(&mut conn, &store.bucket_key("p")).await, bucket, "a policy change never touches the bucket");
    assert_eq!(pttl(&mut conn, &store.policy_key("p")).await, -1, "policies do not expire");

    assert!(store.delete_policy("p").await.unwrap());
    assert!(!store.delete_policy("p").await.unwrap());
    assert_eq!(store.policy("p").await.unwrap(), None);

    // Hand-edited policies are reported, not trusted.
    let key = store.policy_key("bad");
    let _: () = redis::cmd("HSET").arg(&key).arg("c").arg(0).arg("i").arg(5).query_async(&mut conn).await.unwrap();
    assert!(matches!(store.policy("bad").await, Err(StoreError::InvalidPolicy(_))));
    let _: () = redis::cmd("HDEL").arg(&key).arg("i").query_async(&mut conn).await.unwrap();
    assert!(matches!(store.policy("bad").await, Err(StoreError::Backend { .. })));
}

#[tokio::test]
async fn reset_and_invalidate_forget_buckets_but_not_policies() {
    let shared = Shared::new();
    let store = &shared.store;
    let mut conn = shared.raw().await;
    let policy = fifty_per_hour();
    for key in ["a", "b", "c"] {
        assert!(store.check(key, &policy, 10).await.unwrap().decision.allowed);
    }
    store.set_policy("a", &policy).await.unwrap();

    store.reset("a").await.unwrap();
    assert_eq!(store.peek("a", &policy).await.unwrap().decision.remaining, 50);
    assert_eq!(store.policy("a").await.unwrap(), Some(policy));

    store.invalidate(&["b".to_owned(), "c".to_owned(), "never-seen".to_owned()]).await.unwrap();
    for key in ["b", "c"] {
        assert!(!exists(&mut conn, &store.bucket_key(key)).await, "{key}");
    }
    store.invalidate(&[]).await.unwrap();
}

#[tokio::test]
async fn corrupt_bucket_is_a_backend_error_not_a_panic() {
    let shared = Shared::new();
    let store = &shared.store;
    let mut conn = shared.raw().await;
    let policy = fifty_per_hour();
    let _: () = redis::cmd("HSET")
        .arg(store.bucket_key("garbled"))
        .arg("t")
        .arg("many")
        .arg("l")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET").arg(store.bucket_key("string")).arg("x").query_async(&mut conn).await.unwrap();
    for key in ["garbled", "string"] {
        let error = store.check(key, &policy, 1).await.unwrap_err();
        assert!(matches!(error, StoreError::Backend { .. }) && !error.is_transient(), "{key}: {error}");
        let limits = [Limit { key: "fine", policy, cost: 1 }, Limit { key, policy, cost: 1 }];
        let error = store.check_all(&limits).await.unwrap_err();
        assert!(matches!(error, StoreError::Backend { .. }) && !error.is_transient(), "{key}: {error}");
    }
    assert_eq!(store.peek("fine", &policy).await.unwrap().decision.remaining, 50, "debited beside a corrupt key");
}

#[tokio::test]
async fn health_pings_redis() {
    let shared = Shared::new();
    shared.store.ping().await.unwrap();
    let health = shared.store.health().await;
    assert_eq!(health.len(), 1);
    assert_eq!(health[0].name, "redis");
    assert!(health[0].up, "{}", health[0].detail);
}

fn fast_config(url: &str) -> RedisConfig {
    let mut config = config(url);
    config.command_timeout = Duration::from_millis(150);
    config.connect_timeout = Duration::from_millis(150);
    config
}

/// Runs a check and returns its error and how long it took; panics if it succeeded.
async fn failing_check(store: &RedisStore) -> (StoreError, Duration) {
    let started = Instant::now();
    let result = store.check("k", &fifty_per_hour(), 1).await;
    (result.expect_err("Redis is not answering"), started.elapsed())
}

/// Checks until one succeeds or `within` has passed; returns how many attempts failed first.
async fn check_until_ok(store: &RedisStore, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    let mut failures = 0;
    loop {
        match store.check("k", &fifty_per_hour(), 1).await {
            Ok(_) => return failures,
            Err(e) => {
                assert!(e.is_transient(), "{e}");
                assert!(Instant::now() < deadline, "still failing after {within:?}: {e}");
                failures += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test]
async fn unreachable_redis_starts_degraded_and_fails_fast() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let store = RedisStore::connect(fast_config(&url)).expect("connect does not touch Redis");
    for _ in 0..3 {
        let (error, took) = failing_check(&store).await;
        assert!(matches!(error, StoreError::Unavailable { .. }), "{error}");
        assert!(took < Duration::from_millis(300), "took {took:?}");
    }
    let policy = fifty_per_hour();
    let error = store.check_all(&[Limit { key: "a", policy, cost: 1 }, Limit { key: "b", policy, cost: 1 }]).await;
    assert!(matches!(error, Err(StoreError::Unavailable { .. })), "{error:?}");
    assert!(store.ping().await.unwrap_err().is_transient());
    let health = store.health().await;
    assert!(!health[0].up);
}

#[tokio::test]
async fn killed_redis_fails_fast_and_the_pool_recovers_on_restart() {
    let mut server = PrivateRedis::start();
    let store = RedisStore::connect(fast_config(&server.url())).unwrap();
    // Warm several pooled connections, so that stale ones exist when the server dies.
    let policy = fifty_per_hour();
    let warm: Vec<_> = (0..8).map(|_| store.check("k", &policy, 1)).collect();
    for result in futures::future::join_all(warm).await {
        assert!(result.unwrap().decision.allowed);
    }

    server.kill();
    for _ in 0..3 {
        let (error, took) = failing_check(&store).await;
        assert!(error.is_transient(), "{error}");
        assert!(took < Duration::from_millis(300), "took {took:?}");
    }

    server.restart();
    check_until_ok(&store, Duration::from_secs(2)).await;
    // The restarted server lost the bucket: a fresh one, and every later check lands on a healthy connection.
    let remaining = store.peek("k", &fifty_per_hour()).await.unwrap().decision.remaining;
    assert_eq!(remaining, 49);
    for expected in (44..49).rev() {
        assert_eq!(store.check("k", &fifty_per_hour(), 1).await.unwrap().decision.remaining, expected);
    }
}

#[tokio::test]
async fn stalled_redis_times_out_and_does_not_poison_the_pool() {
    let server = PrivateRedis::start();
    let store = RedisStore::connect(fast_config(&server.url())).unwrap();
    assert!(store.check("k", &fifty_per_hour(), 1).await.unwrap().decision.allowed);

    server.freeze();
    // First on the pooled connection, then on fresh ones whose handshake never completes.
    for _ in 0..3 {
        let (error, took) = failing_check(&store).await;
        assert!(matches!(error, StoreError::Timeout { .. }), "{error}");
        assert!(took < Duration::from_millis(300), "took {took:?}");
    }
    let started = Instant::now();
    assert!(matches!(store.ping().await, Err(StoreError::Timeout { .. })));
    assert!(started.elapsed() < Duration::from_millis(300));

    server.thaw();
    check_until_ok(&store, Duration::from_secs(2)).await;
    // Timed-out checks may still have run once Redis woke up (a timeout is not a refusal), but from here on every
    // reply belongs to its own request: remaining falls by exactly one per check.
    let mut remaining = store.peek("k", &fifty_per_hour()).await.unwrap().decision.remaining;
    for _ in 0..5 {
        let now = store.check("k", &fifty_per_hour(), 1).await.unwrap().decision.remaining;
        assert_eq!(now, remaining - 1);
        remaining = now;
    }
}

#[tokio::test]
async fn connection_stalled_mid_command_is_dropped_not_pooled() {
    let server = PrivateRedis::start();
    let proxy = ReplyTrap::start(format!("127.0.0.1:{}", server.port())).await;
    let store = RedisStore::connect(fast_config(&proxy.url())).unwrap();
    assert_eq!(store.check("k", &fifty_per_hour(), 1).await.unwrap().decision.remaining, 49);
    assert_eq!(store.pool_status().size, 1);

    // The pool's health check (PING) passes; the script's reply never comes.
    proxy.arm();
    let (error, took) = failing_check(&store).await;
    assert!(matches!(error, StoreError::Timeout { .. }), "{error}");
    assert!(took < Duration::from_millis(300), "took {took:?}");
    assert_eq!(store.pool_status().size, 0, "the stalled connection must leave the pool");

    // Redis did run the timed-out check (only its reply was lost): a timeout may have spent a token.
    assert_eq!(store.check("k", &fifty_per_hour(), 1).await.unwrap().decision.remaining, 47);
}
