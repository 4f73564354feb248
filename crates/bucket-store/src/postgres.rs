//! The PostgreSQL store: durable buckets shared by every API instance, each check one atomic SQL statement.
//!
//! Buckets live in the seed's `rate_limits` table (`tokens` whole tokens at `last_refill_time`, plus a `version`
//! that orders writes across tiers); per-key limits in `policies`. The migrations under `migrations/` are embedded
//! and applied by [`PostgresStore::connect`].
//!
//! A check is `decide.sql`: one `INSERT … ON CONFLICT DO UPDATE … WHERE … RETURNING` that creates a new key's row
//! or refills and spends the existing one, computing from the locked row's own columns, on the server's
//! `clock_timestamp()`. That file explains why it cannot over-admit; `bucket_core`'s `refill.rs` holds the same math
//! in Rust, and `tests/cases_postgres.rs` runs the shared case table through the statement to keep them equal.
//!
//! Several buckets decided together (`check_all`) are one transaction that locks their rows in key order:
//! `postgres/all.rs`. States decided elsewhere (the tiered store's Redis) are written by one version-guarded
//! statement for any number of keys, which reports per write whether it landed (`postgres/save.rs`), and loaded one
//! key or many at a time (`postgres/load.rs`).
//!
//! Every statement is its `.sql` file run as a prepared statement that each pooled session parses and plans once
//! (`postgres/prepared.rs`, `postgres/statements.rs`); `tests/prepared.rs` shows the reuse in `pg_prepared_statements`.
//!
//! Every operation is bounded: waiting for a pooled connection (opening one included) by `connect_timeout`, each
//! statement by `statement_timeout` on the client and on the server. A connection that timed out or failed is
//! dropped from the pool rather than reused.

mod all;
mod config;
mod connection_limit;
mod errors;
mod load;
mod notify;
mod plans;
mod prepared;
mod prune;
mod save;
mod session;
mod statements;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use bucket_core::{decide, peek, BucketState, Decision, Policy, Wait};
use diesel::sql_types::{BigInt, Bool, Nullable, Text};
use diesel::{OptionalExtension, QueryResult, QueryableByName};
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use futures::FutureExt;

pub use config::PostgresConfig;
pub use connection_limit::ConnectionLimit;
pub use notify::spawn_listener;
pub use plans::SessionStatement;
pub use prune::{PruneEvent, PruneEvents};
pub use save::Saved;

use prepared::prepared;

use crate::{
    Decided, DependencyHealth, Limit, Outcome, Outcomes, PolicyStore, Source, Store, StoreError, VersionedState,
};

/// A pooled PostgreSQL store; cloning shares the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool<AsyncPgConnection>,
    connect_timeout: Duration,
    statement_timeout: Duration,
    /// Where resets and policy changes are announced to the other instances.
    channel: Arc<notify::Channel>,
    /// The pruner's settings and its count of deleted rows (`postgres/prune.rs`).
    prune: Arc<Pruning>,
}

/// How the pruner runs, and what it deleted so far.
struct Pruning {
    interval: Duration,
    batch_size: usize,
    rows: std::sync::atomic::AtomicU64,
}

/// Shows the pool's state and bounds (never the URL, which may hold a password).
impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresStore")
            .field("connections", &status.size)
            .field("idle", &status.available)
            .field("max", &status.max_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// What `decide.sql` returns for an allowed check.
#[derive(QueryableByName)]
struct DecidedRow {
    #[diesel(sql_type = BigInt)]
    tokens: i64,
    #[diesel(sql_type = BigInt)]
    last_refill_us: i64,
    #[diesel(sql_type = BigInt)]
    version: i64,
    #[diesel(sql_type = Bool)]
    created: bool,
    #[diesel(sql_type = BigInt)]
    now_us: i64,
}

/// What `read.sql` returns: the bucket's columns are `None` when there is no row.
#[derive(QueryableByName)]
struct ReadRow {
    #[diesel(sql_type = Nullable<BigInt>)]
    tokens: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    last_refill_us: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    version: Option<i64>,
    #[diesel(sql_type = BigInt)]
    now_us: i64,
}

#[derive(QueryableByName)]
struct PolicyRow {
    #[diesel(sql_type = BigInt)]
    capacity: i64,
    #[diesel(sql_type = BigInt)]
    interval_us: i64,
}

/// A row of `policies` for [`Store::all_policies`].
#[derive(QueryableByName)]
struct KeyedPolicyRow {
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = BigInt)]
    capacity: i64,
    #[diesel(sql_type = BigInt)]
    interval_us: i64,
}

/// The counter the `policies` trigger bumps (migration 000005).
#[derive(QueryableByName)]
struct VersionRow {
    #[diesel(sql_type = BigInt)]
    version: i64,
}

impl ReadRow {
    /// The stored state, or `None` for a missing row; `now` is the reading's instant.
    fn stored(&self) -> Result<(Option<VersionedState>, u64), StoreError> {
        let now = unsigned(self.now_us, "clock")?;
        let stored = match (self.tokens, self.last_refill_us, self.version) {
            (Some(tokens), Some(last), Some(version)) => Some(VersionedState {
                state: BucketState { tokens: unsigned(tokens, "tokens")?, last_refill_us: unsigned(last, "time")? },
                version: unsigned(version, "version")?,
            }),
            _ => None,
        };
        Ok((stored, now))
    }
}

/// Stored values are never negative when only this store writes them; a negative one was edited by hand.
fn unsigned(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| errors::backend(format!("stored {what} is negative ({value})")))
}

/// Values the statements take as `bigint`; a policy's fields always fit (below 2^53).
fn signed(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| errors::backend(format!("{what} {value} does not fit a bigint")))
}

impl PostgresStore {
    /// Applies the migrations (on a thread of their own) and builds the pool; fails fast, with a transient error,
    /// when the server cannot be reached within `connect_timeout`.
    pub async fn connect(config: PostgresConfig) -> Result<Self, StoreError> {
        if config.pool_size == 0 {
            return Err(errors::backend("pool_size must be at least 1"));
        }
        if config.connect_timeout.is_zero() || config.statement_timeout.is_zero() {
            return Err(errors::backend("connect_timeout and statement_timeout must be above zero"));
        }
        if config.prune_batch_size == 0 {
            return Err(errors::backend("prune_batch_size must be at least 1"));
        }
        let tls = Arc::new(tls::Tls::prepare(&config.url, config.tls_ca_file.as_deref())?);
        let setup = session::SessionSetup::for_pool(&config, tls.clone())?;
        let channel = Arc::new(notify::Channel::new(&config, tls.clone())?);
        session::migrate(&config, tls.clone()).await?;

        let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
        // A closed socket is detected without a round trip (diesel-async checks `is_closed` on recycle); a
        // connection that dies while idle fails its next statement, which drops it, instead of every check paying
        // for a `SELECT 1` first.
        manager_config.recycling_method = RecyclingMethod::Fast;
        manager_config.custom_setup = Box::new(move |url| {
            let setup = setup.clone();
            // `url` is the one below: the setup already holds it, with `sslmode` as the driver reads it.
            let _ = url;
            async move { session::open(&setup).await }.boxed()
        });
        let manager = AsyncDieselConnectionManager::new_with_config(tls.driver_url(), manager_config);
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .build()
            .map_err(|e| errors::backend(format!("cannot build the connection pool: {e}")))?;
        let prune = Arc::new(Pruning {
            interval: config.prune_interval,
            batch_size: config.prune_batch_size,
            rows: Default::default(),
        });
        Ok(Self {
            pool,
            connect_timeout: config.connect_timeout,
            statement_timeout: config.statement_timeout,
            channel,
            prune,
        })
    }

    /// The atomic check at `now_us` (µs since the epoch), or on the server's clock when `None` (production).
    ///
    /// `after` is the state the row now holds: the new one when allowed, the stored one (or a full bucket with
    /// version 0 when there is no row) when refused. `created` is true when this check inserted the row.
    pub async fn decide_at(
        &self,
        key: &str,
        policy: &Policy,
        cost: u64,
        now_us: Option<u64>,
    ) -> Result<Decided, StoreError> {
        // A cost beyond bigint is beyond any capacity: clamping keeps it refused, as it must be.
        let cost_sql = i64::try_from(cost).unwrap_or(i64::MAX);
        let now_sql = now_us.map(|now| signed(now, "now")).transpose()?;
        let (capacity, interval) = (signed(policy.capacity(), "capacity")?, signed(policy.interval_us(), "interval")?);
        let query = prepared::<statements::Decide, _>(|q| {
            q.bind::<Text, _>(key.to_owned())
                .bind::<BigInt, _>(capacity)
                .bind::<BigInt, _>(interval)
                .bind::<BigInt, _>(cost_sql)
                .bind::<Nullable<BigInt>, _>(now_sql)
        });
        let decided = self
            .statement(move |conn| async move { query.get_result::<DecidedRow>(conn).await.optional() }.boxed())
            .await?;
        if let Some(row) = decided {
            let after = VersionedState {
                state: BucketState {
                    tokens: unsigned(row.tokens, "tokens")?,
                    last_refill_us: unsigned(row.last_refill_us, "time")?,
                },
                version: unsigned(row.version, "version")?,
            };
            // `after` is already refilled to `now` and spent, so describing it as it stands is exactly the answer
            // `bucket_core::decide` gave for the state before (the part-token left is below one interval).
            let decision = peek(policy, after.state, unsigned(row.now_us, "clock")?);
            return Ok(Decided { decision, after, created: row.created });
        }

        // Refused: the statement wrote nothing. Read the bucket only to describe it; the decision stands even if
        // the row changed in between.
        let (stored, now) = self.read(key, now_us).await?;
        let after = stored.unwrap_or(VersionedState { state: BucketState::full(policy, now), version: 0 });
        Ok(Decided { decision: refused(policy, after.state, now, cost), after, created: false })
    }

    /// The stored state (if any) and the instant it was read, on the server's clock unless `now_us` is given.
    async fn read(&self, key: &str, now_us: Option<u64>) -> Result<(Option<VersionedState>, u64), StoreError> {
        let now_sql = now_us.map(|now| signed(now, "now")).transpose()?;
        let query =
            prepared::<statements::Read, _>(|q| q.bind::<Text, _>(key.to_owned()).bind::<Nullable<BigInt>, _>(now_sql));
        let row = self.statement(move |conn| query.get_result::<ReadRow>(conn).boxed()).await?;
        row.stored()
    }

    /// A pooled connection within `connect_timeout` (waiting for a free one, or opening one).
    async fn checkout(&self) -> Result<Object<AsyncPgConnection>, StoreError> {
        match tokio::time::timeout(self.connect_timeout, self.pool.get()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(errors::pool(e, self.connect_timeout)),
            Err(_) => Err(errors::timeout(self.connect_timeout)),
        }
    }

    /// Tells every instance listening that `key` changed; best effort (their caches' lifetimes cover a miss).
    async fn announce(&self, key: &str) {
        let query = prepared::<statements::Announce, _>(|q| {
            q.bind::<Text, _>(self.channel.name.clone()).bind::<Text, _>(key.to_owned())
        });
        let _ = self.statement(move |conn| query.execute(conn).boxed()).await;
    }

    /// Runs one statement on a pooled connection: `connect_timeout` for the connection, `statement_timeout` for
    /// the statement. A connection whose statement timed out or lost its socket is taken out of the pool instead
    /// of returned: it may still owe the answer to the abandoned statement, which would delay the next one.
    async fn statement<T, F>(&self, run: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(&'c mut AsyncPgConnection) -> BoxFuture<'c, QueryResult<T>> + Send,
        T: Send,
    {
        let mut conn = self.checkout().await?;
        let error = match tokio::time::timeout(self.statement_timeout, run(&mut conn)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => errors::query(e, self.statement_timeout),
            Err(_) => errors::timeout(self.statement_timeout),
        };
        if error.is_transient() {
            drop(Object::take(conn));
        }
        Err(error)
    }
}

/// The answer for a check the statement refused, described from a state read just after.
fn refused(policy: &Policy, state: BucketState, now: u64, cost: u64) -> Decision {
    let (decision, _) = decide(policy, state, now, cost);
    if !decision.allowed {
        return decision;
    }
    // Tokens arrived (or the row was reset) between the refusal and the read: still a refusal, but "retry now".
    Decision { allowed: false, retry_after: Some(Wait::After(0)), ..peek(policy, state, now) }
}

impl Store for PostgresStore {
    async fn check(&self, key: &str, policy: &Policy, cost: u64) -> Result<Outcome, StoreError> {
        let decided = self.decide_at(key, policy, cost, None).await?;
        let source = if decided.created { Source::NewUser } else { Source::Postgres };
        Ok(Outcome { decision: decided.decision, source })
    }

    async fn check_all(&self, limits: &[Limit<'_>]) -> Result<Outcomes, StoreError> {
        self.check_all_at(limits, None).await
    }

    async fn peek(&self, key: &str, policy: &Policy) -> Result<Outcome, StoreError> {
        let (stored, now) = self.read(key, None).await?;
        let state = stored.map_or_else(|| BucketState::full(policy, now), |v| v.state);
        Ok(Outcome { decision: peek(policy, state, now), source: Source::Postgres })
    }

    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        let query = prepared::<statements::Reset, _>(|q| q.bind::<Text, _>(key.to_owned()));
        self.statement(move |conn| query.execute(conn).boxed()).await?;
        self.announce(key).await;
        Ok(())
    }

    async fn health(&self) -> Vec<DependencyHealth> {
        let answer = self.statement(|conn| diesel::sql_query("SELECT 1").execute(conn).boxed()).await;
        let status = self.pool.status();
        let (up, detail) = match answer {
            Ok(_) => {
                (true, format!("ok; pool {} open, {} idle, max {}", status.size, status.available, status.max_size))
            }
            Err(e) => (false, e.to_string()),
        };
        vec![DependencyHealth { name: errors::BACKEND, up, detail, nodes: Vec::new() }]
    }
}

impl PolicyStore for PostgresStore {
    async fn policy(&self, key: &str) -> Result<Option<Policy>, StoreError> {
        let query = prepared::<statements::PolicyGet, _>(|q| q.bind::<Text, _>(key.to_owned()));
        let row = self
            .statement(move |conn| async move { query.get_result::<PolicyRow>(conn).await.optional() }.boxed())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let policy =
            Policy::from_interval_us(unsigned(row.capacity, "capacity")?, unsigned(row.interval_us, "interval")?)?;
        Ok(Some(policy))
    }

    async fn set_policy(&self, key: &str, policy: &Policy) -> Result<(), StoreError> {
        // Only `policies` is written: the bucket keeps its tokens and is judged by the new limits from its next check.
        let (capacity, interval) = (signed(policy.capacity(), "capacity")?, signed(policy.interval_us(), "interval")?);
        let query = prepared::<statements::PolicySet, _>(|q| {
            q.bind::<Text, _>(key.to_owned()).bind::<BigInt, _>(capacity).bind::<BigInt, _>(interval)
        });
        self.statement(move |conn| query.execute(conn).boxed()).await?;
        self.announce(key).await;
        Ok(())
    }

    async fn delete_policy(&self, key: &str) -> Result<bool, StoreError> {
        let query = prepared::<statements::PolicyDelete, _>(|q| q.bind::<Text, _>(key.to_owned()));
        let deleted = self.statement(move |conn| query.execute(conn).boxed()).await?;
        self.announce(key).await;
        Ok(deleted > 0)
    }

    async fn policy_version(&self) -> Result<u64, StoreError> {
        let query = prepared::<statements::PolicyVersion, _>(|q| q);
        let row = self.statement(move |conn| query.get_result::<VersionRow>(conn).boxed()).await?;
        // Negative only if edited by hand; the cache needs "changed", so the bits are kept as they are.
        Ok(row.version as u64)
    }

    async fn all_policies(&self) -> Result<Vec<(String, Policy)>, StoreError> {
        let query = prepared::<statements::PolicyAll, _>(|q| q);
        let rows = self.statement(move |conn| query.load::<KeyedPolicyRow>(conn).boxed()).await?;
        rows.into_iter()
            .map(|row| {
                let capacity = unsigned(row.capacity, "capacity")?;
                Ok((row.key, Policy::from_interval_us(capacity, unsigned(row.interval_us, "interval")?)?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// `decide_at` describes an allowed check from the state the statement returns (it never sees the state
        /// before); that must be the very decision bucket_core makes from the state before.
        #[test]
        fn describing_the_state_after_equals_deciding_from_the_state_before(
            capacity in 1u64..1_000,
            interval_us in 1u64..10_000_000,
            tokens in 0u64..1_200,
            last in 0u64..1_000_000_000,
            now in 0u64..2_000_000_000,
            cost in 0u64..1_000,
        ) {
            let policy = Policy::from_interval_us(capacity, interval_us).unwrap();
            let before = BucketState { tokens, last_refill_us: last };
            let (decision, after) = decide(&policy, before, now, cost);
            if decision.allowed {
                prop_assert_eq!(peek(&policy, after, now), decision);
            }
        }
    }

    #[test]
    fn a_refusal_stays_a_refusal_when_tokens_arrived_before_the_read() {
        let policy = Policy::from_interval_us(10, 1_000_000).unwrap();
        let state = BucketState { tokens: 3, last_refill_us: 0 };
        let raced = refused(&policy, state, 0, 2);
        assert!(!raced.allowed);
        assert_eq!(raced.retry_after, Some(Wait::After(0)));
        assert_eq!(raced.remaining, 3);
        let honest = refused(&policy, state, 0, 5);
        assert_eq!(honest, decide(&policy, state, 0, 5).0);
    }
}
