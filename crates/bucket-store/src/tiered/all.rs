//! Several buckets decided together by the tiered store, all or nothing, through both tiers: the multi-key script
//! decides in Redis (seeding keys Redis misses from PostgreSQL first) and an allowed request's states reach
//! PostgreSQL as one batch; with Redis down, PostgreSQL's transaction decides. Either way a refusal debits nothing
//! in either tier.

use std::sync::atomic::Ordering;

use futures::future::join_all;

use super::policies::postgres_marked_down;
use super::{Inner, TieredStore, WriteMode};
use crate::limits::Grouped;
use crate::postgres::Saved;
use crate::redis::{Miss, Script};
use crate::{Decided, Limit, Outcomes, PendingWrite, Source, StoreError};

impl Inner {
    /// `check_all`: Redis when it may decide, PostgreSQL otherwise, as `check` does.
    pub(super) async fn check_all(&self, store: &TieredStore, limits: &[Limit<'_>]) -> Result<Outcomes, StoreError> {
        let grouped = Grouped::new(limits);
        if grouped.buckets.is_empty() {
            return Ok(grouped.outcomes(true, &[], Source::Redis));
        }
        if let Some(single) = grouped.as_check(store).await {
            return single;
        }
        if self.redis_ready().await {
            match self.check_all_in_redis(&grouped).await {
                Ok(outcomes) => {
                    self.redis_recovered();
                    return Ok(outcomes);
                }
                // Any Redis failure, transient or not, is a reason to let PostgreSQL decide instead.
                Err(e) => self.redis_lost(&e),
            }
        }
        self.check_all_in_postgres(&grouped).await
    }

    /// The script with each key in report mode, except keys this process has not seen in Redis lately, whose rows
    /// are loaded first and given as seeds (`tiered/recent.rs`); the keys it reports missing are loaded together
    /// and the script runs again with them as seeds. A seed never overrides a key Redis holds (inside the script,
    /// so a key another instance seeded meanwhile wins); a run that misses writes nothing at all, and a seeded key
    /// never misses again, so this ends after at most one run per key. The seeds are what PostgreSQL holds, not a
    /// debit: like every refusal, a refused run debits nothing.
    async fn check_all_in_redis(&self, grouped: &Grouped<'_>) -> Result<Outcomes, StoreError> {
        let mut misses = vec![Miss::Report; grouped.buckets.len()];
        let mut seeded_from = vec![Source::Redis; grouped.buckets.len()];
        let looks: Vec<_> = grouped.buckets.iter().map(|bucket| self.recent.look(bucket.key)).collect();
        let unseen: Vec<usize> = (0..looks.len()).filter(|&i| !looks[i].expected()).collect();
        self.seed_from_postgres(grouped, &unseen, &mut misses, &mut seeded_from).await;
        loop {
            match self.redis.decide_all_at(&grouped.buckets, &misses, None).await? {
                Script::Missing(indices) => {
                    if let Some(&i) = indices.iter().find(|&&i| misses.get(i) != Some(&Miss::Report)) {
                        let detail = format!("the script misreported key {i}");
                        return Err(StoreError::Backend { backend: "redis", detail });
                    }
                    self.redis_misses.fetch_add(indices.len() as u64, Ordering::Relaxed);
                    self.seed_from_postgres(grouped, &indices, &mut misses, &mut seeded_from).await;
                }
                Script::Decided { allowed, buckets } => {
                    for (look, bucket) in looks.iter().zip(&grouped.buckets) {
                        look.saw(&bucket.policy);
                    }
                    if allowed {
                        self.persist_all(grouped, &buckets).await;
                    }
                    // One source for the request: PostgreSQL if a bucket was loaded from it, a new user if one was
                    // created, Redis otherwise (another instance's seed that won counts as a Redis hit).
                    let created = |s: Source| buckets.iter().zip(&seeded_from).any(|(d, &from)| d.created && from == s);
                    let source = if created(Source::Postgres) {
                        Source::Postgres
                    } else if created(Source::NewUser) {
                        Source::NewUser
                    } else {
                        Source::Redis
                    };
                    let decisions: Vec<_> = buckets.iter().map(|d| d.decision).collect();
                    return Ok(grouped.outcomes(allowed, &decisions, source));
                }
            }
        }
    }

    /// Loads the rows of the buckets at `indices` and makes each its bucket's seed; loaded concurrently, so that
    /// with group commit they share one statement.
    async fn seed_from_postgres(
        &self,
        grouped: &Grouped<'_>,
        indices: &[usize],
        misses: &mut [Miss],
        seeded_from: &mut [Source],
    ) {
        let buckets = indices.iter().map(|&i| &grouped.buckets[i]);
        let seeds = join_all(buckets.map(|b| self.load_seed(b.key, &b.policy))).await;
        for (&i, (seed, source)) in indices.iter().zip(seeds) {
            misses[i] = Miss::Seed(seed);
            seeded_from[i] = source;
        }
    }

    /// Copies an allowed request's states to PostgreSQL: one batch statement in sync mode (before the answer), the
    /// queue otherwise or when PostgreSQL fails.
    async fn persist_all(&self, grouped: &Grouped<'_>, decided: &[Decided]) {
        let items: Vec<(String, PendingWrite)> = grouped
            .buckets
            .iter()
            .zip(decided)
            .map(|(b, d)| (b.key.to_owned(), PendingWrite::new(&b.policy, d.after)))
            .collect();
        if self.config.write_mode == WriteMode::Sync && self.pg_up.load(Ordering::Acquire) {
            match self.pg.save_each(&items).await {
                Ok(saved) => {
                    self.statements.writes.fetch_add(1, Ordering::Relaxed);
                    // Refused as not newer than the row: a stale bucket is dropped for the next request
                    // (`tiered/stale.rs`); a Redis failure here only leaves it for the next refused write.
                    for ((key, _), _) in items.iter().zip(&saved).filter(|(_, s)| **s == Saved::Superseded) {
                        let _ = self.forget_if_older(key).await;
                    }
                    return;
                }
                Err(e) => self.pg_lost(&e),
            }
        }
        for (key, after) in &items {
            if self.config.write_mode == WriteMode::Sync {
                self.queued_while_down.fetch_add(1, Ordering::Relaxed);
            }
            self.enqueue(key, *after);
        }
    }

    /// PostgreSQL decides (Redis is down), after the keys' queued writes reached it, marking the keys stale so
    /// Redis forgets them before it decides again (as `check_in_postgres` does for one key).
    async fn check_all_in_postgres(&self, grouped: &Grouped<'_>) -> Result<Outcomes, StoreError> {
        if !self.pg_up.load(Ordering::Acquire) {
            return Err(postgres_marked_down());
        }
        self.apply_pending_writes(grouped).await?;
        for key in grouped.keys() {
            self.mark_stale(key).await;
        }
        let decided = self.pg.decide_all_at(&grouped.buckets, None).await.inspect_err(|e| self.pg_lost(e))?;
        self.pg_recovered();
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        if decided.allowed {
            for key in grouped.keys() {
                self.mark_stale(key).await;
            }
        }
        let source = if decided.buckets.iter().any(|d| d.created) { Source::NewUser } else { Source::Postgres };
        let decisions: Vec<_> = decided.buckets.iter().map(|d| d.decision).collect();
        Ok(grouped.outcomes(decided.allowed, &decisions, source))
    }

    /// `apply_pending_write` for every key of the request, in one batch statement.
    async fn apply_pending_writes(&self, grouped: &Grouped<'_>) -> Result<(), StoreError> {
        drop(self.flushing.lock().await);
        let pending: Vec<(String, PendingWrite)> =
            grouped.keys().filter_map(|key| self.queue.take_key(key).map(|v| (key.to_owned(), v))).collect();
        if pending.is_empty() {
            return Ok(());
        }
        match self.pg.save_batch(&pending).await {
            Ok(_) => {
                self.queue.written(pending.len());
                self.statements.writes.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.queue.restore(pending);
                self.pg_lost(&e);
                Err(e)
            }
        }
    }
}
