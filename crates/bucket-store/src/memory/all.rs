//! Several buckets of the memory store decided together, all or nothing, without a global lock.
//!
//! Each bucket's `AtomicU64` doubles as its lock: `check_all` sets the top bit ([`LOCKED`]) of every key it needs,
//! in ascending key order, inserting a full bucket for a key not held yet; with all the bits set no one else can
//! change those buckets, so it decides them with `bucket_core::decide_all` and stores the new values (or the old
//! ones, when refused), which clears the bits. Taking the bits in one global order means two `check_all`s never
//! wait for each other in a cycle.
//!
//! No one waits for a bit while holding one of the map's shard locks (a `Ref`, an entry): a waiter could otherwise
//! hold a read lock that the bit's holder needs as a writer (to insert its next key), or that a queued writer
//! blocks the holder's next read behind. So every wait below, and the single-key path's wait in `check_now`, drops
//! its `Ref` first. Whoever holds a bit only takes shard locks briefly and never waits while holding one.
//!
//! The rest of the store respects a held bit: `check_now` waits for it, `reset` removes only an unheld bucket and
//! otherwise waits, the evictor sees a held bucket as full far in the future and keeps it, `peek` ignores the bit.
//! A held bucket is therefore never removed, which is what lets the holder let go of its `Ref` between steps.

use std::sync::atomic::{AtomicU64, Ordering};

use bucket_core::{decide_all, from_full_at, full_at, Demand};
use dashmap::mapref::entry::Entry;

use super::{MemoryStore, LOCKED};
use crate::limits::Grouped;
use crate::{Limit, Outcomes, Source};

/// Spins this many times before yielding the thread: a holder keeps its bits for a few hundred nanoseconds.
const SPINS: u32 = 64;

/// One wait for a bit held by someone else.
pub(super) fn pause(waits: &mut u32) {
    *waits = waits.saturating_add(1);
    if *waits < SPINS {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// A bucket held by this `check_all`: its value before, and whether this call inserted it.
struct Held {
    before: u64,
    inserted: bool,
}

impl MemoryStore {
    /// The synchronous heart of `check_all` (see the file).
    pub fn check_all_now(&self, limits: &[Limit<'_>]) -> Outcomes {
        let grouped = Grouped::new(limits);
        if let [one] = grouped.buckets.as_slice() {
            // One bucket needs no lock bit: the single-key CAS is already atomic.
            let decision = self.check_now(one.key, &one.policy, one.cost);
            return grouped.outcomes(decision.allowed, &[decision], Source::Memory);
        }
        let held: Vec<Held> = grouped.keys().map(|key| self.hold(key)).collect();
        // Read after every bit is held, so no stored value is newer than `now` by more than a clock's skew.
        let now = self.inner.clock.now_us();
        let demands: Vec<Demand> = grouped
            .buckets
            .iter()
            .zip(&held)
            .map(|(b, h)| Demand { policy: b.policy, state: from_full_at(&b.policy, h.before, now), cost: b.cost })
            .collect();
        let all = decide_all(&demands, now);
        for ((b, h), after) in grouped.buckets.iter().zip(&held).zip(&all.after) {
            // Refused: the value as it was, bit for bit (not re-encoded: nothing, not even a refill, is stored).
            let value = if all.allowed { full_at(&b.policy, *after) } else { h.before };
            self.release(b.key, value);
            if h.inserted && value <= now {
                // A full bucket this call inserted equals a missing one: drop it again unless someone used it since.
                self.inner.buckets.remove_if(b.key, |_, cell| cell.load(Ordering::Acquire) == value);
            }
        }
        grouped.outcomes(all.allowed, &all.decisions, Source::Memory)
    }

    /// Sets `key`'s lock bit, inserting a full bucket (value 0: full since before any clock reading) if there is
    /// none; returns the value it held.
    fn hold(&self, key: &str) -> Held {
        let mut waits = 0;
        loop {
            let found = self.inner.buckets.get(key);
            if let Some(cell) = found {
                let current = cell.load(Ordering::Acquire);
                if current & LOCKED == 0 {
                    if cell.compare_exchange(current, current | LOCKED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                        return Held { before: current, inserted: false };
                    }
                    // Changed under us by a single-key check: try again at once.
                    continue;
                }
                drop(cell);
            } else {
                match self.inner.buckets.entry(Box::from(key)) {
                    Entry::Vacant(slot) => {
                        slot.insert(AtomicU64::new(LOCKED));
                        return Held { before: 0, inserted: true };
                    }
                    Entry::Occupied(_) => continue,
                }
            }
            pause(&mut waits);
        }
    }

    /// Stores `value` in a bucket this thread holds, clearing its bit.
    fn release(&self, key: &str, value: u64) {
        match self.inner.buckets.get(key) {
            Some(cell) => cell.store(value, Ordering::Release),
            // Unreachable: a held bucket is never removed (see the file). Should it be gone, storing the value
            // anew keeps the decision that was made.
            None => {
                self.inner.buckets.insert(Box::from(key), AtomicU64::new(value));
            }
        }
    }

    /// Forgets `key`'s bucket once no `check_all` holds it.
    pub(super) fn reset_now(&self, key: &str) {
        let mut waits = 0;
        loop {
            if self.inner.buckets.remove_if(key, |_, cell| cell.load(Ordering::Acquire) & LOCKED == 0).is_some() {
                return;
            }
            if !self.inner.buckets.contains_key(key) {
                return;
            }
            pause(&mut waits);
        }
    }
}
