//! What the tiered store reports about its dependencies, for the application to log as it likes: a library does
//! not choose the application's logger.

use std::sync::Arc;

/// A change of state worth a log line (connected, lost, recovered, queue full), with what the line should say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TieredEvent {
    /// Redis did not answer at start: PostgreSQL decides until it does.
    RedisUnreachableAtStart {
        /// What the driver said.
        error: String,
    },
    /// Redis failed a call and is marked down: PostgreSQL decides until Redis answers again.
    RedisLost {
        /// What the driver said.
        error: String,
    },
    /// Redis answers again (after the stale keys were deleted): it decides again.
    RedisRecovered,
    /// Redis answers, but deleting the keys PostgreSQL changed meanwhile failed: it stays marked down.
    RedisInvalidationFailed {
        /// What the driver said.
        error: String,
    },
    /// Keys PostgreSQL changed during a Redis outage were deleted from Redis.
    StaleKeysDeleted {
        /// How many.
        keys: usize,
    },
    /// PostgreSQL failed a call and is marked down: Redis decides, writes are queued.
    PostgresLost {
        /// What the driver said.
        error: String,
        /// Most writes the queue holds.
        queue_capacity: usize,
    },
    /// PostgreSQL answers again.
    PostgresRecovered {
        /// Writes still queued for it.
        queued: usize,
    },
    /// The write queue is full: further writes are dropped until it drains (reported once per episode).
    QueueFull {
        /// Most writes the queue holds.
        capacity: usize,
    },
    /// Shutdown flushed the queued writes.
    Flushed {
        /// How many were waiting.
        keys: usize,
    },
    /// Shutdown could not flush the queued writes.
    FlushFailed {
        /// How many are still waiting.
        keys: usize,
        /// What went wrong.
        error: String,
    },
}

/// Where a tiered store sends its events; called on the task that saw the change, so it should return quickly.
pub type TieredEvents = Arc<dyn Fn(TieredEvent) + Send + Sync>;

/// Events dropped (tests, tools).
pub fn no_events() -> TieredEvents {
    Arc::new(|_| {})
}
