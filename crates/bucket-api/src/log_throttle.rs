//! A warning that every request of an outage would repeat, written at most once per interval.
//!
//! When a store is down, every check fails the same way: one line per request buried the log in identical lines
//! (330,000 in the 9 s of a both-down outage at 6,000 req/s per instance, found by killing Redis and PostgreSQL
//! under load; docs/reliability.md). The metrics still count every failure; the log now says that the outage
//! started, then about once per interval that it goes on, each line carrying how many like it were not written.
//! Hand-written because it is one compare-and-swap beside the logger; slog has no throttling drain.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often a repeated warning is written while it repeats.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// One repeated warning's gate: the first occurrence passes, then one per interval.
#[derive(Debug)]
pub struct LogThrottle {
    every_ms: u64,
    start: Instant,
    /// Milliseconds since `start` before which nothing passes.
    next_ms: AtomicU64,
    /// Occurrences held back since the last one that passed.
    held: AtomicU64,
}

impl LogThrottle {
    /// A gate letting one occurrence through per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            start: Instant::now(),
            next_ms: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(held)` when this occurrence is to be written, `held` being how many were not written since the last
    /// one that was; `None` when it is to be left out (and is counted for the next line).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(self.start.elapsed())
    }

    /// [`LogThrottle::admit`] at `now` since the gate was made: the clock injected by tests.
    fn admit_at(&self, now: Duration) -> Option<u64> {
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Acquire);
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(next, now_ms.saturating_add(self.every_ms), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::AcqRel));
        }
        self.held.fetch_add(1, Ordering::AcqRel);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn the_first_passes_then_one_per_interval_each_counting_those_held_back() {
        let gate = LogThrottle::new(Duration::from_secs(10));
        assert_eq!(gate.admit_at(at(5)), Some(0));
        for ms in [6, 100, 9_000, 10_004] {
            assert_eq!(gate.admit_at(at(ms)), None, "{ms} ms");
        }
        assert_eq!(gate.admit_at(at(10_005)), Some(4));
        assert_eq!(gate.admit_at(at(10_006)), None);
        // A quiet spell: the next occurrence passes at once, with the one held back before it.
        assert_eq!(gate.admit_at(at(60_000)), Some(1));
        assert_eq!(gate.admit_at(at(60_001)), None);
    }

    #[test]
    fn concurrent_occurrences_are_each_written_or_counted_once() {
        let gate = std::sync::Arc::new(LogThrottle::new(Duration::from_secs(10)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let gate = gate.clone();
                std::thread::spawn(move || (0..1000).filter_map(|_| gate.admit_at(at(1))).collect::<Vec<_>>())
            })
            .collect();
        let passed: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        assert_eq!(passed, vec![0], "one line in the interval");
        assert_eq!(gate.admit_at(at(20_000)), Some(3999), "every other occurrence counted once");
    }
}
