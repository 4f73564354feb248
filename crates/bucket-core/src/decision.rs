//! What a check answers: enough for every header and JSON field without recomputing anything.
//!
//! Times are whole microseconds, the unit of the refill math, so a decision is a handful of integers; a caller
//! that wants a [`Duration`] asks for one ([`Decision::reset_after`]), and the HTTP layer rounds the µs up to its own
//! seconds or milliseconds directly.

use std::time::Duration;

/// How long a refused caller must wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// `cost` tokens will be there after this many µs; retrying then succeeds unless someone else spends them first.
    After(u64),
    /// `cost` is above the capacity: no amount of waiting helps.
    Never,
}

/// The answer to one check, as of the instant it was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the tokens were taken.
    pub allowed: bool,
    /// The bucket's capacity.
    pub limit: u64,
    /// Whole tokens left after this decision.
    pub remaining: u64,
    /// µs until the bucket is full again (zero when it is).
    pub reset_after_us: u64,
    /// µs until the next whole token arrives (zero when full): the `t` of the `RateLimit` header on a 200.
    pub next_token_after_us: u64,
    /// `None` when allowed; when refused, how long until `cost` tokens are available.
    pub retry_after: Option<Wait>,
}

impl Decision {
    /// [`Decision::reset_after_us`] as a `Duration`, for callers that speak `Duration` (the RLS gRPC answer).
    pub fn reset_after(&self) -> Duration {
        Duration::from_micros(self.reset_after_us)
    }
}
