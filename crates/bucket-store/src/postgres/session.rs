//! Opening connections (the pool's and the one that migrates) and applying the embedded migrations.

use std::sync::Arc;

use diesel::sql_types::Text;
use diesel::ConnectionResult;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::errors;
use super::tls::Tls;
use super::PostgresConfig;
use crate::StoreError;

/// `migrations/` at the repository root, compiled in so a deployed binary carries its schema.
const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// What every new session is set up with before its first statement.
#[derive(Clone)]
pub(super) struct SessionSetup {
    /// `SET statement_timeout` in ms; `None` for the migrating session, whose DDL may legitimately take long.
    pub statement_timeout_ms: Option<u64>,
    /// The quoted schema to put first (and only) on the `search_path`.
    pub schema: Option<String>,
    /// How to connect (URL, `sslmode`, certificate checks): the same for the pool and the migrating session.
    pub tls: Arc<Tls>,
}

impl SessionSetup {
    /// The pool's sessions: the server enforces the same statement bound as the client.
    pub(super) fn for_pool(config: &PostgresConfig, tls: Arc<Tls>) -> Result<Self, StoreError> {
        // Rounded up: a sub-millisecond timeout must not become PostgreSQL's 0, which means "no limit".
        let ms = config.statement_timeout.as_micros().div_ceil(1000);
        let ms = u64::try_from(ms).map_err(|_| errors::backend("statement_timeout is too large"))?;
        Ok(Self {
            statement_timeout_ms: Some(ms),
            schema: config.schema.as_deref().map(quote_identifier).transpose()?,
            tls,
        })
    }
}

/// `"name"` with inner quotes doubled, so any schema name is one identifier and never SQL.
pub(super) fn quote_identifier(name: &str) -> Result<String, StoreError> {
    // 63 bytes is PostgreSQL's NAMEDATALEN - 1; a longer name would be silently truncated and could collide.
    if name.is_empty() || name.len() > 63 || name.contains('\0') {
        return Err(errors::backend(format!("invalid schema name {name:?}: 1 to 63 bytes, no NUL")));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// Connects (with TLS as `sslmode` says) and applies the session settings; the caller bounds how long this may take.
pub(super) async fn open(setup: &SessionSetup) -> ConnectionResult<AsyncPgConnection> {
    let mut conn = setup.tls.connect().await?;
    let mut settings = String::new();
    if let Some(ms) = setup.statement_timeout_ms {
        settings.push_str(&format!("SET statement_timeout = {ms};"));
    }
    if let Some(schema) = &setup.schema {
        settings.push_str(&format!("SET search_path TO {schema};"));
    }
    // Each prepared statement planned once per session. Left to PostgreSQL (`auto`), the tiered store's array
    // statements kept custom plans, so every execution was planned again, re-parsing the inlined SQL functions (a
    // fifth of PostgreSQL's CPU, docs/perf.md §14). Safe because every statement's generic plan reaches rows through
    // an index, even one planned on an empty table (tests/plans.rs). The migrating session prepares nothing, so it
    // is set there too rather than told apart.
    settings.push_str("SET plan_cache_mode = force_generic_plan;");
    conn.batch_execute(&settings).await.map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}

/// Applies the pending migrations on a thread of its own and returns how many ran.
///
/// diesel's migration harness is synchronous: it blocks on each statement, which would panic inside (or stall)
/// the caller's runtime (actix runs a single-threaded one per worker). The thread owns a small runtime that
/// drives the connection while the harness blocks.
pub(super) async fn migrate(config: &PostgresConfig, tls: Arc<Tls>) -> Result<usize, StoreError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let config = config.clone();
    std::thread::Builder::new()
        .name("bucket-pg-migrate".into())
        .spawn(move || {
            // The receiver is gone only if `connect` itself was cancelled; nobody is left to tell.
            let _ = tx.send(migrate_blocking(&config, tls));
        })
        .map_err(|e| errors::backend(format!("cannot start the migration thread: {e}")))?;
    rx.await.map_err(|_| errors::backend("the migration thread ended without an answer"))?
}

fn migrate_blocking(config: &PostgresConfig, tls: Arc<Tls>) -> Result<usize, StoreError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| errors::backend(format!("cannot start the migration runtime: {e}")))?;
    let schema = config.schema.as_deref().map(quote_identifier).transpose()?;
    let conn = runtime.block_on(async {
        let no_limits = SessionSetup { statement_timeout_ms: None, schema: None, tls };
        let mut conn = tokio::time::timeout(config.connect_timeout, open(&no_limits))
            .await
            .map_err(|_| errors::timeout(config.connect_timeout))?
            .map_err(errors::connection)?;
        // Several instances may start at once: the first migrates while the others wait here, then find nothing
        // pending. The lock is per schema and held by this session until it closes at the end of this function.
        // The wait is bounded so that a start never hangs behind a stuck peer; a long migration by a peer makes
        // this start fail with a transient error, to be retried.
        let lock_key = format!("bucket-migrations:{}", config.schema.as_deref().unwrap_or_default());
        tokio::time::timeout(
            config.connect_timeout + config.statement_timeout,
            diesel::sql_query("SELECT pg_advisory_lock(hashtext($1))").bind::<Text, _>(lock_key).execute(&mut conn),
        )
        .await
        .map_err(|_| errors::timeout(config.connect_timeout + config.statement_timeout))?
        .map_err(|e| errors::query(e, config.statement_timeout))?;
        if let Some(schema) = &schema {
            conn.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema};"))
                .await
                .map_err(|e| errors::query(e, config.statement_timeout))?;
        }
        Ok::<_, StoreError>(conn)
    })?;
    // Inside the runtime's context the wrapper blocks on its handle; the worker thread drives the socket meanwhile.
    let _context = runtime.enter();
    let mut harness = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
    let applied = harness.run_pending_migrations(MIGRATIONS).map_err(|e| migration_error(&*e))?;
    Ok(applied.len())
}

/// A lost connection during migration is worth retrying; a migration the server rejects is not.
///
/// The harness hides the driver's error inside a private type for failures within a migration (those are
/// reported as `Backend` with the server's message); a connection lost between migrations arrives unwrapped.
fn migration_error(error: &(dyn std::error::Error + 'static)) -> StoreError {
    use diesel::result::{DatabaseErrorKind as Kind, Error as QueryError};
    let detail = format!("migrations failed: {error}");
    match error.downcast_ref::<QueryError>() {
        Some(QueryError::DatabaseError(Kind::ClosedConnection | Kind::UnableToSendCommand, _)) => {
            errors::unavailable(detail)
        }
        _ => errors::backend(detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_quoted_not_interpolated() {
        assert_eq!(quote_identifier("t_1").unwrap(), "\"t_1\"");
        assert_eq!(quote_identifier("a\"; DROP TABLE x; --").unwrap(), "\"a\"\"; DROP TABLE x; --\"");
        assert!(quote_identifier("").is_err());
        assert!(quote_identifier(&"x".repeat(64)).is_err());
    }
}
