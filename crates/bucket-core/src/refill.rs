//! The refill-and-consume math, the one place it is written in Rust.
//!
//! A bucket is `(tokens, last_refill)`: `tokens` whole tokens were in it at instant `last_refill` (µs), and one
//! more arrives every `interval` µs after that, up to `capacity`. Nothing runs between requests; a touch brings
//! the state up to date:
//!
//! ```text
//! added       = floor((now - last_refill) / interval)
//! if tokens + added >= capacity:  tokens' = capacity,        last' = max(now, last_refill)
//! else:                           tokens' = tokens + added,  last' = last_refill + added * interval
//! ```
//!
//! `last'` moves by exactly the time the added tokens took, so the part-token that has accrued since, `(now -
//! last') < interval`, is kept for the next touch: no fraction is lost or invented however often the bucket is
//! touched. A full bucket gains nothing, so its clock restarts at `now`, and a full bucket is indistinguishable
//! from a new one (which is why stores may forget full buckets).
//!
//! A request of `cost` is allowed when `tokens' >= cost` and leaves `(tokens' - cost, last')`; a refused request
//! leaves the state exactly as it was. Hence over any window of length `T` at most `capacity + floor(T /
//! interval)` tokens are granted, and a caller spending one token every `interval` is never refused.
//!
//! The answer's waits, in µs, are read off the state that is kept: `(tokens' - cost, last')` when allowed,
//! `(tokens', last')` when refused. With `tokens` its tokens and `accrued = now - last'` (below `interval`, and zero
//! for a full bucket), the bucket holds `n > tokens` tokens after
//!
//! ```text
//! until(n) = (n - tokens) * interval - accrued
//! ```
//!
//! so the bucket is full after `until(capacity)`, the next token arrives after `until(tokens + 1) = interval -
//! accrued` (zero when full), and a refused caller may retry after `until(cost)`: never, if `cost > capacity`.
//!
//! A clock that reads earlier than `last_refill` (a skewed server) counts as no time passing: skew can delay
//! tokens, never mint them.
//!
//! The same lines exist in `bucket-store`'s Lua script and SQL statement; `tests/common/cases.rs` there holds one table
//! of cases that `tests/cases_core.rs`, `cases_redis.rs` and `cases_postgres.rs` run against all three.

use crate::{Decision, Policy, Wait};

/// A bucket's stored state: whole tokens at an instant, in the µs of whichever clock the store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BucketState {
    /// Whole tokens in the bucket at `last_refill_us`.
    pub tokens: u64,
    /// The instant `tokens` was exact; the part-token accrued since is implicit.
    pub last_refill_us: u64,
}

impl BucketState {
    /// The state of a bucket never seen before: full.
    pub fn full(policy: &Policy, now_us: u64) -> Self {
        Self { tokens: policy.capacity(), last_refill_us: now_us }
    }
}

/// Brings a state up to `now_us`; a pure function of its inputs.
#[inline]
pub fn refill(policy: &Policy, state: BucketState, now_us: u64) -> BucketState {
    let capacity = policy.capacity();
    let interval = policy.interval_us();
    let now = now_us.max(state.last_refill_us);
    if state.tokens >= capacity {
        return BucketState { tokens: capacity, last_refill_us: now };
    }
    let elapsed = now - state.last_refill_us;
    // A bucket touched again within one interval (every hot key) gains nothing: no division needed.
    let added = if elapsed < interval { 0 } else { elapsed / interval };
    if added >= capacity - state.tokens {
        BucketState { tokens: capacity, last_refill_us: now }
    } else {
        BucketState { tokens: state.tokens + added, last_refill_us: state.last_refill_us + added * interval }
    }
}

/// Decides a request of `cost` tokens at `now_us`: the answer, and the state to store (unchanged when refused).
#[inline]
pub fn decide(policy: &Policy, state: BucketState, now_us: u64, cost: u64) -> (Decision, BucketState) {
    let now = now_us.max(state.last_refill_us);
    let current = refill(policy, state, now);
    if cost <= current.tokens {
        let after = BucketState { tokens: current.tokens - cost, last_refill_us: current.last_refill_us };
        (describe(policy, after, now, true, cost), after)
    } else {
        (describe(policy, current, now, false, cost), state)
    }
}

/// What a check would see at `now_us`, without taking anything.
pub fn peek(policy: &Policy, state: BucketState, now_us: u64) -> Decision {
    decide(policy, state, now_us, 0).0
}

#[inline]
fn describe(policy: &Policy, current: BucketState, now: u64, allowed: bool, cost: u64) -> Decision {
    let capacity = policy.capacity();
    let interval = policy.interval_us();
    // The waits of the module doc. `current` is refilled, so `accrued < interval`, and zero when it is full.
    let accrued = now - current.last_refill_us;
    let reset_after_us = (capacity - current.tokens) * interval - accrued;
    let retry_after = if allowed {
        None
    } else if cost > capacity {
        Some(Wait::Never)
    } else {
        // Refused, so `cost > tokens'`.
        Some(Wait::After((cost - current.tokens) * interval - accrued))
    };
    Decision {
        allowed,
        limit: capacity,
        remaining: current.tokens,
        reset_after_us,
        // `interval - accrued` unless full, when both it and the reset are zero.
        next_token_after_us: reset_after_us.min(interval - accrued),
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;

    fn ten_per_sec_cap_10() -> Policy {
        Policy::from_rate(10, 1.0).unwrap()
    }

    #[test]
    fn full_bucket_allows_capacity_then_refuses() {
        let p = ten_per_sec_cap_10();
        let mut s = BucketState::full(&p, 0);
        for i in 0..10 {
            let (d, next) = decide(&p, s, 0, 1);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 9 - i);
            s = next;
        }
        let (d, next) = decide(&p, s, 0, 1);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(Wait::After(SEC)));
        assert_eq!(next, s);
    }

    #[test]
    fn refill_keeps_the_part_token() {
        let p = ten_per_sec_cap_10();
        let s = BucketState { tokens: 0, last_refill_us: 0 };
        let s = refill(&p, s, 1_500_000);
        assert_eq!(s, BucketState { tokens: 1, last_refill_us: SEC });
        // The half token accrued before the touch is still there: at 2.0 s a second token is complete.
        let s = refill(&p, s, 2 * SEC);
        assert_eq!(s, BucketState { tokens: 2, last_refill_us: 2 * SEC });
    }

    #[test]
    fn refill_stops_at_capacity_and_restarts_the_clock() {
        let p = ten_per_sec_cap_10();
        let s = refill(&p, BucketState { tokens: 3, last_refill_us: 0 }, 100 * SEC + 5);
        assert_eq!(s, BucketState { tokens: 10, last_refill_us: 100 * SEC + 5 });
    }

    #[test]
    fn clock_going_backwards_mints_nothing() {
        let p = ten_per_sec_cap_10();
        let s = BucketState { tokens: 0, last_refill_us: 50 * SEC };
        let (d, next) = decide(&p, s, 10 * SEC, 1);
        assert!(!d.allowed);
        assert_eq!(next, s);
        assert_eq!(d.retry_after, Some(Wait::After(SEC)));
    }

    #[test]
    fn cost_above_one_and_retry_after_counts_the_accrued_part() {
        let p = ten_per_sec_cap_10();
        let s = BucketState { tokens: 2, last_refill_us: 0 };
        let (d, next) = decide(&p, s, 400_000, 5);
        assert!(!d.allowed);
        assert_eq!(next, s);
        // 3 more tokens needed, 0.4 s of the first already accrued.
        assert_eq!(d.retry_after, Some(Wait::After(2_600_000)));
        let (d, next) = decide(&p, s, 3 * SEC, 5);
        assert!(d.allowed);
        assert_eq!(next, BucketState { tokens: 0, last_refill_us: 3 * SEC });
    }

    #[test]
    fn cost_above_capacity_is_never() {
        let p = ten_per_sec_cap_10();
        let s = BucketState::full(&p, 0);
        let (d, next) = decide(&p, s, 0, 11);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(Wait::Never));
        assert_eq!(next, s);
    }

    #[test]
    fn reset_and_next_token_times() {
        let p = ten_per_sec_cap_10();
        let d = peek(&p, BucketState { tokens: 7, last_refill_us: 0 }, 250_000);
        assert_eq!(d.remaining, 7);
        assert_eq!(d.next_token_after_us, 750_000);
        assert_eq!(d.reset_after_us, 2_750_000);
        let d = peek(&p, BucketState::full(&p, 0), 0);
        assert_eq!((d.next_token_after_us, d.reset_after_us), (0, 0));
    }

    #[test]
    fn peek_takes_nothing() {
        let p = ten_per_sec_cap_10();
        let s = BucketState { tokens: 4, last_refill_us: 0 };
        let d = peek(&p, s, 0);
        assert!(d.allowed);
        assert_eq!(d.remaining, 4);
    }
}
