//! Which tier a check asks first: a key this process saw in Redis lately is asked of Redis; any other key's row is
//! loaded from PostgreSQL first and seeded into Redis with the decision, in one Redis call.
//!
//! Asking Redis first costs a key Redis does not hold (a new caller, a refilled bucket that expired) three round
//! trips before its write: a Redis call that only reports the miss, PostgreSQL's row, and a second Redis call that
//! seeds the row and decides. Loading the row first and seeding at once decides the same. The seeding call is
//! atomic and keeps a bucket Redis already holds over the seed ('seed' mode of token_bucket.lua), and in both
//! orders the seed is read from PostgreSQL before that call, so the first call's "missing" told nothing about the
//! moment of seeding. The order is a guess about cost, never about the decision: wrong one way, a key Redis holds
//! costs one load for nothing; wrong the other way, a key Redis lost costs the three round trips of before.
//!
//! The guess: a key stays in Redis for a fill time (the time to refill from empty) after this process last saw it
//! decided there, since a bucket's key expires no sooner than that after its last write. The table is one atomic
//! word per slot, direct-mapped by a keyed hash of the key (the high half a tag, beside the second until which the
//! key is expected in Redis), written here by hand because it is no cache of values, only of a yes or no that may
//! be wrong: keys that share a slot overwrite each other (a wrong guess at most), the memory is fixed (`SLOTS`
//! words) and nothing is locked.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bucket_core::{Clock, Policy};

use super::Inner;
use crate::redis::OnMiss;
use crate::{Outcome, Source, StoreError};

/// Slots in the table: 2^17 words (1 MiB), the keys of about a hundred thousand recent callers.
const SLOTS: usize = 1 << 17;

/// Keys seen decided in Redis, each until its bucket could have expired there.
pub(super) struct RecentKeys {
    slots: Box<[AtomicU64]>,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
    start_us: u64,
}

impl RecentKeys {
    /// An empty table on `clock` (the process's monotonic clock; a manual one in tests).
    pub(super) fn new(clock: Arc<dyn Clock>) -> Self {
        let start_us = clock.now_us();
        Self { slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(), hasher: RandomState::new(), clock, start_us }
    }

    /// Whether `key` was seen decided in Redis less than a fill time ago.
    pub(super) fn probably_in_redis(&self, key: &str) -> bool {
        let (slot, tag) = self.place(key);
        let entry = self.slots[slot].load(Ordering::Relaxed);
        entry >> 32 == tag && entry & u64::from(u32::MAX) > self.now_s()
    }

    /// Remembers that Redis holds `key`'s bucket now, for one fill time of `policy` (rounded up to whole seconds).
    pub(super) fn saw(&self, key: &str, policy: &Policy) {
        let (slot, tag) = self.place(key);
        let until = (self.now_s() + policy.fill_time_us().div_ceil(1_000_000)).min(u64::from(u32::MAX));
        self.slots[slot].store(tag << 32 | until, Ordering::Relaxed);
    }

    /// The key's slot (the hash's low bits) and tag (its high half).
    fn place(&self, key: &str) -> (usize, u64) {
        let hash = self.hasher.hash_one(key);
        ((hash as usize) & (SLOTS - 1), hash >> 32)
    }

    /// Whole seconds since the table was made.
    fn now_s(&self) -> u64 {
        self.clock.now_us().saturating_sub(self.start_us) / 1_000_000
    }
}

impl Inner {
    /// Asks Redis first only for a key seen there lately; any other key's row is loaded first and seeded with the
    /// decision, one Redis call fewer for a key Redis does not hold (`tiered/recent.rs`, why that decides the same).
    pub(super) async fn check_in_redis(&self, key: &str, policy: &Policy, cost: u64) -> Result<Outcome, StoreError> {
        if self.recent.probably_in_redis(key) {
            if let Some(decided) = self.redis.decide_at(key, policy, cost, None, OnMiss::Report).await? {
                self.recent.saw(key, policy);
                return self.settle(key, policy, cost, decided, Source::Redis).await;
            }
            self.redis_misses.fetch_add(1, Ordering::Relaxed);
        }
        let (seed, source) = self.load_seed(key, policy).await;
        let decided = self.redis.seed_and_decide(key, policy, cost, &seed, None).await?;
        self.recent.saw(key, policy);
        // Another instance seeded the key between our miss and our seed: its state decided, as a Redis hit.
        let source = if decided.created { source } else { Source::Redis };
        self.settle(key, policy, cost, decided, source).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bucket_core::ManualClock;

    use super::*;

    fn table() -> (RecentKeys, ManualClock) {
        let clock = ManualClock::new(1_000_000_000);
        (RecentKeys::new(Arc::new(clock.clone())), clock)
    }

    #[test]
    fn a_key_is_expected_in_redis_for_one_fill_time_after_it_was_seen() {
        let (recent, clock) = table();
        let policy = Policy::new(10, Duration::from_secs(3)).unwrap(); // full from empty in 30 s
        assert!(!recent.probably_in_redis("a"), "never seen");
        recent.saw("a", &policy);
        assert!(recent.probably_in_redis("a"));
        assert!(!recent.probably_in_redis("b"), "another key");
        clock.advance_us(29_999_999);
        assert!(recent.probably_in_redis("a"), "29.999999 s later");
        clock.advance_us(1);
        assert!(!recent.probably_in_redis("a"), "30 s later its key may have expired");
        recent.saw("a", &policy);
        assert!(recent.probably_in_redis("a"), "seen again");
    }

    #[test]
    fn a_fill_time_shorter_than_a_second_still_counts_for_the_current_second() {
        let (recent, clock) = table();
        let fast = Policy::new(5, Duration::from_millis(1)).unwrap(); // 5 ms
        recent.saw("k", &fast);
        assert!(recent.probably_in_redis("k"));
        clock.advance_us(1_000_000);
        assert!(!recent.probably_in_redis("k"));
    }

    #[test]
    fn the_longest_fill_times_do_not_overflow_the_slot() {
        let (recent, clock) = table();
        let slow = Policy::from_interval_us(1 << 20, 1 << 32).unwrap(); // 2^52 µs, about 142 years
        recent.saw("k", &slow);
        clock.advance_us(100 * 365 * 24 * 3600 * 1_000_000);
        assert!(recent.probably_in_redis("k"));
    }

    #[test]
    fn keys_that_share_a_slot_only_make_the_guess_wrong() {
        let (recent, _clock) = table();
        let policy = Policy::new(10, Duration::from_secs(1)).unwrap();
        // Twice as many keys as slots: every slot is shared, and each holds the last key written to it.
        let keys: Vec<String> = (0..2 * SLOTS).map(|i| format!("user-{i}")).collect();
        for key in &keys {
            recent.saw(key, &policy);
        }
        let remembered = keys.iter().filter(|k| recent.probably_in_redis(k)).count();
        assert!(remembered <= SLOTS, "{remembered} keys remembered in {SLOTS} slots");
        assert!(remembered > SLOTS / 2, "only {remembered} remembered");
        assert!(recent.probably_in_redis(keys.last().unwrap()), "the last key written wins its slot");
    }
}
