//! Dropping a bucket Redis holds when PostgreSQL's row of it is newer: the tiered store's defence against a
//! failover that rolled Redis back (`drop_older.lua`).

use super::pool::{Op, Strings};
use super::script::Lua;
use super::{corrupt, RedisStore};
use crate::{StoreError, VersionedState};

impl RedisStore {
    /// Deletes `key`'s bucket if it is older than `row` (PostgreSQL's), atomically; `true` when the key is absent
    /// afterwards, so the caller decides again from `row`, `false` when Redis's bucket is at least as new.
    pub async fn drop_if_older(&self, key: &str, row: &VersionedState) -> Result<bool, StoreError> {
        let keys = [self.bucket_key(key)];
        let args = [row.state.tokens.to_string(), row.state.last_refill_us.to_string(), row.version.to_string()];
        let op = Op::Script { lua: Lua::DropOlder, args: &Strings { keys: &keys, args: &args } };
        match self.exec::<i64>(op, self.inner.command_timeout).await? {
            1 => Ok(true),
            0 => Ok(false),
            other => Err(corrupt(format!("drop_older.lua answered {other}"))),
        }
    }
}
