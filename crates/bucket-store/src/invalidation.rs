//! Resets and policy changes made through one instance reach every other instance's caches at once.
//!
//! Redis and tiered stores publish each change on the Redis channel `<prefix>invalidations` (the key as payload)
//! in the same pipeline as the change itself, and every instance listens there; this file holds that listener and
//! the [`Invalidator`] every listener calls. The PostgreSQL store does the same with `NOTIFY` (`postgres/notify.rs`). The listener adds no round trip to a decision: it runs
//! on its own connection, beside the pool. A notification lost while the listener was disconnected is covered
//! twice: every cache entry is dropped when it (re)subscribes, and no remembered refusal lives longer than its
//! cache's `max_age` anyway. A connection that stalls without closing is found by a `PING` every
//! [`PING_EVERY`].

use std::sync::Weak;
use std::time::Duration;

use deadpool_redis::redis;
use futures::StreamExt;

use crate::policy_cache::Cache as PolicyCache;
use crate::redis::RedisStore;
use crate::refusal_cache::Inner as RefusalEntries;
use crate::tiered::recent::RecentKeys;

/// How often an idle subscription is probed.
const PING_EVERY: Duration = Duration::from_secs(1);
/// First and longest wait between attempts to subscribe again.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(2);

/// Drops cache entries for keys changed elsewhere; holds the caches weakly, so a listener ends with them.
#[derive(Clone)]
pub struct Invalidator {
    refusals: Weak<RefusalEntries>,
    policies: Weak<PolicyCache>,
    /// The tiered store's first-look table, where there is one.
    recent: Option<Weak<RecentKeys>>,
}

impl Invalidator {
    pub(crate) fn new(refusals: Weak<RefusalEntries>, policies: Weak<PolicyCache>) -> Self {
        Self { refusals, policies, recent: None }
    }

    /// Also forgets a changed key in the tiered store's first-look table (`tiered/recent.rs`): a key reset
    /// elsewhere is loaded as new here, not counted as a key Redis lost. Missed notifications leave the table as
    /// it is (a wrong guess there costs one counted miss, never a wrong decision).
    pub(crate) fn with_recent_keys(mut self, recent: Weak<RecentKeys>) -> Self {
        self.recent = Some(recent);
        self
    }

    /// `key` was reset or its policy changed: forget what the caches hold for it. `false` once they are gone.
    pub fn key(&self, key: &str) -> bool {
        let (Some(refusals), Some(policies)) = (self.refusals.upgrade(), self.policies.upgrade()) else {
            return false;
        };
        refusals.forget(key);
        policies.expire(key);
        if let Some(recent) = self.recent.as_ref().and_then(Weak::upgrade) {
            recent.forget(key);
        }
        true
    }

    /// Whether the caches still exist (a listener ends when they do not).
    pub fn alive(&self) -> bool {
        self.refusals.strong_count() > 0
    }

    /// Changes may have been missed: forget everything. `false` once the caches are gone.
    pub fn all(&self) -> bool {
        let (Some(refusals), Some(policies)) = (self.refusals.upgrade(), self.policies.upgrade()) else {
            return false;
        };
        refusals.forget_all();
        policies.expire_all();
        true
    }
}

/// Starts the listener on the current tokio runtime; it ends by itself once the caches are dropped.
pub fn spawn_redis_listener(redis: RedisStore, invalidator: Invalidator) -> tokio::task::JoinHandle<()> {
    tokio::spawn(listen(redis, invalidator))
}

async fn listen(redis: RedisStore, invalidator: Invalidator) {
    let mut wait = FIRST_RETRY;
    loop {
        if let Ok(subscription) = redis.subscribe_invalidations().await {
            wait = FIRST_RETRY;
            // Anything published before the subscription took effect was not heard.
            if !invalidator.all() {
                return;
            }
            if !follow(subscription, &invalidator, redis.probe_timeout()).await {
                return;
            }
        }
        // Disconnected: what was published meanwhile is lost, so nothing cached before may be trusted.
        if !invalidator.all() {
            return;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(LONGEST_RETRY);
    }
}

/// Applies messages until the subscription fails (`true`: subscribe again) or the caches are gone (`false`).
async fn follow(subscription: redis::aio::PubSub, invalidator: &Invalidator, probe_timeout: Duration) -> bool {
    let (mut sink, mut stream) = subscription.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else { return true };
                let applied = match std::str::from_utf8(message.get_payload_bytes()) {
                    Ok(key) => invalidator.key(key),
                    Err(_) => invalidator.all(),
                };
                if !applied {
                    return false;
                }
            }
            _ = ping.tick() => {
                let answered = tokio::time::timeout(probe_timeout, sink.ping::<redis::Value>()).await;
                if !matches!(answered, Ok(Ok(_))) {
                    return true;
                }
                if !invalidator.alive() {
                    return false;
                }
            }
        }
    }
}
