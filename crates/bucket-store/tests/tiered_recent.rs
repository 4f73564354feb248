//! Which tier a tiered check asks first (`tiered/recent.rs`), against real Redis and PostgreSQL: a key the process
//! has not seen in Redis lately is loaded first and seeded with its decision in one Redis call, a key it has seen is
//! asked of Redis first, and a wrong guess either way decides exactly what asking Redis first would have.

mod tiered_rig;

use bucket_store::redis::RedisStore;
use bucket_store::tiered::{no_events, TieredStore};
use std::time::Duration;

use bucket_store::{AnyStore, CacheSettings, Limit, Source, Store};
use bucket_testkit::{redis_server, PrivateRedis, TestSchema};
use deadpool_redis::redis;
use diesel_async::SimpleAsyncConnection;
use tiered_rig::{eventually, per_hour, sync, Rig};

/// `EVALSHA` calls the server has answered: the scripts every decision runs.
async fn script_calls(url: &str) -> u64 {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// A synchronous tiered store on a Redis server of its own, whose command counts are the test's alone.
async fn private_store() -> (PrivateRedis, TestSchema, TieredStore) {
    let server = PrivateRedis::start();
    let schema = TestSchema::new();
    let redis = RedisStore::connect(redis_server::config(&server.url())).unwrap();
    let store = TieredStore::new(redis, schema.store().await, sync(), no_events()).await;
    (server, schema, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_user_costs_one_redis_call_and_a_returning_one_no_load() {
    let (server, schema, store) = private_store().await;
    let policy = per_hour(5);
    const N: u64 = 40;

    let calls = script_calls(&server.url()).await;
    for i in 0..N {
        let outcome = store.check(&format!("new-{i}"), &policy, 1).await.unwrap();
        assert_eq!((outcome.decision.allowed, outcome.source, outcome.decision.remaining), (true, Source::NewUser, 4));
    }
    // Asking Redis first made it two: one that reported the miss, one that seeded and decided.
    assert_eq!(script_calls(&server.url()).await - calls, N, "one Redis call per new user");
    let stats = store.stats();
    assert_eq!(stats.redis_misses, 0, "{stats:?}");
    assert_eq!(stats.postgres_load_statements, N, "each new user's row looked for once: {stats:?}");

    let calls = script_calls(&server.url()).await;
    for i in 0..N {
        let outcome = store.check(&format!("new-{i}"), &policy, 1).await.unwrap();
        assert_eq!((outcome.decision.allowed, outcome.source, outcome.decision.remaining), (true, Source::Redis, 3));
    }
    assert_eq!(script_calls(&server.url()).await - calls, N, "one Redis call per returning user");
    let after = store.stats();
    assert_eq!(after.postgres_load_statements, N, "a returning user's row is not loaded: {after:?}");
    assert_eq!(after.redis_misses, 0, "{after:?}");
    for i in 0..N {
        assert_eq!(schema.row(&format!("new-{i}")).await.map(|r| (r.tokens, r.version)), Some((3, 2)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_redis_holds_wins_over_the_row_loaded_first() {
    let rig = Rig::new(sync()).await;
    let other = rig.another_instance(sync()).await;
    let policy = per_hour(5);
    for remaining in [4, 3] {
        assert_eq!(other.check("shared", &policy, 1).await.unwrap().decision.remaining, remaining);
    }
    // PostgreSQL behind Redis (as write-behind, or a write still in flight, leaves it): a full bucket, version 1.
    let mut sql = rig.schema.sql().await;
    sql.batch_execute("UPDATE rate_limits SET tokens = 5, version = 1 WHERE user_id = 'shared'").await.unwrap();
    // This instance never saw the key: it loads that row first, and the seed call decides on Redis's bucket.
    assert_eq!(rig.check("shared", &policy).await, (true, Source::Redis, 2));
    assert_eq!(rig.redis_state("shared").await.map(|(t, _, v)| (t, v)), Some((2, 3)));
    let stats = rig.stats();
    assert_eq!((stats.redis_misses, stats.postgres_load_statements), (0, 1), "{stats:?}");
    // Seen now: asked of Redis first, nothing loaded.
    assert_eq!(rig.check("shared", &policy).await, (true, Source::Redis, 1));
    assert_eq!(rig.stats().postgres_load_statements, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seen_key_that_redis_lost_is_decided_from_its_row() {
    let rig = Rig::new(sync()).await;
    let policy = per_hour(5);
    assert_eq!(rig.check("lost", &policy).await, (true, Source::NewUser, 4));
    assert_eq!(rig.check("lost", &policy).await, (true, Source::Redis, 3));
    // Gone from Redis (a restart without persistence, an eviction) while the process still expects it there.
    let mut conn = rig.keys.raw().await;
    let deleted: u64 = redis::cmd("DEL").arg(rig.redis.bucket_key("lost")).query_async(&mut conn).await.unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(rig.check("lost", &policy).await, (true, Source::Postgres, 2), "decided from the row, not full");
    assert_eq!(rig.stats().redis_misses, 1);
    assert_eq!(rig.check("lost", &policy).await, (true, Source::Redis, 1));
    assert_eq!(rig.stats().redis_misses, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_limits_of_new_users_cost_one_redis_call() {
    let (server, _schema, store) = private_store().await;
    let policy = per_hour(5);
    let limits = [Limit { key: "user-1", policy, cost: 1 }, Limit { key: "route-1", policy, cost: 2 }];
    let remaining = |o: &bucket_store::Outcomes| o.decisions.iter().map(|d| d.remaining).collect::<Vec<_>>();

    let calls = script_calls(&server.url()).await;
    let out = store.check_all(&limits).await.unwrap();
    assert_eq!((out.allowed, out.source, remaining(&out)), (true, Source::NewUser, vec![4, 3]));
    // Asking Redis first made it two: one run that reported both misses, one that seeded them.
    assert_eq!(script_calls(&server.url()).await - calls, 1);
    let loads = store.stats().postgres_load_statements;

    let out = store.check_all(&limits).await.unwrap();
    assert_eq!((out.allowed, out.source, remaining(&out)), (true, Source::Redis, vec![3, 1]));
    assert_eq!(script_calls(&server.url()).await - calls, 2);
    let stats = store.stats();
    assert_eq!((stats.postgres_load_statements, stats.redis_misses), (loads, 0), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_key_is_no_redis_miss() {
    let rig = Rig::new(sync()).await;
    let policy = per_hour(5);
    assert_eq!(rig.check("reset", &policy).await, (true, Source::NewUser, 4));
    assert_eq!(rig.check("reset", &policy).await, (true, Source::Redis, 3));
    rig.store.reset("reset").await.unwrap();
    // Redis and PostgreSQL both forgot the bucket on purpose: a new user again, and Redis lost nothing.
    assert_eq!(rig.check("reset", &policy).await, (true, Source::NewUser, 4));
    let stats = rig.stats();
    assert_eq!(stats.redis_misses, 0, "{stats:?}");
    assert_eq!(rig.check("reset", &policy).await, (true, Source::Redis, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reset_through_another_instance_is_forgotten_here_too() {
    let rig = Rig::new(sync()).await;
    let other = rig.another_instance(sync()).await;
    let here = AnyStore::tiered(rig.store.clone(), CacheSettings::default());
    let there = AnyStore::tiered(other, CacheSettings::default());
    let policy = per_hour(5);
    assert!(here.check("shared-reset", &policy, 1).await.unwrap().decision.allowed);
    assert!(rig.store.expects_in_redis("shared-reset"));
    there.reset("shared-reset").await.unwrap();
    // The reset's notification reaches this instance's listener, which forgets the key in its first-look table.
    eventually(Duration::from_secs(5), "the reset heard here", || !rig.store.expects_in_redis("shared-reset")).await;
    let outcome = here.check("shared-reset", &policy, 1).await.unwrap();
    assert_eq!((outcome.source, outcome.decision.remaining), (Source::NewUser, 4));
    assert_eq!(rig.stats().redis_misses, 0, "a reset is no key Redis lost");
}
