//! One validated `rate_limit` block: what a matching descriptor is held to.

use bucket_core::Policy;

use crate::Unit;

/// A rule from a limits file, validated: the token bucket it stands for is already built.
///
/// `requests_per_unit: N` per `unit: U` is a bucket of capacity N (or `burst`) refilled at N per U. Upstream counts
/// in fixed windows; bucket refills continuously, so the long-run rate is the same and a burst is never more than
/// the capacity.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// `rate_limit.name`, the handle `replaces` refers to; `None` when absent or empty.
    pub name: Option<String>,
    /// The refill period. Meaningless for an unlimited rule (upstream gives those no unit); set to `Second` there.
    pub unit: Unit,
    /// Tokens added per `unit`; 0 for an unlimited rule and for a rule that refuses everything.
    pub requests_per_unit: u32,
    /// bucket's extension `rate_limit.burst`: the capacity when it differs from `requests_per_unit`.
    pub burst: Option<u32>,
    /// `rate_limit.unlimited: true`: always OK, never touches a store.
    pub unlimited: bool,
    /// `shadow_mode: true`: decided and counted as usual, but the answer is always OK.
    pub shadow_mode: bool,
    /// `detailed_metric: true`: metrics carry the request's values (unbounded cardinality, opted into).
    pub detailed_metric: bool,
    /// The bucket; `None` when unlimited or when `requests_per_unit` is 0 (see [`Rule::action`]).
    pub policy: Option<Policy>,
    /// The descriptor path in the file, `domain.key_value.key2`: an id for logs and metrics made only of the
    /// configuration, never of a request's values.
    pub path: String,
    /// `rate_limit.replaces[].name`: rules this one switches off when both match one request.
    pub replaces: Vec<String>,
    /// The file the rule came from, for logs.
    pub file: String,
    /// This rule's place among its [`Limits`](crate::Limits)' rules, `0..rule_count()`: lets a front keep state per
    /// rule (its metric series) in a vector instead of looking it up by label on every request.
    pub index: usize,
}

/// What a rule asks of the caller, in one match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// OK without asking a store (`unlimited: true`).
    Unlimited,
    /// Over the limit without asking a store (`requests_per_unit: 0`, upstream's way to block a value).
    Deny,
    /// Take a token from this bucket.
    Bucket(Policy),
}

impl Rule {
    /// What to do with a request this rule matched.
    pub fn action(&self) -> Action {
        match (self.unlimited, self.policy) {
            (true, _) => Action::Unlimited,
            (false, Some(policy)) => Action::Bucket(policy),
            (false, None) => Action::Deny,
        }
    }
}
