//! Group commit: the PostgreSQL round trips of the tiered store's decision path, shared by concurrent requests.
//!
//! In synchronous mode every allowed decision's state is committed to PostgreSQL before the answer. One statement
//! per decision made PostgreSQL the bottleneck; instead, the writes of concurrent requests are gathered for at most
//! `commit_window` (or until `batch_size` of them) and committed as one version-guarded statement
//! (`save_batch.sql`, which keeps a key's highest version when it appears twice). Each request still waits for the
//! commit holding its write, so "committed before the answer" holds exactly as before; what changes is that up to
//! `commit_window` is added to a lone request's latency, and that a batch's failure is the failure of every
//! request in it, and of no other (`batcher.rs`). A failed request falls back as a failed single write always did:
//! PostgreSQL is marked down and the write waits in the queue, to be replayed.
//!
//! Redis misses are loaded the same way: the keys of concurrent misses in one `read_many.sql`.
//!
//! `commit_window = 0` turns both off: one statement per write and per miss, as before group commit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bucket_core::{BucketState, Policy};

use super::batcher::Batcher;
use super::{Inner, TieredConfig, WriteMode};
use crate::postgres::{PostgresStore, Saved};
use crate::write_queue::Enqueued;
use crate::{Decided, PendingWrite, Source, StoreError, VersionedState};

use super::TieredEvent;

/// A write's answer from its batch.
type SaveResult = Result<Saved, StoreError>;
/// A load's answer from its batch.
type LoadResult = Result<Option<VersionedState>, StoreError>;

/// Statements sent to PostgreSQL on the decision path, for [`super::TieredStats`].
#[derive(Default)]
pub(super) struct Statements {
    /// Writes of Redis's decisions: one per batch (or per write without group commit), queue replays included.
    pub(super) writes: AtomicU64,
    /// Loads of Redis misses: one per batch (or per miss without group commit).
    pub(super) loads: AtomicU64,
}

/// The batchers of writes and loads, absent when `commit_window` is zero.
pub(super) struct GroupCommit {
    saves: Option<Batcher<(String, PendingWrite), SaveResult>>,
    loads: Option<Batcher<String, LoadResult>>,
}

impl GroupCommit {
    /// The two batchers (none when `commit_window` is zero).
    pub(super) fn start(pg: &PostgresStore, config: &TieredConfig, statements: &Arc<Statements>) -> Self {
        if config.commit_window.is_zero() {
            return Self { saves: None, loads: None };
        }
        let (window, max) = (config.commit_window, config.batch_size);
        let (pg_saves, counted) = (pg.clone(), Arc::clone(statements));
        let saves = Batcher::new(window, max, move |items: Vec<(String, PendingWrite)>| {
            let (pg, counted) = (pg_saves.clone(), Arc::clone(&counted));
            async move {
                match pg.save_each(&items).await {
                    Ok(saved) => {
                        counted.writes.fetch_add(1, Ordering::Relaxed);
                        saved.into_iter().map(Ok).collect()
                    }
                    Err(e) => vec![Err(e); items.len()],
                }
            }
        });
        let (pg_loads, counted) = (pg.clone(), Arc::clone(statements));
        let loads = Batcher::new(window, max, move |keys: Vec<String>| {
            let (pg, counted) = (pg_loads.clone(), Arc::clone(&counted));
            async move {
                match pg.load_many(&keys).await {
                    Ok(rows) => {
                        counted.loads.fetch_add(1, Ordering::Relaxed);
                        rows.into_iter().map(Ok).collect()
                    }
                    Err(e) => vec![Err(e); keys.len()],
                }
            }
        });
        Self { saves: Some(saves), loads: Some(loads) }
    }
}

/// What became of an allowed decision's state on its way to PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Persisted {
    /// Committed (sync), queued (write-behind, or PostgreSQL down), or nothing to write (refused).
    Done,
    /// PostgreSQL already held this version or a newer one: Redis's bucket may be older than the row.
    Superseded,
}

/// The answer for a request whose batch was never answered (the runtime is shutting down): its write's fate is
/// unknown, so it is treated as a failed write, which the queue replays (the version guard discards a duplicate).
fn batch_lost() -> StoreError {
    StoreError::Unavailable { backend: "postgres", detail: "the group commit task ended before answering".into() }
}

impl Inner {
    /// Commits one write now: in the next batch, or alone without group commit.
    async fn save_now(&self, key: &str, write: PendingWrite) -> SaveResult {
        let Some(saves) = &self.group.saves else {
            let saved = self.pg.save_one(key, &write).await?;
            self.statements.writes.fetch_add(1, Ordering::Relaxed);
            return Ok(saved);
        };
        saves.submit((key.to_owned(), write)).await.unwrap_or_else(|| Err(batch_lost()))
    }

    /// PostgreSQL's row of `key`: in the next batch of loads, or alone without group commit.
    pub(super) async fn load_row(&self, key: &str) -> LoadResult {
        let Some(loads) = &self.group.loads else {
            let row = self.pg.load(key).await?;
            self.statements.loads.fetch_add(1, Ordering::Relaxed);
            return Ok(row);
        };
        loads.submit(key.to_owned()).await.unwrap_or_else(|| Err(batch_lost()))
    }

    /// What to seed Redis with on a miss: the PostgreSQL row, a new full bucket, or (PostgreSQL down) Redis's own
    /// rule that a missing key is a full bucket.
    pub(super) async fn load_seed(&self, key: &str, policy: &Policy) -> (VersionedState, Source) {
        let full = VersionedState { state: BucketState::full(policy, 0), version: 0 };
        if !self.pg_up.load(Ordering::Acquire) {
            return (full, Source::Redis);
        }
        match self.load_row(key).await {
            Ok(Some(row)) => (row, Source::Postgres),
            Ok(None) => (full, Source::NewUser),
            Err(e) => {
                self.pg_lost(&e);
                (full, Source::Redis)
            }
        }
    }

    /// Copies an allowed decision to PostgreSQL: committed before returning in sync mode, queued otherwise or when
    /// PostgreSQL fails.
    pub(super) async fn persist(&self, key: &str, policy: &Policy, decided: &Decided) -> Persisted {
        if !decided.decision.allowed {
            return Persisted::Done;
        }
        let write = PendingWrite::new(policy, decided.after);
        if self.config.write_mode == WriteMode::Sync {
            if self.pg_up.load(Ordering::Acquire) {
                match self.save_now(key, write).await {
                    Ok(Saved::Superseded) => return Persisted::Superseded,
                    Ok(Saved::Written | Saved::Full) => return Persisted::Done,
                    Err(e) => self.pg_lost(&e),
                }
            }
            self.queued_while_down.fetch_add(1, Ordering::Relaxed);
        }
        self.enqueue(key, write);
        Persisted::Done
    }

    /// Queues a write for PostgreSQL, reporting a full queue once per episode.
    pub(super) fn enqueue(&self, key: &str, after: PendingWrite) {
        if self.queue.push(key, after) == Enqueued::Full && !self.queue_full_logged.swap(true, Ordering::AcqRel) {
            (self.events)(TieredEvent::QueueFull { capacity: self.queue.capacity() });
        }
    }
}
