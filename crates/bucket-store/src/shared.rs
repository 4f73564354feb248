//! A shared store (PostgreSQL, Redis, tiered) as the service runs it: refusals answered in the process, policies
//! from a snapshot, both kept honest by invalidations from other instances (`invalidation.rs`).

use std::time::Duration;

use bucket_core::Policy;

use crate::invalidation::Invalidator;
use crate::{CachedPolicies, DependencyHealth, Limit, Outcome, Outcomes, PolicyStore, RefusalCache, Store, StoreError};

/// How much the in-process caches hold and how long they may answer without the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// Longest a policy snapshot answers before the version is read again.
    pub policy_ttl: Duration,
    /// Most per-key policies held (see [`CachedPolicies`]).
    pub policy_entries: usize,
    /// Longest a remembered refusal answers, whatever its `Retry-After`: the bound on a missed invalidation.
    pub refusal_max_age: Duration,
    /// Most refused keys remembered at once.
    pub refusal_entries: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        let ttl = Duration::from_secs(1);
        Self { policy_ttl: ttl, policy_entries: 100_000, refusal_max_age: ttl, refusal_entries: 100_000 }
    }
}

/// The refusal cache in front of deciding and the policy cache in front of policy administration, over one store.
#[derive(Clone)]
pub struct Shared<S> {
    decisions: RefusalCache<S>,
    policies: CachedPolicies<S>,
}

impl<S: Clone> Shared<S> {
    /// Wraps `store` in both caches.
    pub fn new(store: S, settings: CacheSettings) -> Self {
        Self {
            decisions: RefusalCache::new(store.clone(), settings.refusal_entries, settings.refusal_max_age),
            policies: CachedPolicies::new(store, settings.policy_ttl, settings.policy_entries),
        }
    }

    /// The store itself, for what the caches do not cover (stats, flush).
    pub fn store(&self) -> &S {
        self.decisions.inner()
    }

    /// The refusal cache: its two halves for `AnyStore::check_as_task`, its entries for tests.
    pub fn refusals(&self) -> &RefusalCache<S> {
        &self.decisions
    }

    /// `key`'s policy when the policy cache can answer without I/O (no refresh due), else `None`.
    pub(crate) fn policy_now(&self, key: &str) -> Option<Option<Policy>> {
        self.policies.answer_now(key)
    }

    /// What a listener calls when another instance changed a key; it does not keep the caches alive.
    pub fn invalidator(&self) -> Invalidator {
        Invalidator::new(self.decisions.downgrade(), self.policies.downgrade())
    }
}

impl<S: Store> Store for Shared<S> {
    async fn check(&self, key: &str, policy: &Policy, cost: u64) -> Result<Outcome, StoreError> {
        self.decisions.check(key, policy, cost).await
    }

    async fn check_all(&self, limits: &[Limit<'_>]) -> Result<Outcomes, StoreError> {
        self.decisions.check_all(limits).await
    }

    async fn peek(&self, key: &str, policy: &Policy) -> Result<Outcome, StoreError> {
        self.decisions.peek(key, policy).await
    }

    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        self.decisions.reset(key).await
    }

    async fn health(&self) -> Vec<DependencyHealth> {
        self.decisions.health().await
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        self.decisions.shutdown().await
    }
}

impl<S: PolicyStore> PolicyStore for Shared<S> {
    async fn policy(&self, key: &str) -> Result<Option<Policy>, StoreError> {
        self.policies.policy(key).await
    }

    async fn set_policy(&self, key: &str, policy: &Policy) -> Result<(), StoreError> {
        self.policies.set_policy(key, policy).await?;
        // Entries are matched by policy already; dropping it here also frees the slot at once.
        self.decisions.forget(key);
        Ok(())
    }

    async fn delete_policy(&self, key: &str) -> Result<bool, StoreError> {
        let existed = self.policies.delete_policy(key).await?;
        self.decisions.forget(key);
        Ok(existed)
    }

    async fn policy_version(&self) -> Result<u64, StoreError> {
        self.policies.policy_version().await
    }

    async fn all_policies(&self) -> Result<Vec<(String, Policy)>, StoreError> {
        self.policies.all_policies().await
    }
}
