//! The Lua script's side: running it, and checking its reply against bucket-core before anyone believes it.

use bucket_core::{decide, BucketState, Policy};

use super::pool::Op;
use super::{corrupt, RedisStore};
use crate::{Decided, StoreError, VersionedState};

/// Which of the store's scripts to run; Redis identifies each by its SHA1, which `SCRIPT LOAD` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lua {
    /// `token_bucket.lua`: one bucket.
    One,
    /// `token_buckets.lua`: several buckets, all or nothing (`redis/all.rs`).
    All,
    /// `refund.lua`: gives back what a multi-key request took in one slot (`redis/slots.rs`).
    Refund,
    /// `drop_older.lua`: deletes a bucket older than PostgreSQL's row (`redis/stale.rs`).
    DropOlder,
}

impl Lua {
    /// The script's source.
    pub(super) fn source(self) -> &'static str {
        match self {
            Lua::One => include_str!("token_bucket.lua"),
            Lua::All => include_str!("token_buckets.lua"),
            Lua::Refund => include_str!("refund.lua"),
            Lua::DropOlder => include_str!("drop_older.lua"),
        }
    }
}

/// What the script answers when `report` mode finds no key.
pub(super) const CODE_MISS: i64 = -1;
const CODE_ALLOWED: i64 = 1;
const CODE_REFUSED: i64 = 0;

/// What a key that Redis does not hold means to [`RedisStore::decide_at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMiss {
    /// A full bucket: Redis is the only store (the plain `redis` backend).
    Full,
    /// Report it (`None`) and write nothing, so the tiered store can load the bucket from PostgreSQL.
    Report,
}

impl RedisStore {
    /// Decides `cost` tokens on `key` atomically at `now_us` (`None`: Redis's clock). `None` only for
    /// [`OnMiss::Report`] on a key Redis does not hold, in which case nothing was written.
    pub async fn decide_at(
        &self,
        key: &str,
        policy: &Policy,
        cost: u64,
        now_us: Option<u64>,
        on_miss: OnMiss,
    ) -> Result<Option<Decided>, StoreError> {
        let mode = match on_miss {
            OnMiss::Full => "full",
            OnMiss::Report => "report",
        };
        self.run_script(key, policy, cost, now_us, mode, None).await
    }

    /// Decides against the key's state, or against `seed` if Redis does not hold the key, as one atomic step: of
    /// concurrent seeders the first wins and the others decide against its result. `created` tells whether the
    /// seed was used; like every refusal, a refused seeded check writes nothing.
    pub async fn seed_and_decide(
        &self,
        key: &str,
        policy: &Policy,
        cost: u64,
        seed: &VersionedState,
        now_us: Option<u64>,
    ) -> Result<Decided, StoreError> {
        self.run_script(key, policy, cost, now_us, "seed", Some(seed))
            .await?
            .ok_or_else(|| corrupt("the script reported a miss in seed mode"))
    }

    pub(super) async fn run_script(
        &self,
        key: &str,
        policy: &Policy,
        cost: u64,
        now_us: Option<u64>,
        mode: &str,
        seed: Option<&VersionedState>,
    ) -> Result<Option<Decided>, StoreError> {
        let mut args = vec![
            policy.capacity().to_string(),
            policy.interval_us().to_string(),
            cost.to_string(),
            now_us.map(|now| now.to_string()).unwrap_or_default(),
            mode.to_owned(),
        ];
        if let Some(seed) = seed {
            args.push(seed.state.tokens.to_string());
            args.push(seed.state.last_refill_us.to_string());
            args.push(seed.version.to_string());
        }
        let keys = [self.bucket_key(key)];
        let op = Op::Script { lua: Lua::One, keys: &keys, args: &args };
        let reply: Vec<u8> = self.exec(op, self.inner.command_timeout).await?;
        interpret(policy, cost, &numbers(&reply)?)
    }
}

/// The script's reply, eight decimal integers separated by spaces, as numbers. Hand-written because it is a
/// format of ours: one bulk string instead of an array of eight integers saves the client's RESP parser most of
/// its work on every check (docs/perf.md §9).
pub(super) fn numbers(reply: &[u8]) -> Result<[i64; 8], StoreError> {
    let text = std::str::from_utf8(reply).map_err(|_| corrupt("the script's reply is not text"))?;
    let mut numbers = [0i64; 8];
    let mut fields = text.split(' ');
    for slot in &mut numbers {
        let field = fields.next().ok_or_else(|| corrupt(format!("the script returned too few values: {text:?}")))?;
        *slot = field.parse().map_err(|_| corrupt(format!("the script returned a non-integer in {text:?}")))?;
    }
    if fields.next().is_some() {
        return Err(corrupt(format!("the script returned too many values: {text:?}")));
    }
    Ok(numbers)
}

/// Turns the script's reply into a [`Decided`], re-deriving the decision with bucket-core from the state the script
/// decided against, and refusing to answer if the script's result differs from bucket-core's.
fn interpret(policy: &Policy, cost: u64, reply: &[i64]) -> Result<Option<Decided>, StoreError> {
    let &[code, seeded, now, before_t, before_l, after_t, after_l, version] = reply else {
        return Err(corrupt(format!("the script returned {} values instead of 8", reply.len())));
    };
    if code == CODE_MISS {
        return Ok(None);
    }
    let unsigned = |n: i64| u64::try_from(n).map_err(|_| corrupt(format!("the script returned a negative {n}")));
    let before = BucketState { tokens: unsigned(before_t)?, last_refill_us: unsigned(before_l)? };
    let now = unsigned(now)?;
    let (decision, after) = decide(policy, before, now, cost);
    let script_after = BucketState { tokens: unsigned(after_t)?, last_refill_us: unsigned(after_l)? };
    let allowed = match code {
        CODE_ALLOWED => true,
        CODE_REFUSED => false,
        other => return Err(corrupt(format!("the script returned the unknown code {other}"))),
    };
    if allowed != decision.allowed || script_after != after {
        return Err(corrupt(format!(
            "the script and bucket-core disagree on {before:?} at {now} for cost {cost}: script {allowed} \
             {script_after:?}, core {} {after:?}",
            decision.allowed
        )));
    }
    Ok(Some(Decided {
        decision,
        after: VersionedState { state: after, version: unsigned(version)? },
        created: seeded == 1,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_that_disagrees_with_the_core_is_an_error() {
        let policy = Policy::from_interval_us(10, 1_000_000).unwrap();
        // Stored (0, 0) at 2 s: the core allows one token, leaving (1, 2 s).
        let good = [1, 0, 2_000_000, 0, 0, 1, 2_000_000, 4];
        let decided = interpret(&policy, 1, &good).unwrap().unwrap();
        assert!(decided.decision.allowed);
        assert_eq!(
            decided.after,
            VersionedState { state: BucketState { tokens: 1, last_refill_us: 2_000_000 }, version: 4 }
        );
        let wrong_tokens = [1, 0, 2_000_000, 0, 0, 2, 2_000_000, 4];
        assert!(matches!(interpret(&policy, 1, &wrong_tokens), Err(StoreError::Backend { .. })));
        let wrong_code = [0, 0, 2_000_000, 0, 0, 0, 0, 4];
        assert!(matches!(interpret(&policy, 1, &wrong_code), Err(StoreError::Backend { .. })));
        assert!(interpret(&policy, 1, &[CODE_MISS, 0, 0, 0, 0, 0, 0, 0]).unwrap().is_none());
        assert!(interpret(&policy, 1, &[1, 0]).is_err());
    }

    #[test]
    fn the_reply_is_eight_integers_and_nothing_else() {
        assert_eq!(numbers(b"1 0 2000000 0 0 1 2000000 4").unwrap(), [1, 0, 2_000_000, 0, 0, 1, 2_000_000, 4]);
        assert_eq!(numbers(b"-1 0 5 0 0 0 0 0").unwrap()[0], CODE_MISS);
        for bad in [&b"1 0 2 0 0 1 2"[..], b"1 0 2 0 0 1 2 4 9", b"1 0 2 0 0 1 2 x", b"1  0 2 0 0 1 2 4", b"", b"\xff"]
        {
            assert!(matches!(numbers(bad), Err(StoreError::Backend { .. })), "{bad:?}");
        }
    }
}
