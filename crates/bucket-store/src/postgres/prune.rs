//! Forgets the rows of refilled buckets, so PostgreSQL's cost does not grow with every key ever seen.
//!
//! A full bucket is the same as a missing one (DESIGN §1): every statement that reads a row treats "no row" as a
//! full bucket. Each row records when it becomes full (`full_at`, migration `rate_limits_full_at`, kept by every
//! statement that writes the row, in that statement, from the policy it decided with), and a background task
//! deletes rows whose `full_at` has passed, in batches of `prune_batch_size` (`prune.sql`), every
//! `prune_interval`, until a batch finds fewer rows than it may take. Each batch is one short transaction that
//! first takes a per-schema advisory lock without waiting (`prune_lock.sql`): one instance prunes at a time, the
//! others skip their turn.
//!
//! Why deleting never grants more than the truth:
//! - A row is deleted only while full. The batch locks its rows (`FOR UPDATE SKIP LOCKED`, which re-checks
//!   `full_at` on the newest committed row under READ COMMITTED) and the DELETE checks `full_at` again against
//!   `clock_timestamp()` as it deletes. A check on that key either ran before (the row it left is what was checked)
//!   or waits for the lock and then finds no row: `decide.sql`'s `INSERT … ON CONFLICT` then inserts a full bucket
//!   minus its cost, which is what refilling the deleted row would have given. The stored `full_at` is the core's
//!   exact instant (`bucket_core::full_at`) rounded *up* to whole 10 s (`bucket_prunable_at`, migration
//!   `full_at_granularity`, so that most writes leave the indexed column alone and update the row in place), never
//!   earlier, so "full" here implies the core's "full".
//! - A late write from the tiered store (write-behind, or queued while PostgreSQL was away) cannot bring back more
//!   tokens than the truth. Under one policy, `full_at` only grows with the version (rounding up keeps that
//!   order): a decision keeps the refilled state's `full_at` (or moves it to now when the bucket was full) and
//!   adds the cost's time. So a write carrying
//!   a version at or below the deleted row's is a state that was full no later than the deleted row, hence full
//!   when it lands: `save_batch.sql` and `save_answered.sql` do not write states that are already full, and one that were written would
//!   grant exactly what no row grants. A write carrying a higher version is a real newer state (Redis decided it
//!   after the row's version): inserting it is the truth arriving late, as it would without pruning.
//! - Versions restart from 0 when a key returns after its row was deleted and Redis forgot the key too (Redis
//!   keeps a key until it could have refilled from empty, so only once every earlier state is full). A late write
//!   from before that point has a higher version than the new row's, and the plain version guard would let it
//!   overwrite the new row; but it is full, and neither write statement writes a full state, so it cannot hide the
//!   new row's spent tokens. Conversely the new row's writes are not refused because of the old one: the old row
//!   is gone, and a full state was not written back.
//! - A clock skew between Redis (which stamps the tiered store's states) and PostgreSQL (which judges `full_at`)
//!   moves deletions by the skew: a PostgreSQL clock ahead by `d` deletes rows up to `d` early, at most
//!   `d / interval` tokens too generous. The same skew already bounds the tiered store's fallback to PostgreSQL.
//!
//! docs/reliability.md repeats this argument and lists what the tests prove.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Bool, Nullable};
use diesel::QueryableByName;
use diesel_async::pooled_connection::deadpool::Object;
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};

use super::prepared::prepared;
use super::statements::{Prune, PruneLock};
use super::{errors, signed, PostgresStore};
use crate::StoreError;

/// What the pruner reports, for logs; `bucket_pruned_rows_total` reads [`PostgresStore::pruned_rows`] instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PruneEvent {
    /// One batch deleted `rows` rows in `elapsed`.
    Batch {
        /// Rows deleted by the batch.
        rows: u64,
        /// How long the batch's transaction took.
        elapsed: Duration,
    },
    /// Another instance was pruning: this one skipped its turn.
    Busy,
    /// A batch failed; the next turn tries again.
    Failed {
        /// What failed, as the store reports it.
        error: String,
    },
}

/// Where the pruner's events go (the service logs them).
pub type PruneEvents = std::sync::Arc<dyn Fn(PruneEvent) + Send + Sync>;

#[derive(QueryableByName)]
struct Held {
    #[diesel(sql_type = Bool)]
    held: bool,
}

impl PostgresStore {
    /// Deletes up to `prune_batch_size` rows whose bucket is full at `now_us` (µs since the epoch; `None`: the
    /// server's clock, as production runs it). `Ok(None)` when another session holds the pruning lock.
    pub async fn prune_batch_at(&self, now_us: Option<u64>) -> Result<Option<u64>, StoreError> {
        let limit = signed(self.prune.batch_size as u64, "prune_batch_size")?;
        let now = now_us.map(|now| signed(now, "now")).transpose()?;
        let mut conn = self.checkout().await?;
        let run = conn.transaction(async |c| {
            let turn: Held = prepared::<PruneLock, _>(|q| q).get_result(c).await?;
            if !turn.held {
                return Ok(None);
            }
            // Planned on this run, for the table as it is now: the session's generic plans (postgres/session.rs)
            // are made once, maybe while the table is empty, and for a table PostgreSQL believes empty this DELETE's
            // best plan is a sequential scan, kept for ever after (tests/plans.rs). A batch runs every few seconds
            // in the background, so planning it each time costs nothing a request would see.
            c.batch_execute("SET LOCAL plan_cache_mode = force_custom_plan").await?;
            let deleted = prepared::<Prune, _>(|q| q.bind::<BigInt, _>(limit).bind::<Nullable<BigInt>, _>(now))
                .execute(c)
                .await?;
            Ok::<_, diesel::result::Error>(Some(deleted as u64))
        });
        let error = match tokio::time::timeout(self.statement_timeout, run).await {
            Ok(Ok(deleted)) => {
                self.prune.rows.fetch_add(deleted.unwrap_or(0), Ordering::Relaxed);
                return Ok(deleted);
            }
            Ok(Err(e)) => errors::query(e, self.statement_timeout),
            Err(_) => errors::timeout(self.statement_timeout),
        };
        if error.is_transient() {
            drop(Object::take(conn));
        }
        Err(error)
    }

    /// Batches until one finds fewer full rows than it may take (or the lock is another's); the rows deleted.
    pub async fn prune_at(&self, now_us: Option<u64>, events: &PruneEvents) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let started = Instant::now();
            match self.prune_batch_at(now_us).await? {
                None => {
                    events(PruneEvent::Busy);
                    return Ok(total);
                }
                Some(rows) => {
                    events(PruneEvent::Batch { rows, elapsed: started.elapsed() });
                    total += rows;
                    if rows < self.prune.batch_size as u64 {
                        return Ok(total);
                    }
                }
            }
        }
    }

    /// Rows this process's pruner deleted since start: `bucket_pruned_rows_total`.
    pub fn pruned_rows(&self) -> u64 {
        AtomicU64::load(&self.prune.rows, Ordering::Relaxed)
    }

    /// Starts pruning every `prune_interval` on the current tokio runtime; `None` when pruning is off (an interval
    /// of 0). The task runs until aborted or the runtime ends.
    pub fn spawn_pruner(&self, events: PruneEvents) -> Option<tokio::task::JoinHandle<()>> {
        if self.prune.interval.is_zero() {
            return None;
        }
        let store = self.clone();
        Some(tokio::spawn(async move {
            let mut every = tokio::time::interval(store.prune.interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(e) = store.prune_at(None, &events).await {
                    events(PruneEvent::Failed { error: e.to_string() });
                }
            }
        }))
    }
}
