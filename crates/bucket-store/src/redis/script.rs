//! The Lua script's side: running it, and checking its reply against bucket-core before anyone believes it.

use std::io::Write;

use bucket_core::{decide, BucketState, Policy};
use deadpool_redis::redis::{self, RedisWrite};

use super::pool::{Op, ScriptArgs};
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
        let args = OneArgs { prefix: &self.inner.prefix, key, policy, cost, now_us, mode, seed };
        let op = Op::Script { lua: Lua::One, args: &args };
        let reply: Vec<u8> = self.exec(op, self.inner.command_timeout).await?;
        interpret(policy, cost, &numbers(&reply)?)
    }
}

/// `token_bucket.lua`'s key and arguments: `<prefix>{<key>}`; capacity, µs per token, cost, now (empty: Redis's
/// clock), mode, and the seed's tokens, last refill and version in seed mode. Numbers are written by redis-rs
/// (itoa) and the key straight into the command: no `String` per call.
pub(super) struct OneArgs<'a> {
    /// `[redis] key_prefix`.
    pub(super) prefix: &'a str,
    /// The caller's key, without prefix or braces.
    pub(super) key: &'a str,
    /// The bucket's policy.
    pub(super) policy: &'a Policy,
    /// Tokens to take.
    pub(super) cost: u64,
    /// The decision's time; `None` for Redis's clock.
    pub(super) now_us: Option<u64>,
    /// `full`, `report`, `seed` or `peek`.
    pub(super) mode: &'a str,
    /// The state to decide against in seed mode when Redis holds no bucket.
    pub(super) seed: Option<&'a VersionedState>,
}

impl ScriptArgs for OneArgs<'_> {
    fn keys(&self) -> usize {
        1
    }

    fn write(&self, cmd: &mut redis::Cmd) {
        {
            let mut key = cmd.writer_for_next_arg();
            // Writing into the command's own `Vec` cannot fail.
            for part in super::bucket_key_parts(self.prefix, self.key) {
                let _ = key.write_all(part.as_bytes());
            }
        }
        cmd.arg(self.policy.capacity()).arg(self.policy.interval_us()).arg(self.cost);
        match self.now_us {
            Some(now) => cmd.arg(now),
            None => cmd.arg(""),
        };
        cmd.arg(self.mode);
        if let Some(seed) = self.seed {
            cmd.arg(seed.state.tokens).arg(seed.state.last_refill_us).arg(seed.version);
        }
    }

    fn size(&self) -> (usize, usize) {
        // Key, five arguments and three of the seed's, each number at most 20 digits.
        (9, self.prefix.len() + self.key.len() + 2 + 7 * 20 + self.mode.len())
    }

    fn peek(&self) -> bool {
        self.mode == "peek"
    }
}

/// The script's reply, eight decimal integers separated by spaces, as numbers. Hand-written because it is a
/// format of ours: one bulk string instead of an array of eight integers saves the client's RESP parser most of
/// its work on every check (docs/perf.md §9).
pub(super) fn numbers(reply: &[u8]) -> Result<[i64; 8], StoreError> {
    let mut numbers = [0i64; 8];
    let mut rest = reply;
    for (i, slot) in numbers.iter_mut().enumerate() {
        let (value, len) = field(rest);
        *slot = value.ok_or_else(|| malformed(reply, "a non-integer"))?;
        rest = &rest[len..];
        if i < 7 {
            rest = rest.strip_prefix(b" ").ok_or_else(|| malformed(reply, "too few values"))?;
        }
    }
    if !rest.is_empty() {
        return Err(malformed(reply, "too many values"));
    }
    Ok(numbers)
}

/// The integer at the start of `rest`, up to the next space or the end, as `str::parse::<i64>` reads it, and the
/// field's length. One pass over the bytes for the script's numbers (an optional `-`, at most 18 digits, which
/// cannot overflow); anything else goes through `str::parse`. Splitting and parsing `&str`s cost twice as much
/// (docs/perf.md §9).
fn field(rest: &[u8]) -> (Option<i64>, usize) {
    let negative = rest.first() == Some(&b'-');
    let start = usize::from(negative);
    let mut at = start;
    let mut n = 0i64;
    // Wrapping: a field of more than 18 digits goes to the slow path below, whatever this made of it.
    while let Some(&byte @ b'0'..=b'9') = rest.get(at) {
        n = n.wrapping_mul(10).wrapping_add(i64::from(byte - b'0'));
        at += 1;
    }
    let digits = at - start;
    if (1..=18).contains(&digits) && matches!(rest.get(at), None | Some(b' ')) {
        return (Some(if negative { -n } else { n }), at);
    }
    let len = rest.iter().position(|&byte| byte == b' ').unwrap_or(rest.len());
    let value = std::str::from_utf8(&rest[..len]).ok().and_then(|text| text.parse().ok());
    (value, len)
}

fn malformed(reply: &[u8], what: &str) -> StoreError {
    corrupt(format!("the script returned {what}: {:?}", String::from_utf8_lossy(reply)))
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

    /// The arguments as `token_bucket.lua` has always received them, formatted one `String` at a time.
    fn written(args: &OneArgs<'_>) -> Vec<String> {
        let mut cmd = redis::Cmd::new();
        args.write(&mut cmd);
        cmd.args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => String::from_utf8(bytes.to_vec()).unwrap(),
                _ => panic!("only plain arguments"),
            })
            .collect()
    }

    #[test]
    fn the_arguments_are_the_key_and_decimal_numbers() {
        let policy = Policy::from_interval_us(10, 1_000_000).unwrap();
        let mut args =
            OneArgs { prefix: "rl:", key: "a{b} c", policy: &policy, cost: 3, now_us: None, mode: "full", seed: None };
        assert_eq!(written(&args), ["rl:{a{b} c}", "10", "1000000", "3", "", "full"]);
        assert!(!args.peek());
        let seed = VersionedState { state: BucketState { tokens: 7, last_refill_us: u64::MAX }, version: 12 };
        args.now_us = Some(18_446_744_073_709_551_614);
        args.mode = "seed";
        args.seed = Some(&seed);
        let all = written(&args);
        assert_eq!(
            all,
            ["rl:{a{b} c}", "10", "1000000", "3", "18446744073709551614", "seed", "7", "18446744073709551615", "12"]
        );
        let (count, bytes) = args.size();
        assert_eq!(count, all.len());
        assert!(bytes >= all.iter().map(String::len).sum::<usize>(), "the command is sized once");
        args.mode = "peek";
        assert!(args.peek());
    }

    #[test]
    fn fields_are_read_as_str_parse_reads_them() {
        let cases = [
            "0",
            "7",
            "-1",
            "+5",
            "0042",
            "-0",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "-9223372036854775809",
            "999999999999999999",
            "-999999999999999999",
            "00000000000000000000000000001",
            "99999999999999999999",
            "",
            "-",
            "+",
            "1-",
            "--1",
            "1.0",
            "1e3",
            "١",
            "12345678901234567890123",
        ];
        for case in cases {
            assert_eq!(field(case.as_bytes()), (case.parse::<i64>().ok(), case.len()), "{case:?}");
            let followed = format!("{case} 5");
            assert_eq!(field(followed.as_bytes()), (case.parse::<i64>().ok(), case.len()), "{followed:?}");
        }
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
