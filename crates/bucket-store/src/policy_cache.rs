//! Per-key policies cached in the process for a short TTL, so a check does not cost a database round trip.
//!
//! Absence is cached too (most keys have no policy of their own). A change made through this process is seen at
//! once; a change made through another instance within `ttl`. Policies never reset tokens, so a stale entry only
//! delays when new limits apply.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bucket_core::Policy;
use dashmap::DashMap;

use crate::{DependencyHealth, Outcome, Store, StoreError};

/// A store whose policy look-ups go through a TTL cache.
#[derive(Clone)]
pub struct CachedPolicies<S> {
    store: S,
    cache: Arc<Cache>,
}

struct Cache {
    ttl: Duration,
    max_entries: usize,
    entries: DashMap<Box<str>, (Option<Policy>, Instant)>,
}

impl<S> CachedPolicies<S> {
    /// Wraps `store`, caching each key's policy (or its absence) for `ttl`, at most `max_entries` keys.
    pub fn new(store: S, ttl: Duration, max_entries: usize) -> Self {
        Self { store, cache: Arc::new(Cache { ttl, max_entries, entries: DashMap::new() }) }
    }

    /// The wrapped store, for what the cache does not cover (stats, flush).
    pub fn inner(&self) -> &S {
        &self.store
    }

    fn cached(&self, key: &str) -> Option<Option<Policy>> {
        let entry = self.cache.entries.get(key)?;
        let (policy, at) = *entry;
        (at.elapsed() < self.cache.ttl).then_some(policy)
    }

    fn remember(&self, key: &str, policy: Option<Policy>) {
        if self.cache.entries.len() >= self.cache.max_entries {
            let ttl = self.cache.ttl;
            self.cache.entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if self.cache.entries.len() >= self.cache.max_entries {
                self.cache.entries.clear();
            }
        }
        self.cache.entries.insert(Box::from(key), (policy, Instant::now()));
    }
}

impl<S: Store> Store for CachedPolicies<S> {
    async fn check(&self, key: &str, policy: &Policy, cost: u64) -> Result<Outcome, StoreError> {
        self.store.check(key, policy, cost).await
    }

    async fn peek(&self, key: &str, policy: &Policy) -> Result<Outcome, StoreError> {
        self.store.peek(key, policy).await
    }

    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        self.store.reset(key).await
    }

    async fn policy(&self, key: &str) -> Result<Option<Policy>, StoreError> {
        if let Some(policy) = self.cached(key) {
            return Ok(policy);
        }
        let policy = self.store.policy(key).await?;
        self.remember(key, policy);
        Ok(policy)
    }

    async fn set_policy(&self, key: &str, policy: &Policy) -> Result<(), StoreError> {
        self.store.set_policy(key, policy).await?;
        self.remember(key, Some(*policy));
        Ok(())
    }

    async fn delete_policy(&self, key: &str) -> Result<bool, StoreError> {
        let existed = self.store.delete_policy(key).await?;
        self.remember(key, None);
        Ok(existed)
    }

    async fn health(&self) -> Vec<DependencyHealth> {
        self.store.health().await
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        self.store.shutdown().await
    }
}
