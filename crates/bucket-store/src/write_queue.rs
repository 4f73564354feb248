//! Writes to PostgreSQL that have not happened yet: bounded, coalesced per key, replayed in batches.
//!
//! Used by the tiered store in two cases: write-behind mode (every allowed decision goes here and a flusher sends
//! them in one statement every few milliseconds), and PostgreSQL being down in synchronous mode (the write that
//! failed waits here until PostgreSQL answers again). Coalescing keeps only the newest version of each key: the
//! version guard in PostgreSQL would discard the older ones anyway, so nothing is lost by dropping them early.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::VersionedState;

/// Pending writes keyed by bucket key; the newest version of each key wins.
pub struct WriteQueue {
    pending: Mutex<HashMap<String, VersionedState>>,
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
        Self { pending: Mutex::new(HashMap::new()), capacity, dropped: AtomicU64::new(0) }
    }

    /// Queues a write, keeping only the newest version per key.
    pub fn push(&self, key: &str, state: VersionedState) -> Enqueued {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = pending.get_mut(key) {
            if state.version > existing.version {
                *existing = state;
            }
            return Enqueued::Queued;
        }
        if pending.len() >= self.capacity {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Enqueued::Full;
        }
        pending.insert(key.to_owned(), state);
        Enqueued::Queued
    }

    /// Takes up to `max` pending writes for one batch.
    pub fn take(&self, max: usize) -> Vec<(String, VersionedState)> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() <= max {
            return pending.drain().collect();
        }
        let keys: Vec<String> = pending.keys().take(max).cloned().collect();
        keys.into_iter().filter_map(|k| pending.remove(&k).map(|v| (k, v))).collect()
    }

    /// Puts back a batch that could not be written, unless newer versions arrived meanwhile.
    pub fn restore(&self, batch: Vec<(String, VersionedState)>) {
        for (key, state) in batch {
            // A restore may exceed the bound briefly by at most one batch; dropping here would lose writes that
            // were already accepted.
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            match pending.get_mut(&key) {
                Some(existing) if existing.version >= state.version => {}
                Some(existing) => *existing = state,
                None => {
                    pending.insert(key, state);
                }
            }
        }
    }

    /// Keys waiting to be written: the `bucket_write_queue_depth` gauge.
    pub fn len(&self) -> usize {
        self.pending.lock().map(|p| p.len()).unwrap_or(0)
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

    fn v(tokens: u64, version: u64) -> VersionedState {
        VersionedState { state: BucketState { tokens, last_refill_us: 0 }, version }
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
    fn restore_never_overwrites_a_newer_pending_write() {
        let q = WriteQueue::new(10);
        q.push("a", v(5, 1));
        let batch = q.take(10);
        q.push("a", v(3, 2));
        q.restore(batch);
        assert_eq!(q.take(10), vec![("a".to_owned(), v(3, 2))]);
    }
}
