//! Several buckets decided together, all or nothing: the step a multi-limit request adds to [`decide`].
//!
//! Each bucket is decided on its own as [`decide`] would; the request is allowed only when every one of them is,
//! and only then are the new states to be stored. When any bucket lacks its cost, every state stays exactly as it
//! was (not even refilled), and each bucket's answer says whether it alone had the tokens: a bucket that did is
//! described untouched ([`peek`]: allowed, `remaining` as it stands), one that did not carries its refusal and
//! `retry_after`, so a caller can tell which limit refused. One bucket is exactly [`decide`].
//!
//! The stores call this with the buckets already distinct (a key named twice is one bucket with the summed cost)
//! and every state held still (locked rows, a Lua script, lock bits) until they have stored the result.

use crate::{decide, peek, BucketState, Decision, Policy};

/// One bucket of a request decided together with others: its limits, its stored state, the tokens asked of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    /// The bucket's limits.
    pub policy: Policy,
    /// The state as stored (not yet refilled).
    pub state: BucketState,
    /// The tokens the request takes from this bucket.
    pub cost: u64,
}

/// The answer for several buckets: allowed only if every bucket is, and the states to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllDecided {
    /// Every bucket had its cost: the request is allowed and `after` holds the debited states.
    pub allowed: bool,
    /// One per demand, in order: whether that bucket on its own had the tokens, and how it stands.
    pub decisions: Vec<Decision>,
    /// One per demand: the state to store; each demand's own `state`, unchanged, when not `allowed`.
    pub after: Vec<BucketState>,
}

/// Decides every demand at `now_us`; the states change only if all are allowed. A pure function of its inputs.
pub fn decide_all(demands: &[Demand], now_us: u64) -> AllDecided {
    let decided: Vec<(Decision, BucketState)> =
        demands.iter().map(|d| decide(&d.policy, d.state, now_us, d.cost)).collect();
    let allowed = decided.iter().all(|(decision, _)| decision.allowed);
    if allowed {
        let (decisions, after) = decided.into_iter().unzip();
        return AllDecided { allowed, decisions, after };
    }
    let decisions = demands
        .iter()
        .zip(&decided)
        .map(|(d, (decision, _))| if decision.allowed { peek(&d.policy, d.state, now_us) } else { *decision })
        .collect();
    AllDecided { allowed, decisions, after: demands.iter().map(|d| d.state).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Wait;

    fn policy(capacity: u64) -> Policy {
        Policy::from_interval_us(capacity, 1_000_000).unwrap()
    }

    #[test]
    fn one_short_bucket_refuses_all_and_changes_no_state() {
        let (a, b) = (policy(5), policy(10));
        let demands = [
            Demand { policy: a, state: BucketState { tokens: 1, last_refill_us: 0 }, cost: 2 },
            Demand { policy: b, state: BucketState::full(&b, 0), cost: 3 },
        ];
        let all = decide_all(&demands, 400_000);
        assert!(!all.allowed);
        assert_eq!(all.after, vec![demands[0].state, demands[1].state]);
        assert!(!all.decisions[0].allowed);
        assert_eq!(all.decisions[0].retry_after, Some(Wait::After(600_000)));
        assert!(all.decisions[1].allowed, "b alone had the tokens");
        assert_eq!(all.decisions[1].remaining, 10, "and is shown untouched");
        assert_eq!(all.decisions[1].retry_after, None);
    }

    #[test]
    fn all_allowed_takes_every_cost_and_a_cost_above_capacity_is_never() {
        let p = policy(5);
        let full = BucketState::full(&p, 0);
        let all =
            decide_all(&[Demand { policy: p, state: full, cost: 2 }, Demand { policy: p, state: full, cost: 5 }], 0);
        assert!(all.allowed);
        assert_eq!(all.after.iter().map(|s| s.tokens).collect::<Vec<_>>(), vec![3, 0]);
        let all =
            decide_all(&[Demand { policy: p, state: full, cost: 6 }, Demand { policy: p, state: full, cost: 1 }], 0);
        assert!(!all.allowed);
        assert_eq!(all.decisions[0].retry_after, Some(Wait::Never));
        assert_eq!(all.after, vec![full, full]);
    }

    #[test]
    fn nothing_asked_is_allowed() {
        let all = decide_all(&[], 0);
        assert!(all.allowed && all.decisions.is_empty() && all.after.is_empty());
    }
}
