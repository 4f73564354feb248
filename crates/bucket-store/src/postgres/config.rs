//! How to reach PostgreSQL and how long to wait for it: the `[postgres]` part of the service's configuration.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Where the PostgreSQL store connects and the bounds on every operation, read once at start.
///
/// As the `[postgres]` section of the service's configuration every field is optional (defaults below) and unknown
/// keys are refused; timeouts are whole milliseconds (`statement_timeout_ms = 1000`).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// A libpq-style URL or key=value string, e.g. `postgres://postgres@127.0.0.1:5432/test`. Not part of the
    /// `[postgres]` section: the service reads it from `database_url` (`DATABASE_URL`).
    #[serde(skip)]
    pub url: String,
    /// Most connections the pool opens; checks beyond that wait for a free one (within `connect_timeout`).
    pub pool_size: usize,
    /// Longest wait for a pooled connection, including opening a new one; also bounds the start-up connection.
    #[serde(rename = "connect_timeout_ms", deserialize_with = "crate::millis::deserialize")]
    pub connect_timeout: Duration,
    /// Longest a single statement may run (lock waits included), enforced by the client and by the server.
    #[serde(rename = "statement_timeout_ms", deserialize_with = "crate::millis::deserialize")]
    pub statement_timeout: Duration,
    /// A schema to keep the tables in instead of the URL's `search_path` (created if missing); tests use one each.
    pub schema: Option<String>,
    /// PEM file of the CA(s) the server's certificate must chain to (a private CA); without it the system's roots.
    /// Setting it makes `verify-full` the default `sslmode` (see `postgres/tls.rs` for every mode).
    pub tls_ca_file: Option<PathBuf>,
    /// How often the pruner deletes the rows of refilled buckets (`postgres/prune.rs`); 0 turns it off. A row goes
    /// within about this long after its bucket is full.
    #[serde(rename = "prune_interval_ms", deserialize_with = "crate::millis::deserialize")]
    pub prune_interval: Duration,
    /// Most rows one pruning statement deletes: small batches hold few row locks, briefly.
    pub prune_batch_size: usize,
}

/// The defaults with no URL yet: what a `[postgres]` section leaves unset.
impl Default for PostgresConfig {
    fn default() -> Self {
        Self::new("")
    }
}

impl PostgresConfig {
    /// The defaults (32 connections, 2 s to connect, 1 s per statement, the URL's own schema, pruning every 10 s in
    /// batches of 1000) for `url`.
    ///
    /// 32 connections measured fastest for one instance serving 32 concurrent checks, ahead of 16 and 64
    /// (docs/perf.md section 8): a check holds its connection for a whole round trip, so fewer sessions than
    /// checks in flight leave PostgreSQL idle while checks queue for the pool. Every instance may open its whole
    /// pool, so instances × `pool_size` must fit the server's `max_connections` (3 instances at the default 100);
    /// the service logs how many fit at start and warns when its own pool does not.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 32,
            connect_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(1),
            schema: None,
            tls_ca_file: None,
            prune_interval: Duration::from_secs(10),
            prune_batch_size: 1000,
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
            .field("prune_interval", &self.prune_interval)
            .field("prune_batch_size", &self.prune_batch_size)
            .finish()
    }
}

/// Hides the password of both URL (`postgres://user:secret@host`, `?password=`) and key=value (`password=secret`)
/// forms.
fn redact(url: &str) -> String {
    crate::redact::redact_url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_fills_what_it_leaves_out_and_refuses_unknown_keys() {
        let c: PostgresConfig = serde_json::from_str(r#"{"statement_timeout_ms": 250, "schema": "s"}"#).unwrap();
        assert_eq!(
            c,
            PostgresConfig {
                statement_timeout: Duration::from_millis(250),
                schema: Some("s".into()),
                ..PostgresConfig::default()
            }
        );
        assert_eq!((c.pool_size, c.connect_timeout), (32, Duration::from_secs(2)));
        assert!(serde_json::from_str::<PostgresConfig>(r#"{"statement_timeout": 250}"#).is_err(), "unit in the name");
        assert!(serde_json::from_str::<PostgresConfig>(r#"{"statement_timeout_ms": "1s"}"#).is_err(), "one grammar");
        assert!(serde_json::from_str::<PostgresConfig>(r#"{"url": "postgres://h/d"}"#).is_err(), "url is not a key");
    }

    #[test]
    fn passwords_never_print() {
        assert_eq!(redact("postgres://bob:s3cr@t@db:5432/x"), "postgres://bob:***@db:5432/x");
        assert_eq!(redact("postgres://bob@db/x"), "postgres://bob@db/x");
        assert_eq!(redact("host=db password=hunter2 user=bob"), "host=db user=bob password=***");
        let debug = format!("{:?}", PostgresConfig::new("postgres://a:pw@h/d"));
        assert!(!debug.contains("pw@"), "{debug}");
    }
}
