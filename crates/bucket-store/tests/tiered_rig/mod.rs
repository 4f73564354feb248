//! A tiered store on a fresh schema and key prefix with both servers behind fault proxies, shared by the tiered
//! test files.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bucket_core::Policy;
use bucket_store::postgres::PostgresStore;
use bucket_store::redis::RedisStore;
use bucket_store::tiered::{TieredConfig, TieredStats, TieredStore, WriteMode};
use bucket_store::{Source, Store};
use bucket_testkit::{pg, redis_server, FaultProxy, RawRow, RedisPrefix, TestSchema};
use deadpool_redis::redis;

/// Capacity `n`, one token an hour: nothing refills during a test.
pub fn per_hour(n: u64) -> Policy {
    Policy::from_interval_us(n, 3_600_000_000).unwrap()
}

/// A tiered store on a fresh schema and key prefix, both servers reached through proxies.
pub struct Rig {
    pub schema: TestSchema,
    pub keys: RedisPrefix,
    pub redis_proxy: FaultProxy,
    pub pg_proxy: FaultProxy,
    pub redis: RedisStore,
    pub store: TieredStore,
}

impl Rig {
    /// PostgreSQL statements bounded by 500 ms.
    pub async fn new(config: TieredConfig) -> Self {
        Self::with_statement_timeout(config, Duration::from_millis(500)).await
    }

    pub async fn with_statement_timeout(config: TieredConfig, statement_timeout: Duration) -> Self {
        let schema = TestSchema::new();
        schema.store().await; // schema and tables, created directly
        let keys = RedisPrefix::shared();
        let redis_proxy = FaultProxy::start(redis_server::shared_upstream()).await;
        let pg_proxy = FaultProxy::start(pg::upstream()).await;
        let mut redis_config = keys.config(&redis_proxy.redis_url());
        // Short bounds: these tests break servers, and a fallback should cost milliseconds, not seconds.
        redis_config.command_timeout = Duration::from_millis(200);
        redis_config.connect_timeout = Duration::from_millis(200);
        let redis = RedisStore::connect(redis_config).unwrap();
        let mut pg_config = schema.config.clone();
        pg_config.url = schema.url_via(pg_proxy.addr());
        pg_config.connect_timeout = Duration::from_millis(500);
        pg_config.statement_timeout = statement_timeout;
        let pg = PostgresStore::connect(pg_config).await.unwrap();
        let store = TieredStore::new(redis.clone(), pg, config, bucket_store::tiered::no_events()).await;
        Self { schema, keys, redis_proxy, pg_proxy, redis, store }
    }

    /// Another instance on the same schema and key prefix, reaching both servers directly: what a second API
    /// process would be.
    pub async fn another_instance(&self, config: TieredConfig) -> TieredStore {
        let redis = RedisStore::connect(self.keys.config(&self.keys.url)).unwrap();
        TieredStore::new(redis, self.schema.store().await, config, bucket_store::tiered::no_events()).await
    }

    pub async fn check(&self, key: &str, policy: &Policy) -> (bool, Source, u64) {
        let outcome = self.store.check(key, policy, 1).await.unwrap();
        (outcome.decision.allowed, outcome.source, outcome.decision.remaining)
    }

    /// The bucket as Redis holds it: `(tokens, last_refill_us, version)`, read directly, not through the proxy.
    pub async fn redis_state(&self, key: &str) -> Option<(u64, u64, u64)> {
        let mut conn = self.keys.raw().await;
        let hash: HashMap<String, u64> =
            redis::cmd("HGETALL").arg(self.redis.bucket_key(key)).query_async(&mut conn).await.unwrap();
        Some((*hash.get("t")?, *hash.get("l")?, *hash.get("v")?))
    }

    /// Overwrites Redis's bucket behind the store's back, as a failover to a lagging replica would leave it.
    pub async fn set_redis_state(&self, key: &str, (tokens, last_refill_us, version): (u64, u64, u64)) {
        let mut conn = self.keys.raw().await;
        let _: () = redis::cmd("HSET")
            .arg(self.redis.bucket_key(key))
            .arg("t")
            .arg(tokens)
            .arg("l")
            .arg(last_refill_us)
            .arg("v")
            .arg(version)
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    pub fn stats(&self) -> TieredStats {
        self.store.stats()
    }
}

pub fn row_state(row: &RawRow) -> (u64, u64, u64) {
    (row.tokens as u64, row.last_refill_us as u64, row.version as u64)
}

pub fn sync() -> TieredConfig {
    TieredConfig { retry_interval: Duration::from_millis(50), ..TieredConfig::default() }
}

/// Sync mode with a group commit window of `window`.
pub fn sync_window(window: Duration) -> TieredConfig {
    TieredConfig { commit_window: window, ..sync() }
}

pub fn write_behind(flush_interval: Duration) -> TieredConfig {
    TieredConfig { write_mode: WriteMode::WriteBehind, flush_interval, ..sync() }
}

/// Polls `condition` every 10 ms for at most `within`.
pub async fn eventually(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
