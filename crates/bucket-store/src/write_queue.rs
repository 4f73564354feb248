//! Writes to PostgreSQL that have not happened yet: bounded, coalesced per key, replayed in batches.
//!
//! Used by the tiered store in two cases: write-behind mode (every allowed decision goes here and a flusher sends
//! them in one statement every few milliseconds), and PostgreSQL being down in synchronous mode (the write that
//! failed waits here until PostgreSQL answers again). Coalescing keeps only the newest write of each key
//! ([`PendingWrite::supersedes`]: the version, or a later run of versions after the key refilled and was dropped):
//! the version guard in PostgreSQL would discard the older ones anyway, so nothing is lost by dropping them early.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::PendingWrite;

/// Pending writes keyed by bucket key; the newest write of each key wins.
pub struct WriteQueue {
    pending: Mutex<HashMap<String, PendingWrite>>,
    /// Writes taken for a statement that has not yet succeeded or been restored. Changed and read only under the
    /// `pending` lock, so `pending + in_flight` never misses a write moving between the two.
    in_flight: AtomicUsize,
    capacity: usize,
    dropped: AtomicU64,
}

/// What happened to a write offered to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued (or merged into a pending write of the same key).
    Queued,
    /// The queue holds `capacity` other keys: this write is lost and counted.
    Full,
}

impl WriteQueue {
    /// A queue holding at most `capacity` distinct keys.
    pub fn new(capacity: usize) -> Self {
        Self {
            pending: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            capacity,
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues a write, keeping only the newest per key.
    pub fn push(&self, key: &str, state: PendingWrite) -> Enqueued {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = pending.get_mut(key) {
            if state.supersedes(existing) {
                *existing = state;
            }
            return Enqueued::Queued;
        }
        // Writes in flight count too: they come back through `restore` if their statement fails, and a bound on
        // `pending` alone would let every failed retry during an outage add another `capacity` keys.
        if pending.len() + self.in_flight.load(Ordering::Relaxed) >= self.capacity {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Enqueued::Full;
        }
        pending.insert(key.to_owned(), state);
        Enqueued::Queued
    }

    /// Takes up to `max` pending writes for one batch; they count as in flight until [`WriteQueue::written`] or
    /// [`WriteQueue::restore`].
    pub fn take(&self, max: usize) -> Vec<(String, PendingWrite)> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let batch: Vec<(String, PendingWrite)> = if pending.len() <= max {
            pending.drain().collect()
        } else {
            let keys: Vec<String> = pending.keys().take(max).cloned().collect();
            keys.into_iter().filter_map(|k| pending.remove(&k).map(|v| (k, v))).collect()
        };
        self.in_flight.fetch_add(batch.len(), Ordering::Relaxed);
        batch
    }

    /// Marks `n` taken writes as committed in PostgreSQL.
    pub fn written(&self, n: usize) {
        let _pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        self.in_flight.fetch_sub(n, Ordering::Relaxed);
    }

    /// Takes the pending write of one key, if any: the tiered store writes it before PostgreSQL decides that key
    /// itself, so that PostgreSQL decides from the newest state rather than one the queue is about to overwrite.
    pub fn take_key(&self, key: &str) -> Option<PendingWrite> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let taken = pending.remove(key);
        if taken.is_some() {
            self.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// Puts back a batch that could not be written, unless newer versions arrived meanwhile.
    pub fn restore(&self, batch: Vec<(String, PendingWrite)>) {
        // Restored writes were counted against the bound while in flight, so putting them back keeps
        // `pending + in_flight` within it; none is dropped here, they were already accepted.
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        self.in_flight.fetch_sub(batch.len(), Ordering::Relaxed);
        for (key, state) in batch {
            match pending.get_mut(&key) {
                Some(existing) if !state.supersedes(existing) => {}
                Some(existing) => *existing = state,
                None => {
                    pending.insert(key, state);
                }
            }
        }
    }

    /// Keys waiting to be taken.
    pub fn len(&self) -> usize {
        self.pending.lock().map(|p| p.len()).unwrap_or(0)
    }

    /// Writes not yet committed in PostgreSQL, queued or in flight: the `bucket_write_queue_depth` gauge. Zero
    /// means PostgreSQL holds every write accepted so far.
    pub fn unwritten(&self) -> usize {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.len() + self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes refused because the queue was full, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The bound, for logs and metrics.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bucket_core::BucketState;

    fn v(tokens: u64, version: u64) -> PendingWrite {
        let after = crate::VersionedState { state: BucketState { tokens, last_refill_us: 0 }, version };
        PendingWrite { after, full_at_us: 10 - tokens }
    }

    #[test]
    fn coalesces_to_the_newest_version() {
        let q = WriteQueue::new(10);
        q.push("a", v(5, 2));
        q.push("a", v(4, 3));
        q.push("a", v(9, 1));
        assert_eq!(q.take(10), vec![("a".to_owned(), v(4, 3))]);
    }

    #[test]
    fn bounded_and_counts_what_it_drops() {
        let q = WriteQueue::new(2);
        assert_eq!(q.push("a", v(1, 1)), Enqueued::Queued);
        assert_eq!(q.push("b", v(1, 1)), Enqueued::Queued);
        assert_eq!(q.push("c", v(1, 1)), Enqueued::Full);
        assert_eq!(q.push("a", v(0, 2)), Enqueued::Queued, "an existing key still coalesces when full");
        assert_eq!((q.len(), q.dropped()), (2, 1));
    }

    #[test]
    fn take_key_removes_only_that_key() {
        let q = WriteQueue::new(10);
        q.push("a", v(5, 1));
        q.push("b", v(4, 2));
        assert_eq!(q.take_key("a"), Some(v(5, 1)));
        assert_eq!(q.take_key("a"), None);
        assert_eq!(q.take(10), vec![("b".to_owned(), v(4, 2))]);
        assert_eq!(q.unwritten(), 2, "both taken, neither written");
        q.written(2);
        assert_eq!(q.unwritten(), 0);
    }

    #[test]
    fn failed_batches_never_grow_the_queue_past_its_bound() {
        let q = WriteQueue::new(2);
        q.push("a", v(1, 1));
        q.push("b", v(1, 1));
        for round in 0..5 {
            let batch = q.take(10);
            // While the batch is out, new keys still find the queue full.
            assert_eq!(q.push(&format!("new-{round}"), v(1, 1)), Enqueued::Full);
            q.restore(batch);
            assert_eq!(q.unwritten(), 2);
        }
        assert_eq!(q.dropped(), 5);
    }

    #[test]
    fn taken_writes_count_as_unwritten_until_written_or_restored() {
        let q = WriteQueue::new(10);
        q.push("a", v(5, 1));
        q.push("b", v(5, 1));
        let batch = q.take(1);
        assert_eq!((q.len(), q.unwritten()), (1, 2));
        q.restore(batch);
        assert_eq!((q.len(), q.unwritten()), (2, 2));
        let batch = q.take(10);
        q.written(batch.len());
        assert_eq!((q.len(), q.unwritten()), (0, 0));
    }

    /// A write at `last_refill_us` leaving `tokens` of 10, one token per µs.
    fn at(last_refill_us: u64, tokens: u64, version: u64) -> PendingWrite {
        let after = crate::VersionedState { state: BucketState { tokens, last_refill_us }, version };
        PendingWrite { after, full_at_us: last_refill_us + 10 - tokens }
    }

    #[test]
    fn a_write_from_a_new_run_of_versions_replaces_a_full_one() {
        // Version 50 is full at 105; the key was dropped and counted again from 0: its version 1 at 200 is newer.
        let q = WriteQueue::new(10);
        q.push("a", at(100, 5, 50));
        q.push("a", at(200, 9, 1));
        assert_eq!(q.take(10), vec![("a".to_owned(), at(200, 9, 1))]);
        // Restoring the old run's batch does not bring it back over the new run's write.
        q.push("b", at(100, 5, 50));
        let batch = q.take(10);
        q.push("b", at(200, 9, 1));
        q.restore(batch);
        assert_eq!(q.take(10), vec![("b".to_owned(), at(200, 9, 1))]);
    }

    #[test]
    fn within_one_run_the_version_decides() {
        let q = WriteQueue::new(10);
        q.push("a", at(100, 5, 7));
        q.push("a", at(101, 4, 6));
        q.push("a", at(102, 2, 8));
        assert_eq!(q.take(10), vec![("a".to_owned(), at(102, 2, 8))]);
    }

    #[test]
    fn restore_never_overwrites_a_newer_pending_write() {
        let q = WriteQueue::new(10);
        q.push("a", v(5, 1));
        let batch = q.take(10);
        q.push("a", v(3, 2));
        q.restore(batch);
        assert_eq!(q.take(10), vec![("a".to_owned(), v(3, 2))]);
    }
}
