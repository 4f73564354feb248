//! Several buckets decided together in PostgreSQL, all or nothing: one transaction that locks every row of the
//! request in key order, decides in Rust, and writes all the rows or none.
//!
//! Why decide in Rust rather than in one statement like `decide.sql`: all or nothing needs every bucket's verdict
//! before any row is written, which one `INSERT … ON CONFLICT` cannot express without repeating the whole of
//! `bucket_core::decide_all` in SQL. With every row locked first (`decide_all_lock.sql`), the rows cannot change
//! until COMMIT, so reading them (`decide_all_read.sql`, which also reads the server's clock once: every instance
//! decides on PostgreSQL's clock, as `decide.sql` does), deciding with bucket-core, and writing the results
//! (`decide_all_write.sql`) is one atomic step, and the math has one implementation. A refusal rolls back, so not
//! even the rows of new keys are left behind. The cost is four round trips instead of one.
//!
//! The whole transaction is bounded by `statement_timeout` on the client (each statement also by the server's),
//! and its failures are sorted as a single statement's are; a connection that timed out or broke is dropped.

use std::collections::HashMap;

use bucket_core::{decide_all, full_at, BucketState, Demand};
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::pooled_connection::deadpool::Object;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::prepared::prepared;
use super::statements::{DecideAllLock, DecideAllRead, DecideAllWrite};
use super::{errors, signed, unsigned, PostgresStore};
use crate::limits::{Bucket, Grouped};
use crate::{Decided, Limit, Outcomes, Source, StoreError, VersionedState};

#[derive(QueryableByName)]
struct KeyRow {
    #[diesel(sql_type = Text)]
    key: String,
}

#[derive(QueryableByName)]
struct LockedRow {
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = BigInt)]
    tokens: i64,
    #[diesel(sql_type = BigInt)]
    last_refill_us: i64,
    #[diesel(sql_type = BigInt)]
    version: i64,
    #[diesel(sql_type = BigInt)]
    now_us: i64,
}

#[derive(QueryableByName)]
struct WrittenRow {
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = BigInt)]
    version: i64,
}

/// Buckets decided together: all debited (`allowed`) or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecidedAll {
    /// Every bucket had its cost and its row was written.
    pub allowed: bool,
    /// One per bucket given, in order; `created` when this transaction inserted the row (never when refused).
    pub buckets: Vec<Decided>,
}

/// Why the transaction ends without committing: a refusal (rolled back on purpose) or a failure.
enum Abort {
    Refused(DecidedAll),
    Query(diesel::result::Error),
    Store(StoreError),
}

impl From<diesel::result::Error> for Abort {
    fn from(e: diesel::result::Error) -> Self {
        Abort::Query(e)
    }
}

/// What the transaction needs, owned.
struct Input {
    keys: Vec<String>,
    capacities: Vec<i64>,
    demands: Vec<(bucket_core::Policy, u64)>,
    now: Option<i64>,
}

impl PostgresStore {
    /// `check_all` at `now_us` (µs since the epoch; `None`: the server's clock, as `check_all` runs it). An explicit
    /// instant is for the shared case table's tests.
    pub async fn check_all_at(&self, limits: &[Limit<'_>], now_us: Option<u64>) -> Result<Outcomes, StoreError> {
        let grouped = Grouped::new(limits);
        if grouped.buckets.is_empty() {
            return Ok(grouped.outcomes(true, &[], Source::Postgres));
        }
        if now_us.is_none() {
            if let Some(single) = grouped.as_check(self).await {
                return single;
            }
        }
        let decided = self.decide_all_at(&grouped.buckets, now_us).await?;
        let source = if decided.buckets.iter().any(|d| d.created) { Source::NewUser } else { Source::Postgres };
        let decisions: Vec<_> = decided.buckets.iter().map(|d| d.decision).collect();
        Ok(grouped.outcomes(decided.allowed, &decisions, source))
    }

    /// Decides `buckets` (distinct keys) all or nothing at `now_us` (µs since the epoch), or on the server's clock
    /// when `None` (production).
    pub(crate) async fn decide_all_at(
        &self,
        buckets: &[Bucket<'_>],
        now_us: Option<u64>,
    ) -> Result<DecidedAll, StoreError> {
        let input = Input {
            keys: buckets.iter().map(|b| b.key.to_owned()).collect(),
            capacities: buckets.iter().map(|b| signed(b.policy.capacity(), "capacity")).collect::<Result<_, _>>()?,
            demands: buckets.iter().map(|b| (b.policy, b.cost)).collect(),
            now: now_us.map(|now| signed(now, "now")).transpose()?,
        };
        let mut conn = self.checkout().await?;
        let run = conn.transaction(async |c| decide_locked(c, &input).await);
        let error = match tokio::time::timeout(self.statement_timeout, run).await {
            Ok(Ok(decided) | Err(Abort::Refused(decided))) => return Ok(decided),
            Ok(Err(Abort::Store(e))) => e,
            Ok(Err(Abort::Query(e))) => errors::query(e, self.statement_timeout),
            Err(_) => errors::timeout(self.statement_timeout),
        };
        if error.is_transient() {
            // It may still be inside the transaction, or owe the answer to an abandoned statement.
            drop(Object::take(conn));
        }
        Err(error)
    }
}

/// The transaction's body: lock, read, decide, and write only if every bucket had its cost.
async fn decide_locked(conn: &mut AsyncPgConnection, input: &Input) -> Result<DecidedAll, Abort> {
    let created: Vec<KeyRow> = prepared::<DecideAllLock, _>(|q| {
        q.bind::<Array<Text>, _>(input.keys.clone())
            .bind::<Array<BigInt>, _>(input.capacities.clone())
            .bind::<Nullable<BigInt>, _>(input.now)
    })
    .load(conn)
    .await?;
    let rows: Vec<LockedRow> = prepared::<DecideAllRead, _>(|q| {
        q.bind::<Array<Text>, _>(input.keys.clone()).bind::<Nullable<BigInt>, _>(input.now)
    })
    .load(conn)
    .await?;
    let now = match <[LockedRow]>::first(&rows) {
        Some(row) => unsigned(row.now_us, "clock").map_err(Abort::Store)?,
        None => return Err(Abort::Store(errors::backend("the locked rows could not be read"))),
    };
    let mut stored: HashMap<&str, VersionedState> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let state = BucketState {
            tokens: unsigned(row.tokens, "tokens").map_err(Abort::Store)?,
            last_refill_us: unsigned(row.last_refill_us, "time").map_err(Abort::Store)?,
        };
        let version = unsigned(row.version, "version").map_err(Abort::Store)?;
        stored.insert(row.key.as_str(), VersionedState { state, version });
    }
    let before: Vec<VersionedState> = input
        .keys
        .iter()
        .map(|key| stored.get(key.as_str()).copied())
        .collect::<Option<_>>()
        .ok_or_else(|| Abort::Store(errors::backend("a locked row is missing")))?;
    let demands: Vec<Demand> =
        input.demands.iter().zip(&before).map(|(&(policy, cost), v)| Demand { policy, state: v.state, cost }).collect();
    let all = decide_all(&demands, now);
    if !all.allowed {
        let buckets = all
            .decisions
            .iter()
            .zip(&before)
            .map(|(decision, v)| Decided { decision: *decision, after: *v, created: false })
            .collect();
        return Err(Abort::Refused(DecidedAll { allowed: false, buckets }));
    }
    let tokens = all
        .after
        .iter()
        .map(|s| i32::try_from(s.tokens).map_err(|_| errors::backend(format!("{} tokens do not fit", s.tokens))))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Abort::Store)?;
    let times = all
        .after
        .iter()
        .map(|s| signed(s.last_refill_us, "last_refill_us"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Abort::Store)?;
    let fills = all
        .after
        .iter()
        .zip(&input.demands)
        .map(|(s, (policy, _))| signed(full_at(policy, *s) - s.last_refill_us, "fill time"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Abort::Store)?;
    let written: Vec<WrittenRow> = prepared::<DecideAllWrite, _>(|q| {
        q.bind::<Array<Text>, _>(input.keys.clone())
            .bind::<Array<Integer>, _>(tokens)
            .bind::<Array<BigInt>, _>(times)
            .bind::<Array<BigInt>, _>(fills)
    })
    .load(conn)
    .await?;
    let versions: HashMap<&str, i64> = written.iter().map(|row| (row.key.as_str(), row.version)).collect();
    let created: std::collections::HashSet<&str> = created.iter().map(|row| row.key.as_str()).collect();
    let mut buckets = Vec::with_capacity(input.keys.len());
    for ((key, decision), state) in input.keys.iter().zip(&all.decisions).zip(&all.after) {
        let version =
            versions.get(key.as_str()).ok_or_else(|| Abort::Store(errors::backend("a decided row was not written")))?;
        let version = unsigned(*version, "version").map_err(Abort::Store)?;
        buckets.push(Decided {
            decision: *decision,
            after: VersionedState { state: *state, version },
            created: created.contains(key.as_str()),
        });
    }
    Ok(DecidedAll { allowed: true, buckets })
}
