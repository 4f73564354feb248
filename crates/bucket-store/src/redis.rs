//! The Redis store: buckets shared by any number of API processes, each check one atomic Lua script run.
//!
//! Layout: a bucket is the hash `<prefix>{<key>}` (fields `t` tokens, `l` last refill in µs, `v` version) with a
//! TTL of the time to refill from empty, so a missing key is a full bucket and idle buckets cost no memory. A
//! per-key policy is the hash `<prefix>policy:{<key>}` (fields `c` capacity, `i` µs per token), without a TTL;
//! every key with a policy is also in the set `<prefix>policy_keys`, and `<prefix>policy_version` is incremented by
//! every policy write, so `CachedPolicies` keeps all policies in memory and checks one counter per TTL. Policies
//! written before the set existed are added to it once (`SCAN`), on the first version read after an upgrade.
//! The braces are a Redis Cluster hash tag: both keys of one user live in one slot, so the script (and a later
//! multi-limit script over keys sharing a tag) never crosses slots.
//!
//! `redis/token_bucket.lua` reads, refills, consumes, writes and sets the TTL in one step, on Redis's own clock
//! (`TIME`), so instances with skewed clocks still agree. It is loaded once (`SCRIPT LOAD`), run by SHA
//! (`EVALSHA`), and loaded again on `NOSCRIPT` (a restarted or flushed Redis). The script returns the state it
//! decided against; the [`Decision`](bucket_core::Decision) is then built here by bucket-core from that state, and
//! the script's own result is checked against bucket-core's, so there is one description of the answer.
//!
//! Failure behaviour: every call, waiting for and creating a pooled connection included, is bounded by
//! `command_timeout` and fails with a transient [`StoreError`] (`Timeout`, or `Unavailable` for refused/reset
//! connections) instead of hanging, so the tiered store can fall back to PostgreSQL. A connection that timed out or
//! broke is removed from the pool rather than handed to the next caller with a reply still in flight.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bucket_core::{decide, BucketState, Policy};
use deadpool::managed::{self, Metrics, RecycleResult};
use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{self, AsyncConnectionConfig, ErrorKind, FromRedisValue, RedisError, ServerErrorKind};
use deadpool_redis::{Runtime, Status};
use serde::{Deserialize, Deserializer};
use tokio::time::{timeout_at, Instant};

use crate::{Decided, DependencyHealth, Outcome, PolicyStore, Source, Store, StoreError, VersionedState};

const BACKEND: &str = "redis";

/// The script's source; Redis identifies it by its SHA1, which `SCRIPT LOAD` returns.
const SCRIPT: &str = include_str!("redis/token_bucket.lua");

/// What the script answers when `report` mode finds no key.
const CODE_MISS: i64 = -1;
const CODE_ALLOWED: i64 = 1;
const CODE_REFUSED: i64 = 0;

/// Where Redis is and how long a request may wait for it; a section of the service's configuration.
#[derive(Clone, Deserialize)]
pub struct RedisConfig {
    /// `redis://[[user]:password@]host[:port][/db]` (also `REDIS_URL`); `rediss://` for TLS, where the server's
    /// certificate must chain to `tls_ca_file` (or the system's roots) and name the host.
    pub url: String,
    /// Most connections held open at once; each carries one command at a time.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Bound on every store call, including waiting for and creating a pooled connection: a hung Redis then costs
    /// a request this long before the caller falls back. Integer milliseconds or a string such as `"100ms"`.
    #[serde(default = "default_command_timeout", deserialize_with = "duration")]
    pub command_timeout: Duration,
    /// Bound on establishing one connection (TCP, handshake); [`RedisStore::ping`] may take this long, so a slow
    /// link can still get connections into the pool that requests, bounded by `command_timeout`, then reuse.
    #[serde(default = "default_connect_timeout", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Prepended to every key so that several services or tenants can share one Redis; must not contain braces.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// PEM file of the CA(s) a `rediss://` server's certificate must chain to, instead of the system's roots;
    /// refused with a `redis://` URL, which would never use it.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
}

fn default_pool_size() -> usize {
    32
}

fn default_command_timeout() -> Duration {
    Duration::from_millis(100)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_key_prefix() -> String {
    "bucket:".to_owned()
}

impl RedisConfig {
    /// The defaults (pool of 32, 100 ms per call, 1 s to connect, prefix `bucket:`) for a given URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: default_pool_size(),
            command_timeout: default_command_timeout(),
            connect_timeout: default_connect_timeout(),
            key_prefix: default_key_prefix(),
            tls_ca_file: None,
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
        Ok(())
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
            .finish()
    }
}

fn redact(url: &str) -> String {
    crate::redact::redact_url(url)
}

/// Accepts integer milliseconds (TOML) or a string: `"250"`, `"250ms"`, `"2s"` (environment variables).
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Millis(u64),
        Text(String),
    }
    let parse = |text: &str| -> Option<Duration> {
        let text = text.trim();
        if let Some(ms) = text.strip_suffix("ms") {
            ms.trim().parse().ok().map(Duration::from_millis)
        } else if let Some(s) = text.strip_suffix('s') {
            s.trim().parse().ok().map(Duration::from_secs)
        } else {
            text.parse().ok().map(Duration::from_millis)
        }
    };
    match Repr::deserialize(deserializer)? {
        Repr::Millis(ms) => Ok(Duration::from_millis(ms)),
        Repr::Text(text) => parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("invalid duration {text:?}: use milliseconds, \"250ms\" or \"2s\""))
        }),
    }
}

/// What a key that Redis does not hold means to [`RedisStore::decide_at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMiss {
    /// A full bucket: Redis is the only store (the plain `redis` backend).
    Full,
    /// Report it (`None`) and write nothing, so the tiered store can load the bucket from PostgreSQL.
    Report,
}

/// A pooled connection that has been idle at least this long is probed (`PING`) before reuse: the server or a
/// proxy may have closed it meanwhile.
const IDLE_PROBE: Duration = Duration::from_secs(1);

/// deadpool-redis's manager without its `UNWATCH`+`PING` round trip on every checkout, which doubled the round trips
/// of every check (measured with `INFO commandstats` in `cargo xtask bench`). The probe is redundant on a busy
/// pool: `exec` discards every connection that saw an I/O error or a timeout, so one that came back to the pool
/// had just worked. Connections idle for [`IDLE_PROBE`] or longer are still probed.
struct Manager {
    inner: deadpool_redis::Manager,
}

impl managed::Manager for Manager {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        managed::Manager::create(&self.inner).await
    }

    async fn recycle(&self, conn: &mut MultiplexedConnection, metrics: &Metrics) -> RecycleResult<RedisError> {
        if metrics.last_used() < IDLE_PROBE {
            return Ok(());
        }
        managed::Manager::recycle(&self.inner, conn, metrics).await
    }
}

type Pool = managed::Pool<Manager>;
type PoolError = managed::PoolError<RedisError>;
type Connection = managed::Object<Manager>;

/// The Redis backend; cloning shares one connection pool.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// For the invalidation listener's own connection (subscribed connections cannot serve the pool).
    client: redis::Client,
    prefix: String,
    command_timeout: Duration,
    /// `ping`'s bound: long enough to establish a connection as well as to get an answer.
    probe_timeout: Duration,
    /// The script's SHA1 once Redis has told us (the same for every server, so it never needs resetting).
    sha: OnceLock<String>,
}

/// One unit of work on a pooled connection, so that checkout, deadline and error handling live in one place.
enum Op<'a> {
    Cmd(&'a redis::Cmd),
    Pipe(&'a redis::Pipeline),
    Script { key: &'a str, args: &'a [String] },
}

impl RedisStore {
    /// Builds the pool without contacting Redis, so the service starts (degraded) while Redis is down; call
    /// [`RedisStore::ping`] to find out whether it is reachable. Fails only on an invalid configuration.
    pub fn connect(config: RedisConfig) -> Result<Self, StoreError> {
        let invalid = |detail: String| StoreError::Backend { backend: BACKEND, detail };
        config.validate().map_err(|e| invalid(format!("invalid configuration: {e}")))?;
        // The driver's own limits back up the per-call deadline below; they also cover the pool's recycle PING.
        let connection = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout));
        let invalid_url = |e: RedisError| invalid(format!("invalid url {}: {e}", config.redacted_url()));
        if config.url.starts_with("rediss://") {
            // The redis crate builds its rustls configuration from the process-wide provider; `ring` is the only
            // one this build compiles in. An `Err` means one is already installed, which is as good.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = match &config.tls_ca_file {
            None => redis::Client::open(config.url.as_str()).map_err(invalid_url)?,
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| invalid(format!("cannot read tls_ca_file {}: {e}", path.display())))?;
                // Only these roots are trusted (not the system's); the crate refuses a non-`rediss://` URL here.
                let certificates = redis::TlsCertificates { client_tls: None, root_cert: Some(pem) };
                redis::Client::build_with_tls(config.url.as_str(), certificates).map_err(invalid_url)?
            }
        };
        let manager = deadpool_redis::Manager::new_with_config(client.get_connection_info().clone(), connection)
            .map_err(invalid_url)?;
        let manager = Manager { inner: manager };
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .wait_timeout(Some(config.command_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.command_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| invalid(format!("cannot build the connection pool: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                client,
                prefix: config.key_prefix,
                command_timeout: config.command_timeout,
                probe_timeout: config.command_timeout.max(config.connect_timeout),
                sha: OnceLock::new(),
            }),
        })
    }

    /// The Redis key of a bucket, `<prefix>{<key>}`: documented layout, for operators and tests.
    pub fn bucket_key(&self, key: &str) -> String {
        format!("{}{{{key}}}", self.inner.prefix)
    }

    /// The Redis key of a per-key policy, `<prefix>policy:{<key>}`: same hash slot as the bucket.
    pub fn policy_key(&self, key: &str) -> String {
        format!("{}policy:{{{key}}}", self.inner.prefix)
    }

    /// The Redis key of the policy version, `<prefix>policy_version`, bumped by every policy write: documented
    /// layout, for operators and tests.
    pub fn policy_version_key(&self) -> String {
        format!("{}policy_version", self.inner.prefix)
    }

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
            let mut pubsub = self.inner.client.get_async_pubsub().await?;
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

    /// The Redis set of every key with a policy, `<prefix>policy_keys`, read by `all_policies`.
    pub fn policy_index_key(&self) -> String {
        format!("{}policy_keys", self.inner.prefix)
    }

    /// The Redis key marking that policies written before `<prefix>policy_keys` existed have been added to it.
    fn policy_indexed_key(&self) -> String {
        format!("{}policy_keys_indexed", self.inner.prefix)
    }

    /// Adds every policy hash under the prefix to `<prefix>policy_keys` (a `SCAN`, in steps), marks that done and
    /// bumps the version: an upgrade from a release without the index must not lose the policies set before it.
    /// Runs until one instance has finished it; instances doing it at once only repeat idempotent `SADD`s.
    async fn index_existing_policies(&self) -> Result<u64, StoreError> {
        let head = format!("{}policy:{{", self.inner.prefix);
        let pattern = format!("{}*", glob_escape(&head));
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(POLICY_READ_CHUNK);
            let (next, names): (u64, Vec<String>) = self.exec(Op::Cmd(&scan), self.inner.command_timeout).await?;
            let keys: Vec<&str> = names.iter().filter_map(|name| name.strip_prefix(&head)?.strip_suffix('}')).collect();
            if !keys.is_empty() {
                let mut add = redis::cmd("SADD");
                add.arg(self.policy_index_key()).arg(&keys);
                self.exec::<()>(Op::Cmd(&add), self.inner.command_timeout).await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(self.policy_indexed_key()).arg(1).ignore();
        pipe.cmd("INCR").arg(self.policy_version_key());
        let (version,): (u64,) = self.exec(Op::Pipe(&pipe), self.inner.command_timeout).await?;
        Ok(version)
    }

    /// Open, idle and awaited connections, for metrics and `/readyz` detail.
    pub fn pool_status(&self) -> Status {
        self.inner.pool.status()
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

    /// Decides `cost` tokens on `key` atomically at `now_us` (`None`: Redis's clock). `None` only for
    /// [`OnMiss::Report`] on a key Redis does not hold, in which case nothing was written.
    pub async fn decide_at(
        &self,
        key: &str,
        policy: &Policy,
        cost: u64,
        now_us: Option<u64>,
        on_miss: OnMiss,
    ) -> Result<Option<Decided>, StoreError> {
        let mode = match on_miss {
            OnMiss::Full => "full",
            OnMiss::Report => "report",
        };
        self.run_script(key, policy, cost, now_us, mode, None).await
    }

    /// Decides against the key's state, or against `seed` if Redis does not hold the key, as one atomic step: of
    /// concurrent seeders the first wins and the others decide against its result. `created` tells whether the
    /// seed was used; like every refusal, a refused seeded check writes nothing.
    pub async fn seed_and_decide(
        &self,
        key: &str,
        policy: &Policy,
        cost: u64,
        seed: &VersionedState,
        now_us: Option<u64>,
    ) -> Result<Decided, StoreError> {
        self.run_script(key, policy, cost, now_us, "seed", Some(seed))
            .await?
            .ok_or_else(|| corrupt("the script reported a miss in seed mode"))
    }

    /// Deletes these buckets (not their policies), so PostgreSQL's state is loaded again on their next check.
    /// One pipelined `DEL` per key: a multi-key `DEL` would cross hash slots on a cluster.
    pub async fn invalidate(&self, keys: &[String]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.del(self.bucket_key(key)).ignore();
        }
        self.exec::<()>(Op::Pipe(&pipe), self.inner.command_timeout).await
    }

    async fn run_script(
        &self,
        key: &str,
        policy: &Policy,
        cost: u64,
        now_us: Option<u64>,
        mode: &str,
        seed: Option<&VersionedState>,
    ) -> Result<Option<Decided>, StoreError> {
        let mut args = vec![
            policy.capacity().to_string(),
            policy.interval_us().to_string(),
            cost.to_string(),
            now_us.map(|now| now.to_string()).unwrap_or_default(),
            mode.to_owned(),
        ];
        if let Some(seed) = seed {
            args.push(seed.state.tokens.to_string());
            args.push(seed.state.last_refill_us.to_string());
            args.push(seed.version.to_string());
        }
        let bucket = self.bucket_key(key);
        let reply: Vec<i64> = self.exec(Op::Script { key: &bucket, args: &args }, self.inner.command_timeout).await?;
        interpret(policy, cost, &reply)
    }

    /// Checks out a connection and runs `op`, all before `budget` runs out.
    async fn exec<T: FromRedisValue>(&self, op: Op<'_>, budget: Duration) -> Result<T, StoreError> {
        let deadline = Instant::now() + budget;
        let timeout = StoreError::Timeout { backend: BACKEND, after: budget };
        let mut conn = match timeout_at(deadline, self.inner.pool.get()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(PoolError::Timeout(_))) | Err(_) => return Err(timeout),
            Ok(Err(PoolError::Backend(e))) => return Err(classify(&e, budget)),
            Ok(Err(PoolError::Closed)) => {
                return Err(StoreError::Unavailable { backend: BACKEND, detail: "connection pool closed".into() })
            }
            Ok(Err(e)) => return Err(StoreError::Backend { backend: BACKEND, detail: e.to_string() }),
        };
        let result = timeout_at(deadline, async {
            match op {
                Op::Cmd(cmd) => cmd.query_async(&mut *conn).await,
                Op::Pipe(pipe) => pipe.query_async(&mut *conn).await,
                Op::Script { key, args } => self.eval(&mut conn, key, args).await,
            }
        })
        .await;
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                // A broken or timed-out connection is replaced; one that carried a server error reply (BUSY,
                // LOADING, a script error) is in sync and goes back to the pool.
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                    discard(conn);
                }
                Err(classify(&e, budget))
            }
            Err(_) => {
                // A reply may still be on its way: this connection must not serve another caller.
                discard(conn);
                Err(timeout)
            }
        }
    }

    /// `EVALSHA`, loading the script first if this process has not yet, and again if Redis lost it (`NOSCRIPT`).
    async fn eval<T: FromRedisValue>(
        &self,
        conn: &mut MultiplexedConnection,
        key: &str,
        args: &[String],
    ) -> Result<T, RedisError> {
        let sha = match self.inner.sha.get() {
            Some(sha) => sha.clone(),
            None => self.load(conn).await?,
        };
        match evalsha(&sha, key, args).query_async(conn).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let sha = self.load(conn).await?;
                evalsha(&sha, key, args).query_async(conn).await
            }
            other => other,
        }
    }

    async fn load(&self, conn: &mut MultiplexedConnection) -> Result<String, RedisError> {
        let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(SCRIPT).query_async(conn).await?;
        // Racing loaders all get the same SHA, so losing the `set` race is fine.
        let _ = self.inner.sha.set(sha.clone());
        Ok(sha)
    }
}

/// `text` as a `SCAN MATCH` pattern matching exactly itself: the prefix is configuration and may hold glob characters.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Policies read per pipelined call by `all_policies`, and keys asked for per `SCAN` step.
const POLICY_READ_CHUNK: usize = 1_000;

fn evalsha(sha: &str, key: &str, args: &[String]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha).arg(1).arg(key).arg(args);
    cmd
}

/// Takes the connection out of the pool for good (dropping it closes the socket).
fn discard(conn: Connection) {
    drop(Connection::take(conn));
}

/// Splits driver errors into "Redis is away, fall back" and "Redis answered something wrong".
fn classify(e: &RedisError, budget: Duration) -> StoreError {
    if e.is_timeout() {
        return StoreError::Timeout { backend: BACKEND, after: budget };
    }
    let transient_server = matches!(
        e.kind(),
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
        )
    );
    // BUSY: another script is running too long; OOM: maxmemory reached. Both pass without our doing anything.
    let transient_code = matches!(e.code(), Some("BUSY" | "OOM"));
    if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.kind() == ErrorKind::ClusterConnectionNotFound
        || transient_server
        || transient_code
    {
        StoreError::Unavailable { backend: BACKEND, detail: e.to_string() }
    } else {
        StoreError::Backend { backend: BACKEND, detail: e.to_string() }
    }
}

fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Backend { backend: BACKEND, detail: detail.into() }
}

/// Turns the script's reply into a [`Decided`], re-deriving the decision with bucket-core from the state the script
/// decided against, and refusing to answer if the script's result differs from bucket-core's.
fn interpret(policy: &Policy, cost: u64, reply: &[i64]) -> Result<Option<Decided>, StoreError> {
    let &[code, seeded, now, before_t, before_l, after_t, after_l, version] = reply else {
        return Err(corrupt(format!("the script returned {} values instead of 8", reply.len())));
    };
    if code == CODE_MISS {
        return Ok(None);
    }
    let unsigned = |n: i64| u64::try_from(n).map_err(|_| corrupt(format!("the script returned a negative {n}")));
    let before = BucketState { tokens: unsigned(before_t)?, last_refill_us: unsigned(before_l)? };
    let now = unsigned(now)?;
    let (decision, after) = decide(policy, before, now, cost);
    let script_after = BucketState { tokens: unsigned(after_t)?, last_refill_us: unsigned(after_l)? };
    let allowed = match code {
        CODE_ALLOWED => true,
        CODE_REFUSED => false,
        other => return Err(corrupt(format!("the script returned the unknown code {other}"))),
    };
    if allowed != decision.allowed || script_after != after {
        return Err(corrupt(format!(
            "the script and bucket-core disagree on {before:?} at {now} for cost {cost}: script {allowed} \
             {script_after:?}, core {} {after:?}",
            decision.allowed
        )));
    }
    Ok(Some(Decided {
        decision,
        after: VersionedState { state: after, version: unsigned(version)? },
        created: seeded == 1,
    }))
}

impl Store for RedisStore {
    async fn check(&self, key: &str, policy: &Policy, cost: u64) -> Result<Outcome, StoreError> {
        let decided = self
            .decide_at(key, policy, cost, None, OnMiss::Full)
            .await?
            .ok_or_else(|| corrupt("the script reported a miss in full mode"))?;
        Ok(Outcome { decision: decided.decision, source: Source::Redis })
    }

    async fn peek(&self, key: &str, policy: &Policy) -> Result<Outcome, StoreError> {
        let decided = self
            .run_script(key, policy, 0, None, "peek", None)
            .await?
            .ok_or_else(|| corrupt("the script reported a miss in peek mode"))?;
        Ok(Outcome { decision: decided.decision, source: Source::Redis })
    }

    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(self.bucket_key(key)).ignore();
        pipe.cmd("PUBLISH").arg(self.invalidation_channel()).arg(key).ignore();
        self.exec::<()>(Op::Pipe(&pipe), self.inner.command_timeout).await
    }

    async fn health(&self) -> Vec<DependencyHealth> {
        let status = self.pool_status();
        let pool = format!("pool {} open, {} idle, max {}", status.size, status.available, status.max_size);
        let (up, detail) = match self.ping().await {
            Ok(()) => (true, format!("PONG; {pool}")),
            Err(e) => (false, format!("{e}; {pool}")),
        };
        vec![DependencyHealth { name: BACKEND, up, detail }]
    }
}

impl PolicyStore for RedisStore {
    async fn policy(&self, key: &str) -> Result<Option<Policy>, StoreError> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.policy_key(key)).arg("c").arg("i");
        let (capacity, interval): (Option<u64>, Option<u64>) =
            self.exec(Op::Cmd(&cmd), self.inner.command_timeout).await?;
        match (capacity, interval) {
            (None, None) => Ok(None),
            (Some(capacity), Some(interval_us)) => Ok(Some(Policy::from_interval_us(capacity, interval_us)?)),
            _ => Err(corrupt(format!("policy hash {} lacks its c or i field", self.policy_key(key)))),
        }
    }

    async fn set_policy(&self, key: &str, policy: &Policy) -> Result<(), StoreError> {
        // Only the policy hash is written: the bucket keeps its tokens and refills at the new rate from now on. The
        // key joins the index and the version is bumped last, so a reader that sees the new version (and then reads
        // the index) sees the new policy. A plain pipeline, not MULTI: the three keys are in different cluster slots.
        let mut pipe = redis::pipe();
        pipe.cmd("HSET").arg(self.policy_key(key)).arg("c").arg(policy.capacity()).arg("i").arg(policy.interval_us());
        pipe.ignore();
        pipe.cmd("SADD").arg(self.policy_index_key()).arg(key).ignore();
        pipe.cmd("INCR").arg(self.policy_version_key()).ignore();
        pipe.cmd("PUBLISH").arg(self.invalidation_channel()).arg(key).ignore();
        self.exec::<()>(Op::Pipe(&pipe), self.inner.command_timeout).await
    }

    async fn delete_policy(&self, key: &str) -> Result<bool, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(self.policy_key(key));
        pipe.cmd("SREM").arg(self.policy_index_key()).arg(key).ignore();
        pipe.cmd("INCR").arg(self.policy_version_key()).ignore();
        pipe.cmd("PUBLISH").arg(self.invalidation_channel()).arg(key).ignore();
        let (deleted,): (u64,) = self.exec(Op::Pipe(&pipe), self.inner.command_timeout).await?;
        Ok(deleted > 0)
    }

    async fn policy_version(&self) -> Result<u64, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(self.policy_version_key());
        pipe.cmd("EXISTS").arg(self.policy_indexed_key());
        let (version, indexed): (Option<u64>, bool) = self.exec(Op::Pipe(&pipe), self.inner.command_timeout).await?;
        if !indexed {
            return self.index_existing_policies().await;
        }
        // Missing until the first policy write: version 0.
        Ok(version.unwrap_or(0))
    }

    async fn all_policies(&self) -> Result<Vec<(String, Policy)>, StoreError> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(self.policy_index_key());
        let keys: Vec<String> = self.exec(Op::Cmd(&cmd), self.inner.command_timeout).await?;
        let mut all = Vec::with_capacity(keys.len());
        // Pipelined in chunks so each call stays well inside `command_timeout` however many policies there are.
        for chunk in keys.chunks(POLICY_READ_CHUNK) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("HMGET").arg(self.policy_key(key)).arg("c").arg("i");
            }
            let fields: Vec<(Option<u64>, Option<u64>)> =
                self.exec(Op::Pipe(&pipe), self.inner.command_timeout).await?;
            for (key, fields) in chunk.iter().zip(fields) {
                match fields {
                    // Deleted between SMEMBERS and HMGET: the version has moved too, so the next refresh agrees.
                    (None, None) => {}
                    (Some(capacity), Some(interval_us)) => {
                        all.push((key.clone(), Policy::from_interval_us(capacity, interval_us)?))
                    }
                    _ => return Err(corrupt(format!("policy hash {} lacks its c or i field", self.policy_key(key)))),
                }
            }
        }
        Ok(all)
    }
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
    fn config_reads_defaults_and_both_duration_forms() {
        let config: RedisConfig = serde_json::from_str(r#"{"url": "redis://h"}"#).unwrap();
        assert_eq!(config.pool_size, 32);
        assert_eq!(config.command_timeout, Duration::from_millis(100));
        assert_eq!(config.connect_timeout, Duration::from_secs(1));
        assert_eq!(config.key_prefix, "bucket:");
        let config: RedisConfig = serde_json::from_str(
            r#"{"url": "redis://h", "command_timeout": 250, "connect_timeout": "2s", "key_prefix": "x:"}"#,
        )
        .unwrap();
        assert_eq!(config.command_timeout, Duration::from_millis(250));
        assert_eq!(config.connect_timeout, Duration::from_secs(2));
        let config: RedisConfig = serde_json::from_str(r#"{"url": "redis://h", "command_timeout": "75ms"}"#).unwrap();
        assert_eq!(config.command_timeout, Duration::from_millis(75));
        assert!(serde_json::from_str::<RedisConfig>(r#"{"url": "redis://h", "command_timeout": "soon"}"#).is_err());
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
    fn glob_characters_in_the_prefix_match_only_themselves() {
        assert_eq!(glob_escape("a*b?[c]\\d{e}:"), "a\\*b\\?\\[c\\]\\\\d{e}:");
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let mut config = RedisConfig::new("redis://127.0.0.1");
        config.key_prefix = "rl:".into();
        let store = RedisStore::connect(config).unwrap();
        assert_eq!(store.bucket_key("alice"), "rl:{alice}");
        assert_eq!(store.policy_key("alice"), "rl:policy:{alice}");
    }

    #[test]
    fn a_reply_that_disagrees_with_the_core_is_an_error() {
        let policy = Policy::from_interval_us(10, 1_000_000).unwrap();
        // Stored (0, 0) at 2 s: the core allows one token, leaving (1, 2 s).
        let good = [1, 0, 2_000_000, 0, 0, 1, 2_000_000, 4];
        let decided = interpret(&policy, 1, &good).unwrap().unwrap();
        assert!(decided.decision.allowed);
        assert_eq!(
            decided.after,
            VersionedState { state: BucketState { tokens: 1, last_refill_us: 2_000_000 }, version: 4 }
        );
        let wrong_tokens = [1, 0, 2_000_000, 0, 0, 2, 2_000_000, 4];
        assert!(matches!(interpret(&policy, 1, &wrong_tokens), Err(StoreError::Backend { .. })));
        let wrong_code = [0, 0, 2_000_000, 0, 0, 0, 0, 4];
        assert!(matches!(interpret(&policy, 1, &wrong_code), Err(StoreError::Backend { .. })));
        assert!(interpret(&policy, 1, &[CODE_MISS, 0, 0, 0, 0, 0, 0, 0]).unwrap().is_none());
        assert!(interpret(&policy, 1, &[1, 0]).is_err());
    }
}
