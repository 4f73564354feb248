//! The tiered store through its public interface, against real Redis and PostgreSQL, each behind a fault proxy
//! so a test can take either away: where each decision comes from, what reaches PostgreSQL and when.

mod tiered_rig;

use std::time::Duration;

use bucket_store::tiered::TieredConfig;
use bucket_store::{Limit, Source, Store};
use bucket_testkit::Fault;
use deadpool_redis::redis;
use tiered_rig::{eventually, per_hour, row_state, sync, write_behind, Rig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_flow_new_user_then_redis_then_postgres_once_the_cache_is_gone() {
    let rig = Rig::new(sync()).await;
    let policy = per_hour(10);
    assert_eq!(rig.check("seed", &policy).await, (true, Source::NewUser, 9));
    assert_eq!(rig.check("seed", &policy).await, (true, Source::Redis, 8));
    // Sync mode: the row is committed before the answer, and equals Redis's state.
    let row = rig.schema.row("seed").await.unwrap();
    assert_eq!(Some(row_state(&row)), rig.redis_state("seed").await);
    assert_eq!((row.tokens, row.version), (8, 2));

    // The cache loses the key (eviction, restart): PostgreSQL's row is the truth, and the decision continues from
    // it: 7 left, not a refilled bucket.
    let mut conn = rig.keys.raw().await;
    let _: () = redis::cmd("DEL").arg(rig.redis.bucket_key("seed")).query_async(&mut conn).await.unwrap();
    assert_eq!(rig.check("seed", &policy).await, (true, Source::Postgres, 7));
    assert_eq!(rig.check("seed", &policy).await, (true, Source::Redis, 6));
    let row = rig.schema.row("seed").await.unwrap();
    assert_eq!((row.tokens, row.version), (6, 4));
    assert_eq!(rig.stats().fallbacks_to_postgres, 0, "a miss is not a fallback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_decisions_never_write_to_postgres_in_any_mode() {
    for config in [sync(), write_behind(Duration::from_millis(5))] {
        let mode = config.write_mode;
        let rig = Rig::new(config).await;
        let policy = per_hour(2);
        for _ in 0..2 {
            assert!(rig.check("broke", &policy).await.0, "{mode:?}");
        }
        rig.store.flush().await.unwrap();
        let before = rig.schema.row("broke").await.expect("row written");
        assert_eq!((before.tokens, before.version), (0, 2), "{mode:?}");
        let statements = rig.stats().postgres_write_statements;

        for _ in 0..5 {
            assert_eq!(rig.check("broke", &policy).await, (false, Source::Redis, 0), "{mode:?}");
        }
        // Refused while Redis is away: PostgreSQL's own statement refuses without writing either.
        rig.redis_proxy.set(Fault::Refuse);
        for _ in 0..3 {
            assert_eq!(rig.check("broke", &policy).await, (false, Source::Postgres, 0), "{mode:?}");
        }
        rig.store.flush().await.unwrap();
        // xmin is the writing transaction and ctid the row version's place: any write would change both.
        assert_eq!(rig.schema.row("broke").await.unwrap(), before, "{mode:?}");
        assert_eq!(rig.stats().postgres_write_statements, statements, "{mode:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_behind_sends_batches_not_one_statement_per_decision() {
    let rig = Rig::new(write_behind(Duration::from_millis(20))).await;
    let policy = per_hour(50);
    let keys: Vec<String> = (0..10).map(|i| format!("batch-{i}")).collect();
    let mut tasks = Vec::new();
    for key in &keys {
        for _ in 0..10 {
            let (store, key) = (rig.store.clone(), key.clone());
            tasks.push(tokio::spawn(async move { store.check(&key, &policy, 1).await.unwrap().decision.allowed }));
        }
    }
    for task in tasks {
        assert!(task.await.unwrap());
    }
    rig.store.flush().await.unwrap();
    let statements = rig.stats().postgres_write_statements;
    assert!((1..100).contains(&statements), "{statements} statements for 100 decisions");
    for key in &keys {
        let row = rig.schema.row(key).await.unwrap();
        assert_eq!(Some(row_state(&row)), rig.redis_state(key).await, "{key}");
        assert_eq!((row.tokens, row.version), (40, 10), "{key}");
    }
    println!("write-behind: 100 decisions on 10 keys reached PostgreSQL in {statements} statements");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_reach_postgres_before_it_decides_the_key_itself() {
    // A flush interval longer than the test: Redis's decisions sit in the queue when Redis goes away.
    let rig = Rig::new(write_behind(Duration::from_secs(600))).await;
    let policy = per_hour(5);
    for _ in 0..3 {
        assert!(rig.check("queued", &policy).await.0);
    }
    assert_eq!(rig.schema.row("queued").await, None, "still queued");
    rig.redis_proxy.set(Fault::Refuse);
    let mut granted = 0;
    for _ in 0..5 {
        let (allowed, source, _) = rig.check("queued", &policy).await;
        assert_eq!(source, Source::Postgres);
        granted += u64::from(allowed);
    }
    // 3 spent in Redis + 2 in PostgreSQL = capacity. Deciding from the missing row would have granted 5 more.
    assert_eq!(granted, 2);
    let row = rig.schema.row("queued").await.unwrap();
    assert_eq!((row.tokens, row.version), (0, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_back_with_stale_data_never_regrants_what_postgres_spent() {
    let rig = Rig::new(sync()).await;
    let policy = per_hour(5);
    for _ in 0..2 {
        assert!(rig.check("stale", &policy).await.0);
    }
    rig.redis_proxy.set(Fault::Refuse);
    let outage: Vec<_> = [(); 4].iter().map(|_| rig.check("stale", &policy)).collect();
    let outage: Vec<(bool, Source, u64)> = futures::future::join_all(outage).await;
    assert_eq!(outage.iter().filter(|o| o.0).count(), 3, "{outage:?}");
    assert!(outage.iter().all(|o| o.1 == Source::Postgres), "{outage:?}");
    assert!(!rig.stats().redis_up);
    // Redis kept its data: it still believes 3 tokens are left.
    assert_eq!(rig.redis_state("stale").await.map(|s| s.0), Some(3));

    rig.redis_proxy.set(Fault::Pass);
    eventually(Duration::from_secs(5), "redis marked up again", || rig.stats().redis_up).await;
    assert_eq!(rig.check("stale", &policy).await, (false, Source::Postgres, 0), "reloaded from PostgreSQL");
    assert_eq!(rig.check("stale", &policy).await, (false, Source::Redis, 0), "then served by Redis again");
    assert!(rig.stats().keys_invalidated >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_drops_the_keys_queued_write_so_spent_tokens_never_come_back() {
    // A flush interval far longer than the test: the write of the spending check is still queued at the reset.
    let rig = Rig::new(write_behind(Duration::from_secs(60))).await;
    let policy = per_hour(3);
    for _ in 0..3 {
        assert!(rig.check("spent", &policy).await.0);
    }
    assert_eq!(rig.stats().queue_depth, 1);
    rig.store.reset("spent").await.unwrap();
    rig.store.flush().await.unwrap();
    assert!(rig.schema.row("spent").await.is_none(), "the queued write landed after the reset");
    assert_eq!(rig.check("spent", &policy).await, (true, Source::NewUser, 2));
}

/// Several limits through both tiers, all or nothing: seeded from PostgreSQL on a Redis miss, written to PostgreSQL
/// as one batch before the answer (sync), decided by PostgreSQL's transaction while Redis is away, and reloaded
/// from PostgreSQL when Redis returns. No refusal writes anything in either tier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_limit_requests_are_all_or_nothing_through_both_tiers() {
    let rig = Rig::new(sync()).await;
    let policy = per_hour(5);
    let all = |a: u64, b: u64| [Limit { key: "a", policy, cost: a }, Limit { key: "b", policy, cost: b }];
    let remaining = |o: &bucket_store::Outcomes| o.decisions.iter().map(|d| d.remaining).collect::<Vec<_>>();
    assert!(rig.check("a", &policy).await.0);
    let mut conn = rig.keys.raw().await;
    let _: () = redis::cmd("DEL").arg(rig.redis.bucket_key("a")).query_async(&mut conn).await.unwrap();
    let statements = rig.stats().postgres_write_statements;

    let out = rig.store.check_all(&all(1, 1)).await.unwrap();
    assert!(out.allowed);
    assert_eq!(out.source, Source::Postgres, "a was loaded from its row");
    assert_eq!(remaining(&out), vec![3, 4], "a continued from PostgreSQL's row, not from a full bucket");
    assert_eq!(rig.stats().postgres_write_statements, statements + 1, "one batch for both rows");
    for key in ["a", "b"] {
        let row = rig.schema.row(key).await.unwrap();
        assert_eq!(Some(row_state(&row)), rig.redis_state(key).await, "{key}: sync mode wrote before answering");
    }
    let (a, b) = (rig.schema.row("a").await.unwrap(), rig.schema.row("b").await.unwrap());
    assert_eq!((a.version, b.version), (2, 1));

    let out = rig.store.check_all(&all(1, 5)).await.unwrap();
    assert!(!out.allowed && out.decisions[0].allowed && !out.decisions[1].allowed, "{out:?}");
    assert_eq!((rig.schema.row("a").await.unwrap(), rig.schema.row("b").await.unwrap()), (a.clone(), b.clone()));
    assert_eq!(rig.redis_state("a").await, Some(row_state(&a)), "Redis was debited by a refusal");

    rig.redis_proxy.set(Fault::Refuse);
    let out = rig.store.check_all(&all(1, 1)).await.unwrap();
    assert_eq!((out.allowed, out.source, remaining(&out)), (true, Source::Postgres, vec![2, 3]));
    let (a, b) = (rig.schema.row("a").await.unwrap(), rig.schema.row("b").await.unwrap());
    assert_eq!((a.tokens, a.version, b.tokens, b.version), (2, 3, 3, 2));
    let out = rig.store.check_all(&all(3, 1)).await.unwrap();
    assert!(!out.allowed);
    assert_eq!((rig.schema.row("a").await.unwrap(), rig.schema.row("b").await.unwrap()), (a, b));
    assert!(rig.stats().fallbacks_to_postgres >= 2);

    rig.redis_proxy.set(Fault::Pass);
    eventually(Duration::from_secs(5), "redis marked up again", || rig.stats().redis_up).await;
    let out = rig.store.check_all(&all(1, 1)).await.unwrap();
    assert_eq!((out.allowed, out.source, remaining(&out)), (true, Source::Postgres, vec![1, 2]), "reloaded");
    let out = rig.store.check_all(&all(1, 1)).await.unwrap();
    assert_eq!((out.allowed, out.source, remaining(&out)), (true, Source::Redis, vec![0, 1]));
}

/// PostgreSQL down while Redis decides a multi-limit request: the keys are new to Redis and cannot be loaded, so they
/// are seeded full (Redis's own rule); the allowed request's writes wait in the queue, one per key, and reach
/// PostgreSQL when it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_limit_writes_wait_in_the_queue_while_postgres_is_down() {
    let rig = Rig::new(sync()).await;
    let policy = per_hour(5);
    rig.pg_proxy.set(Fault::Refuse);
    let limits = [Limit { key: "c", policy, cost: 2 }, Limit { key: "d", policy, cost: 1 }];
    let out = rig.store.check_all(&limits).await.unwrap();
    assert_eq!((out.allowed, out.source), (true, Source::Redis));
    assert_eq!(rig.stats().queue_depth, 2);
    assert_eq!(rig.stats().writes_queued_while_postgres_down, 2);
    let refused = [Limit { key: "c", policy, cost: 4 }, Limit { key: "d", policy, cost: 1 }];
    assert!(!rig.store.check_all(&refused).await.unwrap().allowed);
    assert_eq!(rig.stats().queue_depth, 2, "a refusal queued a write");
    // Both tiers away: an error the caller's failure mode handles, never a panic nor a guess.
    rig.redis_proxy.set(Fault::Refuse);
    let error = rig.store.check_all(&limits).await.expect_err("both tiers are down");
    assert!(error.is_transient(), "{error}");
    rig.redis_proxy.set(Fault::Pass);

    rig.pg_proxy.set(Fault::Pass);
    eventually(Duration::from_secs(5), "the queue drained", || rig.stats().queue_depth == 0).await;
    for (key, tokens) in [("c", 3), ("d", 4)] {
        let row = rig.schema.row(key).await.expect("row written after the outage");
        assert_eq!((row.tokens, row.version), (tokens, 1), "{key}");
        assert_eq!(Some(row_state(&row)), rig.redis_state(key).await, "{key}");
    }
}

/// PostgreSQL down, then one Redis call too slow: Redis is marked down, but it is the only tier left, so the next
/// request asks it again instead of failing until the prober's next turn (here a minute away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_down_a_redis_hiccup_fails_only_the_requests_it_delays() {
    let config = TieredConfig { retry_interval: Duration::from_secs(60), ..sync() };
    let rig = Rig::new(config).await;
    let policy = per_hour(5);
    assert_eq!(rig.check("h", &policy).await, (true, Source::NewUser, 4));
    rig.pg_proxy.set(Fault::Refuse);
    assert_eq!(rig.check("h", &policy).await, (true, Source::Redis, 3));
    assert!(!rig.stats().postgres_up);
    // Past the 200 ms command timeout: this request fails, and Redis is marked down.
    rig.redis_proxy.set(Fault::Latency(Duration::from_millis(400)));
    let error = rig.store.check("h", &policy, 1).await.expect_err("Redis too slow, PostgreSQL down");
    assert!(error.is_transient(), "{error}");
    assert!(!rig.stats().redis_up);
    rig.redis_proxy.set(Fault::Pass);
    // The delayed script may still have run in Redis (its reply was lost, not the command): 2 or 1 left.
    let (allowed, source, remaining) = rig.check("h", &policy).await;
    assert!(allowed && source == Source::Redis && remaining <= 2, "{remaining} left from {source:?}");
    assert!(rig.stats().redis_up, "an answer from Redis marks it up again, without waiting for the prober");
    // Still never over capacity: the bucket runs dry where it should.
    let mut granted = 0;
    for _ in 0..5 {
        granted += u64::from(rig.check("h", &policy).await.0);
    }
    assert_eq!(granted, remaining, "grants after the hiccup");
}
