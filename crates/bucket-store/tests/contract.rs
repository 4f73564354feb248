//! The behaviour every store promises, written once and run against each: memory, PostgreSQL, Redis (one server,
//! a 3-master Redis Cluster and a Sentinel-managed master, each started by the test kit), tiered (sync, write-behind
//! and on the cluster), and the wrapped stores the service actually runs ([`AnyStore`] with its refusal and policy
//! caches). Each subject is two instances on one backing store, as two API processes would be.
//!
//! What is specific to one store (rows, Redis keys and TTLs, fallbacks) stays in that store's own suite; the
//! algorithm's case table runs against the core, the script and the statement in `cases_*.rs`. Several limits decided
//! together (`check_all`) have their own behaviours in `contract_all/`.

mod contract_all;
mod contract_subjects;

use bucket_core::{Policy, Wait};
use bucket_store::{PolicyStore, Store};
use contract_subjects::{NulKeys, Subject};

/// Capacity `n`, one token an hour: nothing refills during a test, so every check shows up in `remaining`.
fn per_hour(n: u64) -> Policy {
    Policy::from_interval_us(n, 3_600_000_000).expect("valid policy")
}

/// 200 concurrent checks per key, alternating between the two instances, are allowed exactly `capacity` times.
async fn concurrent_checks_grant_exactly_capacity<S: Store + Clone + 'static>(s: Subject<S>) {
    let policy = per_hour(50);
    for key in ["hot-a", "hot-b", "hot-c"] {
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = if i % 2 == 0 { s.a.clone() } else { s.b.clone() };
                tokio::spawn(async move { store.check(key, &policy, 1).await })
            })
            .collect();
        let mut allowed = 0;
        for task in tasks {
            let outcome = task.await.unwrap().unwrap_or_else(|e| panic!("{}: {key}: {e}", s.name));
            allowed += usize::from(outcome.decision.allowed);
        }
        assert_eq!(allowed, 50, "{}: {key}", s.name);
        assert_eq!(s.a.peek(key, &policy).await.unwrap().decision.remaining, 0, "{}: {key}", s.name);
    }
}

/// A refused check takes nothing: not when the bucket is empty, not when a smaller cost would still fit.
async fn a_refused_check_changes_nothing<S: Store>(s: Subject<S>) {
    let policy = per_hour(3);
    assert!(s.a.check("k", &policy, 1).await.unwrap().decision.allowed, "{}", s.name);
    let refused = s.a.check("k", &policy, 3).await.unwrap().decision;
    assert!(!refused.allowed, "{}", s.name);
    assert_eq!(refused.remaining, 2, "{}", s.name);
    assert_eq!(s.b.peek("k", &policy).await.unwrap().decision.remaining, 2, "{}: a refusal took tokens", s.name);
    assert!(s.b.check("k", &policy, 2).await.unwrap().decision.allowed, "{}: the smaller cost must pass", s.name);
    for _ in 0..3 {
        let d = s.a.check("k", &policy, 1).await.unwrap().decision;
        assert!(!d.allowed && d.remaining == 0, "{}: {d:?}", s.name);
        assert!(matches!(d.retry_after, Some(Wait::After(_))), "{}: {d:?}", s.name);
    }
    assert_eq!(s.b.peek("k", &policy).await.unwrap().decision.remaining, 0, "{}", s.name);
}

/// A reset fills the bucket, for both instances.
async fn reset_refills<S: Store>(s: Subject<S>) {
    let policy = per_hour(10);
    s.a.check("k", &policy, 10).await.unwrap();
    assert!(!s.a.check("k", &policy, 1).await.unwrap().decision.allowed, "{}", s.name);
    s.a.reset("k").await.unwrap();
    assert_eq!(s.a.peek("k", &policy).await.unwrap().decision.remaining, 10, "{}", s.name);
    assert_eq!(s.b.peek("k", &policy).await.unwrap().decision.remaining, 10, "{}", s.name);
    assert!(s.a.check("k", &policy, 1).await.unwrap().decision.allowed, "{}", s.name);
}

/// Peeking reports what a check would see and takes nothing; an unknown key is a full bucket.
async fn peek_takes_nothing<S: Store>(s: Subject<S>) {
    let policy = per_hour(5);
    let unknown = s.a.peek("bob", &policy).await.unwrap().decision;
    assert_eq!((unknown.allowed, unknown.remaining, unknown.limit), (true, 5, 5), "{}", s.name);
    s.a.check("bob", &policy, 3).await.unwrap();
    for store in [&s.a, &s.b, &s.a] {
        assert_eq!(store.peek("bob", &policy).await.unwrap().decision.remaining, 2, "{}", s.name);
    }
    assert_eq!(s.b.check("bob", &policy, 1).await.unwrap().decision.remaining, 1, "{}", s.name);
}

/// A cost above capacity can never fit: refused (not an error), "never" as the retry, nothing taken.
async fn a_cost_above_capacity_is_refused_for_good<S: Store>(s: Subject<S>) {
    let policy = per_hour(10);
    let d = s.a.check("big", &policy, 11).await.unwrap().decision;
    assert!(!d.allowed, "{}", s.name);
    assert_eq!(d.retry_after, Some(Wait::Never), "{}", s.name);
    assert_eq!(s.b.peek("big", &policy).await.unwrap().decision.remaining, 10, "{}", s.name);
}

/// Per-key policies round-trip, move the version, are listed, and never touch the bucket's tokens.
async fn policies_round_trip<S: Store + PolicyStore>(s: Subject<S>) {
    let policy = per_hour(10);
    s.a.check("k", &policy, 4).await.unwrap();
    let custom = Policy::per_minute(100).unwrap();
    assert_eq!(s.a.policy("k").await.unwrap(), None, "{}", s.name);
    let v0 = s.a.policy_version().await.unwrap();
    s.a.set_policy("k", &custom).await.unwrap();
    assert_eq!(s.a.policy("k").await.unwrap(), Some(custom), "{}", s.name);
    assert_ne!(s.a.policy_version().await.unwrap(), v0, "{}: a write must move the version", s.name);
    assert_eq!(s.a.all_policies().await.unwrap(), vec![("k".to_string(), custom)], "{}", s.name);
    assert_eq!(s.a.peek("k", &policy).await.unwrap().decision.remaining, 6, "{}: a policy touched tokens", s.name);
    assert!(s.a.delete_policy("k").await.unwrap(), "{}", s.name);
    assert!(!s.a.delete_policy("k").await.unwrap(), "{}", s.name);
    assert_eq!(s.a.policy("k").await.unwrap(), None, "{}", s.name);
}

/// Awkward keys, each paired with one it must not be confused with (a prefix, a suffix, the unescaped form).
fn hostile_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "a",
        "a}b",
        "{a}",
        "a{",
        "}",
        "{}",
        "*",
        "a*",
        "?",
        "[ab]",
        "a b",
        " a",
        "a ",
        "a\0b",
        "a\0",
        "%2F",
        "a/b",
        "a:b",
        "a;DROP TABLE rate_limits",
        "a' OR '1'='1",
        "ключ",
        "鍵🔑",
        "e\u{301}",
        "\u{e9}",
        "\\",
        "\"",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    // The longest key the API accepts (255 bytes), and one differing only in its last byte.
    keys.push("k".repeat(255));
    keys.push(format!("{}j", "k".repeat(254)));
    keys
}

/// Spends a different number of tokens on each hostile key (1, 2 or 3), then peeks each: a key sharing a bucket
/// with an earlier one would show the other's spending. A store that cannot hold NUL (PostgreSQL text) refuses such
/// keys with a non-transient error, so a NUL key can never trigger the fail-open path ([`NulKeys`]).
async fn each_hostile_key_is_its_own_bucket<S: Store + PolicyStore>(s: Subject<S>) {
    let (name, policy) = (s.name, per_hour(3));
    let (keys, nul_keys): (Vec<String>, Vec<String>) =
        hostile_keys().into_iter().partition(|key| s.nul_keys == NulKeys::Held || !key.contains('\0'));
    for key in nul_keys.iter().filter(|_| s.nul_keys == NulKeys::Refused) {
        let error = s.a.check(key, &policy, 1).await.expect_err("PostgreSQL text cannot hold NUL");
        assert!(!error.is_transient(), "{name}: a NUL key must not look like an outage (fail-open): {error}");
    }
    for (i, key) in keys.iter().enumerate() {
        let spend = (i % 3) as u64 + 1;
        let outcome =
            s.a.check(key, &policy, spend).await.unwrap_or_else(|e| panic!("{name}: check of {key:?} failed: {e}"));
        assert!(outcome.decision.allowed, "{name}: {key:?} was refused on first use: it shares a bucket");
        assert_eq!(outcome.decision.remaining, 3 - spend, "{name}: {key:?}");
    }
    for (i, key) in keys.iter().enumerate() {
        let spend = (i % 3) as u64 + 1;
        let outcome = s.b.peek(key, &policy).await.unwrap_or_else(|e| panic!("{name}: peek of {key:?} failed: {e}"));
        assert_eq!(outcome.decision.remaining, 3 - spend, "{name}: {key:?} holds another key's tokens");
    }
    // Resets and per-key policies address the same keys just as precisely.
    s.a.reset("a}b").await.unwrap_or_else(|e| panic!("{name}: reset failed: {e}"));
    assert_eq!(s.a.peek("a}b", &policy).await.unwrap().decision.remaining, 3, "{name}: reset missed `a}}b`");
    assert_eq!(s.a.peek("a", &policy).await.unwrap().decision.remaining, 2, "{name}: resetting `a}}b` hit `a`");
    let own = Policy::from_interval_us(7, 1_000_000).expect("valid policy");
    s.a.set_policy("a}b", &own).await.unwrap_or_else(|e| panic!("{name}: set_policy failed: {e}"));
    assert_eq!(s.a.policy("a}b").await.unwrap(), Some(own), "{name}");
    assert_eq!(s.a.policy("a").await.unwrap(), None, "{name}: `a` took the policy of `a}}b`");
    assert_eq!(s.a.policy("{a}").await.unwrap(), None, "{name}: `{{a}}` took the policy of `a}}b`");
}

/// One module per subject, each running every behaviour above on a fresh instance pair.
macro_rules! contract {
    ($($subject:ident),* $(,)?) => {$(
        mod $subject {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_checks_grant_exactly_capacity() {
                super::concurrent_checks_grant_exactly_capacity(contract_subjects::$subject().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_refused_check_changes_nothing() {
                super::a_refused_check_changes_nothing(contract_subjects::$subject().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reset_refills() {
                super::reset_refills(contract_subjects::$subject().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn peek_takes_nothing() {
                super::peek_takes_nothing(contract_subjects::$subject().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_cost_above_capacity_is_refused_for_good() {
                super::a_cost_above_capacity_is_refused_for_good(contract_subjects::$subject().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn policies_round_trip() {
                super::policies_round_trip(contract_subjects::$subject().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_refused_request_debits_no_bucket() {
                contract_all::a_refused_request_debits_no_bucket(contract_subjects::$subject().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_allowed_request_takes_every_cost() {
                contract_all::an_allowed_request_takes_every_cost(contract_subjects::$subject().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn limits_naming_one_key_add_up() {
                contract_all::limits_naming_one_key_add_up(contract_subjects::$subject().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_cost_above_capacity_refuses_all() {
                contract_all::a_cost_above_capacity_refuses_all(contract_subjects::$subject().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_requests_are_all_or_nothing() {
                contract_all::concurrent_requests_are_all_or_nothing(contract_subjects::$subject().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn each_hostile_key_is_its_own_bucket() {
                super::each_hostile_key_is_its_own_bucket(contract_subjects::$subject().await).await;
            }
        }
    )*};
}

contract!(
    memory,
    postgres,
    redis,
    tiered_sync,
    tiered_write_behind,
    api_postgres,
    api_redis,
    api_tiered,
    redis_cluster,
    redis_sentinel,
    tiered_cluster,
);
