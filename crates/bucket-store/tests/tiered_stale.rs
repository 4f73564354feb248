//! A Redis bucket older than PostgreSQL's row (a failover to a replica that lagged) never grants in sync mode:
//! PostgreSQL refuses the decision's write, the bucket is dropped, and the request is decided again from the row.
//! Against real Redis and PostgreSQL, with and without group commit.

mod tiered_rig;

use std::time::{Duration, Instant};

use bucket_core::{decide, BucketState};
use bucket_store::{Limit, PendingWrite, Source, Store, VersionedState};
use bucket_testkit::Fault;
use tiered_rig::{per_hour, row_state, sync, sync_window, Rig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_redis_bucket_is_dropped_and_the_request_decided_from_postgres() {
    for config in [sync_window(Duration::from_millis(1)), sync()] {
        let window = config.commit_window;
        let rig = Rig::new(config).await;
        let policy = per_hour(10);
        assert_eq!(rig.check("rolled", &policy).await, (true, Source::NewUser, 9));
        let replica = rig.redis_state("rolled").await.expect("seeded");
        for remaining in [8, 7] {
            assert_eq!(rig.check("rolled", &policy).await, (true, Source::Redis, remaining), "{window:?}");
        }
        // The failover: Redis is back at version 1 (9 tokens) while PostgreSQL committed version 3 (7 tokens).
        rig.set_redis_state("rolled", replica).await;
        let row = rig.schema.row("rolled").await.unwrap();
        assert_eq!((row.tokens, row.version), (7, 3));

        let outcome = rig.store.check("rolled", &policy, 1).await.unwrap();
        // What bucket-core decides on PostgreSQL's state (no refill: one token an hour), not on Redis's 9 tokens.
        let stored = BucketState { tokens: 7, last_refill_us: row.last_refill_us as u64 };
        let (expected, _) = decide(&policy, stored, row.last_refill_us as u64 + 1_000_000, 1);
        assert_eq!(outcome.decision.allowed, expected.allowed, "{window:?}");
        assert_eq!(outcome.decision.remaining, expected.remaining, "{window:?}: Redis alone would say 8");
        assert_eq!((outcome.source, outcome.decision.remaining), (Source::Postgres, 6), "{window:?}");
        let row = rig.schema.row("rolled").await.unwrap();
        assert_eq!((row.tokens, row.version), (6, 4), "{window:?}");
        assert_eq!(rig.redis_state("rolled").await, Some(row_state(&row)), "{window:?}: Redis reseeded from the row");
        assert_eq!(rig.stats().stale_redis_buckets, 1, "{window:?}");
        // Redis serves the key again from then on.
        assert_eq!(rig.check("rolled", &policy).await, (true, Source::Redis, 5), "{window:?}");
        assert_eq!(rig.stats().stale_redis_buckets, 1, "{window:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_bucket_never_grants_what_postgres_knows_is_spent() {
    let rig = Rig::new(sync()).await;
    let policy = per_hour(3);
    assert!(rig.check("drained", &policy).await.0);
    let replica = rig.redis_state("drained").await.expect("seeded");
    for _ in 0..2 {
        assert!(rig.check("drained", &policy).await.0);
    }
    let spent = rig.schema.row("drained").await.unwrap();
    assert_eq!((spent.tokens, spent.version), (0, 3));
    rig.set_redis_state("drained", replica).await;

    // Redis believes 2 tokens are left; PostgreSQL knows none are.
    for _ in 0..3 {
        let outcome = rig.store.check("drained", &policy, 1).await.unwrap();
        assert!(!outcome.decision.allowed, "{outcome:?}");
        assert_eq!(outcome.decision.remaining, 0);
    }
    assert_eq!(rig.schema.row("drained").await.unwrap(), spent, "refusals write nothing");
    assert_eq!(rig.redis_state("drained").await, Some(row_state(&spent)));
    assert_eq!(rig.stats().stale_redis_buckets, 1, "detected once, then Redis holds the row");
}

/// A refused write is only a sign: Redis's bucket is dropped when it holds another state than the row at the same
/// version (a different history), and kept when it holds the row's very state (the write that won was this one's
/// twin, as when a duplicate reached PostgreSQL first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_drops_another_history_but_keeps_the_rows_own_state() {
    let rig = Rig::new(sync()).await;
    let policy = per_hour(10);
    let versioned = |tokens: u64, last_refill_us: u64, version: u64| {
        PendingWrite::new(&policy, VersionedState { state: BucketState { tokens, last_refill_us }, version })
    };
    assert!(rig.check("raced", &policy).await.0);
    let (_, last, _) = rig.redis_state("raced").await.unwrap();
    // Redis holds (7, v3); PostgreSQL gets version 4 from another history (5 tokens) before this request's
    // decision (6 tokens, version 4) reaches it.
    rig.set_redis_state("raced", (7, last, 3)).await;
    assert!(rig.store.postgres().save("raced", &versioned(5, last, 4)).await.unwrap());
    let outcome = rig.store.check("raced", &policy, 1).await.unwrap();
    assert_eq!((outcome.source, outcome.decision.remaining), (Source::Postgres, 4), "decided from the row's 5");
    assert_eq!(rig.redis_state("raced").await, Some((4, last, 5)));
    assert_eq!(rig.stats().stale_redis_buckets, 1);

    // PostgreSQL already holds exactly the state this request's decision leaves (4 → 3, version 6).
    assert!(rig.store.postgres().save("raced", &versioned(3, last, 6)).await.unwrap());
    let outcome = rig.store.check("raced", &policy, 1).await.unwrap();
    assert_eq!((outcome.source, outcome.decision.remaining), (Source::Redis, 3), "the decision stands");
    assert_eq!(rig.redis_state("raced").await, Some((3, last, 6)));
    assert_eq!(rig.stats().stale_redis_buckets, 1, "Redis's own state was taken for a stale one");
}

/// The benign case the check must tell apart: two requests on one bucket decide versions 2 and 3 in Redis, and 3
/// reaches PostgreSQL first, so 2 is refused. Redis is ahead of the row, not behind it: the decision of version 2
/// stands and nothing is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_lost_the_race_to_a_newer_one_of_the_same_bucket_keeps_its_decision() {
    let rig = Rig::with_statement_timeout(sync(), Duration::from_secs(5)).await;
    let other = rig.another_instance(sync()).await;
    let policy = per_hour(10);
    assert_eq!(rig.check("race", &policy).await, (true, Source::NewUser, 9));
    let (_, last, _) = rig.redis_state("race").await.unwrap();

    // This instance's writes now take 300 ms each way to reach PostgreSQL.
    rig.pg_proxy.set(Fault::Latency(Duration::from_millis(300)));
    let slow = {
        let store = rig.store.clone();
        tokio::spawn(async move { store.check("race", &policy, 1).await.unwrap() })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while rig.redis_state("race").await.map(|s| s.2) != Some(2) {
        assert!(Instant::now() < deadline, "the slow request never decided in Redis");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Meanwhile another instance decides version 3 and commits it first; a version 4 is decided in Redis too, its
    // write still on its way.
    let fast = other.check("race", &policy, 1).await.unwrap();
    assert_eq!((fast.source, fast.decision.remaining), (Source::Redis, 7));
    assert_eq!(rig.schema.row("race").await.map(|r| r.version), Some(3));
    rig.set_redis_state("race", (6, last, 4)).await;

    let slow = slow.await.unwrap();
    assert_eq!((slow.source, slow.decision.allowed, slow.decision.remaining), (Source::Redis, true, 8));
    assert_eq!(rig.redis_state("race").await, Some((6, last, 4)), "a bucket newer than the row was dropped");
    assert_eq!(rig.schema.row("race").await.map(|r| (r.tokens, r.version)), Some((7, 3)), "version 2 landed");
    assert_eq!((rig.stats().stale_redis_buckets, other.stats().stale_redis_buckets), (0, 0));
}

/// Several limits at once are all or nothing, so a stale bucket found by one is not decided again (that would need
/// the other keys refunded): it is dropped after the answer, and the next request decides from PostgreSQL's row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_limit_request_drops_the_stale_bucket_it_found() {
    let rig = Rig::new(sync()).await;
    let policy = per_hour(10);
    let limits = [Limit { key: "m1", policy, cost: 1 }, Limit { key: "m2", policy, cost: 1 }];
    assert!(rig.store.check_all(&limits).await.unwrap().allowed);
    let replica = rig.redis_state("m1").await.expect("seeded");
    for remaining in [8, 7] {
        assert_eq!(rig.check("m1", &policy).await, (true, Source::Redis, remaining));
    }
    rig.set_redis_state("m1", replica).await;

    let out = rig.store.check_all(&limits).await.unwrap();
    assert!(out.allowed);
    assert_eq!(rig.redis_state("m1").await, None, "the stale bucket is gone");
    assert_eq!(rig.stats().stale_redis_buckets, 1);
    let row = rig.schema.row("m1").await.unwrap();
    assert_eq!((row.tokens, row.version), (7, 3), "the stale write did not land");
    assert_eq!(rig.check("m1", &policy).await, (true, Source::Postgres, 6), "decided from the row");
}
