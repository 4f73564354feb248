//! The `[postgres]`, `[redis]` and `[tiered]` sections of the configuration: pools, timeouts and write mode.
//!
//! Kept apart from `config.rs` because only the non-memory stores read them; `stores.rs` turns them into the
//! adapters' own configurations.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use bucket_store::postgres::PostgresConfig;
use bucket_store::redis::RedisConfig;
use bucket_store::tiered::{TieredConfig, WriteMode};
use serde::Deserialize;

use crate::config::{parse_env, ConfigError};

/// `[postgres]`: the pool and the bounds on each statement.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresSettings {
    /// Connections per instance (`BUCKET_PG_POOL_SIZE`).
    pub pool_size: usize,
    /// Longest wait for a connection, in ms (`BUCKET_PG_CONNECT_TIMEOUT_MS`).
    pub connect_timeout_ms: u64,
    /// Longest statement, in ms (`BUCKET_PG_STATEMENT_TIMEOUT_MS`).
    pub statement_timeout_ms: u64,
    /// Schema for bucket's tables, created if missing (`BUCKET_PG_SCHEMA`); none uses the URL's search_path.
    pub schema: Option<String>,
    /// PEM CA file the server's certificate must chain to (`BUCKET_PG_TLS_CA_FILE`), for a private CA; setting it
    /// makes `sslmode=verify-full` the default. None: the URL's `sslmode` against the system's roots.
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self { pool_size: 16, connect_timeout_ms: 2000, statement_timeout_ms: 1000, schema: None, tls_ca_file: None }
    }
}

/// `[redis]`: the pool, the short command timeout after which the tiered store falls back, and the key prefix.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// Connections per instance (`BUCKET_REDIS_POOL_SIZE`).
    pub pool_size: usize,
    /// Bound on every Redis call, in ms (`BUCKET_REDIS_TIMEOUT_MS`): a hung Redis costs a request this long.
    pub command_timeout_ms: u64,
    /// Bound on opening a connection, in ms (`BUCKET_REDIS_CONNECT_TIMEOUT_MS`).
    pub connect_timeout_ms: u64,
    /// Prefix of every key, so services can share one Redis (`BUCKET_REDIS_KEY_PREFIX`).
    pub key_prefix: String,
    /// PEM CA file a `rediss://` server's certificate must chain to (`BUCKET_REDIS_TLS_CA_FILE`), for a private CA;
    /// None: the system's roots.
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            pool_size: 32,
            command_timeout_ms: 100,
            connect_timeout_ms: 1000,
            key_prefix: "bucket:".into(),
            tls_ca_file: None,
        }
    }
}

/// `[tiered]`: when writes reach PostgreSQL and how much may wait for it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TieredSettings {
    /// `sync` (committed before the answer) or `write_behind` (`BUCKET_WRITE_MODE`).
    pub write_mode: WriteModeSetting,
    /// Write-behind batch period, in ms (`BUCKET_FLUSH_INTERVAL_MS`).
    pub flush_interval_ms: u64,
    /// Probe period for a dependency marked down, in ms (`BUCKET_RETRY_INTERVAL_MS`).
    pub retry_interval_ms: u64,
    /// Most keys waiting for PostgreSQL (`BUCKET_WRITE_QUEUE_CAPACITY`).
    pub queue_capacity: usize,
    /// How long a per-key policy read from the store is cached, in ms (`BUCKET_POLICY_CACHE_TTL_MS`).
    pub policy_cache_ttl_ms: u64,
}

impl Default for TieredSettings {
    fn default() -> Self {
        Self {
            write_mode: WriteModeSetting::Sync,
            flush_interval_ms: 5,
            retry_interval_ms: 500,
            queue_capacity: 100_000,
            policy_cache_ttl_ms: 1000,
        }
    }
}

/// The write mode as configuration spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteModeSetting {
    /// Committed before the answer.
    #[default]
    Sync,
    /// Batched every `flush_interval_ms`.
    WriteBehind,
}

impl WriteModeSetting {
    /// The name used in configuration and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteModeSetting::Sync => "sync",
            WriteModeSetting::WriteBehind => "write_behind",
        }
    }
}

impl FromStr for WriteModeSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "sync" => Ok(Self::Sync),
            "write_behind" | "write-behind" => Ok(Self::WriteBehind),
            other => Err(format!("unknown write mode {other:?}; use sync or write_behind")),
        }
    }
}

/// The three sections together, as `Config` holds them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// `[postgres]`.
    pub postgres: PostgresSettings,
    /// `[redis]`.
    pub redis: RedisSettings,
    /// `[tiered]`.
    pub tiered: TieredSettings,
}

impl StoreSettings {
    /// Overrides from the `BUCKET_PG_*`, `BUCKET_REDIS_*` and write-mode variables.
    pub fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        for (var, value) in env {
            let v = value.as_str();
            match var.as_str() {
                "BUCKET_PG_POOL_SIZE" => self.postgres.pool_size = parse_env("BUCKET_PG_POOL_SIZE", v)?,
                "BUCKET_PG_CONNECT_TIMEOUT_MS" => {
                    self.postgres.connect_timeout_ms = parse_env("BUCKET_PG_CONNECT_TIMEOUT_MS", v)?
                }
                "BUCKET_PG_STATEMENT_TIMEOUT_MS" => {
                    self.postgres.statement_timeout_ms = parse_env("BUCKET_PG_STATEMENT_TIMEOUT_MS", v)?
                }
                "BUCKET_PG_SCHEMA" => self.postgres.schema = Some(v.trim().to_owned()).filter(|s| !s.is_empty()),
                "BUCKET_PG_TLS_CA_FILE" => self.postgres.tls_ca_file = ca_path(v),
                "BUCKET_REDIS_TLS_CA_FILE" => self.redis.tls_ca_file = ca_path(v),
                "BUCKET_REDIS_POOL_SIZE" => self.redis.pool_size = parse_env("BUCKET_REDIS_POOL_SIZE", v)?,
                "BUCKET_REDIS_TIMEOUT_MS" => self.redis.command_timeout_ms = parse_env("BUCKET_REDIS_TIMEOUT_MS", v)?,
                "BUCKET_REDIS_CONNECT_TIMEOUT_MS" => {
                    self.redis.connect_timeout_ms = parse_env("BUCKET_REDIS_CONNECT_TIMEOUT_MS", v)?
                }
                "BUCKET_REDIS_KEY_PREFIX" => self.redis.key_prefix = v.to_owned(),
                "BUCKET_WRITE_MODE" => self.tiered.write_mode = parse_env("BUCKET_WRITE_MODE", v)?,
                "BUCKET_FLUSH_INTERVAL_MS" => self.tiered.flush_interval_ms = parse_env("BUCKET_FLUSH_INTERVAL_MS", v)?,
                "BUCKET_RETRY_INTERVAL_MS" => self.tiered.retry_interval_ms = parse_env("BUCKET_RETRY_INTERVAL_MS", v)?,
                "BUCKET_WRITE_QUEUE_CAPACITY" => {
                    self.tiered.queue_capacity = parse_env("BUCKET_WRITE_QUEUE_CAPACITY", v)?
                }
                "BUCKET_POLICY_CACHE_TTL_MS" => {
                    self.tiered.policy_cache_ttl_ms = parse_env("BUCKET_POLICY_CACHE_TTL_MS", v)?
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Rejects zero pools and timeouts, and braces in the key prefix (they would break the Redis Cluster hash tag).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |setting: &str, reason: &str| ConfigError::Invalid { setting: setting.into(), reason: reason.into() };
        let positive = [
            ("postgres.pool_size", self.postgres.pool_size as u64),
            ("postgres.connect_timeout_ms", self.postgres.connect_timeout_ms),
            ("postgres.statement_timeout_ms", self.postgres.statement_timeout_ms),
            ("redis.pool_size", self.redis.pool_size as u64),
            ("redis.command_timeout_ms", self.redis.command_timeout_ms),
            ("redis.connect_timeout_ms", self.redis.connect_timeout_ms),
            ("tiered.flush_interval_ms", self.tiered.flush_interval_ms),
            ("tiered.retry_interval_ms", self.tiered.retry_interval_ms),
            ("tiered.queue_capacity", self.tiered.queue_capacity as u64),
        ];
        for (setting, value) in positive {
            if value == 0 {
                return Err(invalid(setting, "must be at least 1"));
            }
        }
        if self.redis.key_prefix.contains(['{', '}']) {
            return Err(invalid("redis.key_prefix", "must not contain { or } (they delimit the hash tag)"));
        }
        Ok(())
    }

    /// The PostgreSQL adapter's configuration for `url`.
    pub fn postgres_config(&self, url: &str) -> PostgresConfig {
        let mut c = PostgresConfig::new(url);
        c.pool_size = self.postgres.pool_size;
        c.connect_timeout = Duration::from_millis(self.postgres.connect_timeout_ms);
        c.statement_timeout = Duration::from_millis(self.postgres.statement_timeout_ms);
        c.schema = self.postgres.schema.clone();
        c.tls_ca_file = self.postgres.tls_ca_file.clone();
        c
    }

    /// The Redis adapter's configuration for `url`.
    pub fn redis_config(&self, url: &str) -> RedisConfig {
        let mut c = RedisConfig::new(url);
        c.pool_size = self.redis.pool_size;
        c.command_timeout = Duration::from_millis(self.redis.command_timeout_ms);
        c.connect_timeout = Duration::from_millis(self.redis.connect_timeout_ms);
        c.key_prefix = self.redis.key_prefix.clone();
        c.tls_ca_file = self.redis.tls_ca_file.clone();
        c
    }

    /// The tiered store's configuration.
    pub fn tiered_config(&self) -> TieredConfig {
        TieredConfig {
            write_mode: match self.tiered.write_mode {
                WriteModeSetting::Sync => WriteMode::Sync,
                WriteModeSetting::WriteBehind => WriteMode::WriteBehind,
            },
            flush_interval: Duration::from_millis(self.tiered.flush_interval_ms),
            retry_interval: Duration::from_millis(self.tiered.retry_interval_ms),
            queue_capacity: self.tiered.queue_capacity,
            ..TieredConfig::default()
        }
    }

    /// Printable settings for the start-up log (no secrets here).
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        vec![
            ("postgres.pool_size", self.postgres.pool_size.to_string()),
            ("postgres.connect_timeout_ms", self.postgres.connect_timeout_ms.to_string()),
            ("postgres.statement_timeout_ms", self.postgres.statement_timeout_ms.to_string()),
            ("postgres.schema", self.postgres.schema.clone().unwrap_or_else(|| "(from the URL)".into())),
            ("postgres.tls_ca_file", ca_file(&self.postgres.tls_ca_file)),
            ("redis.pool_size", self.redis.pool_size.to_string()),
            ("redis.command_timeout_ms", self.redis.command_timeout_ms.to_string()),
            ("redis.connect_timeout_ms", self.redis.connect_timeout_ms.to_string()),
            ("redis.key_prefix", self.redis.key_prefix.clone()),
            ("redis.tls_ca_file", ca_file(&self.redis.tls_ca_file)),
            ("tiered.write_mode", self.tiered.write_mode.as_str().into()),
            ("tiered.flush_interval_ms", self.tiered.flush_interval_ms.to_string()),
            ("tiered.retry_interval_ms", self.tiered.retry_interval_ms.to_string()),
            ("tiered.queue_capacity", self.tiered.queue_capacity.to_string()),
            ("tiered.policy_cache_ttl_ms", self.tiered.policy_cache_ttl_ms.to_string()),
        ]
    }
}

/// A CA file setting as the start-up log prints it.
fn ca_file(path: &Option<PathBuf>) -> String {
    path.as_ref().map_or_else(|| "(system roots)".to_owned(), |p| p.display().to_string())
}

/// A CA file variable: empty unsets it, so a deployment template can leave the variable blank.
fn ca_path(value: &str) -> Option<PathBuf> {
    Some(PathBuf::from(value.trim())).filter(|p| !p.as_os_str().is_empty())
}
