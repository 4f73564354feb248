//! The PostgreSQL store's behaviour against a real server: atomicity across instances, sources, the version
//! guard, migrations, policies, and failing fast when the server is unreachable or stalls.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use bucket_core::{BucketState, Policy};
use bucket_store::postgres::{PostgresConfig, PostgresStore, Saved};
use bucket_store::{Limit, PendingWrite, PolicyStore, Source, Store, StoreError, VersionedState};
use bucket_testkit::{database_url, redirect, Fault, FaultProxy, TestSchema};
use common::cases::T0;
use diesel_async::SimpleAsyncConnection;

fn versioned(tokens: u64, last_refill_us: u64, version: u64) -> VersionedState {
    VersionedState { state: BucketState { tokens, last_refill_us }, version }
}

/// `versioned(..)` to save, not full for a century (a full state is not written at all: tests/prune.rs).
fn pending(tokens: u64, last_refill_us: u64, version: u64) -> PendingWrite {
    PendingWrite {
        after: versioned(tokens, last_refill_us, version),
        full_at_us: last_refill_us + 100 * 365 * 86_400_000_000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_never_over_admit() {
    let schema = TestSchema::new();
    // Two pools, as two API processes would have.
    let (a, b) = (schema.store().await, schema.store().await);
    // One token an hour: nothing refills during the test, so exactly the capacity may be granted.
    let policy = Policy::from_interval_us(50, 3_600_000_000).unwrap();
    for round in 0..3 {
        let key = format!("hot-{round}");
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                let key = key.clone();
                tokio::spawn(async move { store.check(&key, &policy, 1).await })
            })
            .collect();
        let mut allowed = 0;
        let mut new_users = 0;
        for task in tasks {
            let outcome = task.await.unwrap().unwrap();
            if outcome.decision.allowed {
                allowed += 1;
            }
            if outcome.source == Source::NewUser {
                new_users += 1;
            }
        }
        assert_eq!(allowed, 50, "round {round}");
        assert_eq!(new_users, 1, "round {round}: exactly one check creates the row");
        let row = schema.row(&key).await.unwrap();
        assert_eq!(row.tokens, 0, "round {round}");
        assert_eq!(row.version, 50, "round {round}: one version per allowed check");
    }
}

#[tokio::test]
async fn first_check_is_a_new_user_then_postgres_and_refusals_write_nothing() {
    let schema = TestSchema::new();
    let store = schema.store().await;
    let policy = Policy::from_interval_us(2, 3_600_000_000).unwrap();

    let first = store.check("alice", &policy, 1).await.unwrap();
    assert_eq!(first.source, Source::NewUser);
    assert!(first.decision.allowed);
    assert_eq!(first.decision.remaining, 1);
    let second = store.check("alice", &policy, 1).await.unwrap();
    assert_eq!(second.source, Source::Postgres);
    assert!(second.decision.allowed);
    assert_eq!(second.decision.remaining, 0);

    let before = schema.row("alice").await.unwrap();
    assert_eq!(before.version, 2);
    let refused = store.check("alice", &policy, 1).await.unwrap();
    assert!(!refused.decision.allowed);
    assert_eq!(refused.source, Source::Postgres);
    assert!(refused.decision.retry_after.is_some());
    let refused_decided = store.decide_at("alice", &policy, 1, None).await.unwrap();
    assert_eq!(refused_decided.after.version, 2, "a refusal reports the stored version");
    // Same xmin and ctid: the row was not rewritten at all, not merely rewritten with equal values.
    assert_eq!(schema.row("alice").await.unwrap(), before);
}

#[tokio::test]
async fn peek_takes_nothing_and_reset_refills() {
    let schema = TestSchema::new();
    let store = schema.store().await;
    let policy = Policy::from_interval_us(5, 3_600_000_000).unwrap();
    let unknown = store.peek("bob", &policy).await.unwrap();
    assert_eq!(unknown.decision.remaining, 5);
    assert_eq!(schema.row("bob").await, None, "peek creates no row");

    store.check("bob", &policy, 3).await.unwrap();
    let before = schema.row("bob").await.unwrap();
    let peeked = store.peek("bob", &policy).await.unwrap();
    assert_eq!(peeked.decision.remaining, 2);
    assert_eq!(schema.row("bob").await.unwrap(), before);

    store.reset("bob").await.unwrap();
    assert_eq!(schema.row("bob").await, None);
    assert_eq!(store.load("bob").await.unwrap(), None);
    let again = store.check("bob", &policy, 1).await.unwrap();
    assert_eq!((again.source, again.decision.remaining), (Source::NewUser, 4));
}

#[tokio::test]
async fn an_older_state_never_overwrites_a_newer_one() {
    let schema = TestSchema::new();
    let store = schema.store().await;

    assert!(store.save("k", &pending(5, T0 + 5, 5)).await.unwrap(), "absent: inserted");
    assert!(!store.save("k", &pending(3, T0 + 3, 3)).await.unwrap(), "older: discarded");
    assert!(!store.save("k", &pending(9, T0 + 9, 5)).await.unwrap(), "same version: discarded");
    assert_eq!(store.load("k").await.unwrap(), Some(versioned(5, T0 + 5, 5)));
    assert!(store.save("k", &pending(6, T0 + 6, 6)).await.unwrap(), "newer: written");
    assert_eq!(store.load("k").await.unwrap(), Some(versioned(6, T0 + 6, 6)));

    // A decision continues from the saved version.
    let policy = Policy::from_interval_us(10, 3_600_000_000).unwrap();
    let decided = store.decide_at("k", &policy, 1, Some(T0 + 6)).await.unwrap();
    assert_eq!(decided.after, versioned(5, T0 + 6, 7));
}

#[tokio::test]
async fn save_batch_applies_the_guard_per_key_in_one_statement() {
    let schema = TestSchema::new();
    let store = schema.store().await;
    store.save("old", &pending(5, T0, 5)).await.unwrap();
    store.save("new", &pending(5, T0, 5)).await.unwrap();

    let written = store
        .save_batch(&[
            ("old".into(), pending(1, T0 + 1, 3)), // older than stored: discarded
            ("new".into(), pending(2, T0 + 2, 7)), // newer: written
            ("dup".into(), pending(3, T0 + 3, 2)), // absent, given twice: the higher version wins
            ("dup".into(), pending(4, T0 + 4, 4)),
            ("dup".into(), pending(8, T0 + 8, 1)),
        ])
        .await
        .unwrap();
    assert_eq!(written, 2);
    assert_eq!(store.load("old").await.unwrap(), Some(versioned(5, T0, 5)));
    assert_eq!(store.load("new").await.unwrap(), Some(versioned(2, T0 + 2, 7)));
    assert_eq!(store.load("dup").await.unwrap(), Some(versioned(4, T0 + 4, 4)));
    assert_eq!(store.save_batch(&[]).await.unwrap(), 0);
}

/// The tiered store's group commit answers each request from its own write's fate in a shared statement: written,
/// superseded by a row at least as new (a key given twice shares its newest write's fate), or skipped as full.
#[tokio::test]
async fn save_each_reports_what_became_of_every_write() {
    let schema = TestSchema::new();
    let store = schema.store().await;
    store.save("held", &pending(5, T0, 5)).await.unwrap();
    let full = PendingWrite { after: versioned(10, T0, 9), full_at_us: T0 };
    let items = [
        ("held".to_owned(), pending(1, T0 + 1, 3)),
        ("held-same".to_owned(), pending(2, T0 + 2, 1)),
        ("new".to_owned(), pending(2, T0 + 2, 1)),
        ("dup".to_owned(), pending(3, T0 + 3, 2)),
        ("dup".to_owned(), pending(4, T0 + 4, 4)),
        ("full".to_owned(), full),
    ];
    let saved = store.save_each(&items).await.unwrap();
    assert_eq!(saved, [Saved::Superseded, Saved::Written, Saved::Written, Saved::Written, Saved::Written, Saved::Full]);
    assert_eq!(store.load("held").await.unwrap(), Some(versioned(5, T0, 5)));
    assert_eq!(store.load("dup").await.unwrap(), Some(versioned(4, T0 + 4, 4)));
    assert_eq!(store.load("full").await.unwrap(), None);
    let again = store.save_each(&items[1..3]).await.unwrap();
    assert_eq!(again, [Saved::Superseded, Saved::Superseded], "the same version again");
    assert_eq!(store.save_each(&[]).await.unwrap(), []);
}

#[tokio::test]
async fn load_many_answers_every_key_in_order_in_one_statement() {
    let schema = TestSchema::new();
    let store = schema.store().await;
    store.save("a", &pending(5, T0, 5)).await.unwrap();
    store.save("b", &pending(2, T0 + 1, 7)).await.unwrap();
    let keys = ["b", "none", "a", "b"].map(str::to_owned);
    let rows = store.load_many(&keys).await.unwrap();
    let b = Some(versioned(2, T0 + 1, 7));
    assert_eq!(rows, [b, None, Some(versioned(5, T0, 5)), b]);
    assert_eq!(store.load_many(&[]).await.unwrap(), []);
}

/// A multi-limit request is one transaction: an allowed one creates new rows (version 1) and bumps the others, a
/// refused one rewrites no row and leaves no row of a new key behind, and a key PostgreSQL cannot hold (NUL) is a
/// clean, non-transient error after which the pool's connections still work.
#[tokio::test]
async fn multi_limit_requests_write_all_rows_or_none() {
    let schema = TestSchema::new();
    let store = schema.store().await;
    let policy = Policy::from_interval_us(3, 3_600_000_000).unwrap();
    store.check("old", &policy, 1).await.unwrap();
    let out = store.check_all(&[Limit { key: "old", policy, cost: 1 }, Limit { key: "new", policy, cost: 2 }]).await;
    let out = out.unwrap();
    assert!(out.allowed);
    assert_eq!(out.source, Source::NewUser, "a row was created");
    assert_eq!((schema.row("old").await.unwrap().version, schema.row("new").await.unwrap().version), (2, 1));
    let (old, new) = (schema.row("old").await.unwrap(), schema.row("new").await.unwrap());

    let out = store
        .check_all(&[
            Limit { key: "new", policy, cost: 1 },
            Limit { key: "fresh", policy, cost: 1 },
            Limit { key: "old", policy, cost: 2 },
        ])
        .await
        .unwrap();
    assert!(!out.allowed);
    assert_eq!(out.source, Source::Postgres);
    assert_eq!(out.decisions.iter().map(|d| d.allowed).collect::<Vec<_>>(), vec![true, true, false]);
    assert_eq!(schema.row("old").await.unwrap(), old, "a refused request rewrote a row");
    assert_eq!(schema.row("new").await.unwrap(), new, "a refused request rewrote a row");
    assert!(schema.row("fresh").await.is_none(), "a refused request left a new key's row behind");

    for _ in 0..3 {
        let error = store
            .check_all(&[Limit { key: "new", policy, cost: 1 }, Limit { key: "a\0b", policy, cost: 1 }])
            .await
            .expect_err("PostgreSQL text cannot hold NUL");
        assert!(!error.is_transient(), "{error}");
    }
    assert_eq!(schema.row("new").await.unwrap(), new);
    assert!(store.check_all(&[Limit { key: "new", policy, cost: 1 }]).await.unwrap().allowed);
}

#[tokio::test]
async fn refused_decisions_do_not_bump_the_version() {
    let schema = TestSchema::new();
    let store = schema.store().await;
    let policy = Policy::from_interval_us(2, 1_000_000).unwrap();
    for _ in 0..2 {
        assert!(store.decide_at("v", &policy, 1, Some(T0)).await.unwrap().decision.allowed);
    }
    for _ in 0..3 {
        let refused = store.decide_at("v", &policy, 1, Some(T0 + 10)).await.unwrap();
        assert!(!refused.decision.allowed);
        assert_eq!(refused.after, versioned(0, T0, 2));
    }
    assert_eq!(schema.row("v").await.unwrap().version, 2);
}

#[tokio::test]
async fn migrations_are_idempotent_and_keep_the_seed_table() {
    let schema = TestSchema::new();
    let first = schema.store().await;
    first.check("kept", &Policy::from_interval_us(3, 1_000_000).unwrap(), 1).await.unwrap();
    let _second = schema.store().await;
    assert_eq!(schema.count("__diesel_schema_migrations").await, 8);
    assert_eq!(schema.row("kept").await.unwrap().tokens, 2, "a second start keeps the data");

    let columns: Vec<_> = schema
        .columns("rate_limits")
        .await
        .into_iter()
        .map(|c| (c.name, c.data_type, c.max_length, c.nullable, c.default))
        .collect();
    let s = |v: &str| v.to_owned();
    assert_eq!(
        columns,
        vec![
            (s("user_id"), s("character varying"), Some(255), s("NO"), None),
            (s("tokens"), s("integer"), None, s("NO"), None),
            (s("last_refill_time"), s("timestamp with time zone"), None, s("NO"), Some(s("now()"))),
            (s("version"), s("bigint"), None, s("NO"), Some(s("0"))),
            (
                s("full_at"),
                s("timestamp with time zone"),
                None,
                s("NO"),
                Some(s("'infinity'::timestamp with time zone"))
            ),
        ]
    );
    let primary_key = format!(
        "information_schema.key_column_usage k JOIN information_schema.table_constraints c \
         USING (constraint_schema, constraint_name) WHERE c.table_schema = '{}' AND c.table_name = 'rate_limits' \
         AND c.constraint_type = 'PRIMARY KEY' AND k.column_name = 'user_id'",
        schema.name
    );
    assert_eq!(schema.count(&primary_key).await, 1);
    let policy_columns: Vec<_> = schema.columns("policies").await.into_iter().map(|c| (c.name, c.data_type)).collect();
    assert_eq!(
        policy_columns,
        vec![
            (s("key"), s("character varying")),
            (s("capacity"), s("bigint")),
            (s("interval_us"), s("bigint")),
            (s("updated_at"), s("timestamp with time zone")),
        ]
    );
}

#[tokio::test]
async fn seed_rows_are_read_as_utc_after_upgrading() {
    let schema = TestSchema::new();
    // A seed deployment: the first migration applied (and recorded as diesel records it), rows written in a
    // session whose time zone is not UTC.
    let mut conn = schema.sql().await;
    conn.batch_execute(include_str!("../../../migrations/2026-01-01-000001_create_rate_limits/up.sql")).await.unwrap();
    conn.batch_execute(
        "CREATE TABLE __diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY NOT NULL, \
         run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP); \
         INSERT INTO __diesel_schema_migrations (version) VALUES ('20260101000001'); \
         SET TIME ZONE 'America/New_York'; \
         INSERT INTO rate_limits (user_id, tokens, last_refill_time) VALUES ('seed', 4, '2026-01-01 00:00:00.000001');",
    )
    .await
    .unwrap();
    drop(conn);

    let store = schema.store().await;
    assert_eq!(store.load("seed").await.unwrap(), Some(versioned(4, T0 + 1, 0)));
}

#[tokio::test]
async fn policies_are_per_key_and_never_touch_the_bucket() {
    let schema = TestSchema::new();
    let store = schema.store().await;
    let default = Policy::from_interval_us(10, 3_600_000_000).unwrap();
    assert_eq!(store.policy("carol").await.unwrap(), None);
    assert!(!store.delete_policy("carol").await.unwrap());

    store.check("carol", &default, 1).await.unwrap();
    let bucket = schema.row("carol").await.unwrap();
    let generous = Policy::per_minute(100).unwrap();
    store.set_policy("carol", &generous).await.unwrap();
    assert_eq!(store.policy("carol").await.unwrap(), Some(generous));
    let strict = Policy::per_hour(3).unwrap();
    store.set_policy("carol", &strict).await.unwrap();
    assert_eq!(store.policy("carol").await.unwrap(), Some(strict));
    assert_eq!(store.policy("dave").await.unwrap(), None, "policies are per key");
    assert_eq!(schema.row("carol").await.unwrap(), bucket, "the bucket keeps its tokens");

    // Under the lower capacity the 9 stored tokens count as 3 (a full bucket), and nothing more.
    let checked = store.check("carol", &strict, 1).await.unwrap();
    assert_eq!(checked.decision.remaining, 2);

    assert!(store.delete_policy("carol").await.unwrap());
    assert_eq!(store.policy("carol").await.unwrap(), None);
}

#[tokio::test]
async fn a_policy_edited_into_nonsense_is_an_error_not_a_panic() {
    let schema = TestSchema::new();
    let store = schema.store().await;
    // A row bucket_core rejects (2^31 - 1 tokens at 2^22 + 1 µs each is past 2^53 µs), written after dropping the
    // table's check that mirrors that rule, as a careless hand edit could.
    let mut conn = schema.sql().await;
    let edit = "ALTER TABLE policies DROP CONSTRAINT policies_check; \
                INSERT INTO policies (key, capacity, interval_us) VALUES ('eve', 2147483647, 4194305)";
    conn.batch_execute(edit).await.unwrap();
    assert!(matches!(store.policy("eve").await, Err(StoreError::InvalidPolicy(_))));
}

#[tokio::test]
async fn health_answers_select_one() {
    let schema = TestSchema::new();
    let store = schema.store().await;
    let health = store.health().await;
    assert_eq!(health.len(), 1);
    assert_eq!(health[0].name, "postgres");
    assert!(health[0].up, "{}", health[0].detail);
}

#[tokio::test]
async fn unreachable_server_fails_fast_with_a_transient_error() {
    // A port nobody listens on: bound, then released.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut config = PostgresConfig::new(format!("postgres://postgres@127.0.0.1:{port}/test"));
    config.connect_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let error = PostgresStore::connect(config).await.expect_err("nothing listens there");
    assert!(error.is_transient(), "{error}");
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_answering_times_out_instead_of_hanging() {
    let schema = TestSchema::new();
    schema.store().await; // create the schema and tables directly, not through the proxy
    let (_, upstream) = redirect(&database_url(), "127.0.0.1:1".parse().unwrap());
    let proxy = FaultProxy::start(upstream).await;
    let mut config = schema.config.clone();
    config.url = redirect(&database_url(), proxy.addr()).0;
    config.connect_timeout = Duration::from_millis(500);
    config.statement_timeout = Duration::from_millis(300);
    let store = PostgresStore::connect(config.clone()).await.unwrap();
    let policy = Policy::from_interval_us(10, 3_600_000_000).unwrap();
    assert!(store.check("frank", &policy, 1).await.unwrap().decision.allowed);

    proxy.set(Fault::Stall);
    let started = Instant::now();
    let error = store.check("frank", &policy, 1).await.expect_err("the server is stalled");
    assert!(matches!(error, StoreError::Timeout { .. }), "{error}");
    // Bounded by connect_timeout + statement_timeout at most, however the time is split.
    assert!(started.elapsed() < Duration::from_millis(1600), "took {:?}", started.elapsed());
    let started = Instant::now();
    let limits = [Limit { key: "frank", policy, cost: 1 }, Limit { key: "gina", policy, cost: 1 }];
    let error = store.check_all(&limits).await.expect_err("the server is stalled");
    assert!(error.is_transient(), "{error}");
    assert!(started.elapsed() < Duration::from_millis(1600), "took {:?}", started.elapsed());
    let health = store.health().await;
    assert!(!health[0].up);

    // Starting against a stalled server fails as fast.
    let started = Instant::now();
    let error = PostgresStore::connect(config).await.expect_err("the server is stalled");
    assert!(error.is_transient(), "{error}");
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());

    // Once the server answers again the store recovers by itself, on fresh connections.
    proxy.set(Fault::Pass);
    let recovered = store.check("frank", &policy, 1).await.unwrap();
    assert!(recovered.decision.allowed);
    // The timed-out check's Bind/Execute was already on its way (a prepared statement needs no Parse round trip
    // first), and the proxy delivers held bytes when the partition heals, so PostgreSQL may run it after all: the
    // row shows 2 or 3 checks, never more, and exactly as many tokens spent as versions. A caller answered with
    // an error may lose a token; no one is granted one that was not taken (docs/reliability.md).
    let row = schema.row("frank").await.unwrap();
    assert!(matches!(row.version, 2 | 3), "the two answered checks, and at most the timed-out one: {row:?}");
    assert_eq!(i64::from(row.tokens), 10 - row.version, "one token per version: {row:?}");
}
