//! Loading buckets as stored, for the tiered store's Redis misses: one key (`read.sql`) or the misses of many
//! concurrent requests in one statement (`read_many.sql`).

use std::collections::HashMap;

use bucket_core::BucketState;
use diesel::sql_types::{Array, BigInt, Text};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use futures::FutureExt;

use super::prepared::prepared;
use super::{statements, unsigned, PostgresStore};
use crate::{StoreError, VersionedState};

/// One row of `read_many.sql`.
#[derive(QueryableByName)]
struct KeyedRow {
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = BigInt)]
    tokens: i64,
    #[diesel(sql_type = BigInt)]
    last_refill_us: i64,
    #[diesel(sql_type = BigInt)]
    version: i64,
}

impl PostgresStore {
    /// The stored state and version of `key`, or `None` when it has no row (a full bucket).
    pub async fn load(&self, key: &str) -> Result<Option<VersionedState>, StoreError> {
        Ok(self.read(key, None).await?.0)
    }

    /// [`PostgresStore::load`] for many keys in one statement, answered in the order given (a key given twice is
    /// answered twice).
    pub async fn load_many(&self, keys: &[String]) -> Result<Vec<Option<VersionedState>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let query = prepared::<statements::ReadMany, _>(|q| q.bind::<Array<Text>, _>(keys.to_vec()));
        let rows = self.statement(move |conn| query.load::<KeyedRow>(conn).boxed()).await?;
        let mut stored = HashMap::with_capacity(rows.len());
        for row in rows {
            let state = BucketState {
                tokens: unsigned(row.tokens, "tokens")?,
                last_refill_us: unsigned(row.last_refill_us, "time")?,
            };
            stored.insert(row.key, VersionedState { state, version: unsigned(row.version, "version")? });
        }
        Ok(keys.iter().map(|key| stored.get(key).copied()).collect())
    }
}
