//! The Redis store: buckets shared by any number of API processes, each check one atomic Lua script run.
//!
//! Layout: a bucket is the hash `<prefix>{<key>}` (fields `t` tokens, `l` last refill in µs, `v` version) with a
//! TTL of the time to refill from empty, so a missing key is a full bucket and idle buckets cost no memory. A
//! per-key policy is the hash `<prefix>policy:{<key>}` (fields `c` capacity, `i` µs per token), without a TTL;
//! every key with a policy is also in the set `<prefix>policy_keys`, and `<prefix>policy_version` is incremented by
//! every policy write, so `CachedPolicies` keeps all policies in memory and checks one counter per TTL. Policies
//! written before the set existed are added to it once (`SCAN`), on the first version read after an upgrade.
//! The braces are a Redis Cluster hash tag: both keys of one user live in one slot, so the script never crosses
//! slots. The multi-limit script (`redis/token_buckets.lua`, `redis/all.rs`) takes several users' keys at once:
//! atomic on one server; in Redis Cluster it runs once per slot group, with refunds (`redis/slots.rs`).
//!
//! Topology (`redis/topology.rs`, `[redis] mode`): one server, a Redis Cluster (redis-rs's cluster client, which
//! follows MOVED/ASK and failovers) or the master named by sentinels (asked again for every new connection).
//!
//! `redis/token_bucket.lua` reads, refills, consumes, writes and sets the TTL in one step, on Redis's own clock
//! (`TIME`), so instances with skewed clocks still agree. It is loaded once (`SCRIPT LOAD`), run by SHA
//! (`EVALSHA`), and loaded again on `NOSCRIPT` (a restarted or flushed Redis). The script returns the state it
//! decided against; the [`Decision`](bucket_core::Decision) is then built here by bucket-core from that state, and
//! the script's own result is checked against bucket-core's, so there is one description of the answer.
//!
//! Connections (`redis/connections.rs`): at most `pool_size` multiplexed connections shared by every call, so
//! concurrent checks are written to Redis together (auto-pipelining) instead of one round trip per connection.
//!
//! Failure behaviour: every call, waiting for and opening a connection included, is bounded by `command_timeout`
//! and fails with a transient [`StoreError`] (`Timeout`, or `Unavailable` for refused/reset connections) instead of
//! hanging, so the tiered store can fall back to PostgreSQL. A connection that timed out or broke is replaced; the
//! calls still in flight on it end by their own deadlines.

mod all;
mod batch;
mod connections;
mod nodes;
mod policies;
mod pool;
mod pubsub;
mod script;
mod slots;
mod stale;
mod topology;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bucket_core::Policy;
use deadpool_redis::redis::{self, AsyncConnectionConfig, RedisError};
use serde::Deserialize;

pub use connections::PoolStatus;
pub use script::OnMiss;
pub use topology::RedisMode;

pub(crate) use all::{Miss, Script};

use crate::{DependencyHealth, Limit, NodeHealth, Outcome, Outcomes, Source, Store, StoreError};
use batch::Batch;
use nodes::{Probes, Report};
use pool::Op;
use topology::{Conns, Subscriber};

const BACKEND: &str = "redis";

/// Shared connections by default: measured in docs/perf.md (`GET /` many users, 32 wrk connections, 2 cores).
const DEFAULT_POOL_SIZE: usize = 2;

/// Where Redis is and how long a request may wait for it; the `[redis]` section of the service's configuration
/// (every field optional, unknown keys refused, timeouts in whole milliseconds).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[[user]:password@]host[:port][/db]` (also `REDIS_URL`); `rediss://` for TLS, where the server's
    /// certificate must chain to `tls_ca_file` (or the system's roots) and name the host. Not part of the
    /// `[redis]` section: the service reads it from `redis_url` (`REDIS_URL`).
    #[serde(skip)]
    pub url: String,
    /// Most connections held open at once. Each is multiplexed: it carries every concurrent call given to it,
    /// written together, so a few suffice; more spread the calls thinner and batch less (docs/perf.md).
    pub pool_size: usize,
    /// Bound on every store call, including waiting for a connection to open: a hung Redis then costs
    /// a request this long before the caller falls back.
    #[serde(rename = "command_timeout_ms", deserialize_with = "crate::millis::deserialize")]
    pub command_timeout: Duration,
    /// Bound on establishing one connection (TCP, handshake). An attempt outlives the call that started it, so a
    /// slow link still gets a connection that later calls, bounded by `command_timeout`, then share.
    #[serde(rename = "connect_timeout_ms", deserialize_with = "crate::millis::deserialize")]
    pub connect_timeout: Duration,
    /// Prepended to every key so that several services or tenants can share one Redis; must not contain braces.
    pub key_prefix: String,
    /// PEM file of the CA(s) a `rediss://` server's certificate must chain to, instead of the system's roots;
    /// refused with a `redis://` URL, which would never use it.
    pub tls_ca_file: Option<PathBuf>,
    /// One server, a Redis Cluster or a Sentinel-managed master (`BUCKET_REDIS_MODE`); in the last two, `url` may
    /// list several comma-separated seed nodes or sentinels.
    pub mode: RedisMode,
    /// The master set the sentinels are asked for (`BUCKET_REDIS_SENTINEL_MASTER`): required in sentinel mode,
    /// refused in the others.
    pub sentinel_master: Option<String>,
    /// Replicas that must acknowledge an allowed decision before it is answered (`BUCKET_REDIS_WAIT_REPLICAS`,
    /// `WAIT n` right after the script, on the same connection to the same node). 0: Redis's asynchronous
    /// replication, so a failover may lose the last grants and re-grant them. Fewer acknowledgements within the
    /// command timeout make the call a store failure.
    pub wait_replicas: u32,
}

/// The defaults with no URL yet: what a `[redis]` section leaves unset.
impl Default for RedisConfig {
    fn default() -> Self {
        Self::new("")
    }
}

impl RedisConfig {
    /// The defaults (up to 2 shared connections, 100 ms per call, 1 s to connect, prefix `bucket:`) for a given URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: DEFAULT_POOL_SIZE,
            command_timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(1),
            key_prefix: "bucket:".to_owned(),
            tls_ca_file: None,
            mode: RedisMode::Standalone,
            sentinel_master: None,
            wait_replicas: 0,
        }
    }

    /// The URL with its password replaced, for start-up logs.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    fn validate(&self) -> Result<(), String> {
        if self.pool_size == 0 {
            return Err("pool_size must be at least 1".into());
        }
        if self.command_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err("command_timeout and connect_timeout must be above zero".into());
        }
        // A brace in the prefix would become the hash tag of every key, putting all buckets in one slot.
        if self.key_prefix.contains(['{', '}']) {
            return Err(format!("key_prefix {:?} must not contain '{{' or '}}'", self.key_prefix));
        }
        let urls = topology::urls(&self.url);
        if self.mode == RedisMode::Standalone && urls.len() > 1 {
            return Err(format!(
                "{} URLs given, but mode is standalone: set mode (BUCKET_REDIS_MODE) to cluster or sentinel",
                urls.len()
            ));
        }
        let tls = urls.iter().filter(|url| url.starts_with("rediss://")).count();
        if tls != 0 && tls != urls.len() {
            return Err("either every URL is rediss:// or none".into());
        }
        if self.tls_ca_file.is_some() && tls == 0 {
            return Err("tls_ca_file is set, but the URL is not rediss://".into());
        }
        match (self.mode, &self.sentinel_master) {
            (RedisMode::Sentinel, None) => {
                Err("sentinel mode needs sentinel_master (BUCKET_REDIS_SENTINEL_MASTER), the master set name".into())
            }
            (RedisMode::Sentinel, Some(name)) if name.trim().is_empty() => Err("sentinel_master is empty".into()),
            (RedisMode::Standalone | RedisMode::Cluster, Some(_)) => {
                Err(format!("sentinel_master is set, but mode is {}: set mode to sentinel", self.mode.as_str()))
            }
            _ => Ok(()),
        }
    }
}

/// Printed at start with the rest of the configuration, so the password must not appear.
impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("pool_size", &self.pool_size)
            .field("command_timeout", &self.command_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("key_prefix", &self.key_prefix)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("mode", &self.mode)
            .field("sentinel_master", &self.sentinel_master)
            .field("wait_replicas", &self.wait_replicas)
            .finish()
    }
}

fn redact(url: &str) -> String {
    crate::redact::redact_url(url)
}

/// The Redis backend; cloning shares its connections.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    connections: Conns,
    /// How Redis is deployed, for `/readyz` detail.
    mode: RedisMode,
    /// `[redis] wait_replicas`.
    wait_replicas: u32,
    /// For the invalidation listener's own connection (a subscribed connection cannot carry commands).
    subscriber: Subscriber,
    /// What a health check probes node by node (`redis/nodes.rs`).
    probes: Probes,
    /// The nodes the last probe found, for the `/metrics` series between probes.
    last_nodes: std::sync::Mutex<Vec<NodeHealth>>,
    prefix: String,
    command_timeout: Duration,
    /// `ping`'s bound: long enough to establish a connection as well as to get an answer.
    probe_timeout: Duration,
    /// The script's SHA1 once Redis has told us (the same for every server, so it never needs resetting).
    sha: OnceLock<String>,
    /// The same for the multi-key script, `token_buckets.lua`.
    sha_all: OnceLock<String>,
    /// The same for `refund.lua`.
    sha_refund: OnceLock<String>,
    /// The same for `drop_older.lua`.
    sha_drop_older: OnceLock<String>,
}

impl RedisStore {
    /// Sets up the connections without contacting Redis, so the service starts (degraded) while Redis is down; call
    /// [`RedisStore::ping`] to find out whether it is reachable. Fails only on an invalid configuration.
    pub fn connect(config: RedisConfig) -> Result<Self, StoreError> {
        let invalid = |detail: String| StoreError::Backend { backend: BACKEND, detail };
        config.validate().map_err(|e| invalid(format!("invalid configuration: {e}")))?;
        // The driver's own limits back up the per-call deadline in `pool.rs`.
        let connection = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout));
        let invalid_url = |e: RedisError| invalid(format!("invalid url {}: {e}", config.redacted_url()));
        if config.url.contains("rediss://") {
            // The redis crate builds its rustls configuration from the process-wide provider; `ring` is the only
            // one this build compiles in. An `Err` means one is already installed, which is as good.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let roots = match &config.tls_ca_file {
            None => None,
            // Only these roots are trusted (not the system's); the crate refuses a non-`rediss://` URL with them.
            Some(path) => Some(
                std::fs::read(path).map_err(|e| invalid(format!("cannot read tls_ca_file {}: {e}", path.display())))?,
            ),
        };
        let (connections, subscriber, probes) = topology::connect(&config, roots, connection).map_err(invalid_url)?;
        Ok(Self {
            inner: Arc::new(Inner {
                connections,
                mode: config.mode,
                wait_replicas: config.wait_replicas,
                subscriber,
                probes,
                last_nodes: std::sync::Mutex::default(),
                prefix: config.key_prefix,
                command_timeout: config.command_timeout,
                probe_timeout: config.command_timeout.max(config.connect_timeout),
                sha: OnceLock::new(),
                sha_all: OnceLock::new(),
                sha_refund: OnceLock::new(),
                sha_drop_older: OnceLock::new(),
            }),
        })
    }

    /// The Redis key of a bucket, `<prefix>{<key>}`: documented layout, for operators and tests.
    pub fn bucket_key(&self, key: &str) -> String {
        bucket_key_parts(&self.inner.prefix, key).concat()
    }

    /// Open connections and calls in flight over them, for `/readyz` detail and tests.
    pub fn pool_status(&self) -> PoolStatus {
        match &self.inner.connections {
            Conns::Single(connections) => connections.status(),
            Conns::Cluster(connections) => connections.status(),
        }
    }

    /// Whether Redis answers `PING`, within the longer of the command and connect timeouts.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let reply: String = self.exec(Op::Cmd(&redis::cmd("PING")), self.inner.probe_timeout).await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Backend { backend: BACKEND, detail: format!("PING answered {reply:?}") })
        }
    }

    /// Probes every node of a cluster, or the master, replicas and sentinels of a Sentinel group, now (all at
    /// once, each within the command timeout; see `redis/nodes.rs`); empty for one server.
    pub async fn nodes(&self) -> Vec<NodeHealth> {
        // One server has no nodes to list: a scrape then costs Redis nothing.
        if matches!(self.inner.probes, Probes::Single) {
            return Vec::new();
        }
        self.report().await.nodes
    }

    /// The nodes as the last probe ([`RedisStore::nodes`] or a health check) found them, without asking again.
    pub fn last_nodes(&self) -> Vec<NodeHealth> {
        self.inner.last_nodes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Whether decisions can be made, why, and each node's state; remembered for [`RedisStore::last_nodes`].
    async fn report(&self) -> Report {
        let report = match (&self.inner.probes, &self.inner.connections) {
            (Probes::Cluster(direct), _) => self.probe_cluster(direct).await,
            (Probes::Sentinel { master, sentinels }, _) => self.probe_sentinel(master, sentinels).await,
            _ => match self.ping().await {
                Ok(()) => Report { up: true, summary: "PONG".to_owned(), nodes: Vec::new() },
                Err(e) => Report { up: false, summary: e.to_string(), nodes: Vec::new() },
            },
        };
        *self.inner.last_nodes.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = report.nodes.clone();
        report
    }

    /// Deletes these buckets (not their policies), so PostgreSQL's state is loaded again on their next check.
    /// One pipelined `DEL` per key: a multi-key `DEL` would cross hash slots on a cluster.
    pub async fn invalidate(&self, keys: &[String]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::unordered();
        for key in keys {
            batch.add_ignored(redis::cmd("DEL").arg(self.bucket_key(key)).to_owned());
        }
        self.exec::<()>(Op::Batch(&batch), self.inner.command_timeout).await
    }
}

fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Backend { backend: BACKEND, detail: detail.into() }
}

impl Store for RedisStore {
    async fn check(&self, key: &str, policy: &Policy, cost: u64) -> Result<Outcome, StoreError> {
        let decided = self
            .decide_at(key, policy, cost, None, OnMiss::Full)
            .await?
            .ok_or_else(|| corrupt("the script reported a miss in full mode"))?;
        Ok(Outcome { decision: decided.decision, source: Source::Redis })
    }

    async fn check_all(&self, limits: &[Limit<'_>]) -> Result<Outcomes, StoreError> {
        self.check_all_at(limits, None).await
    }

    async fn peek(&self, key: &str, policy: &Policy) -> Result<Outcome, StoreError> {
        let decided = self
            .run_script(key, policy, 0, None, "peek", None)
            .await?
            .ok_or_else(|| corrupt("the script reported a miss in peek mode"))?;
        Ok(Outcome { decision: decided.decision, source: Source::Redis })
    }

    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        let mut batch = Batch::ordered();
        batch.add_ignored(redis::cmd("DEL").arg(self.bucket_key(key)).to_owned());
        batch.add_ignored(redis::cmd("PUBLISH").arg(self.invalidation_channel()).arg(key).to_owned());
        self.exec::<()>(Op::Batch(&batch), self.inner.command_timeout).await
    }

    async fn health(&self) -> Vec<DependencyHealth> {
        let status = self.pool_status();
        let pool =
            format!("{} connections open, {} calls in flight, max {}", status.size, status.in_flight, status.max_size);
        let report = self.report().await;
        let detail = format!("{} ({}); {pool}", report.summary, self.inner.mode.as_str());
        vec![DependencyHealth { name: BACKEND, up: report.up, detail, nodes: report.nodes }]
    }
}

/// The pieces of a bucket's Redis key, `<prefix>{<key>}` (the braces make the key its own cluster hash tag), in one
/// place for both [`RedisStore::bucket_key`] and the script call that writes them straight into its command.
pub(crate) fn bucket_key_parts<'a>(prefix: &'a str, key: &'a str) -> [&'a str; 4] {
    [prefix, "{", key, "}"]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_only_the_password() {
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("redis://:s3cret@host:6379/0"), "redis://:***@host:6379/0");
        assert_eq!(redact("redis://app:s3cret@host/1"), "redis://app:***@host/1");
        assert_eq!(redact("rediss://app:p@ss@host"), "rediss://app:***@host");
        let config = RedisConfig::new("redis://app:s3cret@host");
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn a_section_reads_defaults_and_millisecond_timeouts() {
        let config: RedisConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, RedisConfig::default());
        assert_eq!(config.pool_size, DEFAULT_POOL_SIZE);
        assert_eq!(config.command_timeout, Duration::from_millis(100));
        assert_eq!(config.connect_timeout, Duration::from_secs(1));
        assert_eq!(config.key_prefix, "bucket:");
        let config: RedisConfig =
            serde_json::from_str(r#"{"command_timeout_ms": 250, "connect_timeout_ms": 2000, "key_prefix": "x:"}"#)
                .unwrap();
        assert_eq!(config.command_timeout, Duration::from_millis(250));
        assert_eq!(config.connect_timeout, Duration::from_secs(2));
        assert!(serde_json::from_str::<RedisConfig>(r#"{"command_timeout_ms": "75ms"}"#).is_err(), "one grammar");
        assert!(serde_json::from_str::<RedisConfig>(r#"{"url": "redis://h"}"#).is_err(), "url is not a key");
    }

    #[test]
    fn invalid_configurations_are_refused_at_connect() {
        let mut braces = RedisConfig::new("redis://127.0.0.1");
        braces.key_prefix = "a{b}:".into();
        assert!(RedisStore::connect(braces).is_err());
        let mut zero = RedisConfig::new("redis://127.0.0.1");
        zero.command_timeout = Duration::ZERO;
        assert!(RedisStore::connect(zero).is_err());
        assert!(RedisStore::connect(RedisConfig::new("not a url")).is_err());
    }

    #[test]
    fn modes_and_their_urls_are_checked_at_connect() {
        let with = |url: &str, mode: RedisMode, master: Option<&str>| {
            let mut config = RedisConfig::new(url);
            config.mode = mode;
            config.sentinel_master = master.map(str::to_owned);
            RedisStore::connect(config)
        };
        let two = "redis://127.0.0.1:7000, redis://127.0.0.1:7001";
        assert!(with(two, RedisMode::Standalone, None).is_err(), "several URLs need cluster or sentinel");
        assert!(with(two, RedisMode::Cluster, None).is_ok());
        assert!(with(two, RedisMode::Sentinel, Some("bucket")).is_ok());
        assert!(with(two, RedisMode::Sentinel, None).is_err(), "sentinel needs the master set name");
        assert!(with(two, RedisMode::Sentinel, Some(" ")).is_err());
        assert!(with(two, RedisMode::Cluster, Some("bucket")).is_err(), "a master name outside sentinel mode");
        assert!(with("redis://a,rediss://b", RedisMode::Cluster, None).is_err(), "TLS for some nodes only");
        assert!(with("rediss://:pw@a:1,rediss://:pw@b:2", RedisMode::Cluster, None).is_ok());
        let config: RedisConfig = serde_json::from_str(r#"{"mode": "sentinel", "sentinel_master": "bucket"}"#).unwrap();
        assert_eq!((config.mode, config.sentinel_master.as_deref()), (RedisMode::Sentinel, Some("bucket")));
        assert!(serde_json::from_str::<RedisConfig>(r#"{"mode": "clustered"}"#).is_err());
        let mut plain_with_ca = RedisConfig::new("redis://127.0.0.1");
        plain_with_ca.tls_ca_file = Some("/nonexistent.pem".into());
        assert!(RedisStore::connect(plain_with_ca).is_err());
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let mut config = RedisConfig::new("redis://127.0.0.1");
        config.key_prefix = "rl:".into();
        let store = RedisStore::connect(config).unwrap();
        assert_eq!(store.bucket_key("alice"), "rl:{alice}");
        assert_eq!(store.policy_key("alice"), "rl:policy:{alice}");
    }
}
