//! What a check answers: enough for every header and JSON field without recomputing anything.

use std::time::Duration;

/// How long a refused caller must wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// `cost` tokens will be there after this long; retrying then succeeds unless someone else spends them first.
    After(Duration),
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
    /// Time until the bucket is full again (zero when it is).
    pub reset_after: Duration,
    /// Time until the next whole token arrives (zero when full): the `t` of the `RateLimit` header on a 200.
    pub next_token_after: Duration,
    /// `None` when allowed; when refused, how long until `cost` tokens are available.
    pub retry_after: Option<Wait>,
}
