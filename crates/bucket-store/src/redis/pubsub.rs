//! The channel resets and policy changes are announced on, for every instance's caches (`invalidation.rs`).

use std::time::Duration;

use deadpool_redis::redis::{self, RedisError};

use super::pool::Op;
use super::{RedisStore, BACKEND};
use crate::StoreError;

impl RedisStore {
    /// The channel every instance listens on for resets and policy changes, `<prefix>invalidations`.
    pub fn invalidation_channel(&self) -> String {
        format!("{}invalidations", self.inner.prefix)
    }

    /// Tells every instance listening that `key` changed (a reset or a policy write made elsewhere).
    pub async fn announce(&self, key: &str) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(self.invalidation_channel()).arg(key);
        self.exec::<()>(Op::Cmd(&cmd), self.inner.command_timeout).await
    }

    /// A connection of its own subscribed to [`RedisStore::invalidation_channel`], within the probe timeout.
    pub(crate) async fn subscribe_invalidations(&self) -> Result<redis::aio::PubSub, StoreError> {
        let subscribe = async {
            let mut pubsub = self.inner.subscriber.pubsub().await?;
            pubsub.subscribe(self.invalidation_channel()).await?;
            Ok::<_, RedisError>(pubsub)
        };
        match tokio::time::timeout(self.inner.probe_timeout, subscribe).await {
            Ok(Ok(pubsub)) => Ok(pubsub),
            Ok(Err(e)) => Err(StoreError::Unavailable { backend: BACKEND, detail: e.to_string() }),
            Err(_) => Err(StoreError::Timeout { backend: BACKEND, after: self.inner.probe_timeout }),
        }
    }

    /// How long a probe (or a new connection) may take.
    pub(crate) fn probe_timeout(&self) -> Duration {
        self.inner.probe_timeout
    }
}
