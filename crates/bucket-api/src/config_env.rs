//! The environment as a configuration layer: the one table from variable names to configuration keys.
//!
//! The names users and scripts rely on follow no single prefix rule (`DATABASE_URL`, `REDIS_URL`,
//! `BUCKET_REDIS_TIMEOUT_MS` for `[redis] command_timeout_ms`), so each is mapped explicitly, here and nowhere else.
//! Values enter as text; `Config::load` converts them to numbers and booleans where the field wants one, and a
//! value that does not fit is reported with its variable's name.

use std::collections::HashMap;

use figment::value::{Dict, Empty, Map, Tag, Value};
use figment::{Metadata, Profile, Provider};

/// The name figment gives this layer, by which `Config::load` recognises errors to blame on a variable.
pub const SOURCE: &str = "environment variable";

/// How a variable's text becomes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// Surrounding whitespace dropped (`" 30"` is 30).
    Trimmed,
    /// Taken as is: a secret or a prefix may end in a space on purpose.
    Verbatim,
    /// Empty means unset, overriding the file too: the shell idiom for turning a feature off.
    EmptyUnsets,
    /// Comma-separated, blank entries skipped.
    List,
}

/// Every variable the service reads, the key it sets (`section.key` for `[section] key`), and how it is read.
const VARIABLES: &[(&str, &str, Form)] = &[
    ("BUCKET_LISTEN", "listen", Form::Trimmed),
    ("BUCKET_STORE", "store", Form::Trimmed),
    ("DATABASE_URL", "database_url", Form::Trimmed),
    ("REDIS_URL", "redis_url", Form::Trimmed),
    ("BUCKET_CAPACITY", "capacity", Form::Trimmed),
    ("BUCKET_REFILL_PER_SEC", "refill_per_sec", Form::Trimmed),
    ("BUCKET_ADMIN_TOKEN", "admin_token", Form::EmptyUnsets),
    ("BUCKET_FAILURE_MODE", "failure_mode", Form::Trimmed),
    ("BUCKET_LOG_LEVEL", "log_level", Form::Trimmed),
    ("BUCKET_LOG_FORMAT", "log_format", Form::Trimmed),
    ("BUCKET_USER_HEADER", "user_header", Form::Trimmed),
    ("BUCKET_PEER_FALLBACK", "peer_fallback", Form::Trimmed),
    ("BUCKET_MAX_BODY_BYTES", "max_body_bytes", Form::Trimmed),
    ("BUCKET_WORKERS", "workers", Form::Trimmed),
    ("BUCKET_EVICT_INTERVAL_MS", "evict_interval_ms", Form::Trimmed),
    ("BUCKET_TRUSTED_PROXIES", "trusted_proxies", Form::List),
    ("BUCKET_IPV6_PREFIX", "ipv6_prefix", Form::Trimmed),
    ("BUCKET_PG_POOL_SIZE", "postgres.pool_size", Form::Trimmed),
    ("BUCKET_PG_CONNECT_TIMEOUT_MS", "postgres.connect_timeout_ms", Form::Trimmed),
    ("BUCKET_PG_STATEMENT_TIMEOUT_MS", "postgres.statement_timeout_ms", Form::Trimmed),
    ("BUCKET_PG_SCHEMA", "postgres.schema", Form::EmptyUnsets),
    ("BUCKET_PG_TLS_CA_FILE", "postgres.tls_ca_file", Form::EmptyUnsets),
    ("BUCKET_PG_PRUNE_INTERVAL_MS", "postgres.prune_interval_ms", Form::Trimmed),
    ("BUCKET_PG_PRUNE_BATCH_SIZE", "postgres.prune_batch_size", Form::Trimmed),
    ("BUCKET_REDIS_POOL_SIZE", "redis.pool_size", Form::Trimmed),
    ("BUCKET_REDIS_TIMEOUT_MS", "redis.command_timeout_ms", Form::Trimmed),
    ("BUCKET_REDIS_CONNECT_TIMEOUT_MS", "redis.connect_timeout_ms", Form::Trimmed),
    ("BUCKET_REDIS_KEY_PREFIX", "redis.key_prefix", Form::Verbatim),
    ("BUCKET_REDIS_TLS_CA_FILE", "redis.tls_ca_file", Form::EmptyUnsets),
    ("BUCKET_REDIS_MODE", "redis.mode", Form::Trimmed),
    ("BUCKET_REDIS_SENTINEL_MASTER", "redis.sentinel_master", Form::EmptyUnsets),
    ("BUCKET_REDIS_WAIT_REPLICAS", "redis.wait_replicas", Form::Trimmed),
    ("BUCKET_WRITE_MODE", "tiered.write_mode", Form::Trimmed),
    ("BUCKET_FLUSH_INTERVAL_MS", "tiered.flush_interval_ms", Form::Trimmed),
    ("BUCKET_RETRY_INTERVAL_MS", "tiered.retry_interval_ms", Form::Trimmed),
    ("BUCKET_WRITE_QUEUE_CAPACITY", "tiered.queue_capacity", Form::Trimmed),
    ("BUCKET_COMMIT_WINDOW_US", "tiered.commit_window_us", Form::Trimmed),
    ("BUCKET_POLICY_CACHE_TTL_MS", "tiered.policy_cache_ttl_ms", Form::Trimmed),
    ("BUCKET_REFUSAL_CACHE_TTL_MS", "tiered.refusal_cache_ttl_ms", Form::Trimmed),
    ("BUCKET_LIMITS", "rls.limits", Form::EmptyUnsets),
    ("BUCKET_GRPC_LISTEN", "rls.grpc_listen", Form::Trimmed),
    ("BUCKET_SHADOW_MODE", "rls.shadow_mode", Form::Trimmed),
    ("BUCKET_RLS_RESPONSE_HEADERS", "rls.response_headers", Form::Trimmed),
];

/// Variables whose values are secret: an error about them never repeats the value.
const SECRET: &[&str] = &["DATABASE_URL", "REDIS_URL", "BUCKET_ADMIN_TOKEN"];

/// Every (variable, key) pair the service reads, for documentation and tests.
pub fn variables() -> impl Iterator<Item = (&'static str, &'static str)> {
    VARIABLES.iter().map(|&(var, key, _)| (var, key))
}

/// The variable that sets `key` (`postgres.pool_size`), if any.
pub fn variable_for(key: &str) -> Option<&'static str> {
    VARIABLES.iter().find(|&&(_, k, _)| k == key).map(|&(var, _, _)| var)
}

/// `value` of `var` as an error message may show it.
pub fn printable(var: &str, value: &str) -> String {
    if SECRET.contains(&var) {
        "<redacted>".to_owned()
    } else {
        value.to_owned()
    }
}

/// The variables of [`VARIABLES`] found in a map, as a figment layer; the rest of the map is ignored.
pub struct EnvLayer<'a>(pub &'a HashMap<String, String>);

impl Provider for EnvLayer<'_> {
    fn metadata(&self) -> Metadata {
        Metadata::named(SOURCE).interpolater(|_: &Profile, keys: &[&str]| {
            let key = keys.join(".");
            variable_for(&key).map_or(key, str::to_owned)
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut root = Dict::new();
        for &(var, key, form) in VARIABLES {
            let Some(text) = self.0.get(var) else { continue };
            let value = match form {
                Form::Trimmed => Value::from(text.trim()),
                Form::Verbatim => Value::from(text.as_str()),
                Form::EmptyUnsets if text.trim().is_empty() => Value::Empty(Tag::Default, Empty::None),
                Form::EmptyUnsets => Value::from(text.as_str()),
                Form::List => Value::from(
                    text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(Value::from).collect::<Vec<_>>(),
                ),
            };
            match key.split_once('.') {
                Some((section, field)) => {
                    let section = root.entry(section.to_owned()).or_insert_with(|| Value::from(Dict::new()));
                    if let Value::Dict(_, fields) = section {
                        fields.insert(field.to_owned(), value);
                    }
                }
                None => {
                    root.insert(key.to_owned(), value);
                }
            }
        }
        Ok(Profile::Default.collect(root))
    }
}
