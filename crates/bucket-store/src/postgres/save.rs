//! Writing states decided elsewhere (by Redis, in the tiered store): one version-guarded statement for any number
//! of keys, `save_batch.sql` reporting per write whether PostgreSQL took it, `save_answered.sql` (writes already
//! answered) only how many rows it wrote.

use diesel::pg::Pg;
use diesel::query_builder::{QueryFragment, SqlQuery};
use diesel::sql_types::{Array, BigInt, Bool, Integer, Text};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use futures::FutureExt;

use super::prepared::prepared;
use super::{errors, signed, statements, PostgresStore};
use crate::{PendingWrite, StoreError};

/// What a version-guarded write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// The row now holds this state (or, for a key given twice in a batch, the batch's newer state of it).
    Written,
    /// The row already held this version or a newer one, and kept it: for the tiered store, a sign that Redis's
    /// bucket may be older than PostgreSQL's row.
    Superseded,
    /// The state was already full when the statement ran: not written, as a full bucket is the same as no row.
    Full,
}

/// One row of `save_batch.sql`'s answer.
#[derive(QueryableByName)]
struct SavedRow {
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Bool)]
    written: bool,
}

impl PostgresStore {
    /// Writes a state decided elsewhere unless the stored version is the same or newer, or the state is already
    /// full (the same as no row: `save_batch.sql`); `true` when it wrote.
    pub async fn save(&self, key: &str, write: &PendingWrite) -> Result<bool, StoreError> {
        Ok(self.save_one(key, write).await? == Saved::Written)
    }

    /// [`PostgresStore::save`] telling what became of the write: the tiered store's synchronous write without
    /// group commit, which needs to know a superseded write from a full one.
    pub async fn save_one(&self, key: &str, write: &PendingWrite) -> Result<Saved, StoreError> {
        let saved = self.save_all(std::iter::once((key, write)), 1).await?;
        Ok(saved.into_iter().next().unwrap_or(Saved::Full))
    }

    /// [`PostgresStore::save`] for many keys in one statement; a key given twice keeps its highest version.
    /// Returns the number of rows written.
    pub async fn save_batch(&self, items: &[(String, PendingWrite)]) -> Result<u64, StoreError> {
        let saved = self.save_all(items.iter().map(|(key, w)| (key.as_str(), w)), items.len()).await?;
        Ok(count_rows_written(items, &saved))
    }

    /// [`PostgresStore::save_batch`] for writes of decisions already answered (write-behind's flushes, writes
    /// replayed after an outage), which nobody waits to hear about: a leaner statement that tells nothing per
    /// write, committed without waiting for the WAL to reach disk, as losing the newest of them in a PostgreSQL
    /// crash is the loss write-behind already accepts (`save_answered.sql`). Returns the number of rows written.
    pub async fn save_answered(&self, items: &[(String, PendingWrite)]) -> Result<u64, StoreError> {
        let Some(arrays) = WriteArrays::of(items.iter().map(|(key, w)| (key.as_str(), w)), items.len())? else {
            return Ok(0);
        };
        let query = prepared::<statements::SaveAnswered, _>(|q| arrays.bind(q));
        let rows = self.statement(move |conn| query.execute(conn).boxed()).await?;
        // usize → u64 never truncates on supported targets.
        Ok(rows as u64)
    }

    /// [`PostgresStore::save_batch`] telling, for each write in order, what became of it: the tiered store's
    /// group commit answers each request from it.
    pub async fn save_each(&self, items: &[(String, PendingWrite)]) -> Result<Vec<Saved>, StoreError> {
        self.save_all(items.iter().map(|(key, w)| (key.as_str(), w)), items.len()).await
    }

    async fn save_all<'a>(
        &self,
        items: impl Iterator<Item = (&'a str, &'a PendingWrite)>,
        len: usize,
    ) -> Result<Vec<Saved>, StoreError> {
        let mut saved = vec![Saved::Full; len];
        let Some(arrays) = WriteArrays::of(items, len)? else { return Ok(saved) };
        let query = prepared::<statements::SaveBatch, _>(|q| arrays.bind(q));
        let rows = self.statement(move |conn| query.load::<SavedRow>(conn).boxed()).await?;
        for row in rows {
            let slot = usize::try_from(row.n)
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| saved.get_mut(i))
                .ok_or_else(|| errors::backend(format!("save_batch.sql answered for write {}", row.n)))?;
            *slot = if row.written { Saved::Written } else { Saved::Superseded };
        }
        Ok(saved)
    }
}

/// The five parameter arrays both write statements take, one entry per write.
struct WriteArrays {
    keys: Vec<String>,
    tokens: Vec<i32>,
    times: Vec<i64>,
    versions: Vec<i64>,
    fills: Vec<i64>,
}

impl WriteArrays {
    /// The arrays of `items`, or `None` when there is nothing to write.
    fn of<'a>(
        items: impl Iterator<Item = (&'a str, &'a PendingWrite)>,
        len: usize,
    ) -> Result<Option<Self>, StoreError> {
        let mut arrays = Self {
            keys: Vec::with_capacity(len),
            tokens: Vec::with_capacity(len),
            times: Vec::with_capacity(len),
            versions: Vec::with_capacity(len),
            fills: Vec::with_capacity(len),
        };
        for (key, w) in items {
            let v = &w.after;
            arrays.keys.push(key.to_owned());
            let count = i32::try_from(v.state.tokens)
                .map_err(|_| errors::backend(format!("{} tokens do not fit the tokens column", v.state.tokens)))?;
            arrays.tokens.push(count);
            arrays.times.push(signed(v.state.last_refill_us, "last_refill_us")?);
            arrays.versions.push(signed(v.version, "version")?);
            arrays.fills.push(signed(w.full_at_us.saturating_sub(v.state.last_refill_us), "fill time")?);
        }
        Ok((!arrays.keys.is_empty()).then_some(arrays))
    }

    /// Binds them as `$1`–`$5`.
    fn bind(self, query: SqlQuery) -> impl QueryFragment<Pg> + Send + 'static {
        query
            .bind::<Array<Text>, _>(self.keys)
            .bind::<Array<Integer>, _>(self.tokens)
            .bind::<Array<BigInt>, _>(self.times)
            .bind::<Array<BigInt>, _>(self.versions)
            .bind::<Array<BigInt>, _>(self.fills)
    }
}

/// Distinct keys whose row was written: a key given twice counts once.
fn count_rows_written(items: &[(String, PendingWrite)], saved: &[Saved]) -> u64 {
    let mut written: Vec<&str> =
        items.iter().zip(saved).filter(|(_, s)| **s == Saved::Written).map(|((key, _), _)| key.as_str()).collect();
    written.sort_unstable();
    written.dedup();
    // usize → u64 never truncates on supported targets.
    written.len() as u64
}
