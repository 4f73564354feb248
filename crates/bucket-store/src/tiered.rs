//! The seed architecture made exact: Redis decides, PostgreSQL is the source of truth (README.md, "Stores: which to pick", points 1–6).
//!
//! Request by request:
//! 1. Redis holds the key: the Lua script decides atomically; an allowed decision's new state is written to
//!    PostgreSQL with its version, and PostgreSQL ignores any write older than what it has.
//! 2. Redis misses: the row is loaded from PostgreSQL and seeded into Redis *inside the script*, only if the key is
//!    still absent, so two instances seeding at once cannot both grant from a full bucket. A key not seen in Redis
//!    lately is taken to be a miss and loaded first, saving the call that would only report it (`tiered/recent.rs`).
//! 3. No row either: a new user; Redis is seeded with a full bucket and the row is created by the write of step 1.
//! 4. Redis fails or times out: it is marked down (probed in the background) and PostgreSQL decides with its own
//!    atomic statement. Every key PostgreSQL changes meanwhile is remembered and deleted from Redis before Redis
//!    serves anything again, so a stale cached bucket never re-grants tokens PostgreSQL already spent.
//! 5. PostgreSQL fails while Redis works: Redis keeps deciding; the writes wait in a bounded queue, coalesced per
//!    key, and are replayed in batches when PostgreSQL answers again.
//! 6. Both fail: `check` returns the error and the caller applies its failure mode (`fail_open`/`fail_closed`).
//!
//! Several limits decided together (`check_all`) take the same path with the multi-key script and one batch write,
//! all or nothing in both tiers (`tiered/all.rs`).
//!
//! A refused decision writes nothing anywhere. Writes are synchronous by default (the row is committed before the
//! answer), the writes of concurrent requests sharing one statement (`tiered/group_commit.rs`); a write that
//! PostgreSQL refuses as older than its row reveals a stale Redis bucket, which is dropped and the request decided
//! again from the row (`tiered/stale.rs`). `WriteMode::WriteBehind` queues every write and flushes a batch every
//! `flush_interval` instead.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bucket_core::{MonotonicClock, Policy};
use serde::Deserialize;

use crate::postgres::PostgresStore;
use crate::redis::RedisStore;
use crate::write_queue::WriteQueue;

mod all;
mod batcher;
mod events;
mod group_commit;
mod loops;
mod policies;
pub(crate) mod recent;
mod stale;

pub use events::{no_events, TieredEvent, TieredEvents};

use crate::{DependencyHealth, Limit, Outcome, Outcomes, Source, Store, StoreError};
use group_commit::{GroupCommit, Statements};
use loops::{flush_loop, probe_loop};
use policies::postgres_marked_down;
use recent::RecentKeys;

/// When an allowed decision reaches PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Committed before the response: the seed's guarantee; one statement per allowed request, or shared by
    /// concurrent requests when `commit_window` is set (group commit).
    #[default]
    Sync,
    /// Queued and flushed in batches every `flush_interval`: far fewer statements, PostgreSQL a few ms behind.
    #[serde(alias = "write-behind")]
    WriteBehind,
}

impl WriteMode {
    /// The name used in configuration and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteMode::Sync => "sync",
            WriteMode::WriteBehind => "write_behind",
        }
    }
}

/// Tuning of the tiered store; the defaults suit most deployments. The `[tiered]` section of the service's
/// configuration: every field optional, unknown keys refused, intervals in whole milliseconds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TieredConfig {
    /// Synchronous or write-behind writes to PostgreSQL.
    pub write_mode: WriteMode,
    /// How often write-behind flushes a batch.
    #[serde(rename = "flush_interval_ms", deserialize_with = "crate::millis::deserialize")]
    pub flush_interval: Duration,
    /// How often a dependency marked down is probed again, and queued writes retried.
    #[serde(rename = "retry_interval_ms", deserialize_with = "crate::millis::deserialize")]
    pub retry_interval: Duration,
    /// Most keys waiting for PostgreSQL; beyond it writes are dropped, counted and logged.
    pub queue_capacity: usize,
    /// Group commit: longest a synchronous write (or a Redis miss's load) waits for a free statement slot while
    /// others gather into its statement, in whole µs (`commit_window_us`); zero sends one statement per write.
    #[serde(rename = "commit_window_us", deserialize_with = "crate::millis::deserialize_us")]
    pub commit_window: Duration,
    /// Most writes sent in one batch statement (write-behind, queue replays, group commit); not a configuration key.
    #[serde(skip)]
    pub batch_size: usize,
    /// How long [`CachedPolicies`](crate::CachedPolicies) trusts its per-key policies before checking the store's
    /// policy version; read by the service for every shared store, kept here because it is configured as
    /// `[tiered] policy_cache_ttl_ms`.
    #[serde(rename = "policy_cache_ttl_ms", deserialize_with = "crate::millis::deserialize")]
    pub policy_cache_ttl: Duration,
    /// Longest a refusal is answered from the process's refusal cache without asking the store: the safety net
    /// for a reset or policy change made through another instance whose notification was lost. Read by the
    /// service for every shared store; `[tiered] refusal_cache_ttl_ms`.
    #[serde(rename = "refusal_cache_ttl_ms", deserialize_with = "crate::millis::deserialize")]
    pub refusal_cache_ttl: Duration,
}

impl Default for TieredConfig {
    fn default() -> Self {
        Self {
            write_mode: WriteMode::Sync,
            flush_interval: Duration::from_millis(5),
            retry_interval: Duration::from_millis(500),
            queue_capacity: 100_000,
            // On: half the CPU per synchronous decision of one statement per write, measured on 2 cores
            // (docs/perf.md §11); a lone request still goes at once while a statement slot is free.
            commit_window: Duration::from_micros(1000),
            batch_size: 1_000,
            policy_cache_ttl: Duration::from_secs(1),
            refusal_cache_ttl: Duration::from_secs(1),
        }
    }
}

/// Counters the HTTP layer exports as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TieredStats {
    /// Decisions PostgreSQL made because Redis was down.
    pub fallbacks_to_postgres: u64,
    /// Allowed decisions whose PostgreSQL write had to be queued because PostgreSQL was down.
    pub writes_queued_while_postgres_down: u64,
    /// Writes lost because the queue was full.
    pub writes_dropped: u64,
    /// Keys deleted from Redis after an outage because PostgreSQL had changed them.
    pub keys_invalidated: u64,
    /// Statements that wrote Redis's decisions to PostgreSQL (one per group commit in sync mode, or per write when
    /// `commit_window` is zero; one per batch in write-behind mode): shows how much batching saves.
    pub postgres_write_statements: u64,
    /// Statements that loaded Redis misses from PostgreSQL (one per gathered batch of misses, or per miss when
    /// `commit_window` is zero).
    pub postgres_load_statements: u64,
    /// Allowed decisions whose Redis bucket turned out older than PostgreSQL's row (after a failover): the bucket
    /// was dropped and the request decided again from the row.
    pub stale_redis_buckets: u64,
    /// Redis calls that only found the key missing, before its row was loaded: keys this process took to be in
    /// Redis from having seen them there (`tiered/recent.rs`); a key it had not seen is loaded first instead.
    pub redis_misses: u64,
    /// Writes not yet in PostgreSQL now, queued or in a batch on its way: zero means PostgreSQL has them all.
    pub queue_depth: u64,
    /// Whether Redis is in use now.
    pub redis_up: bool,
    /// Whether PostgreSQL is answering now.
    pub postgres_up: bool,
}

/// Redis in front of PostgreSQL; cloning shares the same connections, queue and background tasks.
#[derive(Clone)]
pub struct TieredStore {
    inner: Arc<Inner>,
}

struct Inner {
    redis: RedisStore,
    pg: PostgresStore,
    config: TieredConfig,
    events: TieredEvents,
    redis_up: AtomicBool,
    pg_up: AtomicBool,
    /// Keys PostgreSQL decided while Redis was down: deleted from Redis before it is used again.
    stale: tokio::sync::Mutex<HashSet<String>>,
    stale_count: AtomicU64,
    queue: WriteQueue,
    /// Held while a batch is on its way to PostgreSQL, so a fallback decision can wait for it (see
    /// `apply_pending_write`).
    flushing: tokio::sync::Mutex<()>,
    queue_full_logged: AtomicBool,
    fallbacks: AtomicU64,
    queued_while_down: AtomicU64,
    invalidated: AtomicU64,
    /// Statements on the decision path, shared with the group commit's tasks.
    statements: Arc<Statements>,
    /// The gathering tasks of synchronous writes and Redis misses.
    group: GroupCommit,
    stale_buckets: AtomicU64,
    /// Whether a key is asked of Redis first or loaded from PostgreSQL first.
    recent: Arc<RecentKeys>,
    redis_misses: AtomicU64,
}

impl TieredStore {
    /// Wires the two adapters and starts the background flusher and prober on the current tokio runtime; changes
    /// of state are reported to `events`.
    pub async fn new(redis: RedisStore, pg: PostgresStore, config: TieredConfig, events: TieredEvents) -> Self {
        let redis_up = match redis.ping().await {
            Ok(()) => true,
            Err(e) => {
                events(TieredEvent::RedisUnreachableAtStart { error: e.to_string() });
                false
            }
        };
        let statements = Arc::new(Statements::default());
        let group = GroupCommit::start(&pg, &config, &statements);
        let inner = Arc::new(Inner {
            queue: WriteQueue::new(config.queue_capacity),
            flushing: tokio::sync::Mutex::new(()),
            redis,
            pg,
            config,
            events,
            redis_up: AtomicBool::new(redis_up),
            pg_up: AtomicBool::new(true),
            stale: tokio::sync::Mutex::new(HashSet::new()),
            stale_count: AtomicU64::new(0),
            queue_full_logged: AtomicBool::new(false),
            fallbacks: AtomicU64::new(0),
            queued_while_down: AtomicU64::new(0),
            invalidated: AtomicU64::new(0),
            statements,
            group,
            stale_buckets: AtomicU64::new(0),
            recent: Arc::new(RecentKeys::new(Arc::new(MonotonicClock::new()))),
            redis_misses: AtomicU64::new(0),
        });
        tokio::spawn(flush_loop(Arc::downgrade(&inner)));
        tokio::spawn(probe_loop(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// A snapshot of the counters, for `/metrics`.
    pub fn stats(&self) -> TieredStats {
        let i = &self.inner;
        TieredStats {
            fallbacks_to_postgres: i.fallbacks.load(Ordering::Relaxed),
            writes_queued_while_postgres_down: i.queued_while_down.load(Ordering::Relaxed),
            writes_dropped: i.queue.dropped(),
            keys_invalidated: i.invalidated.load(Ordering::Relaxed),
            postgres_write_statements: i.statements.writes.load(Ordering::Relaxed),
            postgres_load_statements: i.statements.loads.load(Ordering::Relaxed),
            stale_redis_buckets: i.stale_buckets.load(Ordering::Relaxed),
            redis_misses: i.redis_misses.load(Ordering::Relaxed),
            queue_depth: i.queue.unwritten() as u64,
            redis_up: i.redis_up.load(Ordering::Acquire),
            postgres_up: i.pg_up.load(Ordering::Acquire),
        }
    }

    /// When allowed decisions reach PostgreSQL, as configured.
    pub fn write_mode(&self) -> WriteMode {
        self.inner.config.write_mode
    }

    /// The PostgreSQL tier, whose pruner the service starts.
    pub fn postgres(&self) -> &PostgresStore {
        &self.inner.pg
    }

    /// The Redis tier, whose channel carries this store's invalidations.
    pub fn redis(&self) -> &RedisStore {
        &self.inner.redis
    }

    /// Sends every queued write now; used by shutdown and by tests that compare PostgreSQL with Redis.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush_all().await
    }
}

impl Inner {
    /// Whether Redis may decide now: it is up, or PostgreSQL is marked down too, and every key PostgreSQL changed
    /// meanwhile is gone from it.
    ///
    /// With both marked down Redis is still asked, as it is the only tier that may answer: otherwise one slow
    /// Redis call during a PostgreSQL outage failed every request until the prober's next turn (seen as bursts of
    /// 503s when Redis stalled on its own disk during PostgreSQL's crash recovery, docs/reliability.md).
    async fn redis_ready(&self) -> bool {
        if !self.redis_up.load(Ordering::Acquire) && self.pg_up.load(Ordering::Acquire) {
            return false;
        }
        if self.stale_count.load(Ordering::Acquire) == 0 {
            return true;
        }
        match self.invalidate_stale().await {
            Ok(()) => true,
            Err(e) => {
                self.redis_lost(&e);
                false
            }
        }
    }

    async fn invalidate_stale(&self) -> Result<(), StoreError> {
        let mut stale = self.stale.lock().await;
        if stale.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = stale.iter().cloned().collect();
        self.redis.invalidate(&keys).await?;
        stale.clear();
        self.stale_count.store(0, Ordering::Release);
        self.invalidated.fetch_add(keys.len() as u64, Ordering::Relaxed);
        (self.events)(TieredEvent::StaleKeysDeleted { keys: keys.len() });
        Ok(())
    }

    async fn mark_stale(&self, key: &str) {
        let mut stale = self.stale.lock().await;
        if stale.insert(key.to_owned()) {
            self.stale_count.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Marks Redis up again (its stale keys already gone): by the prober, or by a request that Redis answered
    /// while both tiers were marked down, so that the gauge and the next requests follow at once.
    fn redis_recovered(&self) {
        if !self.redis_up.load(Ordering::Acquire) && !self.redis_up.swap(true, Ordering::AcqRel) {
            (self.events)(TieredEvent::RedisRecovered);
        }
    }

    fn redis_lost(&self, e: &StoreError) {
        if self.redis_up.swap(false, Ordering::AcqRel) {
            (self.events)(TieredEvent::RedisLost { error: e.to_string() });
        }
    }

    fn pg_lost(&self, e: &StoreError) {
        if self.pg_up.swap(false, Ordering::AcqRel) {
            (self.events)(TieredEvent::PostgresLost { error: e.to_string(), queue_capacity: self.queue.capacity() });
        }
    }

    fn pg_recovered(&self) {
        if !self.pg_up.swap(true, Ordering::AcqRel) {
            (self.events)(TieredEvent::PostgresRecovered { queued: self.queue.len() });
        }
    }

    async fn check_in_postgres(&self, key: &str, policy: &Policy, cost: u64) -> Result<Outcome, StoreError> {
        // Both down: answer at once rather than make every request wait for PostgreSQL's timeouts; the prober
        // notices when PostgreSQL answers again.
        if !self.pg_up.load(Ordering::Acquire) {
            return Err(postgres_marked_down());
        }
        self.apply_pending_write(key).await?;
        // Marked before deciding as well as after: if Redis comes back while this statement runs, the prober's
        // invalidation may already have run, and the mark after the statement makes the next Redis use delete the
        // key again. Marking a key that ends up refused costs one PostgreSQL read when Redis returns, nothing more.
        self.mark_stale(key).await;
        let decided = self.pg.decide_at(key, policy, cost, None).await.inspect_err(|e| self.pg_lost(e))?;
        self.pg_recovered();
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        if decided.decision.allowed {
            self.mark_stale(key).await;
        }
        let source = if decided.created { Source::NewUser } else { Source::Postgres };
        Ok(Outcome { decision: decided.decision, source })
    }

    /// Writes the key's queued write (from Redis, not yet in PostgreSQL) before PostgreSQL decides the key itself.
    /// Otherwise PostgreSQL would decide from an older row and the queued write, carrying a higher version, would
    /// later overwrite that decision: the tokens it spent would be granted again. A batch already on its way is
    /// waited for, for the same reason.
    async fn apply_pending_write(&self, key: &str) -> Result<(), StoreError> {
        drop(self.flushing.lock().await);
        let Some(pending) = self.queue.take_key(key) else { return Ok(()) };
        match self.pg.save(key, &pending).await {
            Ok(_) => {
                self.queue.written(1);
                self.statements.writes.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.queue.restore(vec![(key.to_owned(), pending)]);
                self.pg_lost(&e);
                Err(e)
            }
        }
    }

    /// Sends one batch; how many writes it held (0: the queue was empty).
    async fn flush_batch(&self) -> Result<usize, StoreError> {
        let _flushing = self.flushing.lock().await;
        let batch = self.queue.take(self.config.batch_size);
        if batch.is_empty() {
            return Ok(0);
        }
        // Already answered (write-behind, or replayed after an outage): no need to wait for the WAL's fsync.
        match self.pg.save_answered(&batch).await {
            Ok(_) => {
                self.queue.written(batch.len());
                self.statements.writes.fetch_add(1, Ordering::Relaxed);
                self.pg_recovered();
                if self.queue.is_empty() {
                    self.queue_full_logged.store(false, Ordering::Release);
                }
                Ok(batch.len())
            }
            Err(e) => {
                self.queue.restore(batch);
                self.pg_lost(&e);
                Err(e)
            }
        }
    }

    async fn flush_all(&self) -> Result<(), StoreError> {
        while self.flush_batch().await? > 0 {}
        Ok(())
    }
}

impl Store for TieredStore {
    async fn check(&self, key: &str, policy: &Policy, cost: u64) -> Result<Outcome, StoreError> {
        let inner = &self.inner;
        if inner.redis_ready().await {
            match inner.check_in_redis(key, policy, cost).await {
                Ok(outcome) => {
                    inner.redis_recovered();
                    return Ok(outcome);
                }
                // Any Redis failure, transient or not, is a reason to let PostgreSQL decide instead.
                Err(e) => inner.redis_lost(&e),
            }
        }
        inner.check_in_postgres(key, policy, cost).await
    }

    async fn check_all(&self, limits: &[Limit<'_>]) -> Result<Outcomes, StoreError> {
        self.inner.check_all(self, limits).await
    }

    async fn peek(&self, key: &str, policy: &Policy) -> Result<Outcome, StoreError> {
        // Redis's view is the current one while it decides (PostgreSQL lags in write-behind mode); a key Redis
        // does not hold reads as full there, which is also what the next check would seed from a refilled row.
        if self.inner.redis_ready().await {
            if let Ok(outcome) = self.inner.redis.peek(key, policy).await {
                return Ok(outcome);
            }
        }
        self.inner.pg.peek(key, policy).await
    }

    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        {
            // A write queued for this key (write-behind, or PostgreSQL down) must not land after the reset and
            // bring the spent tokens back: it is dropped, with no batch in flight meanwhile.
            let _flushing = self.inner.flushing.lock().await;
            if self.inner.queue.take_key(key).is_some() {
                self.inner.queue.written(1);
            }
            self.inner.pg.reset(key).await?;
        }
        // Deletes the cached bucket and tells the other instances (their refusal caches).
        if let Err(e) = self.inner.redis.reset(key).await {
            self.inner.redis_lost(&e);
            self.inner.mark_stale(key).await;
        }
        self.inner.recent.forget(key);
        Ok(())
    }

    async fn health(&self) -> Vec<DependencyHealth> {
        let (mut redis, mut pg) = tokio::join!(self.inner.redis.health(), self.inner.pg.health());
        let depth = self.inner.queue.unwritten();
        if depth > 0 {
            for dep in &mut pg {
                dep.detail =
                    format!("{}; {depth} writes queued (capacity {})", dep.detail, self.inner.queue.capacity());
            }
        }
        redis.append(&mut pg);
        redis
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        let waiting = self.inner.queue.unwritten();
        let result = self.inner.flush_all().await;
        match &result {
            Ok(()) => (self.inner.events)(TieredEvent::Flushed { keys: waiting }),
            Err(e) => (self.inner.events)(TieredEvent::FlushFailed {
                keys: self.inner.queue.unwritten(),
                error: e.to_string(),
            }),
        }
        result
    }
}
