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
//! word per key (the high half of a keyed hash of the key as its tag, beside the second until which the key is
//! expected in Redis), in sets of `WAYS` words that share one cache line; a key may sit in any word of its set, and
//! a new key takes the word expected for the least time. Written here by hand because it is no cache of values,
//! only of a yes or no that may be wrong: the memory is fixed (`SLOTS` words), nothing is locked, and a key lost
//! to a full set or to a race between two writers only makes the guess wrong. A table with one word per set lost
//! about 4 % of 10,000 returning users to collisions, each then loaded on every request (docs/perf.md §19).

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use bucket_core::{Clock, Policy};

use super::Inner;
use crate::redis::OnMiss;
use crate::{Outcome, Source, StoreError};

/// Words in the table: 2^17 (1 MiB), the keys of about a hundred thousand recent callers.
const SLOTS: usize = 1 << 17;

/// Words per set: 8 × 8 bytes, one cache line.
const WAYS: usize = 8;

/// The low half of a word: the second until which its key is expected in Redis.
const UNTIL: u64 = u32::MAX as u64;

/// Keys seen decided in Redis, each until its bucket could have expired there.
pub(crate) struct RecentKeys {
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

    /// Where `key` sits in the table, hashed once and on one reading of the clock, for a check that asks whether it
    /// is expected in Redis and, after its Redis call, records that it was seen there.
    pub(super) fn look(&self, key: &str) -> Look<'_> {
        let (set, tag) = self.place(key);
        Look { set, tag, now: self.now_s() }
    }

    /// Whether `key` was seen decided in Redis less than a fill time ago.
    pub(super) fn probably_in_redis(&self, key: &str) -> bool {
        self.look(key).expected()
    }

    /// Stops expecting `key` in Redis: its bucket was reset, so a check that then finds Redis without it is no miss
    /// (`bucket_redis_misses_total` counts keys Redis lost) and its row, gone too, is loaded first like a new key's.
    /// A word another key took meanwhile stays; only this key's word is cleared.
    pub(crate) fn forget(&self, key: &str) {
        let (set, tag) = self.place(key);
        for word in set {
            let entry = word.load(Ordering::Relaxed);
            if entry >> 32 == tag {
                let _ = word.compare_exchange(entry, 0, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }

    /// The key's set (from the hash's low bits) and tag (its high half).
    fn place(&self, key: &str) -> (&[AtomicU64], u64) {
        let hash = self.hasher.hash_one(key);
        let first = (hash as usize & (SLOTS / WAYS - 1)) * WAYS;
        (&self.slots[first..first + WAYS], hash >> 32)
    }

    /// Whole seconds since the table was made.
    fn now_s(&self) -> u64 {
        self.clock.now_us().saturating_sub(self.start_us) / 1_000_000
    }
}

/// One key's set and tag in the table, and the second it was looked up.
pub(super) struct Look<'a> {
    set: &'a [AtomicU64],
    tag: u64,
    now: u64,
}

impl Look<'_> {
    /// Whether the key was seen decided in Redis less than a fill time before the look.
    pub(super) fn expected(&self) -> bool {
        self.set.iter().map(|word| word.load(Ordering::Relaxed)).any(|e| e >> 32 == self.tag && e & UNTIL > self.now)
    }

    /// Remembers that Redis holds the key's bucket, for one fill time of `policy` (rounded up to whole seconds)
    /// from the look, which came before the Redis call that wrote the bucket: the key's TTL runs at least that
    /// long. The key's own word if it has one, else the word of its set expected in Redis for the least time (an
    /// empty or expired one first).
    pub(super) fn saw(&self, policy: &Policy) {
        let until = (self.now + policy.fill_time_us().div_ceil(1_000_000)).min(UNTIL);
        let mut target = &self.set[0];
        let mut least = u64::MAX;
        for word in self.set {
            let entry = word.load(Ordering::Relaxed);
            if entry >> 32 == self.tag {
                target = word;
                break;
            }
            if entry & UNTIL < least {
                (target, least) = (word, entry & UNTIL);
            }
        }
        target.store(self.tag << 32 | until, Ordering::Relaxed);
    }
}

impl super::TieredStore {
    /// The first-look table, for the invalidation listener: a key reset through another instance is forgotten
    /// here too, so this instance does not count it as a key Redis lost.
    pub(crate) fn recent_keys(&self) -> Weak<RecentKeys> {
        Arc::downgrade(&self.inner.recent)
    }

    /// Whether this instance will ask Redis first for `key` (it saw it decided there lately), or load its row
    /// first: what tests of the first look (`tiered/recent.rs`) and of resets observe without deciding.
    pub fn expects_in_redis(&self, key: &str) -> bool {
        self.inner.recent.probably_in_redis(key)
    }
}

impl Inner {
    /// Asks Redis first only for a key seen there lately; any other key's row is loaded first and seeded with the
    /// decision, one Redis call fewer for a key Redis does not hold (the module's note says why that decides the
    /// same).
    pub(super) async fn check_in_redis(&self, key: &str, policy: &Policy, cost: u64) -> Result<Outcome, StoreError> {
        let look = self.recent.look(key);
        if look.expected() {
            if let Some(decided) = self.redis.decide_at(key, policy, cost, None, OnMiss::Report).await? {
                look.saw(policy);
                return self.settle(key, policy, cost, decided, Source::Redis).await;
            }
            self.redis_misses.fetch_add(1, Ordering::Relaxed);
        }
        let (seed, source) = self.load_seed(key, policy).await;
        let decided = self.redis.seed_and_decide(key, policy, cost, &seed, None).await?;
        look.saw(policy);
        // Redis held the key after all (another instance's user, or seeded by another instance since our miss):
        // its state decided, as a Redis hit.
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
        recent.look("a").saw(&policy);
        assert!(recent.probably_in_redis("a"));
        assert!(!recent.probably_in_redis("b"), "another key");
        clock.advance_us(29_999_999);
        assert!(recent.probably_in_redis("a"), "29.999999 s later");
        clock.advance_us(1);
        assert!(!recent.probably_in_redis("a"), "30 s later its key may have expired");
        recent.look("a").saw(&policy);
        assert!(recent.probably_in_redis("a"), "seen again");
    }

    #[test]
    fn a_fill_time_shorter_than_a_second_still_counts_for_the_current_second() {
        let (recent, clock) = table();
        let fast = Policy::new(5, Duration::from_millis(1)).unwrap(); // 5 ms
        recent.look("k").saw(&fast);
        assert!(recent.probably_in_redis("k"));
        clock.advance_us(1_000_000);
        assert!(!recent.probably_in_redis("k"));
    }

    #[test]
    fn the_longest_fill_times_do_not_overflow_the_slot() {
        let (recent, clock) = table();
        let slow = Policy::from_interval_us(1 << 20, 1 << 32).unwrap(); // 2^52 µs, about 142 years
        recent.look("k").saw(&slow);
        clock.advance_us(100 * 365 * 24 * 3600 * 1_000_000);
        assert!(recent.probably_in_redis("k"));
    }

    #[test]
    fn a_table_a_quarter_full_forgets_almost_no_key() {
        let (recent, _clock) = table();
        let policy = Policy::new(10, Duration::from_secs(1)).unwrap();
        // One word per key would lose about one key in nine to collisions here; sets of eight lose a handful (a
        // set gets more than eight of the 32,768 keys a few times in 16,384).
        let keys: Vec<String> = (0..SLOTS / 4).map(|i| format!("user-{i}")).collect();
        for key in &keys {
            recent.look(key).saw(&policy);
        }
        let forgotten = keys.iter().filter(|k| !recent.probably_in_redis(k)).count();
        assert!(forgotten < keys.len() / 100, "{forgotten} of {} keys forgotten", keys.len());
    }

    #[test]
    fn a_forgotten_key_is_no_longer_expected_and_its_neighbours_are() {
        let (recent, _clock) = table();
        let policy = Policy::new(10, Duration::from_secs(1)).unwrap();
        let keys: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
        for key in &keys {
            recent.look(key).saw(&policy);
        }
        recent.forget(&keys[7]);
        recent.forget("never-seen");
        assert!(!recent.probably_in_redis(&keys[7]), "forgotten");
        let kept = keys.iter().enumerate().filter(|(i, k)| *i != 7 && recent.probably_in_redis(k)).count();
        assert_eq!(kept, keys.len() - 1, "every other key is still expected");
        recent.look(&keys[7]).saw(&policy);
        assert!(recent.probably_in_redis(&keys[7]), "seen again after the reset");
    }

    #[test]
    fn a_full_set_gives_up_its_least_expected_key() {
        let (recent, _clock) = table();
        let short = Policy::new(1, Duration::from_secs(1)).unwrap();
        let long = Policy::new(1, Duration::from_secs(3600)).unwrap();
        // WAYS + 1 keys of one set: the first with the shortest fill time, the others an hour.
        let set_of = |k: &String| recent.place(k).0.as_ptr();
        let first = "k-0".to_owned();
        let same_set: Vec<String> =
            (1..).map(|i| format!("k-{i}")).filter(|k| set_of(k) == set_of(&first)).take(WAYS).collect();
        recent.look(&first).saw(&short);
        for key in &same_set {
            recent.look(key).saw(&long);
        }
        assert!(!recent.probably_in_redis(&first), "the key expected for the least time made room");
        assert!(same_set.iter().all(|k| recent.probably_in_redis(k)));
    }

    #[test]
    fn more_keys_than_words_only_make_some_guesses_wrong() {
        let (recent, _clock) = table();
        let policy = Policy::new(10, Duration::from_secs(1)).unwrap();
        // Twice as many keys as words: each set holds the last eight keys written to it.
        let keys: Vec<String> = (0..2 * SLOTS).map(|i| format!("user-{i}")).collect();
        for key in &keys {
            recent.look(key).saw(&policy);
        }
        let remembered = keys.iter().filter(|k| recent.probably_in_redis(k)).count();
        assert!(remembered <= SLOTS, "{remembered} keys remembered in {SLOTS} slots");
        assert!(remembered > SLOTS / 2, "only {remembered} remembered");
        assert!(recent.probably_in_redis(keys.last().unwrap()), "the last key written has a word");
    }
}
