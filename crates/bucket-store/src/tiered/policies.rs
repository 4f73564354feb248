//! Per-key policies of the tiered store: PostgreSQL holds them, and an outage of PostgreSQL must not stall checks.

use std::future::Future;
use std::sync::atomic::Ordering;

use bucket_core::Policy;

use super::{Inner, TieredStore};
use crate::{PolicyStore, StoreError};

impl Inner {
    /// Runs `call` on PostgreSQL unless it is marked down, in which case it fails at once (transient, so callers
    /// fall back instead of waiting for PostgreSQL's timeouts; the prober notices its return); a transient failure
    /// marks it down.
    async fn on_postgres<T>(&self, call: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        if !self.pg_up.load(Ordering::Acquire) {
            return Err(postgres_marked_down());
        }
        call.await.inspect_err(|e| {
            if e.is_transient() {
                self.pg_lost(e);
            }
        })
    }

    /// Tells the other instances that `key`'s policy changed; best effort while Redis is down (their caches
    /// expire entries within their `max_age` and TTL anyway).
    async fn announce(&self, key: &str) {
        if self.redis_up.load(Ordering::Acquire) {
            let _ = self.redis.announce(key).await;
        }
    }
}

/// The error for a call not even tried because PostgreSQL failed recently: transient, so callers fall back.
pub(super) fn postgres_marked_down() -> StoreError {
    StoreError::Unavailable {
        backend: "postgres",
        detail: "marked down after a failure; probed every retry_interval".into(),
    }
}

impl PolicyStore for TieredStore {
    async fn policy(&self, key: &str) -> Result<Option<Policy>, StoreError> {
        // Every check looks its key's policy up first, so a PostgreSQL outage must not stall it: while PostgreSQL
        // is marked down the look-up fails at once, as a transient error, and `CachedPolicies` answers with the
        // last known policy of the key (or none: the default applies), so Redis keeps deciding (README,
        // "Stores: which to pick", tiered point 5).
        self.inner.on_postgres(self.inner.pg.policy(key)).await
    }

    async fn set_policy(&self, key: &str, policy: &Policy) -> Result<(), StoreError> {
        self.inner.pg.set_policy(key, policy).await?;
        self.inner.announce(key).await;
        Ok(())
    }

    async fn delete_policy(&self, key: &str) -> Result<bool, StoreError> {
        let existed = self.inner.pg.delete_policy(key).await?;
        self.inner.announce(key).await;
        Ok(existed)
    }

    async fn policy_version(&self) -> Result<u64, StoreError> {
        // As `policy`: fail at once while PostgreSQL is marked down, and `CachedPolicies` keeps its last snapshot.
        self.inner.on_postgres(self.inner.pg.policy_version()).await
    }

    async fn all_policies(&self) -> Result<Vec<(String, Policy)>, StoreError> {
        self.inner.on_postgres(self.inner.pg.all_policies()).await
    }
}
