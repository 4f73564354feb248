//! The service's one typed configuration, read once at start: defaults, then a TOML file, then `BUCKET_*` variables.
//!
//! Nothing reads the environment after start: `Config::load` takes the variables as a map, so tests pass their own
//! and the process environment is consulted only by `main`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use bucket_core::Policy;
use serde::Deserialize;

use crate::identity::{parse_cidr_list, Cidr};
use crate::store_settings::{PostgresSettings, RedisSettings, StoreSettings, TieredSettings};

/// Why the configuration cannot be used; each message names the setting (and variable or file) to fix, and never
/// repeats its `source()`.
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
    #[error("invalid config file {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and why parsing failed.
        source: Box<toml::de::Error>,
    },
    /// An environment variable holds a value of the wrong form.
    #[error("invalid {var}={value:?}: {reason}")]
    Env {
        /// The variable's name.
        var: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// A setting parsed but makes no sense (zero capacity, unknown log level, missing URL for the chosen store).
    #[error("invalid setting `{setting}`: {reason}")]
    Invalid {
        /// The setting's name as it appears in the TOML file.
        setting: String,
        /// What is wrong and what would be accepted.
        reason: String,
    },
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

impl FromStr for StoreKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "memory" => Ok(StoreKind::Memory),
            "postgres" => Ok(StoreKind::Postgres),
            "redis" => Ok(StoreKind::Redis),
            "tiered" => Ok(StoreKind::Tiered),
            _ => Err("expected one of memory, postgres, redis, tiered".into()),
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

impl FromStr for FailureMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fail_open" => Ok(FailureMode::FailOpen),
            "fail_closed" => Ok(FailureMode::FailClosed),
            _ => Err("expected fail_open or fail_closed".into()),
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

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            _ => Err("expected json or text".into()),
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// Bearer token for admin routes (`BUCKET_ADMIN_TOKEN`); none turns them off.
    pub admin_token: Option<String>,
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
    /// `[postgres]`: pool and statement bounds.
    pub postgres: PostgresSettings,
    /// `[redis]`: pool, command timeout, key prefix.
    pub redis: RedisSettings,
    /// `[tiered]`: write mode, queue, policy cache.
    pub tiered: TieredSettings,
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
            postgres: PostgresSettings::default(),
            redis: RedisSettings::default(),
            tiered: TieredSettings::default(),
        }
    }
}

/// Policy names the service itself puts in the `RateLimit` headers, so no configured policy may take them.
pub const RESERVED_POLICY_NAMES: [&str; 2] = ["default", "user"];

/// Parses one environment variable's value, naming the variable when it does not fit.
pub(crate) fn parse_env<T: FromStr>(var: &'static str, value: &str) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    value.trim().parse::<T>().map_err(|e| ConfigError::Env { var, value: value.into(), reason: e.to_string() })
}

impl Config {
    /// Defaults, overridden by the TOML file at `path` if given, overridden by the variables in `env`; validated.
    pub fn load(path: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => Self::from_toml_file(path)?,
            None => Self::default(),
        };
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text over the defaults (no validation, no environment).
    pub fn from_toml_str(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::from_toml_str(&text)
            .map_err(|source| ConfigError::Parse { path: path.to_path_buf(), source: source.into() })
    }

    /// Overrides settings from the variables DESIGN.md §3 names; unrelated variables are ignored.
    pub fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        for (var, value) in env {
            match var.as_str() {
                "BUCKET_LISTEN" => self.listen = value.clone(),
                "BUCKET_STORE" => self.store = parse_env("BUCKET_STORE", value)?,
                "DATABASE_URL" => self.database_url = Some(value.clone()),
                "REDIS_URL" => self.redis_url = Some(value.clone()),
                "BUCKET_CAPACITY" => self.capacity = parse_env("BUCKET_CAPACITY", value)?,
                "BUCKET_REFILL_PER_SEC" => self.refill_per_sec = parse_env("BUCKET_REFILL_PER_SEC", value)?,
                // An empty token in the environment means "unset", the usual shell idiom for turning a feature off.
                "BUCKET_ADMIN_TOKEN" => self.admin_token = Some(value.clone()).filter(|t| !t.is_empty()),
                "BUCKET_FAILURE_MODE" => self.failure_mode = parse_env("BUCKET_FAILURE_MODE", value)?,
                "BUCKET_LOG_LEVEL" => self.log_level = value.trim().to_string(),
                "BUCKET_LOG_FORMAT" => self.log_format = parse_env("BUCKET_LOG_FORMAT", value)?,
                "BUCKET_USER_HEADER" => self.user_header = value.trim().to_string(),
                "BUCKET_PEER_FALLBACK" => self.peer_fallback = parse_env("BUCKET_PEER_FALLBACK", value)?,
                "BUCKET_TRUSTED_PROXIES" => {
                    self.trusted_proxies = parse_cidr_list(value).map_err(|e| ConfigError::Env {
                        var: "BUCKET_TRUSTED_PROXIES",
                        value: value.clone(),
                        reason: e.to_string(),
                    })?
                }
                "BUCKET_IPV6_PREFIX" => self.ipv6_prefix = parse_env("BUCKET_IPV6_PREFIX", value)?,
                "BUCKET_MAX_BODY_BYTES" => self.max_body_bytes = parse_env("BUCKET_MAX_BODY_BYTES", value)?,
                "BUCKET_WORKERS" => self.workers = parse_env("BUCKET_WORKERS", value)?,
                "BUCKET_EVICT_INTERVAL_MS" => self.evict_interval_ms = parse_env("BUCKET_EVICT_INTERVAL_MS", value)?,
                _ => {}
            }
        }
        let mut stores = self.stores();
        stores.apply_env(env)?;
        StoreSettings { postgres: self.postgres, redis: self.redis, tiered: self.tiered } = stores;
        Ok(())
    }

    /// The `[postgres]`, `[redis]` and `[tiered]` sections together, which `stores.rs` turns into adapters.
    pub fn stores(&self) -> StoreSettings {
        StoreSettings { postgres: self.postgres.clone(), redis: self.redis.clone(), tiered: self.tiered.clone() }
    }

    /// Checks every setting once, so a bad value stops the process at start with its name instead of failing later.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting: &str, reason: String| ConfigError::Invalid { setting: setting.into(), reason };
        if self.listen.trim().is_empty() {
            return Err(invalid("listen", "must be host:port".into()));
        }
        self.default_policy()?;
        self.named_policies()?;
        if slog::Level::from_str(&self.log_level).is_err() {
            return Err(invalid(
                "log_level",
                format!("unknown level {:?}; use critical, error, warn, info, debug or trace", self.log_level),
            ));
        }
        if actix_web::http::header::HeaderName::from_str(&self.user_header).is_err() {
            return Err(invalid("user_header", format!("{:?} is not a valid HTTP header name", self.user_header)));
        }
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
        if matches!(self.admin_token.as_deref(), Some("")) {
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
        self.stores().validate()
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

/// [`Config`] with the admin token and URL passwords hidden, for logs; `Display` prints one `key = value` per line.
pub struct Redacted<'a>(&'a Config);

impl Redacted<'_> {
    /// Every setting as (name, printable value), in the order of the configuration table.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let c = self.0;
        let url = |u: &Option<String>| u.as_deref().map_or_else(|| "none".to_string(), redact_url);
        let policies = if c.policies.is_empty() {
            "none".to_string()
        } else {
            c.policies
                .iter()
                .map(|(name, p)| format!("{name}: capacity {} refill_per_sec {}", p.capacity, p.refill_per_sec))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let trusted_proxies = if c.trusted_proxies.is_empty() {
            "none (forwarding headers ignored)".to_string()
        } else {
            c.trusted_proxies.iter().map(Cidr::to_string).collect::<Vec<_>>().join(", ")
        };
        vec![
            ("listen", c.listen.clone()),
            ("store", c.store.as_str().into()),
            ("database_url", url(&c.database_url)),
            ("redis_url", url(&c.redis_url)),
            ("capacity", c.capacity.to_string()),
            ("refill_per_sec", c.refill_per_sec.to_string()),
            ("admin_token", if c.admin_token.is_some() { "<redacted>" } else { "none (admin routes off)" }.into()),
            ("failure_mode", c.failure_mode.as_str().into()),
            ("log_level", c.log_level.clone()),
            ("log_format", c.log_format.as_str().into()),
            ("user_header", c.user_header.clone()),
            ("peer_fallback", c.peer_fallback.to_string()),
            ("trusted_proxies", trusted_proxies),
            ("ipv6_prefix", c.ipv6_prefix.to_string()),
            ("max_body_bytes", c.max_body_bytes.to_string()),
            ("workers", c.workers.to_string()),
            ("evict_interval_ms", c.evict_interval_ms.to_string()),
            ("policies", policies),
        ]
        .into_iter()
        .chain(c.stores().entries())
        .collect()
    }
}

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, value) in self.entries() {
            writeln!(f, "{name} = {value}")?;
        }
        Ok(())
    }
}

impl slog::KV for Redacted<'_> {
    fn serialize(&self, _record: &slog::Record<'_>, serializer: &mut dyn slog::Serializer) -> slog::Result {
        for (name, value) in self.entries() {
            serializer.emit_str(name, &value)?;
        }
        Ok(())
    }
}

/// Hides every password in a connection string (see [`bucket_store::redact::redact_url`], the one implementation
/// the stores' own log lines use too).
pub fn redact_url(url: &str) -> String {
    bucket_store::redact::redact_url(url)
}
