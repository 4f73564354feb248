//! Real `bucket-api` servers over real PostgreSQL and Redis, each dependency behind a fault proxy, for the
//! suites that share stores between instances or break them (`shared_stores.rs`, `faults.rs`, `shutdown.rs`).
#![allow(dead_code)] // each suite uses its own subset

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bucket_api::config::StoreKind;
use bucket_api::config::WriteMode;
use bucket_api::{Config, Running};
use bucket_testkit::{pg, redis_server, FaultProxy, RedisPrefix, TestSchema};

/// One schema and one key prefix, shared by every instance started on them, with a proxy in front of each server.
pub struct Backends {
    pub schema: TestSchema,
    pub keys: RedisPrefix,
    pub redis_proxy: FaultProxy,
    pub pg_proxy: FaultProxy,
}

impl Backends {
    /// A fresh schema (tables created directly, so instances started together do not race to migrate) and prefix.
    pub async fn new() -> Self {
        let schema = TestSchema::new();
        schema.store().await;
        Self {
            schema,
            keys: RedisPrefix::shared(),
            redis_proxy: FaultProxy::start(redis_server::shared_upstream()).await,
            pg_proxy: FaultProxy::start(pg::upstream()).await,
        }
    }

    /// A configuration for `store` on these backends, through the proxies: capacity `capacity` with a negligible
    /// refill, short timeouts so faults cost milliseconds, and a policy cache of 1 ms so that every request looks
    /// its policy up in the store (what happens to keys whose cached policy expired during an outage).
    pub fn config(&self, store: StoreKind, capacity: u64) -> Config {
        let mut config = Config {
            listen: "127.0.0.1:0".into(),
            store,
            database_url: Some(self.schema.url_via(self.pg_proxy.addr())),
            redis_url: Some(self.redis_proxy.redis_url()),
            capacity,
            refill_per_sec: 0.0001,
            workers: 2,
            ..Config::default()
        };
        config.postgres.schema = Some(self.schema.name.clone());
        config.postgres.connect_timeout = Duration::from_millis(300);
        config.postgres.statement_timeout = Duration::from_millis(300);
        // Several instances of several tests share one server (max_connections 100): each gets the share an
        // operator would give it, not the single-instance default.
        config.postgres.pool_size = 8;
        config.redis.key_prefix = self.keys.prefix.clone();
        config.redis.command_timeout = Duration::from_millis(100);
        config.redis.connect_timeout = Duration::from_millis(200);
        config.tiered.retry_interval = Duration::from_millis(50);
        config.tiered.policy_cache_ttl = Duration::from_millis(1);
        // The fault tests want the store to decide each request; a refusal answered from the process's cache would
        // hide which tier served it.
        config.tiered.refusal_cache_ttl = Duration::from_millis(1);
        config
    }

    /// The bucket as Redis holds it, `(tokens, last_refill_us, version)`, read directly (not through the proxy).
    pub async fn redis_state(&self, key: &str) -> Option<(u64, u64, u64)> {
        self.keys.bucket(key).await
    }

    /// The row as PostgreSQL holds it, `(tokens, last_refill_us, version)`, read directly.
    pub async fn pg_state(&self, key: &str) -> Option<(u64, u64, u64)> {
        let row = self.schema.row(key).await?;
        Some((row.tokens as u64, row.last_refill_us as u64, row.version as u64))
    }
}

/// A started service and a client for it.
pub struct Api {
    pub running: Running,
    pub url: String,
    pub client: reqwest::Client,
}

/// What one `GET /` answered.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub source: Option<String>,
    pub retry_after: Option<String>,
    pub took: Duration,
}

impl Api {
    /// Starts the service with `config`, logging into `log`.
    pub async fn start(config: Config, log: slog::Logger) -> Self {
        let running = bucket_api::start(config, log).await.expect("bucket-api starts");
        let url = format!("http://{}", running.addr());
        Self { running, url, client: reqwest::Client::new() }
    }

    /// Starts it with logs discarded.
    pub async fn quiet(config: Config) -> Self {
        Self::start(config, slog::Logger::root(slog::Discard, slog::o!())).await
    }

    /// `GET /` as user `key`.
    pub async fn get(&self, key: &str) -> Reply {
        let started = Instant::now();
        let res = self.client.get(&self.url).header("X-User-ID", key).send().await.expect("an answer");
        let header = |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (source, retry_after) = (header("x-data-source"), header("retry-after"));
        let status = res.status().as_u16();
        // The body is part of the answer: read it before stopping the clock.
        let _ = res.bytes().await;
        Reply { status, source, retry_after, took: started.elapsed() }
    }

    /// `GET /metrics`.
    pub async fn metrics(&self) -> String {
        self.client.get(format!("{}/metrics", self.url)).send().await.unwrap().text().await.unwrap()
    }

    /// One sample of `/metrics`, 0 when absent.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        crate::common::metric(&self.metrics().await, name, labels).unwrap_or(0.0)
    }

    /// Polls `/metrics` until `name{labels}` satisfies `ok`, for at most `within`.
    pub async fn wait_for_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        within: Duration,
        ok: impl Fn(f64) -> bool,
    ) {
        let deadline = Instant::now() + within;
        loop {
            let value = self.metric(name, labels).await;
            if ok(value) {
                return;
            }
            assert!(Instant::now() < deadline, "{name}{labels:?} still {value} after {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops accepting, finishes in-flight requests, flushes the store.
    pub async fn stop(self) {
        self.running.stop().await;
    }
}

/// The tiered store in write mode `mode`.
pub fn tiered(backends: &Backends, capacity: u64, mode: WriteMode) -> Config {
    let mut config = backends.config(StoreKind::Tiered, capacity);
    config.tiered.write_mode = mode;
    config
}

/// Timeouts a loaded machine never reaches, for the dependency a test does not break: with 300 ms, one slow
/// statement while the test suite runs beside it marked PostgreSQL down and turned a Redis-outage test's answers
/// into fail-open ones (seen in CI). The broken dependency keeps the short timeouts that bound the answers.
pub fn patient_postgres(mut config: Config) -> Config {
    config.postgres.connect_timeout = Duration::from_secs(5);
    config.postgres.statement_timeout = Duration::from_secs(5);
    config
}

/// As [`patient_postgres`], for Redis.
pub fn patient_redis(mut config: Config) -> Config {
    config.redis.command_timeout = Duration::from_secs(5);
    config.redis.connect_timeout = Duration::from_secs(5);
    config
}

/// A logger that keeps every message, so a test can assert that something was logged.
#[derive(Clone, Default)]
pub struct CapturedLog(Arc<Mutex<Vec<String>>>);

impl CapturedLog {
    /// A logger writing here.
    pub fn logger(&self) -> slog::Logger {
        slog::Logger::root(slog::Fuse(self.clone()), slog::o!())
    }

    /// Prints every message so far (for a failing test's output).
    pub fn dump(&self) {
        for m in self.0.lock().unwrap().iter() {
            println!("log: {m}");
        }
    }

    /// Whether any message so far contains `text`.
    pub fn contains(&self, text: &str) -> bool {
        self.0.lock().unwrap().iter().any(|m| m.contains(text))
    }

    /// The messages so far that contain `text`.
    pub fn matching(&self, text: &str) -> Vec<String> {
        self.0.lock().unwrap().iter().filter(|m| m.contains(text)).cloned().collect()
    }
}

impl slog::Drain for CapturedLog {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        let mut kv = String::new();
        let _ = slog::KV::serialize(&record.kv(), record, &mut KvText(&mut kv));
        self.0.lock().unwrap().push(format!("{}{kv}", record.msg()));
        Ok(())
    }
}

struct KvText<'a>(&'a mut String);

impl slog::Serializer for KvText<'_> {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        self.0.push_str(&format!(" {key}={val}"));
        Ok(())
    }
}
