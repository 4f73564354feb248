//! Redis for tests: the shared server with a private key prefix per test. A test that stops, freezes or kills a
//! server starts its own ([`crate::PrivateRedis`]).

use std::collections::HashMap;
use std::time::Duration;

use bucket_store::redis::{RedisConfig, RedisStore};
use deadpool_redis::redis::{self, aio::MultiplexedConnection};

/// The shared Redis (`BUCKET_TEST_REDIS_URL`, default the local one); tests keep to their own key prefix there.
pub fn shared_url() -> String {
    std::env::var("BUCKET_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The shared Redis's `host:port`: what a [`crate::FaultProxy`] in front of it forwards to.
pub fn shared_upstream() -> String {
    crate::pg::host_port(&url::Url::parse(&shared_url()).expect("BUCKET_TEST_REDIS_URL is a URL"), 6379)
}

/// A key prefix no other test (or run) uses: `test:<uuid>:`.
pub fn unique_prefix() -> String {
    format!("test:{}:", uuid::Uuid::new_v4())
}

/// A config for `url` with a fresh prefix and a generous timeout (tests that measure timeouts set their own).
pub fn config(url: &str) -> RedisConfig {
    let mut config = RedisConfig::new(url);
    config.key_prefix = unique_prefix();
    config.command_timeout = Duration::from_secs(5);
    config
}

/// A key prefix of this test's own on a Redis server; every key under it is deleted when the guard is dropped,
/// pass or fail (policy hashes and hand-written states have no TTL to clean them up).
pub struct RedisPrefix {
    /// The server.
    pub url: String,
    /// `test:<uuid>:`.
    pub prefix: String,
}

impl RedisPrefix {
    /// A fresh prefix on the shared server.
    pub fn shared() -> Self {
        Self::on(&shared_url())
    }

    /// A fresh prefix on the server at `url`.
    pub fn on(url: &str) -> Self {
        Self { url: url.to_owned(), prefix: unique_prefix() }
    }

    /// A store configuration for `url` (which may be a proxy in front of this server) under this prefix.
    pub fn config(&self, url: &str) -> RedisConfig {
        let mut config = config(url);
        config.key_prefix = self.prefix.clone();
        config
    }

    /// A plain connection to the server itself (not through any proxy).
    pub async fn raw(&self) -> MultiplexedConnection {
        raw(&self.url).await
    }

    /// A bucket as the store keeps it under this prefix (`<prefix>{key}`): `(tokens, last_refill_us, version)`,
    /// or `None` when Redis does not hold it.
    pub async fn bucket(&self, key: &str) -> Option<(u64, u64, u64)> {
        let hash: HashMap<String, u64> = redis::cmd("HGETALL")
            .arg(format!("{}{{{key}}}", self.prefix))
            .query_async(&mut self.raw().await)
            .await
            .expect("read a bucket hash");
        Some((*hash.get("t")?, *hash.get("l")?, *hash.get("v")?))
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        cleanup(&self.url, &self.prefix);
    }
}

/// A store on the shared Redis with a key prefix of its own, and what a test needs to look behind it; its keys
/// are deleted when it is dropped, pass or fail.
pub struct Shared {
    /// The store, under the prefix.
    pub store: RedisStore,
    /// The shared server.
    pub url: String,
    /// This test's prefix.
    pub prefix: String,
    _keys: RedisPrefix,
}

impl Shared {
    /// A fresh prefix on the shared server.
    pub fn new() -> Self {
        let keys = RedisPrefix::shared();
        let store = RedisStore::connect(keys.config(&keys.url)).expect("valid config");
        Self { store, url: keys.url.clone(), prefix: keys.prefix.clone(), _keys: keys }
    }

    /// A plain connection to the shared server.
    pub async fn raw(&self) -> MultiplexedConnection {
        raw(&self.url).await
    }
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

/// A plain connection for inspecting and arranging keys behind the store's back.
pub async fn raw(url: &str) -> MultiplexedConnection {
    redis::Client::open(url).expect("valid url").get_multiplexed_async_connection().await.expect("redis reachable")
}

/// Deletes every key under `prefix` (policy hashes and hand-written states have no TTL). Synchronous, so that a
/// `Drop` guard can run it even when the test panicked.
pub fn cleanup(url: &str, prefix: &str) {
    let Ok(mut conn) = redis::Client::open(url).and_then(|client| client.get_connection()) else { return };
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query(&mut conn).unwrap_or_default();
    for key in keys {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&key).query(&mut conn);
    }
}
