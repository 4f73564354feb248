//! Per-key policies in Redis: one hash per key beside its bucket, an index set, and a version counter.

use bucket_core::Policy;
use deadpool_redis::redis;

use super::batch::Batch;
use super::pool::Op;
use super::{corrupt, RedisStore};
use crate::{PolicyStore, StoreError};

impl RedisStore {
    /// The Redis key of a per-key policy, `<prefix>policy:{<key>}`: same hash slot as the bucket.
    pub fn policy_key(&self, key: &str) -> String {
        format!("{}policy:{{{key}}}", self.inner.prefix)
    }

    /// The Redis key of the policy version, `<prefix>policy_version`, bumped by every policy write: documented
    /// layout, for operators and tests.
    pub fn policy_version_key(&self) -> String {
        format!("{}policy_version", self.inner.prefix)
    }

    /// The Redis set of every key with a policy, `<prefix>policy_keys`, read by `all_policies`.
    pub fn policy_index_key(&self) -> String {
        format!("{}policy_keys", self.inner.prefix)
    }

    /// The Redis key marking that policies written before `<prefix>policy_keys` existed have been added to it.
    pub(super) fn policy_indexed_key(&self) -> String {
        format!("{}policy_keys_indexed", self.inner.prefix)
    }

    /// Adds every policy hash under the prefix to `<prefix>policy_keys` (a `SCAN`, in steps), marks that done and
    /// bumps the version: an upgrade from a release without the index must not lose the policies set before it.
    /// Runs until one instance has finished it; instances doing it at once only repeat idempotent `SADD`s.
    pub(super) async fn index_existing_policies(&self) -> Result<u64, StoreError> {
        let head = format!("{}policy:{{", self.inner.prefix);
        let pattern = format!("{}*", glob_escape(&head));
        // A SCAN sees one node's keys: in a cluster every master is scanned.
        for (host, port) in self.masters().await? {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(POLICY_READ_CHUNK);
                let (next, names): (u64, Vec<String>) =
                    self.exec(Op::At(&scan, &host, port), self.inner.command_timeout).await?;
                let keys: Vec<&str> =
                    names.iter().filter_map(|name| name.strip_prefix(&head)?.strip_suffix('}')).collect();
                if !keys.is_empty() {
                    let mut add = redis::cmd("SADD");
                    add.arg(self.policy_index_key()).arg(&keys);
                    self.exec::<()>(Op::Cmd(&add), self.inner.command_timeout).await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        let mut batch = Batch::ordered();
        batch.add_ignored(redis::cmd("SET").arg(self.policy_indexed_key()).arg(1).to_owned());
        batch.add(redis::cmd("INCR").arg(self.policy_version_key()).to_owned());
        let (version,): (u64,) = self.exec(Op::Batch(&batch), self.inner.command_timeout).await?;
        Ok(version)
    }
}

/// `text` as a `SCAN MATCH` pattern matching exactly itself: the prefix is configuration and may hold glob characters.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Policies read per pipelined call by `all_policies`, and keys asked for per `SCAN` step.
const POLICY_READ_CHUNK: usize = 1_000;

impl PolicyStore for RedisStore {
    async fn policy(&self, key: &str) -> Result<Option<Policy>, StoreError> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.policy_key(key)).arg("c").arg("i");
        let (capacity, interval): (Option<u64>, Option<u64>) =
            self.exec(Op::Cmd(&cmd), self.inner.command_timeout).await?;
        match (capacity, interval) {
            (None, None) => Ok(None),
            (Some(capacity), Some(interval_us)) => Ok(Some(Policy::from_interval_us(capacity, interval_us)?)),
            _ => Err(corrupt(format!("policy hash {} lacks its c or i field", self.policy_key(key)))),
        }
    }

    async fn set_policy(&self, key: &str, policy: &Policy) -> Result<(), StoreError> {
        // Only the policy hash is written: the bucket keeps its tokens and refills at the new rate from now on. The
        // key joins the index and the version is bumped last, so a reader that sees the new version (and then reads
        // the index) sees the new policy. A plain pipeline, not MULTI: the three keys are in different cluster slots.
        let mut batch = Batch::ordered();
        batch.add_ignored(
            redis::cmd("HSET")
                .arg(self.policy_key(key))
                .arg("c")
                .arg(policy.capacity())
                .arg("i")
                .arg(policy.interval_us())
                .to_owned(),
        );
        batch.add_ignored(redis::cmd("SADD").arg(self.policy_index_key()).arg(key).to_owned());
        batch.add_ignored(redis::cmd("INCR").arg(self.policy_version_key()).to_owned());
        batch.add_ignored(redis::cmd("PUBLISH").arg(self.invalidation_channel()).arg(key).to_owned());
        self.exec::<()>(Op::Batch(&batch), self.inner.command_timeout).await
    }

    async fn delete_policy(&self, key: &str) -> Result<bool, StoreError> {
        let mut batch = Batch::ordered();
        batch.add(redis::cmd("DEL").arg(self.policy_key(key)).to_owned());
        batch.add_ignored(redis::cmd("SREM").arg(self.policy_index_key()).arg(key).to_owned());
        batch.add_ignored(redis::cmd("INCR").arg(self.policy_version_key()).to_owned());
        batch.add_ignored(redis::cmd("PUBLISH").arg(self.invalidation_channel()).arg(key).to_owned());
        let (deleted,): (u64,) = self.exec(Op::Batch(&batch), self.inner.command_timeout).await?;
        Ok(deleted > 0)
    }

    async fn policy_version(&self) -> Result<u64, StoreError> {
        let mut batch = Batch::unordered();
        batch.add(redis::cmd("GET").arg(self.policy_version_key()).to_owned());
        batch.add(redis::cmd("EXISTS").arg(self.policy_indexed_key()).to_owned());
        let (version, indexed): (Option<u64>, bool) = self.exec(Op::Batch(&batch), self.inner.command_timeout).await?;
        if !indexed {
            return self.index_existing_policies().await;
        }
        // Missing until the first policy write: version 0.
        Ok(version.unwrap_or(0))
    }

    async fn all_policies(&self) -> Result<Vec<(String, Policy)>, StoreError> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(self.policy_index_key());
        let keys: Vec<String> = self.exec(Op::Cmd(&cmd), self.inner.command_timeout).await?;
        let mut all = Vec::with_capacity(keys.len());
        // Pipelined in chunks so each call stays well inside `command_timeout` however many policies there are.
        for chunk in keys.chunks(POLICY_READ_CHUNK) {
            let mut batch = Batch::unordered();
            for key in chunk {
                batch.add(redis::cmd("HMGET").arg(self.policy_key(key)).arg("c").arg("i").to_owned());
            }
            let fields: Vec<(Option<u64>, Option<u64>)> =
                self.exec(Op::Batch(&batch), self.inner.command_timeout).await?;
            for (key, fields) in chunk.iter().zip(fields) {
                match fields {
                    // Deleted between SMEMBERS and HMGET: the version has moved too, so the next refresh agrees.
                    (None, None) => {}
                    (Some(capacity), Some(interval_us)) => {
                        all.push((key.clone(), Policy::from_interval_us(capacity, interval_us)?))
                    }
                    _ => return Err(corrupt(format!("policy hash {} lacks its c or i field", self.policy_key(key)))),
                }
            }
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_in_the_prefix_match_only_themselves() {
        assert_eq!(glob_escape("a*b?[c]\\d{e}:"), "a\\*b\\?\\[c\\]\\\\d{e}:");
    }
}
