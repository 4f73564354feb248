//! Per-key policies cached in the process for a short TTL, so a check does not cost a database round trip.
//!
//! Absence is cached too (most keys have no policy of their own). A change made through this process is seen at
//! once; a change made through another instance within `ttl`. Policies never reset tokens, so a stale entry only
//! delays when new limits apply. When the store cannot answer (a transient error: PostgreSQL down while Redis keeps
//! deciding), the last known policy is kept, however old, and a key never looked up gets none (the default
//! applies): an outage of the policy table must not turn into an outage of rate limiting.

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

    fn last_known(&self, key: &str) -> Option<Policy> {
        self.cache.entries.get(key).and_then(|entry| entry.0)
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
        match self.store.policy(key).await {
            Ok(policy) => {
                self.remember(key, policy);
                Ok(policy)
            }
            Err(e) if e.is_transient() => Ok(self.last_known(key)),
            Err(e) => Err(e),
        }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::MemoryStore;

    /// A memory store whose policy look-ups can be made to fail like an unreachable database.
    #[derive(Clone, Default)]
    struct Flaky {
        store: MemoryStore,
        down: Arc<AtomicBool>,
    }

    impl Store for Flaky {
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
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable { backend: "postgres", detail: "down".into() });
            }
            self.store.policy(key).await
        }
        async fn set_policy(&self, key: &str, policy: &Policy) -> Result<(), StoreError> {
            self.store.set_policy(key, policy).await
        }
        async fn delete_policy(&self, key: &str) -> Result<bool, StoreError> {
            self.store.delete_policy(key).await
        }
        async fn health(&self) -> Vec<DependencyHealth> {
            self.store.health().await
        }
    }

    #[tokio::test]
    async fn an_outage_keeps_the_last_known_policy_and_unknown_keys_get_none() {
        let flaky = Flaky::default();
        let premium = Policy::per_minute(1000).unwrap();
        flaky.store.set_policy("premium", &premium).await.unwrap();
        // A zero TTL: every look-up goes to the store, so only the outage path can answer from memory.
        let cached = CachedPolicies::new(flaky.clone(), Duration::ZERO, 10);
        assert_eq!(cached.policy("premium").await.unwrap(), Some(premium));

        flaky.down.store(true, Ordering::SeqCst);
        assert_eq!(cached.policy("premium").await.unwrap(), Some(premium), "last known policy kept");
        assert_eq!(cached.policy("stranger").await.unwrap(), None, "never seen: the default applies");

        flaky.down.store(false, Ordering::SeqCst);
        flaky.store.delete_policy("premium").await.unwrap();
        assert_eq!(cached.policy("premium").await.unwrap(), None, "back to the store once it answers");
    }
}
