//! The one-integer encoding of a bucket: the instant it will be full again (GCRA's "theoretical arrival time").
//!
//! `(tokens, last_refill)` with `tokens < capacity` is the same information as
//! `full_at = last_refill + (capacity - tokens) * interval`, and a full bucket is any `full_at <= now`. Decoding
//! at `now` yields exactly [`refill`](crate::refill)'s result (see the property test), so the memory store can keep
//! one `AtomicU64` per key and update it with compare-and-swap, while all the math stays in `refill.rs`.

use crate::{BucketState, Policy};

/// Encodes a state as the instant its bucket is full (equal to `last_refill_us` when already full).
#[inline]
pub fn full_at(policy: &Policy, state: BucketState) -> u64 {
    let missing = policy.capacity().saturating_sub(state.tokens);
    state.last_refill_us + missing * policy.interval_us()
}

/// Decodes `full_at` as seen at `now_us`: the refilled state, identical to `refill` of the original.
///
/// `now_us` may be earlier than the state's own `last_refill` (a concurrent check stored a state stamped a moment
/// after this caller read its clock). The decoded state is then the same bucket as of an earlier instant, which
/// holds no more tokens than the true one: a stale clock can delay a token, never mint one. Near the clock's zero
/// that earlier instant could lie before zero; it saturates at zero, which only removes tokens.
#[inline]
pub fn from_full_at(policy: &Policy, full_at: u64, now_us: u64) -> BucketState {
    if full_at <= now_us {
        return BucketState::full(policy, now_us);
    }
    let interval = policy.interval_us();
    let missing = (full_at - now_us).div_ceil(interval).min(policy.capacity());
    BucketState { tokens: policy.capacity() - missing, last_refill_us: full_at.saturating_sub(missing * interval) }
}
