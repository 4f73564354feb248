//! Which Redis the store talks to: one server, a Redis Cluster, or the master a group of sentinels names.
//!
//! Everything topology-specific is redis-rs's own: its `ClusterConnection` follows `MOVED`/`ASK`, refreshes the
//! slot map and reconnects lost nodes; its `SentinelClient` asks the sentinels for the current master each time a
//! connection is opened, so after a failover the next connection (the old one breaks, or answers `READONLY` and is
//! dropped by `pool.rs`) goes to the new master. This module only builds those clients from the configuration and
//! hands `connections.rs` a way to open one connection.

use std::sync::Arc;

use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::cluster::ClusterClientBuilder;
use deadpool_redis::redis::cluster_async::ClusterConnection;
use deadpool_redis::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use deadpool_redis::redis::{
    self, AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError, TlsCertificates,
};
use futures::FutureExt;
use serde::Deserialize;

use super::connections::{Connections, Connector};
use super::nodes::{DirectNodes, Probes};
use super::RedisConfig;

/// How the Redis behind `url` is deployed (`BUCKET_REDIS_MODE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One server (or a proxy in front of one): `url` names it.
    #[default]
    Standalone,
    /// Redis Cluster: `url` lists one or more seed nodes, comma-separated; the rest is discovered.
    Cluster,
    /// Sentinel-managed replication: `url` lists the sentinels, `sentinel_master` names the master set.
    Sentinel,
}

impl RedisMode {
    /// The configuration word, for logs and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            RedisMode::Standalone => "standalone",
            RedisMode::Cluster => "cluster",
            RedisMode::Sentinel => "sentinel",
        }
    }
}

/// The shared connections of one store: plain multiplexed connections (standalone, sentinel) or cluster ones.
pub(super) enum Conns {
    /// One server: the configured one, or the master the sentinels name when the connection is opened.
    Single(Arc<Connections<MultiplexedConnection>>),
    /// The cluster; each connection reaches every node.
    Cluster(Arc<Connections<ClusterConnection>>),
}

/// Where the invalidation listener subscribes: `PUBLISH` reaches every node of a cluster and every replica, so
/// any one server that answers will do.
#[derive(Clone)]
pub(super) enum Subscriber {
    /// Any of these servers, tried in order (standalone: the one; cluster: the seeds).
    Servers(Vec<redis::Client>),
    /// The master the sentinels name.
    Sentinel(Arc<tokio::sync::Mutex<SentinelClient>>),
}

impl Subscriber {
    /// A pub/sub connection to the first server that accepts one.
    pub(super) async fn pubsub(&self) -> Result<redis::aio::PubSub, RedisError> {
        match self {
            Subscriber::Servers(clients) => {
                let mut last = None;
                for client in clients {
                    match client.get_async_pubsub().await {
                        Ok(pubsub) => return Ok(pubsub),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| RedisError::from(std::io::Error::other("no Redis URL"))))
            }
            Subscriber::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await?.get_async_pubsub().await,
        }
    }
}

/// The seed URLs of `url`: comma-separated, blanks ignored.
pub(super) fn urls(url: &str) -> Vec<&str> {
    url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
}

/// Builds the connections, the subscriber and the health probes for `config` (already validated), without
/// contacting Redis.
pub(super) fn connect(
    config: &RedisConfig,
    roots: Option<Vec<u8>>,
    connection: AsyncConnectionConfig,
) -> Result<(Conns, Subscriber, Probes), RedisError> {
    let urls = urls(&config.url);
    let certificates = || TlsCertificates { client_tls: None, root_cert: roots.clone() };
    let client = |url: &str| match &roots {
        None => redis::Client::open(url),
        // Only these roots are trusted (not the system's); the crate refuses a non-`rediss://` URL here.
        Some(_) => redis::Client::build_with_tls(url, certificates()),
    };
    let (size, timeout) = (config.pool_size, config.connect_timeout);
    match config.mode {
        RedisMode::Standalone => {
            let client = client(urls.first().copied().unwrap_or_default())?;
            let opener = client.clone();
            let connector: Connector<MultiplexedConnection> = Box::new(move || {
                let (client, connection) = (opener.clone(), connection.clone());
                async move { client.get_multiplexed_async_connection_with_config(&connection).await }.boxed()
            });
            let conns = Conns::Single(Arc::new(Connections::new(connector, size, timeout)));
            Ok((conns, Subscriber::Servers(vec![client]), Probes::Single))
        }
        RedisMode::Cluster => {
            let (min_wait, max_wait) = retry_waits(config.command_timeout);
            let mut builder = ClusterClientBuilder::new(urls.clone())
                .connection_timeout(config.connect_timeout)
                .response_timeout(config.command_timeout)
                .min_retry_wait(min_wait)
                .max_retry_wait(max_wait)
                .retry_wait_formula(RETRY_WAIT_FACTOR_MS, 2);
            if roots.is_some() {
                builder = builder.certs(certificates());
            }
            let cluster = builder.build()?;
            let connector: Connector<ClusterConnection> = Box::new(move || {
                let cluster = cluster.clone();
                async move { cluster.get_async_connection().await }.boxed()
            });
            let seeds = urls.iter().map(|url| client(url)).collect::<Result<_, _>>()?;
            let conns = Conns::Cluster(Arc::new(Connections::new(connector, size, timeout)));
            let direct = DirectNodes::new(&urls, roots.clone());
            Ok((conns, Subscriber::Servers(seeds), Probes::Cluster(direct)))
        }
        RedisMode::Sentinel => {
            let master = config.sentinel_master.clone().unwrap_or_default();
            let sentinel = Arc::new(tokio::sync::Mutex::new(sentinel_client(&urls, &master, roots.clone())?));
            let opener = Arc::clone(&sentinel);
            let connector: Connector<MultiplexedConnection> = Box::new(move || {
                let (sentinel, connection) = (Arc::clone(&opener), connection.clone());
                async move {
                    // Asked anew for every connection: after a failover the next one goes to the new master.
                    let master = sentinel.lock().await.async_get_client().await?;
                    master.get_multiplexed_async_connection_with_config(&connection).await
                }
                .boxed()
            });
            // The same URLs, credentials and roots as the sentinel client: `/readyz` asks each sentinel itself.
            let sentinels = urls
                .iter()
                .map(|url| client(url).map(|c| (c.get_connection_info().addr().to_string(), c)))
                .collect::<Result<_, _>>()?;
            let conns = Conns::Single(Arc::new(Connections::new(connector, size, timeout)));
            Ok((conns, Subscriber::Sentinel(sentinel), Probes::Sentinel { master, sentinels }))
        }
    }
}

/// The scale of the back-off after `TRYAGAIN`, `CLUSTERDOWN` or `LOADING` in cluster mode: before retry `n`
/// redis-rs pauses a random time between [`retry_waits`]' minimum and `factor × 2ⁿ` ms (so up to 4, 8, 16 … ms),
/// never longer than its maximum.
const RETRY_WAIT_FACTOR_MS: u64 = 2;

/// The shortest and longest pause (ms) redis-rs's cluster client takes before it sends a command again after
/// `TRYAGAIN` (a script over several keys of a slot caught half-way through a migration), `CLUSTERDOWN` or
/// `LOADING`. Its defaults (at least 1.28 s) exceed the whole command timeout, so the first `TRYAGAIN` of a reshard
/// turned into a timeout (`tests/redis_cluster_reshard.rs`); a slot's migration takes milliseconds, so a few short
/// pauses, the longest a quarter of the timeout, see it through and leave the call its own deadline.
fn retry_waits(command_timeout: std::time::Duration) -> (u64, u64) {
    let max = (command_timeout.as_millis() / 4).clamp(2, 1_000) as u64;
    (1, max)
}

/// A client that asks the sentinels at `urls` for `master`. The URLs' user, password and database apply to the
/// sentinels and to the master alike (one set of credentials); `rediss://` means TLS to both, trusting `roots`
/// when given (else the system's roots).
fn sentinel_client(urls: &[&str], master: &str, roots: Option<Vec<u8>>) -> Result<SentinelClient, RedisError> {
    let infos: Vec<ConnectionInfo> = urls.iter().map(|url| url.into_connection_info()).collect::<Result<_, _>>()?;
    let first = infos.first().ok_or_else(|| RedisError::from(std::io::Error::other("no sentinel URL")))?;
    let tls = matches!(first.addr(), ConnectionAddr::TcpTls { .. });
    let settings = first.redis_settings().clone();
    let addrs = infos.iter().map(|info| info.addr().clone());
    let mut builder =
        SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?.set_client_to_redis_db(settings.db());
    if let Some(user) = settings.username() {
        builder = builder.set_client_to_redis_username(user).set_client_to_sentinel_username(user);
    }
    if let Some(password) = settings.password() {
        builder = builder.set_client_to_redis_password(password).set_client_to_sentinel_password(password);
    }
    if tls {
        builder = builder
            .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
        if let Some(root) = roots {
            let certificates = || TlsCertificates { client_tls: None, root_cert: Some(root.clone()) };
            builder = builder
                .set_client_to_redis_certificates(certificates())
                .set_client_to_sentinel_certificates(certificates());
        }
    }
    builder.build()
}

/// The hash slot of a Redis key (CRC16/XMODEM of its hash tag, or of the whole key without one, modulo 16384),
/// as Redis Cluster computes it: keys of one slot may share a script.
pub(super) fn slot(key: &[u8]) -> u16 {
    let tag = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let close = key[open + 1..].iter().position(|&b| b == b'}')?;
            Some(&key[open + 1..open + 1 + close])
        })
        .filter(|tag| !tag.is_empty());
    crc16::State::<crc16::XMODEM>::calculate(tag.unwrap_or(key)) % 16_384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_pauses_fit_well_inside_the_command_timeout() {
        use std::time::Duration;
        assert_eq!(retry_waits(Duration::from_millis(100)), (1, 25));
        assert_eq!(retry_waits(Duration::from_millis(1)), (1, 2), "never an empty range");
        assert_eq!(retry_waits(Duration::from_secs(60)), (1, 1_000));
    }

    #[test]
    fn slots_follow_the_hash_tag_rules_of_redis_cluster() {
        // Values from the Redis Cluster specification's reference implementation (`CLUSTER KEYSLOT`).
        assert_eq!(slot(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12_182);
        assert_eq!(slot(b"bucket:{alice}"), slot(b"alice"));
        assert_eq!(slot(b"p:{a}b}"), slot(b"a"), "the first closing brace ends the tag");
        assert_eq!(slot(b"p:{}x"), slot(b"p:{}x"));
        assert_ne!(slot(b"p:{}x"), slot(b""), "an empty tag hashes the whole key");
    }
}
