//! Keys an attacker would pick (braces, globs, spaces, NUL, the longest allowed, non-ASCII) through every store:
//! each is its own bucket, no two collide, none is an error; and a flood of fresh keys keeps the memory store
//! bounded by one refill window of keys.
//!
//! One exception, by the database's rules: PostgreSQL text cannot hold a NUL byte, so there a NUL key is a
//! clean, non-transient error (the API refuses control characters in keys with a 400 before any store sees them,
//! so all stores behave alike behind it, and a NUL key can never trigger the fail-open path).

mod common;

use std::sync::Arc;

use bucket_core::{ManualClock, Policy};
use bucket_store::{MemoryStore, PolicyStore, Store};
use common::pg::TestSchema;
use common::redis_server::Shared;

/// Capacity 3, one token an hour: nothing refills during a test, so every check shows up in `remaining`.
fn three_per_hour() -> Policy {
    Policy::from_interval_us(3, 3_600_000_000).expect("valid policy")
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

/// Spends a different number of tokens on each key (1, 2 or 3), then peeks each: a key sharing a bucket with an
/// earlier one would show the other's spending.
async fn each_key_is_its_own_bucket(store: &(impl Store + PolicyStore), name: &str, holds_nul: bool) {
    let policy = three_per_hour();
    let (keys, nul_keys): (Vec<String>, Vec<String>) =
        hostile_keys().into_iter().partition(|key| holds_nul || !key.contains('\0'));
    for key in &nul_keys {
        let error = store.check(key, &policy, 1).await.expect_err("PostgreSQL text cannot hold NUL");
        assert!(!error.is_transient(), "{name}: a NUL key must not look like an outage (fail-open): {error}");
    }
    for (i, key) in keys.iter().enumerate() {
        let spend = (i % 3) as u64 + 1;
        let outcome =
            store.check(key, &policy, spend).await.unwrap_or_else(|e| panic!("{name}: check of {key:?} failed: {e}"));
        assert!(outcome.decision.allowed, "{name}: {key:?} was refused on first use: it shares a bucket");
        assert_eq!(outcome.decision.remaining, 3 - spend, "{name}: {key:?}");
    }
    for (i, key) in keys.iter().enumerate() {
        let spend = (i % 3) as u64 + 1;
        let outcome = store.peek(key, &policy).await.unwrap_or_else(|e| panic!("{name}: peek of {key:?} failed: {e}"));
        assert_eq!(outcome.decision.remaining, 3 - spend, "{name}: {key:?} holds another key's tokens");
    }
    // Resets and per-key policies address the same keys just as precisely.
    store.reset("a}b").await.unwrap_or_else(|e| panic!("{name}: reset failed: {e}"));
    assert_eq!(store.peek("a}b", &policy).await.unwrap().decision.remaining, 3, "{name}: reset missed `a}}b`");
    assert_eq!(store.peek("a", &policy).await.unwrap().decision.remaining, 2, "{name}: resetting `a}}b` hit `a`");
    let own = Policy::from_interval_us(7, 1_000_000).expect("valid policy");
    store.set_policy("a}b", &own).await.unwrap_or_else(|e| panic!("{name}: set_policy failed: {e}"));
    assert_eq!(store.policy("a}b").await.unwrap(), Some(own), "{name}");
    assert_eq!(store.policy("a").await.unwrap(), None, "{name}: `a` took the policy of `a}}b`");
    assert_eq!(store.policy("{a}").await.unwrap(), None, "{name}: `{{a}}` took the policy of `a}}b`");
}

#[tokio::test]
async fn memory_keeps_hostile_keys_apart() {
    each_key_is_its_own_bucket(&MemoryStore::new(), "memory", true).await;
}

#[tokio::test]
async fn redis_keeps_hostile_keys_apart() {
    let shared = Shared::new();
    each_key_is_its_own_bucket(&shared.store, "redis", true).await;
}

#[tokio::test]
async fn postgres_keeps_hostile_keys_apart() {
    let schema = TestSchema::new();
    each_key_is_its_own_bucket(&schema.store().await, "postgres", false).await;
}

/// 10,000 new keys a second for a simulated minute, with the evictor running every simulated second as in
/// production (`evict_interval_ms` = 1000): the map never holds more than the keys of one refill window plus one
/// eviction period, however many keys were ever seen.
#[test]
fn a_key_flood_keeps_the_memory_store_bounded() {
    const PER_SECOND: u64 = 10_000;
    const SECONDS: u64 = 60;
    const STEP_US: u64 = 1_000_000 / PER_SECOND;
    // The default policy: capacity 10, one token a second. A bucket that spent one token is full again after
    // one second, so it is evictable one second after its last use.
    let policy = Policy::from_interval_us(10, 1_000_000).expect("valid policy");
    let refill_window_keys = PER_SECOND as usize; // keys that can be non-full at one instant: one second's worth
    let clock = ManualClock::new(1);
    let store = MemoryStore::with_clock(Arc::new(clock.clone()));
    let mut peak = 0;
    for second in 0..SECONDS {
        for i in 0..PER_SECOND {
            let decision = store.check_now(&format!("flood-{second}-{i}"), &policy, 1);
            assert!(decision.allowed);
            clock.advance_us(STEP_US);
        }
        peak = peak.max(store.len());
        let evicted = store.evict_full();
        assert!(evicted > 0, "second {second}: the evictor freed nothing");
        assert!(
            store.len() <= refill_window_keys,
            "second {second}: {} buckets survive eviction; only the last second's {refill_window_keys} may",
            store.len()
        );
    }
    assert!(peak <= 2 * refill_window_keys, "peak {peak} buckets for {} keys a second", PER_SECOND);
    assert!(peak >= refill_window_keys, "peak {peak}: the flood did not create buckets (test is vacuous)");
}
