//! Several buckets in one script run (`token_buckets.lua`), all or nothing, checked against bucket-core.
//!
//! Atomic on a standalone Redis (and a Sentinel-managed master): the script reads, decides and writes every key
//! before Redis serves anything else. In Redis Cluster a script may only touch one hash slot, so `redis/slots.rs`
//! runs it once per slot group and refunds on refusal: never over capacity, possibly briefly under.

use bucket_core::{decide_all, BucketState, Demand};

use super::pool::{Op, Strings};
use super::script::Lua;
use super::{corrupt, RedisStore};
use crate::limits::{Bucket, Grouped};
use crate::{Decided, Limit, Outcomes, Source, StoreError, VersionedState};

/// What the multi-key script does with a key Redis does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// A full bucket: Redis is the only store.
    Full,
    /// Report it and write nothing at all, so the tiered store can load it from PostgreSQL.
    Report,
    /// Decide against this state (loaded from PostgreSQL); an existing key wins over it.
    Seed(VersionedState),
}

/// The multi-key script's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Script {
    /// Keys given [`Miss::Report`] that Redis does not hold (indices into the buckets given); nothing was written.
    Missing(Vec<usize>),
    /// Every bucket decided: debited all (`allowed`) or none, one [`Decided`] per bucket (`created`: seeded).
    Decided {
        /// Every bucket had its cost and was debited.
        allowed: bool,
        /// One per bucket given, in order.
        buckets: Vec<Decided>,
    },
}

impl RedisStore {
    /// `check_all` at `now_us` (`None`: Redis's clock, as `check_all` runs it); a missing key is a full bucket.
    /// An explicit instant is for the shared case table's tests.
    pub async fn check_all_at(&self, limits: &[Limit<'_>], now_us: Option<u64>) -> Result<Outcomes, StoreError> {
        let grouped = Grouped::new(limits);
        if grouped.buckets.is_empty() {
            return Ok(grouped.outcomes(true, &[], Source::Redis));
        }
        if now_us.is_none() {
            if let Some(single) = grouped.as_check(self).await {
                return single;
            }
        }
        let misses = vec![Miss::Full; grouped.buckets.len()];
        match self.decide_all_at(&grouped.buckets, &misses, now_us).await? {
            Script::Decided { allowed, buckets } => {
                let decisions: Vec<_> = buckets.iter().map(|d| d.decision).collect();
                Ok(grouped.outcomes(allowed, &decisions, Source::Redis))
            }
            Script::Missing(_) => Err(corrupt("the script reported a miss in full mode")),
        }
    }

    /// Decides `buckets` (distinct keys, all in one hash slot in a cluster) all or nothing in one script run at
    /// `now_us` (`None`: Redis's clock), `misses[i]` saying what a missing `buckets[i]` means.
    pub(super) async fn decide_group(
        &self,
        buckets: &[Bucket<'_>],
        misses: &[Miss],
        now_us: Option<u64>,
    ) -> Result<Script, StoreError> {
        let mut args = Vec::with_capacity(1 + 7 * buckets.len());
        args.push(now_us.map(|now| now.to_string()).unwrap_or_default());
        for (b, miss) in buckets.iter().zip(misses) {
            args.extend([b.policy.capacity().to_string(), b.policy.interval_us().to_string(), b.cost.to_string()]);
            match miss {
                Miss::Full => args.extend(["full".to_owned(), String::new(), String::new(), String::new()]),
                Miss::Report => args.extend(["report".to_owned(), String::new(), String::new(), String::new()]),
                Miss::Seed(seed) => args.extend([
                    "seed".to_owned(),
                    seed.state.tokens.to_string(),
                    seed.state.last_refill_us.to_string(),
                    seed.version.to_string(),
                ]),
            }
        }
        let keys: Vec<String> = buckets.iter().map(|b| self.bucket_key(b.key)).collect();
        let op = Op::Script { lua: Lua::All, args: &Strings { keys: &keys, args: &args } };
        let reply: Vec<i64> = self.exec(op, self.inner.command_timeout).await?;
        interpret(buckets, &reply)
    }
}

/// Re-derives the script's answer with `bucket_core::decide_all` from the states it decided against, and refuses
/// to answer if the script's result differs.
fn interpret(buckets: &[Bucket<'_>], reply: &[i64]) -> Result<Script, StoreError> {
    if reply.len() != 2 + 6 * buckets.len() {
        return Err(corrupt(format!("the script returned {} values for {} keys", reply.len(), buckets.len())));
    }
    let unsigned = |n: i64| u64::try_from(n).map_err(|_| corrupt(format!("the script returned a negative {n}")));
    let (code, now) = (reply[0], unsigned(reply[1])?);
    let per_key: Vec<&[i64]> = reply[2..].chunks(6).collect();
    if code == -1 {
        return Ok(Script::Missing(per_key.iter().enumerate().filter(|(_, r)| r[0] == -1).map(|(i, _)| i).collect()));
    }
    let allowed = match code {
        1 => true,
        0 => false,
        other => return Err(corrupt(format!("the script returned the unknown code {other}"))),
    };
    let mut demands = Vec::with_capacity(buckets.len());
    let mut script_after = Vec::with_capacity(buckets.len());
    for (b, r) in buckets.iter().zip(&per_key) {
        let before = BucketState { tokens: unsigned(r[1])?, last_refill_us: unsigned(r[2])? };
        demands.push(Demand { policy: b.policy, state: before, cost: b.cost });
        script_after.push(BucketState { tokens: unsigned(r[3])?, last_refill_us: unsigned(r[4])? });
    }
    let all = decide_all(&demands, now);
    if all.allowed != allowed || all.after != script_after {
        return Err(corrupt(format!(
            "the script and bucket-core disagree on {demands:?} at {now}: script {allowed} {script_after:?}, core {} \
             {:?}",
            all.allowed, all.after
        )));
    }
    let decided = per_key
        .iter()
        .zip(all.decisions.iter().zip(&all.after))
        .map(|(r, (decision, after))| {
            Ok(Decided {
                decision: *decision,
                after: VersionedState { state: *after, version: unsigned(r[5])? },
                created: r[0] == 1,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Script::Decided { allowed, buckets: decided })
}

#[cfg(test)]
mod tests {
    use bucket_core::Policy;

    use super::*;

    #[test]
    fn a_reply_that_disagrees_with_the_core_is_an_error() {
        let policy = Policy::from_interval_us(10, 1_000_000).unwrap();
        let buckets = [Bucket { key: "a", policy, cost: 1 }, Bucket { key: "b", policy, cost: 2 }];
        // a: (0, 0) at 2 s has 2 tokens; b: (1, 2 s) has 1: refused, nothing changes.
        let refused = [0, 2_000_000, 0, 0, 0, 0, 0, 3, 0, 1, 2_000_000, 1, 2_000_000, 5];
        let Script::Decided { allowed, buckets: decided } = interpret(&buckets, &refused).unwrap() else {
            panic!("decided")
        };
        assert!(!allowed);
        assert!(decided[0].decision.allowed && !decided[1].decision.allowed);
        assert_eq!(decided[1].after.version, 5);
        let claims_allowed = [1, 2_000_000, 0, 0, 0, 0, 0, 3, 0, 1, 2_000_000, 1, 2_000_000, 5];
        assert!(matches!(interpret(&buckets, &claims_allowed), Err(StoreError::Backend { .. })));
        let missing = [-1, 7, 0, 0, 0, 0, 0, 0, -1, 0, 0, 0, 0, 0];
        assert_eq!(interpret(&buckets, &missing).unwrap(), Script::Missing(vec![1]));
        assert!(interpret(&buckets, &[1, 0]).is_err());
    }
}
