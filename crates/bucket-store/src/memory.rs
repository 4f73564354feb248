//! The in-process store: one atomic integer per key, updated by compare-and-swap.
//!
//! Each bucket is its GCRA encoding (`bucket_core::full_at`, the instant it is full again) in an `AtomicU64`
//! inside a sharded map. A check takes the shard's read lock only, so a hot key never blocks other keys, and two
//! checks on one key race on the CAS: the loser re-reads and re-decides, so exactly one of them spends each token.
//! A missing key is a full bucket; the evictor drops buckets that have refilled, so memory follows the number of
//! recently active keys, not the number ever seen.
//!
//! Several keys decided together (`check_all`, `memory/all.rs`) take a lock bit in each key's integer, in key
//! order, decide, and store the results clearing the bits; a single-key check that finds the bit set waits for it
//! outside the map's locks, so one bit test is all the single-key path pays.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bucket_core::{decide, from_full_at, full_at, peek, BucketState, Clock, Decision, Policy};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use crate::{DependencyHealth, Limit, Outcome, Outcomes, PolicyStore, Source, Store, StoreError};

mod all;

/// Set in a bucket's integer while a `check_all` holds it. Stored instants are µs timestamps plus at most
/// `MAX_FILL_TIME_US` (below 2^53 each for centuries), so the top bit is never part of a value; a held bucket
/// therefore reads as full far in the future, which keeps the evictor away from it.
const LOCKED: u64 = 1 << 63;

/// The default store: exact and fast, for one instance; cloning shares the same buckets.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    buckets: DashMap<Box<str>, AtomicU64>,
    policies: DashMap<Box<str>, Policy>,
    /// How many per-key policies exist: while none does (the usual case), a check's policy look-up hashes nothing.
    policy_count: AtomicUsize,
    /// Bumped after every policy write, so `CachedPolicies` over this store sees the change.
    policy_version: AtomicU64,
    clock: Arc<dyn Clock>,
}

/// The memory store's default clock: the CPU's time-stamp counter through `quanta`, a few ns per read where
/// `Instant` costs about 25 ns through the vDSO here (measured by `cargo bench -p bucket-store --bench decide`, see
/// docs/perf.md); `quanta` falls back to the OS clock where the counter is not usable. A read that comes out
/// earlier than a bucket's last refill counts as no time passing (bucket-core), so a small difference between
/// cores can delay a token by that much, never mint one.
pub struct TscClock {
    clock: quanta::Clock,
    start: u64,
    /// µs per raw tick as a 64-bit binary fraction: a read is one multiplication, where quanta's own conversion to
    /// ns followed by a division by 1,000 was two and a branch (half a nanosecond of a 15 ns decision, §17 of
    /// docs/perf.md).
    us_per_tick: u64,
}

/// Raw ticks over which [`TscClock`] reads quanta's calibration (a third of a second to a second, for counters of 1
/// to 3 GHz), so the rate is exact to a few parts per billion, far below the counter's own calibration error.
const CALIBRATION_TICKS: u64 = 1 << 30;

impl TscClock {
    /// A clock whose zero is now.
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let start = clock.raw();
        // quanta's ns for a fixed span of raw ticks, as µs in 64.64 fixed point, divided by that span (a power of
        // two, so a shift). A clock whose raw reads are already ns (quanta's fallback) gets exactly 2^64 / 1000.
        let ns = u128::from(clock.delta_as_nanos(0, CALIBRATION_TICKS));
        let us_per_tick = u64::try_from(((ns << 64) / 1_000) >> CALIBRATION_TICKS.trailing_zeros()).unwrap_or(u64::MAX);
        Self { clock, start, us_per_tick }
    }
}

impl Default for TscClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TscClock {
    #[inline]
    fn now_us(&self) -> u64 {
        // +1 keeps 0 free, as bucket-core's MonotonicClock does: every stored instant is then after the epoch.
        let ticks = self.clock.raw().saturating_sub(self.start);
        ((u128::from(ticks) * u128::from(self.us_per_tick)) >> 64) as u64 + 1
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A store on the process's monotonic clock ([`TscClock`]).
    pub fn new() -> Self {
        Self::with_clock(Arc::new(TscClock::new()))
    }

    /// A store on a given clock (a `ManualClock` in tests).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(Inner {
                buckets: DashMap::new(),
                policies: DashMap::new(),
                policy_count: AtomicUsize::new(0),
                policy_version: AtomicU64::new(0),
                clock,
            }),
        }
    }

    /// Number of buckets held (full ones not yet evicted included).
    pub fn len(&self) -> usize {
        self.inner.buckets.len()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.inner.buckets.is_empty()
    }

    /// Drops every bucket that has refilled to capacity (it equals a missing one); returns how many.
    pub fn evict_full(&self) -> usize {
        let now = self.inner.clock.now_us();
        let before = self.inner.buckets.len();
        // A bucket held by a `check_all` has its top bit set, so it reads as full far in the future and stays.
        self.inner.buckets.retain(|_, full_at| full_at.load(Ordering::Acquire) > now);
        self.inner.buckets.shrink_to_fit();
        before.saturating_sub(self.inner.buckets.len())
    }

    /// Runs [`MemoryStore::evict_full`] every `every` on the current tokio runtime until the store is dropped.
    pub fn spawn_evictor(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                MemoryStore { inner }.evict_full();
            }
        })
    }

    /// The synchronous heart of `check`: a CAS loop on the key's cell, inserting it on first use.
    pub fn check_now(&self, key: &str, policy: &Policy, cost: u64) -> Decision {
        let mut waits = 0;
        loop {
            if let Some(cell) = self.inner.buckets.get(key) {
                let mut current = cell.load(Ordering::Acquire);
                while current & LOCKED == 0 {
                    // The clock is read after the cell, so `now` is rarely older than the state another thread just
                    // stored (from_full_at stays safe, and conservative, when it is).
                    let now = self.inner.clock.now_us();
                    let (decision, next) = decide(policy, from_full_at(policy, current, now), now, cost);
                    if !decision.allowed {
                        return decision;
                    }
                    match cell.compare_exchange_weak(
                        current,
                        full_at(policy, next),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return decision,
                        Err(seen) => current = seen,
                    }
                }
                // A `check_all` holds the bucket for a moment: wait without holding the map's shard lock, which
                // the holder may need to take (see `memory/all.rs`).
                drop(cell);
                all::pause(&mut waits);
                continue;
            }
            let now = self.inner.clock.now_us();
            let (decision, next) = decide(policy, BucketState::full(policy, now), now, cost);
            if !decision.allowed || next.tokens >= policy.capacity() {
                return decision;
            }
            match self.inner.buckets.entry(Box::from(key)) {
                Entry::Vacant(slot) => {
                    slot.insert(AtomicU64::new(full_at(policy, next)));
                    return decision;
                }
                // Another check inserted it first: decide again against its state.
                Entry::Occupied(_) => continue,
            }
        }
    }

    fn peek_now(&self, key: &str, policy: &Policy) -> Decision {
        let now = self.inner.clock.now_us();
        let state = match self.inner.buckets.get(key) {
            // A held bucket shows its value before the `check_all` that holds it.
            Some(cell) => from_full_at(policy, cell.load(Ordering::Acquire) & !LOCKED, now),
            None => BucketState::full(policy, now),
        };
        peek(policy, state, now)
    }
}

impl Store for MemoryStore {
    async fn check(&self, key: &str, policy: &Policy, cost: u64) -> Result<Outcome, StoreError> {
        Ok(Outcome { decision: self.check_now(key, policy, cost), source: Source::Memory })
    }

    async fn peek(&self, key: &str, policy: &Policy) -> Result<Outcome, StoreError> {
        Ok(Outcome { decision: self.peek_now(key, policy), source: Source::Memory })
    }

    async fn check_all(&self, limits: &[Limit<'_>]) -> Result<Outcomes, StoreError> {
        Ok(self.check_all_now(limits))
    }

    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        self.reset_now(key);
        Ok(())
    }

    async fn health(&self) -> Vec<DependencyHealth> {
        vec![DependencyHealth {
            name: "memory",
            up: true,
            detail: format!("{} buckets", self.len()),
            nodes: Vec::new(),
        }]
    }
}

impl PolicyStore for MemoryStore {
    async fn policy(&self, key: &str) -> Result<Option<Policy>, StoreError> {
        // A policy set concurrently with this look-up may or may not apply to it, with or without the count.
        if self.inner.policy_count.load(Ordering::Acquire) == 0 {
            return Ok(None);
        }
        Ok(self.inner.policies.get(key).map(|p| *p))
    }

    async fn set_policy(&self, key: &str, policy: &Policy) -> Result<(), StoreError> {
        if self.inner.policies.insert(Box::from(key), *policy).is_none() {
            self.inner.policy_count.fetch_add(1, Ordering::AcqRel);
        }
        self.inner.policy_version.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    async fn delete_policy(&self, key: &str) -> Result<bool, StoreError> {
        let existed = self.inner.policies.remove(key).is_some();
        if existed {
            self.inner.policy_count.fetch_sub(1, Ordering::AcqRel);
        }
        self.inner.policy_version.fetch_add(1, Ordering::AcqRel);
        Ok(existed)
    }

    async fn policy_version(&self) -> Result<u64, StoreError> {
        Ok(self.inner.policy_version.load(Ordering::Acquire))
    }

    async fn all_policies(&self) -> Result<Vec<(String, Policy)>, StoreError> {
        Ok(self.inner.policies.iter().map(|entry| (entry.key().to_string(), *entry.value())).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// The one-multiplication read keeps the OS clock's rate: between two reads it counts the µs that passed (within
    /// 1 %, and the µs each read truncates), and it never goes backwards. Each read is bracketed by two OS clock
    /// reads, so a thread descheduled around a read widens the allowed span instead of failing the test.
    #[test]
    fn tsc_clock_counts_real_microseconds() {
        let clock = TscClock::new();
        let bracketed = || {
            let before = Instant::now();
            let read = clock.now_us();
            (before, read, Instant::now())
        };
        let (before0, c0, after0) = bracketed();
        let mut last = c0;
        while before0.elapsed() < Duration::from_millis(200) {
            let now = clock.now_us();
            assert!(now >= last, "went back from {last} to {now}");
            last = now;
        }
        let (before1, c1, after1) = bracketed();
        let counted = (c1 - c0) as f64;
        let shortest = before1.duration_since(after0).as_micros() as f64;
        let longest = after1.duration_since(before0).as_micros() as f64;
        assert!(
            counted >= shortest * 0.99 - 2.0 && counted <= longest * 1.01 + 2.0,
            "counted {counted} µs where between {shortest} and {longest} µs passed"
        );
    }
}
