//! The store chosen by configuration at start, as an enum so the hot path has no boxing or dynamic dispatch.

use bucket_core::Policy;

use crate::invalidation::spawn_redis_listener;
use crate::postgres::{self, PostgresStore};
use crate::redis::RedisStore;
use crate::tiered::{TieredStats, TieredStore, WriteMode};
use crate::{
    CacheSettings, DependencyHealth, Limit, MemoryStore, NodeHealth, Outcome, Outcomes, PolicyStore, Shared, Store,
    StoreError,
};

/// One of the configured backends; `bucket-api` holds this.
#[derive(Clone)]
pub enum AnyStore {
    /// In-process, one instance.
    Memory(MemoryStore),
    /// PostgreSQL decides every check (refusals answered locally until they can change).
    Postgres(Shared<PostgresStore>),
    /// Redis decides every check; nothing durable.
    Redis(Shared<RedisStore>),
    /// Redis decides, PostgreSQL keeps the truth.
    Tiered(Shared<TieredStore>),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Memory($s) => $call,
            AnyStore::Postgres($s) => $call,
            AnyStore::Redis($s) => $call,
            AnyStore::Tiered($s) => $call,
        }
    };
}

/// [`dispatch!`] for the per-request calls, with the network stores' futures boxed. A future of a `match` over the
/// stores is as large as the largest arm's (kilobytes through the pools and caches of PostgreSQL and Redis), and
/// every caller's future embeds it: the HTTP handler's future, which actix moves into a heap box per request, was
/// that large for the memory store too (docs/perf.md §4c). One allocation beside a network round trip is nothing.
macro_rules! dispatch_boxed {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Memory($s) => $call.await,
            AnyStore::Postgres($s) => Box::pin($call).await,
            AnyStore::Redis($s) => Box::pin($call).await,
            AnyStore::Tiered($s) => Box::pin($call).await,
        }
    };
}

impl AnyStore {
    /// PostgreSQL behind the in-process caches, which listen for other instances' changes (`LISTEN`; spawns the
    /// listener on the current tokio runtime).
    pub fn postgres(store: PostgresStore, caches: CacheSettings) -> Self {
        let shared = Shared::new(store.clone(), caches);
        drop(postgres::spawn_listener(store, shared.invalidator()));
        AnyStore::Postgres(shared)
    }

    /// Redis behind the in-process caches, which listen for other instances' changes on Redis (spawns the
    /// listener on the current tokio runtime).
    pub fn redis(store: RedisStore, caches: CacheSettings) -> Self {
        let shared = Shared::new(store.clone(), caches);
        drop(spawn_redis_listener(store, shared.invalidator()));
        AnyStore::Redis(shared)
    }

    /// The tiered store behind the in-process caches, listening on its Redis tier as [`AnyStore::redis`] does.
    pub fn tiered(store: TieredStore, caches: CacheSettings) -> Self {
        let shared = Shared::new(store.clone(), caches);
        drop(spawn_redis_listener(store.redis().clone(), shared.invalidator().with_recent_keys(store.recent_keys())));
        AnyStore::Tiered(shared)
    }

    /// The store's name as configured: the `store` label of metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AnyStore::Memory(_) => "memory",
            AnyStore::Postgres(_) => "postgres",
            AnyStore::Redis(_) => "redis",
            AnyStore::Tiered(_) => "tiered",
        }
    }

    /// Rows of refilled buckets the PostgreSQL pruner deleted since start, for `/metrics`; `None` without PostgreSQL.
    pub fn pruned_rows(&self) -> Option<u64> {
        match self {
            AnyStore::Postgres(s) => Some(s.store().pruned_rows()),
            AnyStore::Tiered(s) => Some(s.store().postgres().pruned_rows()),
            _ => None,
        }
    }

    /// The Redis this store decides with, if any (the redis store, the tiered store's cache tier).
    fn redis_tier(&self) -> Option<&RedisStore> {
        match self {
            AnyStore::Redis(s) => Some(s.store()),
            AnyStore::Tiered(s) => Some(s.store().redis()),
            _ => None,
        }
    }

    /// Probes each Redis node now (cluster, sentinel: see [`RedisStore::nodes`]) and remembers the result for
    /// [`AnyStore::last_redis_nodes`]; empty without Redis or with one Redis server.
    pub async fn probe_redis_nodes(&self) -> Vec<NodeHealth> {
        match self.redis_tier() {
            Some(redis) => redis.nodes().await,
            None => Vec::new(),
        }
    }

    /// The Redis nodes as the last probe found them, for the per-node `/metrics` series.
    pub fn last_redis_nodes(&self) -> Vec<NodeHealth> {
        self.redis_tier().map(RedisStore::last_nodes).unwrap_or_default()
    }

    /// The tiered store's fallback and queue counters, for `/metrics`; `None` for the other stores.
    pub fn tiered_stats(&self) -> Option<TieredStats> {
        match self {
            AnyStore::Tiered(s) => Some(s.store().stats()),
            _ => None,
        }
    }

    /// [`Store::check`], run as a tokio task of its own where that saves work: the tiered store in synchronous
    /// mode, whose checks make two round trips (Redis, then PostgreSQL's commit) and four for a new user, unless a
    /// remembered refusal answers at once. The caller's future is then woken once, with the answer, instead of at
    /// every round trip.
    ///
    /// Why: actix-web polls a whole connection each time its handler's future is woken, and its HTTP/1 decoder
    /// zeroes a 96-entry header array on every poll, readable bytes or not (3.1k instructions). A new user's
    /// synchronous tiered check was measured at 11 polls of its connection per request; as a task, 156.5k
    /// instructions per request became 133.0k (`loadtest/callgrind_http.sh`, docs/perf.md §15). A task costs
    /// about as much as the polls it saves on one round trip, so the single-round-trip stores stay in place
    /// (the redis store as a task: 45.9k → 50.2k). The task is spawned on the caller's runtime, so it stays on the
    /// caller's thread (an actix worker); it runs to the end even if the caller goes away, as a group commit's
    /// batch already does. The task's panic is the caller's panic.
    pub async fn check_as_task(&self, key: &str, policy: &Policy, cost: u64) -> Result<Outcome, StoreError> {
        let AnyStore::Tiered(s) = self else { return self.check(key, policy, cost).await };
        if s.store().write_mode() != WriteMode::Sync {
            return self.check(key, policy, cost).await;
        }
        // The refusal cache's own two halves: looked up here, the store asked in the task.
        let now_us = match s.refusals().lookup(key, policy, cost) {
            Ok(refused) => return Ok(refused),
            Err(now_us) => now_us,
        };
        let (refusals, key, policy) = (s.refusals().clone(), key.to_owned(), *policy);
        let task = tokio::spawn(async move { refusals.ask(&key, &policy, cost, now_us).await });
        match task.await {
            Ok(answer) => answer,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {
                Err(StoreError::Unavailable { backend: "runtime", detail: "the runtime is shutting down".into() })
            }
        }
    }
}

impl Store for AnyStore {
    async fn check(&self, key: &str, policy: &Policy, cost: u64) -> Result<Outcome, StoreError> {
        dispatch_boxed!(self, s => s.check(key, policy, cost))
    }

    async fn check_all(&self, limits: &[Limit<'_>]) -> Result<Outcomes, StoreError> {
        dispatch_boxed!(self, s => s.check_all(limits))
    }

    async fn peek(&self, key: &str, policy: &Policy) -> Result<Outcome, StoreError> {
        dispatch_boxed!(self, s => s.peek(key, policy))
    }

    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.reset(key).await)
    }

    async fn health(&self) -> Vec<DependencyHealth> {
        dispatch!(self, s => s.health().await)
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.shutdown().await)
    }
}

impl PolicyStore for AnyStore {
    async fn policy(&self, key: &str) -> Result<Option<Policy>, StoreError> {
        // Most look-ups are answered from the cache without I/O: then no boxed future is allocated for them.
        let now = match self {
            AnyStore::Memory(_) => None,
            AnyStore::Postgres(s) => s.policy_now(key),
            AnyStore::Redis(s) => s.policy_now(key),
            AnyStore::Tiered(s) => s.policy_now(key),
        };
        if let Some(policy) = now {
            return Ok(policy);
        }
        dispatch_boxed!(self, s => s.policy(key))
    }

    async fn set_policy(&self, key: &str, policy: &Policy) -> Result<(), StoreError> {
        dispatch!(self, s => s.set_policy(key, policy).await)
    }

    async fn delete_policy(&self, key: &str) -> Result<bool, StoreError> {
        dispatch!(self, s => s.delete_policy(key).await)
    }

    async fn policy_version(&self) -> Result<u64, StoreError> {
        dispatch!(self, s => s.policy_version().await)
    }

    async fn all_policies(&self) -> Result<Vec<(String, Policy)>, StoreError> {
        dispatch!(self, s => s.all_policies().await)
    }
}
