//! The stores the contract suite runs against, each as two instances on one fresh backing store.

use std::any::Any;
use std::time::Duration;

use bucket_store::postgres::PostgresStore;
use bucket_store::redis::{RedisConfig, RedisMode, RedisStore};
use bucket_store::tiered::{no_events, TieredConfig, TieredStore, WriteMode};
use bucket_store::{AnyStore, CacheSettings, MemoryStore};
use bucket_testkit::redis_server::{self, shared_url};
use bucket_testkit::{RedisCluster, RedisPrefix, RedisSentinelGroup, TestSchema};

/// PostgreSQL text cannot hold NUL. The API refuses control characters before any store sees them
/// (`bucket_store::Key`), so only what a store does when handed one anyway differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NulKeys {
    /// Stored like any other key.
    Held,
    /// A clean, non-transient error (never mistaken for an outage, so never fail-open).
    Refused,
    /// Not part of the contract: the tiered store decides in Redis and cannot write the row.
    Unspecified,
}

/// Two instances of one store and what keeps its backing alive (a schema, a key prefix) until the test ends.
pub struct Subject<S> {
    /// Named in every failure message.
    pub name: &'static str,
    /// The first instance.
    pub a: S,
    /// The second, sharing `a`'s buckets as another process would.
    pub b: S,
    /// What the store does with keys holding NUL.
    pub nul_keys: NulKeys,
    /// Several limits across Redis Cluster slots are debited slot by slot and refunded on refusal: a racing request
    /// may be refused by a debit that is then undone (transient under-admission, never over-admission).
    pub refunds: bool,
    _guards: Vec<Box<dyn Any + Send>>,
}

pub async fn memory() -> Subject<MemoryStore> {
    let store = MemoryStore::new();
    Subject { name: "memory", a: store.clone(), b: store, nul_keys: NulKeys::Held, refunds: false, _guards: Vec::new() }
}

pub async fn postgres() -> Subject<PostgresStore> {
    let schema = TestSchema::new();
    let (a, b) = (schema.store().await, schema.store().await);
    Subject { name: "postgres", a, b, nul_keys: NulKeys::Refused, refunds: false, _guards: vec![Box::new(schema)] }
}

pub async fn redis() -> Subject<RedisStore> {
    let keys = RedisPrefix::shared();
    let connect = || RedisStore::connect(keys.config(&shared_url())).expect("valid configuration");
    let (a, b) = (connect(), connect());
    Subject { name: "redis", a, b, nul_keys: NulKeys::Held, refunds: false, _guards: vec![Box::new(keys)] }
}

/// A configuration for the cluster this test binary shares (started on first use), under a fresh prefix. The
/// cluster dies with the process, so its keys need no cleanup.
fn cluster_config() -> RedisConfig {
    let mut config = redis_server::config(&RedisCluster::shared().url());
    config.mode = RedisMode::Cluster;
    config
}

pub async fn redis_cluster() -> Subject<RedisStore> {
    let config = cluster_config();
    let connect = || RedisStore::connect(config.clone()).expect("valid configuration");
    let (a, b) = (connect(), connect());
    Subject { name: "redis cluster", a, b, nul_keys: NulKeys::Held, refunds: true, _guards: Vec::new() }
}

pub async fn redis_sentinel() -> Subject<RedisStore> {
    let mut config = redis_server::config(&RedisSentinelGroup::shared().url());
    config.mode = RedisMode::Sentinel;
    config.sentinel_master = Some(bucket_testkit::redis_sentinel::MASTER_NAME.to_owned());
    let connect = || RedisStore::connect(config.clone()).expect("valid configuration");
    let (a, b) = (connect(), connect());
    Subject { name: "redis sentinel", a, b, nul_keys: NulKeys::Held, refunds: false, _guards: Vec::new() }
}

pub async fn tiered_cluster() -> Subject<TieredStore> {
    let (schema, config) = (TestSchema::new(), cluster_config());
    let instance = || async {
        let redis = RedisStore::connect(config.clone()).expect("valid configuration");
        TieredStore::new(redis, schema.store().await, TieredConfig::default(), no_events()).await
    };
    let (a, b) = (instance().await, instance().await);
    Subject {
        name: "tiered cluster",
        a,
        b,
        nul_keys: NulKeys::Unspecified,
        refunds: true,
        _guards: vec![Box::new(schema)],
    }
}

async fn tiered(name: &'static str, config: TieredConfig) -> Subject<TieredStore> {
    let schema = TestSchema::new();
    let keys = RedisPrefix::shared();
    let instance = || async {
        let redis = RedisStore::connect(keys.config(&shared_url())).expect("valid configuration");
        TieredStore::new(redis, schema.store().await, config.clone(), no_events()).await
    };
    let (a, b) = (instance().await, instance().await);
    Subject {
        name,
        a,
        b,
        nul_keys: NulKeys::Unspecified,
        refunds: false,
        _guards: vec![Box::new(schema), Box::new(keys)],
    }
}

pub async fn tiered_sync() -> Subject<TieredStore> {
    tiered("tiered sync", TieredConfig::default()).await
}

pub async fn tiered_write_behind() -> Subject<TieredStore> {
    let config = TieredConfig {
        write_mode: WriteMode::WriteBehind,
        flush_interval: Duration::from_millis(5),
        ..Default::default()
    };
    tiered("tiered write-behind", config).await
}

/// The caches as the service sets them up (a refusal remembered for at most the policy TTL).
fn caches() -> CacheSettings {
    CacheSettings::default()
}

pub async fn api_postgres() -> Subject<AnyStore> {
    let s = postgres().await;
    let (a, b) = (AnyStore::postgres(s.a, caches()), AnyStore::postgres(s.b, caches()));
    Subject { name: "api postgres", a, b, nul_keys: s.nul_keys, refunds: s.refunds, _guards: s._guards }
}

pub async fn api_redis() -> Subject<AnyStore> {
    let s = redis().await;
    let (a, b) = (AnyStore::redis(s.a, caches()), AnyStore::redis(s.b, caches()));
    Subject { name: "api redis", a, b, nul_keys: s.nul_keys, refunds: s.refunds, _guards: s._guards }
}

pub async fn api_tiered() -> Subject<AnyStore> {
    let s = tiered_sync().await;
    let (a, b) = (AnyStore::tiered(s.a, caches()), AnyStore::tiered(s.b, caches()));
    Subject { name: "api tiered", a, b, nul_keys: s.nul_keys, refunds: s.refunds, _guards: s._guards }
}
