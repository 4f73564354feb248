//! A Redis bucket older than PostgreSQL's row never grants (synchronous mode).
//!
//! Redis replicates asynchronously, so a failover can promote a replica that holds an older bucket (a lower
//! version) than the one PostgreSQL committed: sync mode committed each grant before answering it. Redis would then
//! grant again tokens PostgreSQL knows are spent. The sign is PostgreSQL refusing the allowed decision's write as
//! not newer than its row. That alone is not proof: two requests on one bucket decide versions 5 and 6 in Redis,
//! and 6 may reach PostgreSQL first. So the row is loaded and `drop_older.lua` compares it with what Redis holds
//! now, atomically: a bucket that is at least as new as the row (or is the row's very state) is current, and the
//! decision stands; an older one is deleted, and the request is decided again from the row, seeded into Redis.
//!
//! The first decision's debit was made on the stale bucket, which is gone, so it counts for nothing; the answer is
//! the second decision. A reseeded decision whose write is refused again (another race) is checked again, a few
//! times at most; the last answer stands.
//!
//! Several limits decided together (`check_all`) are all or nothing across their keys, so deciding one key again
//! would need the others refunded: there the stale buckets are only dropped, after the answer, so the next
//! request loads the rows; the request that found them has been granted from them.
//!
//! Write-behind mode answers before PostgreSQL sees the write, so it cannot check this before answering: a stale
//! bucket can grant there until its version overtakes the row's (README, docs/reliability.md).

use std::sync::atomic::Ordering;

use bucket_core::Policy;

use super::group_commit::Persisted;
use super::Inner;
use crate::{Decided, Outcome, Source, StoreError, VersionedState};

/// How many times one request is decided again after its write was refused; beyond that its last answer stands.
const MAX_RESEEDS: usize = 3;

impl Inner {
    /// Persists a decision made in Redis and answers it, deciding again from PostgreSQL's row while Redis's bucket
    /// turns out to be older than the row.
    pub(super) async fn settle(
        &self,
        key: &str,
        policy: &Policy,
        cost: u64,
        mut decided: Decided,
        mut source: Source,
    ) -> Result<Outcome, StoreError> {
        for _ in 0..MAX_RESEEDS {
            if self.persist(key, policy, &decided).await == Persisted::Done {
                return Ok(Outcome { decision: decided.decision, source });
            }
            match self.reseed(key, policy, cost).await? {
                Some(again) => {
                    // Decided from the row unless another request seeded the key first (then Redis's state).
                    source = if again.created { Source::Postgres } else { Source::Redis };
                    decided = again;
                }
                None => return Ok(Outcome { decision: decided.decision, source }),
            }
        }
        // Refused again and again by PostgreSQL: the newest answer stands; its write is as good as lost, which
        // errs towards refusing (its debit is in Redis).
        self.persist(key, policy, &decided).await;
        Ok(Outcome { decision: decided.decision, source })
    }

    /// After PostgreSQL refused a write of `key`: drops Redis's bucket if it is older than the row and decides
    /// again from the row; `None` when Redis is current (or the row cannot be read), and the decision stands.
    async fn reseed(&self, key: &str, policy: &Policy, cost: u64) -> Result<Option<Decided>, StoreError> {
        let Some(row) = self.forget_if_older(key).await? else { return Ok(None) };
        self.redis.seed_and_decide(key, policy, cost, &row, None).await.map(Some)
    }

    /// After PostgreSQL refused a write of `key`: deletes Redis's bucket if it is older than PostgreSQL's row, and
    /// returns that row; `None` when Redis is current, or the row is gone (reset or pruned since: nothing newer to
    /// protect) or cannot be read.
    pub(super) async fn forget_if_older(&self, key: &str) -> Result<Option<VersionedState>, StoreError> {
        let row = match self.load_row(key).await {
            Ok(Some(row)) => row,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.pg_lost(&e);
                return Ok(None);
            }
        };
        if !self.redis.drop_if_older(key, &row).await? {
            return Ok(None);
        }
        self.stale_buckets.fetch_add(1, Ordering::Relaxed);
        Ok(Some(row))
    }
}
