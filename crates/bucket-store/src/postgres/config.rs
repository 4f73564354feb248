//! How to reach PostgreSQL and how long to wait for it: the `[postgres]` part of the service's configuration.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Where the PostgreSQL store connects and the bounds on every operation, read once at start.
///
/// In configuration files the timeouts are whole milliseconds (`statement_timeout = 1000`) or a string with a
/// unit (`"1s"`, `"250ms"`).
#[derive(Clone, Deserialize)]
pub struct PostgresConfig {
    /// A libpq-style URL or key=value string, e.g. `postgres://postgres@127.0.0.1:5432/test`.
    pub url: String,
    /// Most connections the pool opens; checks beyond that wait for a free one (within `connect_timeout`).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Longest wait for a pooled connection, including opening a new one; also bounds the start-up connection.
    #[serde(default = "default_connect_timeout", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Longest a single statement may run (lock waits included), enforced by the client and by the server.
    #[serde(default = "default_statement_timeout", deserialize_with = "duration")]
    pub statement_timeout: Duration,
    /// A schema to keep the tables in instead of the URL's `search_path` (created if missing); tests use one each.
    #[serde(default)]
    pub schema: Option<String>,
    /// PEM file of the CA(s) the server's certificate must chain to (a private CA); without it the system's roots.
    /// Setting it makes `verify-full` the default `sslmode` (see `postgres/tls.rs` for every mode).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
}

fn default_pool_size() -> usize {
    16
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_statement_timeout() -> Duration {
    Duration::from_secs(1)
}

impl PostgresConfig {
    /// The defaults (16 connections, 2 s to connect, 1 s per statement, the URL's own schema) for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: default_pool_size(),
            connect_timeout: default_connect_timeout(),
            statement_timeout: default_statement_timeout(),
            schema: None,
            tls_ca_file: None,
        }
    }

    /// The URL with its password replaced by `***`, for the configuration printed at start and for logs.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }
}

/// Printed at start: everything but the password.
impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.redacted_url())
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("schema", &self.schema)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

/// Hides the password of both URL (`postgres://user:secret@host`, `?password=`) and key=value (`password=secret`)
/// forms.
fn redact(url: &str) -> String {
    crate::redact::redact_url(url)
}

/// A timeout as configuration files write it.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Millis(u64),
    Text(String),
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    match RawDuration::deserialize(deserializer)? {
        RawDuration::Millis(ms) => Ok(Duration::from_millis(ms)),
        RawDuration::Text(text) => parse_duration(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("invalid duration {text:?}: use milliseconds, \"250ms\" or \"2s\""))
        }),
    }
}

fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.trim().parse().ok().map(Duration::from_millis);
    }
    let secs: f64 = text.strip_suffix('s')?.trim().parse().ok()?;
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_to_missing_fields() {
        let c: PostgresConfig = serde_json::from_str(r#"{"url": "postgres://u@h/db"}"#).unwrap();
        assert_eq!(c.pool_size, 16);
        assert_eq!(c.statement_timeout, Duration::from_secs(1));
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.schema, None);
    }

    #[test]
    fn timeouts_accept_millis_and_units() {
        let c: PostgresConfig =
            serde_json::from_str(r#"{"url": "x", "statement_timeout": 250, "connect_timeout": "1.5s", "schema": "s"}"#)
                .unwrap();
        assert_eq!(c.statement_timeout, Duration::from_millis(250));
        assert_eq!(c.connect_timeout, Duration::from_millis(1500));
        assert_eq!(parse_duration("40ms"), Some(Duration::from_millis(40)));
        assert_eq!(parse_duration("soon"), None);
        assert!(serde_json::from_str::<PostgresConfig>(r#"{"url": "x", "statement_timeout": "-1s"}"#).is_err());
    }

    #[test]
    fn passwords_never_print() {
        assert_eq!(redact("postgres://bob:s3cr@t@db:5432/x"), "postgres://bob:***@db:5432/x");
        assert_eq!(redact("postgres://bob@db/x"), "postgres://bob@db/x");
        assert_eq!(redact("host=db password=hunter2 user=bob"), "host=db password=*** user=bob");
        let debug = format!("{:?}", PostgresConfig::new("postgres://a:pw@h/d"));
        assert!(!debug.contains("pw@"), "{debug}");
    }
}
