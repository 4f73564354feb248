//! Where "now" comes from, as a trait, so tests drive time by hand and never sleep.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A source of microseconds that only the caller interprets (stores keep whatever epoch their clock uses).
pub trait Clock: Send + Sync + 'static {
    /// The current time in microseconds.
    fn now_us(&self) -> u64;
}

/// Wall-clock microseconds since the Unix epoch: what PostgreSQL and Redis timestamps mean.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
    }
}

/// Microseconds since this clock was created, never going backwards: the memory store's clock.
///
/// It starts at 1 so that the stored value 0 ("full since forever") is always in the past.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    start: Instant,
}

impl MonotonicClock {
    /// A clock whose zero is now.
    pub fn new() -> Self {
        Self { start: Instant::now() }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64 + 1
    }
}

/// A clock that moves only when told to; clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock frozen at `now_us`.
    pub fn new(now_us: u64) -> Self {
        Self { now: Arc::new(AtomicU64::new(now_us)) }
    }

    /// Moves time forward by `us` microseconds.
    pub fn advance_us(&self, us: u64) {
        self.now.fetch_add(us, Ordering::SeqCst);
    }

    /// Jumps to an absolute time (backwards too, to test skew).
    pub fn set_us(&self, now_us: u64) {
        self.now.store(now_us, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_us(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now_us(&self) -> u64 {
        (**self).now_us()
    }
}
