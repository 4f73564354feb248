//! The service's one typed configuration, read once at start in three layers: the defaults (each struct's
//! `Default`), then a TOML file, then the environment variables of `config_env.rs`, each layer overriding the one
//! before key by key. The `[postgres]`, `[redis]` and `[tiered]` sections are the store crate's own configuration
//! types, so nothing is mirrored; every setting is validated once, here, in [`Config::validate`].
//!
//! Nothing reads the environment after start: `Config::load` takes the variables as a map, so tests pass their own
//! and the process environment is consulted only by `main`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use bucket_core::Policy;
use bucket_store::postgres::PostgresConfig;
use bucket_store::redis::RedisConfig;
pub use bucket_store::tiered::{TieredConfig, WriteMode};
use figment::providers::{Format, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::config_env::{self, EnvLayer};
pub use crate::config_print::{redact_url, Redacted};
use crate::identity::{deserialize_cidrs, Cidr};
pub use crate::rls::config::{ResponseHeaders, RlsConfig};

/// Why the configuration cannot be used; each message names the setting (TOML key and environment variable) and
/// what is wrong, and never repeats its `source()`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not TOML of the expected shape (unknown keys included, so typos are caught).
    #[error("invalid config file {path}{}: {reason}", at_key(key))]
    Parse {
        /// The file.
        path: PathBuf,
        /// The offending key (`redis.command_timeout_ms`); empty when the file is not TOML at all.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// An environment variable holds a value of the wrong form.
    #[error("invalid {var}={value:?} (setting `{setting}`): {reason}")]
    Env {
        /// The variable's name.
        var: &'static str,
        /// The key it sets.
        setting: String,
        /// Its value (`<redacted>` for secrets).
        value: String,
        /// What was expected.
        reason: String,
    },
    /// A setting parsed but makes no sense (zero capacity, unknown log level, missing URL for the chosen store).
    #[error("invalid setting `{setting}`{}: {reason}", env_hint(setting))]
    Invalid {
        /// The setting's name as it appears in the TOML file.
        setting: String,
        /// What is wrong and what would be accepted.
        reason: String,
    },
}

/// ` (BUCKET_X)` when variables set `setting` (`capacity/refill_per_sec` names both), so a validation error names
/// both spellings.
fn env_hint(setting: &str) -> String {
    let vars: Vec<&str> = setting.split('/').filter_map(config_env::variable_for).collect();
    if vars.is_empty() {
        String::new()
    } else {
        format!(" ({})", vars.join("/"))
    }
}

fn at_key(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!(", key `{key}`")
    }
}

impl ConfigError {
    fn invalid(setting: &str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid { setting: setting.into(), reason: reason.into() }
    }

    /// Blames the layer the bad value came from: the variable, or the file.
    fn from_figment(error: figment::Error, file: &Path, env: &HashMap<String, String>) -> Self {
        let setting = error.path.join(".");
        let from_env = error.metadata.as_ref().is_some_and(|m| m.name == config_env::SOURCE);
        match config_env::variable_for(&setting).filter(|_| from_env) {
            Some(var) => ConfigError::Env {
                var,
                value: config_env::printable(var, env.get(var).map_or("", String::as_str)),
                setting,
                reason: error.kind.to_string(),
            },
            None => ConfigError::Parse {
                path: file.to_path_buf(),
                key: setting,
                reason: error.kind.to_string().trim_end().to_owned(),
            },
        }
    }
}

/// Which backend keeps the buckets (`BUCKET_STORE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In-process; one instance, no setup.
    #[default]
    Memory,
    /// PostgreSQL only (needs `DATABASE_URL`).
    Postgres,
    /// Redis only (needs `REDIS_URL`).
    Redis,
    /// Redis decides, PostgreSQL is the source of truth (needs both URLs).
    Tiered,
}

impl StoreKind {
    /// The configuration spelling, also the `store` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Postgres => "postgres",
            StoreKind::Redis => "redis",
            StoreKind::Tiered => "tiered",
        }
    }
}

/// What to answer when the store cannot decide (`BUCKET_FAILURE_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Allow the request, marked `X-Data-Source: fail-open`: an outage of the limiter is not an outage of the app.
    #[default]
    FailOpen,
    /// Answer 503: for limits that protect something more fragile than the app's availability.
    FailClosed,
}

impl FailureMode {
    /// The configuration spelling, also the `mode` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureMode::FailOpen => "fail_open",
            FailureMode::FailClosed => "fail_closed",
        }
    }
}

/// How log lines are written (`BUCKET_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    #[default]
    Json,
    /// Human-readable lines, for a terminal.
    Text,
}

impl LogFormat {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Json => "json",
            LogFormat::Text => "text",
        }
    }
}

/// A named policy from `[policies.<name>]`, chosen by `POST /v1/check {"policy": "<name>"}`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Largest burst.
    pub capacity: u64,
    /// Tokens gained per second (fractions allowed: 0.5 is one token every two seconds).
    pub refill_per_sec: f64,
}

/// Everything the service can be told at start.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to bind (`BUCKET_LISTEN`); port 0 picks a free one.
    pub listen: String,
    /// Backend (`BUCKET_STORE`).
    pub store: StoreKind,
    /// PostgreSQL URL (`DATABASE_URL`), required by `postgres` and `tiered`.
    pub database_url: Option<String>,
    /// Redis URL (`REDIS_URL`), required by `redis` and `tiered`.
    pub redis_url: Option<String>,
    /// Default policy's burst (`BUCKET_CAPACITY`).
    pub capacity: u64,
    /// Default policy's refill rate per second (`BUCKET_REFILL_PER_SEC`).
    pub refill_per_sec: f64,
    /// Bearer token for admin routes (`BUCKET_ADMIN_TOKEN`); none turns them off. Secret: never printed.
    pub admin_token: Option<SecretString>,
    /// What to answer when the store fails (`BUCKET_FAILURE_MODE`).
    pub failure_mode: FailureMode,
    /// slog level name: critical, error, warn, info, debug, trace (`BUCKET_LOG_LEVEL`).
    pub log_level: String,
    /// `json` or `text` (`BUCKET_LOG_FORMAT`).
    pub log_format: LogFormat,
    /// Header naming the caller on `GET /` (`BUCKET_USER_HEADER`).
    pub user_header: String,
    /// Whether a caller without that header is keyed by peer IP (`BUCKET_PEER_FALLBACK`); when false it is a 400.
    pub peer_fallback: bool,
    /// Proxies whose `Forwarded`/`X-Forwarded-For` headers are believed (`BUCKET_TRUSTED_PROXIES`, comma-separated
    /// CIDRs); empty: forwarding headers are ignored and the peer address keys callers without the user header.
    #[serde(deserialize_with = "deserialize_cidrs")]
    pub trusted_proxies: Vec<Cidr>,
    /// Prefix length of the network that keys an IPv6 client (`BUCKET_IPV6_PREFIX`), so one host holding a /64
    /// cannot mint a bucket per address.
    pub ipv6_prefix: u8,
    /// Largest accepted request body (`BUCKET_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// HTTP worker threads (`BUCKET_WORKERS`); defaults to the number of cores.
    pub workers: usize,
    /// How often the memory store drops refilled buckets, in ms (`BUCKET_EVICT_INTERVAL_MS`).
    pub evict_interval_ms: u64,
    /// Named policies, TOML only: `[policies.premium] capacity = 100, refill_per_sec = 10`.
    pub policies: BTreeMap<String, PolicyConfig>,
    /// `[postgres]`: pool and statement bounds (its `url` comes from `database_url` when the store is built).
    pub postgres: PostgresConfig,
    /// `[redis]`: pool, command timeout, key prefix (its `url` comes from `redis_url`).
    pub redis: RedisConfig,
    /// `[tiered]`: write mode, queue, policy cache.
    pub tiered: TieredConfig,
    /// `[rls]`: the gateway front (limits file, gRPC address, shadow mode, response headers).
    pub rls: RlsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            store: StoreKind::Memory,
            database_url: None,
            redis_url: None,
            capacity: 10,
            refill_per_sec: 1.0,
            admin_token: None,
            failure_mode: FailureMode::FailOpen,
            log_level: "info".into(),
            log_format: LogFormat::Json,
            user_header: "X-User-ID".into(),
            peer_fallback: true,
            trusted_proxies: Vec::new(),
            ipv6_prefix: 64,
            max_body_bytes: 16 * 1024,
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            evict_interval_ms: 1000,
            policies: BTreeMap::new(),
            postgres: PostgresConfig::default(),
            redis: RedisConfig::default(),
            tiered: TieredConfig::default(),
            rls: RlsConfig::default(),
        }
    }
}

/// Policy names the service itself puts in the `RateLimit` headers, so no configured policy may take them.
pub const RESERVED_POLICY_NAMES: [&str; 2] = ["default", "user"];

impl Config {
    /// Defaults, overridden by the TOML file at `path` if given, overridden by the variables in `env`; validated.
    pub fn load(path: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?,
            None => String::new(),
        };
        let config = Self::layered(path.unwrap_or(Path::new("(none)")), &text, env)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text over the defaults (no validation, no environment).
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::layered(Path::new("(string)"), text, &HashMap::new())
    }

    /// The three layers merged, not yet validated. Text becomes a number or a boolean where the field wants one
    /// (figment's lossy extraction: needed for the environment, whose values are all text, and harmless for the
    /// file, where `capacity = "10"` is then read as 10).
    fn layered(file: &Path, text: &str, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Figment::new()
            .merge(Toml::string(text))
            .merge(EnvLayer(env))
            .extract_lossy()
            .map_err(|e| ConfigError::from_figment(e, file, env))
    }

    /// `user_header` parsed once, so no request parses it to look the header up.
    pub fn user_header_name(&self) -> Result<actix_web::http::header::HeaderName, ConfigError> {
        actix_web::http::header::HeaderName::from_str(&self.user_header).map_err(|_| {
            ConfigError::invalid("user_header", format!("{:?} is not a valid HTTP header name", self.user_header))
        })
    }

    /// Checks every setting once, so a bad value stops the process at start with its name instead of failing later.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting: &str, reason: String| ConfigError::invalid(setting, reason);
        if self.listen.trim().is_empty() {
            return Err(invalid("listen", "must be host:port".into()));
        }
        if self.rls.grpc_listen.trim().is_empty() {
            return Err(invalid("rls.grpc_listen", "must be host:port".into()));
        }
        self.default_policy()?;
        self.named_policies()?;
        if slog::Level::from_str(&self.log_level).is_err() {
            return Err(invalid(
                "log_level",
                format!("unknown level {:?}; use critical, error, warn, info, debug or trace", self.log_level),
            ));
        }
        self.user_header_name()?;
        // Shorter than /32 would put unrelated networks (a whole ISP) in one bucket; longer than /128 is no network.
        if !(32..=128).contains(&self.ipv6_prefix) {
            return Err(invalid("ipv6_prefix", format!("{} is not from 32 to 128", self.ipv6_prefix)));
        }
        if self.max_body_bytes == 0 {
            return Err(invalid("max_body_bytes", "must be at least 1".into()));
        }
        if self.workers == 0 {
            return Err(invalid("workers", "must be at least 1".into()));
        }
        if self.evict_interval_ms == 0 {
            return Err(invalid("evict_interval_ms", "must be at least 1".into()));
        }
        if self.admin_token.as_ref().is_some_and(|t| t.expose_secret().is_empty()) {
            return Err(invalid("admin_token", "must not be empty; leave it unset to turn admin routes off".into()));
        }
        let needs_db = matches!(self.store, StoreKind::Postgres | StoreKind::Tiered);
        let needs_redis = matches!(self.store, StoreKind::Redis | StoreKind::Tiered);
        if needs_db && self.database_url.is_none() {
            return Err(invalid("database_url", format!("store `{}` needs DATABASE_URL", self.store.as_str())));
        }
        if needs_redis && self.redis_url.is_none() {
            return Err(invalid("redis_url", format!("store `{}` needs REDIS_URL", self.store.as_str())));
        }
        let positive = [
            ("postgres.pool_size", self.postgres.pool_size as u128),
            ("postgres.connect_timeout_ms", self.postgres.connect_timeout.as_millis()),
            ("postgres.statement_timeout_ms", self.postgres.statement_timeout.as_millis()),
            ("postgres.prune_batch_size", self.postgres.prune_batch_size as u128),
            ("redis.pool_size", self.redis.pool_size as u128),
            ("redis.command_timeout_ms", self.redis.command_timeout.as_millis()),
            ("redis.connect_timeout_ms", self.redis.connect_timeout.as_millis()),
            ("tiered.flush_interval_ms", self.tiered.flush_interval.as_millis()),
            ("tiered.retry_interval_ms", self.tiered.retry_interval.as_millis()),
            ("tiered.queue_capacity", self.tiered.queue_capacity as u128),
        ];
        if let Some((setting, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::invalid(setting, "must be at least 1"));
        }
        if self.redis.key_prefix.contains(['{', '}']) {
            return Err(ConfigError::invalid(
                "redis.key_prefix",
                "must not contain { or } (they delimit the hash tag)",
            ));
        }
        Ok(())
    }

    /// The policy applied when neither the key nor the request names another.
    pub fn default_policy(&self) -> Result<Policy, ConfigError> {
        Policy::from_rate(self.capacity, self.refill_per_sec)
            .map_err(|e| ConfigError::Invalid { setting: "capacity/refill_per_sec".into(), reason: e.to_string() })
    }

    /// The `[policies.*]` tables as policies, keyed by name.
    pub fn named_policies(&self) -> Result<HashMap<String, Policy>, ConfigError> {
        self.policies
            .iter()
            .map(|(name, p)| {
                let setting = format!("policies.{name}");
                // Names go inside a structured-field string in `RateLimit`; a plain token alphabet keeps it valid.
                let well_formed = !name.is_empty()
                    && name.len() <= 64
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                if !well_formed {
                    return Err(ConfigError::Invalid {
                        setting,
                        reason: "policy names are 1 to 64 characters of A-Z a-z 0-9 - _ .".into(),
                    });
                }
                if RESERVED_POLICY_NAMES.contains(&name.as_str()) {
                    return Err(ConfigError::Invalid {
                        setting,
                        reason: format!("`{name}` is reserved for the service's own policies"),
                    });
                }
                Policy::from_rate(p.capacity, p.refill_per_sec)
                    .map(|policy| (name.clone(), policy))
                    .map_err(|e| ConfigError::Invalid { setting, reason: e.to_string() })
            })
            .collect()
    }

    /// A view that prints every setting with secrets hidden: what the start-up log shows.
    pub fn redacted(&self) -> Redacted<'_> {
        Redacted(self)
    }
}

/// Printed as the redacted view, so a `{:?}` of the state never shows a password or the token.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in self.redacted().entries() {
            map.entry(&name, &value);
        }
        map.finish()
    }
}
