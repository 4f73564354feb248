//! PostgreSQL for tests: a throw-away schema per test, and raw row access behind the store's back.
//!
//! Every test works in its own schema `t_<uuid>` (the store's `schema` setting), so tests never see each other's
//! rows or an earlier run's; dropping the `TestSchema` removes it, panics included. To make PostgreSQL fail, put a
//! [`crate::FaultProxy`] in front of it and point the store at [`redirect`]'s URL.

use std::net::SocketAddr;
use std::time::Duration;

use bucket_store::postgres::{PostgresConfig, PostgresStore};
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use diesel::{OptionalExtension, QueryableByName};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

/// `BUCKET_TEST_DATABASE_URL`, or the server every project machine runs.
pub fn database_url() -> String {
    std::env::var("BUCKET_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// One `rate_limits` row exactly as stored, with the system columns that show whether it was rewritten.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct RawRow {
    #[diesel(sql_type = Integer)]
    pub tokens: i32,
    #[diesel(sql_type = BigInt)]
    pub last_refill_us: i64,
    #[diesel(sql_type = BigInt)]
    pub version: i64,
    /// The transaction that wrote this row version: unchanged iff the row was not written.
    #[diesel(sql_type = Text)]
    pub xmin: String,
    /// The row version's physical location: a rewrite moves it.
    #[diesel(sql_type = Text)]
    pub ctid: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// A column as `information_schema` describes it.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Column {
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub data_type: String,
    #[diesel(sql_type = Nullable<Integer>)]
    pub max_length: Option<i32>,
    #[diesel(sql_type = Text)]
    pub nullable: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub default: Option<String>,
}

/// A fresh schema and a store configuration pointing at it.
pub struct TestSchema {
    /// `t_<uuid>`.
    pub name: String,
    /// The store settings for this schema; tests adjust timeouts on a clone.
    pub config: PostgresConfig,
}

impl TestSchema {
    /// A new, not yet created, schema name (the store creates it on connect).
    pub fn new() -> Self {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut config = PostgresConfig::new(database_url());
        config.schema = Some(name.clone());
        // Generous bounds: the machine is shared, and these tests assert exact counts, not latency.
        config.connect_timeout = Duration::from_secs(10);
        config.statement_timeout = Duration::from_secs(10);
        // Tests run side by side against one server (max_connections 100), several stores each: every store gets
        // the share an operator would give each of several instances, not the single-instance default.
        config.pool_size = 8;
        Self { name, config }
    }

    /// A connected store (migrations applied) on this schema.
    pub async fn store(&self) -> PostgresStore {
        PostgresStore::connect(self.config.clone()).await.expect("connect to the test database")
    }

    /// The database URL leading through `proxy` instead of straight to the server.
    pub fn url_via(&self, proxy: SocketAddr) -> String {
        redirect(&database_url(), proxy).0
    }

    /// A plain connection whose `search_path` is this schema, for looking behind the store's back.
    pub async fn sql(&self) -> AsyncPgConnection {
        let mut conn = AsyncPgConnection::establish(&database_url()).await.expect("connect to the test database");
        conn.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {0}; SET search_path TO {0}", self.name))
            .await
            .expect("select the test schema");
        conn
    }

    /// The raw row of `key`, if any.
    pub async fn row(&self, key: &str) -> Option<RawRow> {
        diesel::sql_query(
            "SELECT tokens, floor(extract(epoch FROM last_refill_time) * 1000000)::bigint AS last_refill_us, \
             version, xmin::text AS xmin, ctid::text AS ctid FROM rate_limits WHERE user_id = $1",
        )
        .bind::<Text, _>(key)
        .get_result::<RawRow>(&mut self.sql().await)
        .await
        .optional()
        .expect("read a row")
    }

    /// Writes a row directly, as a seed deployment or an earlier decision would have left it.
    pub async fn put_row(&self, key: &str, tokens: u64, last_refill_us: u64, version: u64) {
        diesel::sql_query(
            "INSERT INTO rate_limits (user_id, tokens, last_refill_time, version) \
             VALUES ($1, $2, TIMESTAMPTZ 'epoch' + $3 * INTERVAL '1 microsecond', $4)",
        )
        .bind::<Text, _>(key)
        .bind::<Integer, _>(i32::try_from(tokens).unwrap())
        .bind::<BigInt, _>(i64::try_from(last_refill_us).unwrap())
        .bind::<BigInt, _>(i64::try_from(version).unwrap())
        .execute(&mut self.sql().await)
        .await
        .expect("insert a row");
    }

    /// `SELECT count(*)` of any query's rows.
    pub async fn count(&self, from_where: &str) -> i64 {
        diesel::sql_query(format!("SELECT count(*) AS n FROM {from_where}"))
            .get_result::<Count>(&mut self.sql().await)
            .await
            .expect("count")
            .n
    }

    /// A table's columns in order.
    pub async fn columns(&self, table: &str) -> Vec<Column> {
        diesel::sql_query(
            "SELECT column_name::text AS name, data_type::text AS data_type, \
             character_maximum_length::int AS max_length, is_nullable::text AS nullable, \
             column_default::text AS default FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
        )
        .bind::<Text, _>(&self.name)
        .bind::<Text, _>(table)
        .load::<Column>(&mut self.sql().await)
        .await
        .expect("list columns")
    }
}

impl Default for TestSchema {
    fn default() -> Self {
        Self::new()
    }
}

/// Removes the schema and everything in it, also when the test panicked.
impl Drop for TestSchema {
    fn drop(&mut self) {
        // Drop cannot await, and may run on a runtime thread: a thread with its own runtime does the work.
        let statement = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut conn = AsyncPgConnection::establish(&database_url()).await.ok()?;
                conn.batch_execute(&statement).await.ok()
            })
        });
        // Best effort: a schema left behind by a lost server collides with nothing (names are random).
        let _ = cleanup.join();
    }
}

/// `url` with its host and port replaced by `addr`; also returns the original `host:port`.
pub fn redirect(url: &str, addr: SocketAddr) -> (String, String) {
    let mut parsed = url::Url::parse(url).expect("a postgres:// URL");
    let upstream = host_port(&parsed, 5432);
    parsed.set_host(Some(&addr.ip().to_string())).expect("an address is a valid host");
    parsed.set_port(Some(addr.port())).expect("a URL with a host takes a port");
    (parsed.to_string(), upstream)
}

/// The URL's `host:port`, with `default_port` when it names none.
pub(crate) fn host_port(url: &url::Url, default_port: u16) -> String {
    format!("{}:{}", url.host_str().expect("a URL with a host"), url.port().unwrap_or(default_port))
}

/// The `host:port` PostgreSQL listens on: what a [`crate::FaultProxy`] in front of it forwards to.
pub fn upstream() -> String {
    redirect(&database_url(), SocketAddr::from(([127, 0, 0, 1], 0))).1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_swaps_host_and_port_and_keeps_the_rest() {
        let proxy = SocketAddr::from(([127, 0, 0, 1], 7000));
        let (url, upstream) = redirect("postgres://postgres:pw@db.example/test?sslmode=disable", proxy);
        assert_eq!(url, "postgres://postgres:pw@127.0.0.1:7000/test?sslmode=disable");
        assert_eq!(upstream, "db.example:5432");
        assert_eq!(redirect("postgres://[::1]:5433/t", proxy).1, "[::1]:5433");
    }
}
