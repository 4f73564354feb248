//! The shared case table through PostgreSQL's atomic statement (`decide.sql`) in a real server, on explicit
//! instants: the SQL must agree with bucket-core on every row, to the microsecond.

mod common;

use bucket_core::{Policy, Wait};
use bucket_store::Limit;
use bucket_testkit::TestSchema;
use common::cases::CASES;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_matches_every_case() {
    let schema = TestSchema::new();
    let store = schema.store().await;
    for (i, case) in CASES.iter().enumerate() {
        // One key per case in one fresh schema: as isolated as a schema per case, and much faster.
        let key = format!("case-{i}");
        let policy = Policy::from_interval_us(case.capacity, case.interval_us).unwrap();
        let stored_version = 7;
        if let Some((tokens, last_refill_us)) = case.stored {
            schema.put_row(&key, tokens, last_refill_us, stored_version).await;
        }
        let before = schema.row(&key).await;

        let decided = store.decide_at(&key, &policy, case.cost, Some(case.now_us)).await.unwrap();

        let d = decided.decision;
        assert_eq!(d.allowed, case.allowed, "{}", case.name);
        assert_eq!(d.remaining, case.remaining, "{}", case.name);
        assert_eq!(d.limit, case.capacity, "{}", case.name);
        let retry = d.retry_after.map(|w| match w {
            Wait::After(us) => us,
            Wait::Never => u64::MAX,
        });
        assert_eq!(retry, case.retry_after_us, "{}", case.name);
        assert_eq!(decided.created, case.stored.is_none() && case.allowed, "{}", case.name);

        let row = schema.row(&key).await;
        match (case.after, &row) {
            (Some((tokens, last)), Some(row)) => {
                assert_eq!((row.tokens as u64, row.last_refill_us as u64), (tokens, last), "{}", case.name);
                assert_eq!((decided.after.state.tokens, decided.after.state.last_refill_us), (tokens, last));
            }
            // A refused check on a key never seen: no row (the statement creates nothing when it refuses).
            (None, None) => assert!(!case.allowed, "{}", case.name),
            (expected, actual) => panic!("{}: expected {expected:?}, stored {actual:?}", case.name),
        }
        let row = row.unwrap();
        let expected_version = match (case.allowed, case.stored) {
            (true, None) => 1,
            (true, Some(_)) => stored_version + 1,
            (false, _) => stored_version,
        };
        assert_eq!(row.version as u64, expected_version, "{}", case.name);
        assert_eq!(decided.after.version, expected_version, "{}", case.name);
        if !case.allowed {
            assert_eq!(Some(&row), before.as_ref(), "{}: a refused check rewrote the row", case.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_check_on_a_new_key_creates_nothing_and_reports_a_full_bucket() {
    let schema = TestSchema::new();
    let store = schema.store().await;
    let policy = Policy::from_interval_us(10, 1_000_000).unwrap();
    let decided = store.decide_at("greedy", &policy, 11, Some(common::cases::T0)).await.unwrap();
    assert!(!decided.decision.allowed);
    assert_eq!(decided.decision.retry_after, Some(Wait::Never));
    assert_eq!(decided.decision.remaining, 10);
    assert!(!decided.created);
    assert_eq!(decided.after.version, 0);
    assert_eq!(decided.after.state.tokens, 10);
    assert_eq!(schema.row("greedy").await, None);
}

/// The same table through the multi-limit transaction (`postgres/all.rs`), each case beside a limit of cost 0
/// that is always allowed: the request's verdict and the case's row must be exactly the single statement's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_matches_every_case() {
    let schema = TestSchema::new();
    let store = schema.store().await;
    for (i, case) in CASES.iter().enumerate() {
        let (key, free) = (format!("case-{i}"), format!("free-{i}"));
        let policy = Policy::from_interval_us(case.capacity, case.interval_us).unwrap();
        if let Some((tokens, last_refill_us)) = case.stored {
            schema.put_row(&key, tokens, last_refill_us, 7).await;
        }
        let before = schema.row(&key).await;
        let limits = [Limit { key: &free, policy, cost: 0 }, Limit { key: &key, policy, cost: case.cost }];
        let out = store.check_all_at(&limits, Some(case.now_us)).await.unwrap();
        assert_eq!(out.allowed, case.allowed, "{}", case.name);
        let d = out.decisions[1];
        assert_eq!((d.allowed, d.remaining, d.limit), (case.allowed, case.remaining, case.capacity), "{}", case.name);
        let retry = d.retry_after.map(|w| match w {
            Wait::After(us) => us,
            Wait::Never => u64::MAX,
        });
        assert_eq!(retry, case.retry_after_us, "{}", case.name);
        let row = schema.row(&key).await;
        match (case.after, &row) {
            (Some((tokens, last)), Some(row)) => {
                assert_eq!((row.tokens as u64, row.last_refill_us as u64), (tokens, last), "{}", case.name);
                let version = if case.allowed { u64::from(case.stored.is_some()) * 7 + 1 } else { 7 };
                assert_eq!(row.version as u64, version, "{}", case.name);
            }
            (None, None) => assert!(!case.allowed, "{}", case.name),
            (expected, actual) => panic!("{}: expected {expected:?}, stored {actual:?}", case.name),
        }
        if !case.allowed {
            assert_eq!(row, before, "{}: a refused request rewrote the row", case.name);
        }
    }
}
