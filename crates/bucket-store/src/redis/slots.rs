//! Several buckets in Redis Cluster, where one script may only touch keys of one hash slot and each user's keys
//! carry their own hash tag, so the keys of one request usually live in different slots (and on different masters).
//!
//! The guarantee is the one every store gives: **never over capacity** (plus refill), and after the call returns a
//! refused request has debited nothing. How: the buckets are split into slot groups, taken in key order (the order
//! `Grouped` sorts them in, as ordered locks are). Each group is decided all or nothing by `token_buckets.lua`, one
//! script per group, one group after the other. When every group is allowed, the request is. When a group refuses
//! (or reports a miss, or fails), the groups already debited are refunded by `refund.lua`, which puts back exactly
//! the tokens taken, capped at capacity, before the answer is given. A request is therefore allowed only if every
//! one of its buckets was debited atomically, so no bucket ever grants more than a standalone Redis would.
//!
//! All buckets are peeked first (one round trip, every node at once): when one already lacks its cost, the request
//! is refused without debiting anything, exactly as one script would refuse it. So a caller over one of its limits
//! does not keep taking and giving back the tokens of the others (a limit shared by every caller, say).
//!
//! The price is transient **under**-admission when requests race: between a group's debit and its refund (one round
//! trip), a concurrent request may find those tokens gone and be refused, although the first request ends up
//! refunded. It can only be refused, never over-admitted. Taking the groups in one fixed order keeps two requests on the same keys from
//! refusing each other in a cycle. A refund that fails (the node is unreachable) leaves the tokens taken: an
//! under-admission until they refill, never an over-admission. Buckets of the groups after the refusing one are not
//! debited at all; the decisions reported for them are peeks.

use bucket_core::{decide, peek, BucketState};
use deadpool_redis::redis::{self, Value};
use futures::future::try_join_all;

use super::all::{Miss, Script};
use super::pool::{Op, Strings};
use super::script::{self, Lua, OneArgs};
use super::topology::{slot, Conns};
use super::{corrupt, RedisStore};
use crate::limits::Bucket;
use crate::{Decided, StoreError, VersionedState};

impl RedisStore {
    /// Decides `buckets` (distinct keys, in key order) all or nothing at `now_us` (`None`: Redis's clock),
    /// `misses[i]` saying what a missing `buckets[i]` means: one script when every key shares a slot (always, on
    /// one server), else slot group by slot group with refunds (see the module comment).
    pub(crate) async fn decide_all_at(
        &self,
        buckets: &[Bucket<'_>],
        misses: &[Miss],
        now_us: Option<u64>,
    ) -> Result<Script, StoreError> {
        let groups = match &self.inner.connections {
            Conns::Single(_) => return self.decide_group(buckets, misses, now_us).await,
            Conns::Cluster(_) => self.slot_groups(buckets),
        };
        if groups.len() == 1 {
            return self.decide_group(buckets, misses, now_us).await;
        }
        // A bucket that already lacks its cost refuses the request before anything is debited: a caller over one
        // limit must not keep draining (however briefly) the other buckets it names, such as a shared one.
        let peeked = try_join_all(buckets.iter().map(|b| self.peek_for(b, now_us))).await?;
        if peeked.iter().any(|d| !d.decision.allowed) {
            return Ok(Script::Decided { allowed: false, buckets: peeked });
        }
        let mut decided: Vec<Option<Decided>> = vec![None; buckets.len()];
        let mut debited: Vec<&[usize]> = Vec::new();
        for (g, group) in groups.iter().enumerate() {
            let part: Vec<Bucket<'_>> = group.iter().map(|&i| buckets[i]).collect();
            let part_misses: Vec<Miss> = group.iter().map(|&i| misses[i]).collect();
            let outcome = match self.decide_group(&part, &part_misses, now_us).await {
                Ok(outcome) => outcome,
                Err(e) => {
                    // The failed group may or may not have debited: at worst its tokens stay taken (under-admission).
                    let _ = self.refund(buckets, &debited, &mut decided, now_us).await;
                    return Err(e);
                }
            };
            match outcome {
                Script::Decided { allowed: true, buckets: part } => {
                    for (&i, d) in group.iter().zip(part) {
                        decided[i] = Some(d);
                    }
                    debited.push(group);
                }
                Script::Missing(missing) => {
                    self.refund(buckets, &debited, &mut decided, now_us).await?;
                    return Ok(Script::Missing(missing.into_iter().map(|j| group[j]).collect()));
                }
                Script::Decided { allowed: false, buckets: part } => {
                    for (&i, d) in group.iter().zip(part) {
                        decided[i] = Some(d);
                    }
                    self.refund(buckets, &debited, &mut decided, now_us).await?;
                    let later: Vec<usize> = groups[g + 1..].iter().flatten().copied().collect();
                    let peeked = try_join_all(later.iter().map(|&i| self.peek_for(&buckets[i], now_us))).await?;
                    for (i, d) in later.into_iter().zip(peeked) {
                        decided[i] = Some(d);
                    }
                    let buckets = decided.into_iter().map(|d| d.ok_or_else(|| corrupt("a bucket left undecided")));
                    return Ok(Script::Decided { allowed: false, buckets: buckets.collect::<Result<_, _>>()? });
                }
            }
        }
        let buckets = decided.into_iter().map(|d| d.ok_or_else(|| corrupt("a bucket left undecided")));
        Ok(Script::Decided { allowed: true, buckets: buckets.collect::<Result<_, _>>()? })
    }

    /// What a bucket not reached by a refused request would have answered, without touching it: untouched if it
    /// had its cost, else refused with its wait (as `bucket_core::decide_all` reports each bucket).
    async fn peek_for(&self, bucket: &Bucket<'_>, now_us: Option<u64>) -> Result<Decided, StoreError> {
        let policy = bucket.policy;
        let args = OneArgs {
            prefix: &self.inner.prefix,
            key: bucket.key,
            policy: &policy,
            cost: 0,
            now_us,
            mode: "peek",
            seed: None,
        };
        let reply: Vec<u8> = self.exec(Op::Script { lua: Lua::One, args: &args }, self.inner.command_timeout).await?;
        let [_, _, now, _, _, tokens, last, version] = script::numbers(&reply)?;
        let unsigned = |n: i64| u64::try_from(n).map_err(|_| corrupt(format!("the script returned a negative {n}")));
        let (now, state) = (unsigned(now)?, BucketState { tokens: unsigned(tokens)?, last_refill_us: unsigned(last)? });
        let (decision, _) = decide(&policy, state, now, bucket.cost);
        let decision = if decision.allowed { peek(&policy, state, now) } else { decision };
        Ok(Decided { decision, after: VersionedState { state, version: unsigned(version)? }, created: false })
    }

    /// Indices of `buckets` grouped by hash slot; groups ordered by their first (smallest) key.
    fn slot_groups(&self, buckets: &[Bucket<'_>]) -> Vec<Vec<usize>> {
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        for (i, b) in buckets.iter().enumerate() {
            let s = slot(self.bucket_key(b.key).as_bytes());
            match groups.iter_mut().find(|(other, _)| *other == s) {
                Some((_, members)) => members.push(i),
                None => groups.push((s, vec![i])),
            }
        }
        groups.into_iter().map(|(_, members)| members).collect()
    }

    /// Gives back what the `debited` groups took (one `refund.lua` per group, all at once) and replaces their
    /// decisions by what each bucket holds after the refund, as a refused request reports a bucket that had
    /// its tokens (`bucket_core::decide_all`: a peek).
    async fn refund(
        &self,
        buckets: &[Bucket<'_>],
        debited: &[&[usize]],
        decided: &mut [Option<Decided>],
        now_us: Option<u64>,
    ) -> Result<(), StoreError> {
        let replies = try_join_all(debited.iter().map(|group| {
            let keys: Vec<String> = group.iter().map(|&i| self.bucket_key(buckets[i].key)).collect();
            let mut args = vec![now_us.map(|now| now.to_string()).unwrap_or_default()];
            for &i in group.iter() {
                args.extend([buckets[i].policy.capacity().to_string(), buckets[i].cost.to_string()]);
            }
            async move {
                let op = Op::Script { lua: Lua::Refund, args: &Strings { keys: &keys, args: &args } };
                self.exec::<Vec<i64>>(op, self.inner.command_timeout).await
            }
        }))
        .await?;
        for (group, reply) in debited.iter().zip(replies) {
            if reply.len() != 1 + 4 * group.len() {
                return Err(corrupt(format!("the refund script returned {} values", reply.len())));
            }
            let unsigned =
                |n: i64| u64::try_from(n).map_err(|_| corrupt(format!("the script returned a negative {n}")));
            let now = unsigned(reply[0])?;
            for (&i, r) in group.iter().zip(reply[1..].chunks(4)) {
                let policy = buckets[i].policy;
                let (state, version) = if r[0] == 1 {
                    (BucketState { tokens: unsigned(r[1])?, last_refill_us: unsigned(r[2])? }, unsigned(r[3])?)
                } else {
                    (BucketState::full(&policy, now), 0)
                };
                let created = decided[i].as_ref().is_some_and(|d| d.created);
                decided[i] = Some(Decided {
                    decision: peek(&policy, state, now),
                    after: VersionedState { state, version },
                    created,
                });
            }
        }
        Ok(())
    }

    /// The masters' addresses, for commands that see one node's keys only (`SCAN`): the one server (an empty
    /// host, which `Op::At` ignores there), or every master of the cluster as `CLUSTER SLOTS` lists them.
    pub(super) async fn masters(&self) -> Result<Vec<(String, u16)>, StoreError> {
        if let Conns::Single(_) = &self.inner.connections {
            return Ok(vec![(String::new(), 0)]);
        }
        let ranges: Vec<Value> =
            self.exec(Op::Cmd(&redis::cmd("CLUSTER").arg("SLOTS").to_owned()), self.inner.command_timeout).await?;
        let mut masters: Vec<(String, u16)> = Vec::new();
        for range in ranges {
            let Value::Array(fields) = range else { continue };
            let Some(Value::Array(master)) = fields.get(2) else { continue };
            let host = match master.first() {
                Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
                Some(Value::SimpleString(host)) => host.clone(),
                _ => continue,
            };
            let Some(&Value::Int(port)) = master.get(1) else { continue };
            let master = (host, u16::try_from(port).map_err(|_| corrupt("CLUSTER SLOTS listed a bad port"))?);
            if !masters.contains(&master) {
                masters.push(master);
            }
        }
        if masters.is_empty() {
            return Err(corrupt("CLUSTER SLOTS listed no master"));
        }
        Ok(masters)
    }
}
