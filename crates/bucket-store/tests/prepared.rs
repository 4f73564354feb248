//! Every statement on the decision path is prepared once per session and then only executed (issue 12): PostgreSQL
//! parses and plans each one once per pooled connection instead of once per check.
//!
//! The proof reads `pg_prepared_statements` from the very session the checks ran on (a pool of one): each statement
//! appears once, with as many executions as the calls that ran it, all of them on its one generic plan. Without
//! statement caching, every call would prepare and close a statement of its own, so none could show more than one
//! execution; without generic plans forced, PostgreSQL re-plans the first five runs of each for their arguments.

use bucket_core::{BucketState, Policy};
use bucket_store::postgres::SessionStatement;
use bucket_store::{Limit, PendingWrite, PolicyStore, Store, VersionedState};
use bucket_testkit::TestSchema;

/// Each statement's text exactly as the store prepares it.
const DECIDE: &str = include_str!("../src/postgres/decide.sql");
const READ: &str = include_str!("../src/postgres/read.sql");
const READ_MANY: &str = include_str!("../src/postgres/read_many.sql");
const SAVE_BATCH: &str = include_str!("../src/postgres/save_batch.sql");
const SAVE_ANSWERED: &str = include_str!("../src/postgres/save_answered.sql");
const LOCK: &str = include_str!("../src/postgres/decide_all_lock.sql");
const LOCKED_READ: &str = include_str!("../src/postgres/decide_all_read.sql");
const WRITE: &str = include_str!("../src/postgres/decide_all_write.sql");
const POLICY_GET: &str = include_str!("../src/postgres/policy_get.sql");
const POLICY_VERSION: &str = include_str!("../src/postgres/policy_version.sql");
const PRUNE_LOCK: &str = include_str!("../src/postgres/prune_lock.sql");
const PRUNE: &str = include_str!("../src/postgres/prune.sql");

/// A state to save that is not full for a century, so the save writes it.
fn pending(tokens: u64, last_refill_us: u64, version: u64) -> PendingWrite {
    let after = VersionedState { state: BucketState { tokens, last_refill_us }, version };
    PendingWrite { after, full_at_us: last_refill_us + 100 * 365 * 86_400_000_000 }
}

/// How often the session ran `sql`, failing unless it was prepared exactly once and planned once: every execution
/// ran the session's one generic plan (postgres/session.rs), none was planned again for its own arguments. The
/// pruner's DELETE is the exception, planned on every run on purpose (postgres/prune.rs).
fn executions(statements: &[SessionStatement], sql: &str) -> u64 {
    let found: Vec<_> = statements.iter().filter(|s| s.sql == sql).collect();
    assert_eq!(found.len(), 1, "prepared once in the session: {}\nall: {statements:#?}", first_line(sql));
    let planned_per_run = if sql == PRUNE { found[0].executions } else { 0 };
    assert_eq!(found[0].custom_plans, planned_per_run, "plans made for their arguments: {}", first_line(sql));
    found[0].executions
}

fn first_line(sql: &str) -> &str {
    sql.lines().next().unwrap_or_default()
}

#[tokio::test]
async fn every_statement_on_the_decision_path_is_prepared_once_then_reused() {
    let mut schema = TestSchema::new();
    // One session: every call below runs on it, and so does the look at what it prepared.
    schema.config.pool_size = 1;
    let store = schema.store().await;
    let policy = Policy::from_interval_us(2, 3_600_000_000).unwrap();
    const ROUNDS: u64 = 3;
    for round in 0..ROUNDS {
        let key = format!("user-{round}");
        assert!(store.check(&key, &policy, 1).await.unwrap().decision.allowed, "decide");
        assert!(!store.check(&key, &policy, 5).await.unwrap().decision.allowed, "decide, refused, then read");
        store.peek(&key, &policy).await.unwrap();
        assert!(store.load(&key).await.unwrap().is_some());
        assert!(store.load_many(&[key.clone(), "none".into()]).await.unwrap()[0].is_some(), "misses in one read");
        assert!(store.save("saved", &pending(1, 1_000, round + 1)).await.unwrap());
        let batch = [(format!("batch-{round}"), pending(1, 1_000, 1))];
        assert_eq!(store.save_batch(&batch).await.unwrap(), 1);
        assert_eq!(store.save_answered(&batch).await.unwrap(), 0, "the same version again: refused by the guard");
        let (a, b) = (format!("all-a-{round}"), format!("all-b-{round}"));
        let limits = [Limit { key: &a, policy, cost: 1 }, Limit { key: &b, policy, cost: 1 }];
        assert!(store.check_all(&limits).await.unwrap().allowed, "the three statements of check_all");
        assert_eq!(store.policy(&key).await.unwrap(), None);
        store.policy_version().await.unwrap();
        assert_eq!(store.prune_batch_at(None).await.unwrap(), Some(0), "the pruner's two statements");
    }

    let statements = store.session_statements().await.unwrap();
    let expected = [
        (DECIDE, 2 * ROUNDS),
        (READ, 3 * ROUNDS),
        (READ_MANY, ROUNDS),
        (SAVE_BATCH, 2 * ROUNDS),
        (SAVE_ANSWERED, ROUNDS),
        (LOCK, ROUNDS),
        (LOCKED_READ, ROUNDS),
        (WRITE, ROUNDS),
        (POLICY_GET, ROUNDS),
        (POLICY_VERSION, ROUNDS),
        (PRUNE_LOCK, ROUNDS),
        (PRUNE, ROUNDS),
    ];
    for (sql, runs) in expected {
        assert_eq!(executions(&statements, sql), runs, "{}", first_line(sql));
    }
}

#[tokio::test]
async fn sessions_of_two_schemas_each_run_their_statements_on_their_own_table() {
    let (one, two) = (TestSchema::new(), TestSchema::new());
    let (a, b) = (one.store().await, two.store().await);
    let policy = Policy::from_interval_us(3, 3_600_000_000).unwrap();
    // The same statement, the same key: each store's prepared `decide.sql` must find its own schema's row.
    for _ in 0..3 {
        assert!(a.check("shared", &policy, 1).await.unwrap().decision.allowed);
    }
    assert!(!a.check("shared", &policy, 1).await.unwrap().decision.allowed);
    let other = b.check("shared", &policy, 1).await.unwrap();
    assert!(other.decision.allowed, "the other schema's bucket is untouched");
    assert_eq!(other.decision.remaining, 2);
    assert_eq!(one.row("shared").await.unwrap().version, 3);
    assert_eq!(two.row("shared").await.unwrap().version, 1);
}
