//! The invariants of the algorithm (README.md, "The exact algorithm"), checked against a naive model over random request sequences.

use bucket_core::{decide, from_full_at, full_at, refill, BucketState, Policy, Wait};
use proptest::prelude::*;

/// The naive model: the bucket's content measured in microseconds of refill, `level = tokens * interval + accrued`,
/// capped at `capacity * interval`. No floors anywhere, so it cannot lose or invent a fraction.
#[derive(Debug, Clone, Copy)]
struct Naive {
    level: u64,
    at: u64,
}

impl Naive {
    fn full(p: &Policy, at: u64) -> Self {
        Self { level: p.fill_time_us(), at }
    }
    fn request(&mut self, p: &Policy, now: u64, cost: u64) -> bool {
        let now = now.max(self.at);
        self.level = (self.level + (now - self.at)).min(p.fill_time_us());
        self.at = now;
        let need = cost * p.interval_us();
        if self.level >= need {
            self.level -= need;
            true
        } else {
            false
        }
    }
}

fn policy() -> impl Strategy<Value = Policy> {
    (1u64..50, 1u64..2_000_000).prop_map(|(c, i)| Policy::from_interval_us(c, i).unwrap())
}

/// Gaps between requests (µs), including zero and gaps longer than a full refill, and costs.
fn requests() -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec((prop_oneof![Just(0u64), 0u64..3_000_000, 0u64..200_000_000], 1u64..8), 1..120)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn agrees_with_the_naive_model(p in policy(), reqs in requests()) {
        let mut s = BucketState::full(&p, 0);
        let mut model = Naive::full(&p, 0);
        let mut now = 0;
        for (gap, cost) in reqs {
            now += gap;
            let (d, next) = decide(&p, s, now, cost);
            prop_assert_eq!(d.allowed, model.request(&p, now, cost), "at {} cost {}", now, cost);
            s = next;
        }
    }

    #[test]
    fn never_grants_more_than_capacity_plus_refill_over_any_window(p in policy(), reqs in requests()) {
        let mut s = BucketState::full(&p, 0);
        let mut now = 0;
        let mut granted: Vec<(u64, u64)> = Vec::new();
        for (gap, cost) in reqs {
            now += gap;
            let (d, next) = decide(&p, s, now, cost);
            if d.allowed { granted.push((now, cost)); }
            s = next;
        }
        for i in 0..granted.len() {
            let mut sum = 0;
            for &(t, c) in &granted[i..] {
                sum += c;
                let window = t - granted[i].0;
                prop_assert!(sum <= p.capacity() + window / p.interval_us(),
                    "{} granted in {} µs", sum, window);
            }
        }
    }

    #[test]
    fn a_caller_at_exactly_the_refill_rate_is_never_refused(
        p in policy(), tokens in 0u64..50, last in 0u64..10_000_000, n in 1usize..200
    ) {
        let mut s = BucketState { tokens: tokens.min(p.capacity()), last_refill_us: last };
        let start = last + p.interval_us();
        for k in 0..n as u64 {
            let (d, next) = decide(&p, s, start + k * p.interval_us(), 1);
            prop_assert!(d.allowed, "request {} refused", k);
            s = next;
        }
    }

    #[test]
    fn waiting_exactly_retry_after_is_then_allowed(p in policy(), reqs in requests(), cost in 1u64..8) {
        let cost = cost.min(p.capacity());
        let mut s = BucketState::full(&p, 0);
        let mut now = 0;
        for (gap, c) in reqs {
            now += gap;
            s = decide(&p, s, now, c).1;
        }
        let (d, _) = decide(&p, s, now, cost);
        if let Some(Wait::After(wait)) = d.retry_after {
            let later = now + wait;
            prop_assert!(decide(&p, s, later, cost).0.allowed);
            prop_assert!(wait == 0 || !decide(&p, s, later - 1, cost).0.allowed, "retry_after not the earliest");
        } else {
            prop_assert!(d.allowed);
        }
    }

    #[test]
    fn a_refused_request_changes_nothing(p in policy(), tokens in 0u64..50, last in 0u64..1_000_000,
                                         gap in 0u64..5_000_000, cost in 1u64..60) {
        let s = BucketState { tokens: tokens.min(p.capacity()), last_refill_us: last };
        let (d, next) = decide(&p, s, last + gap, cost);
        if !d.allowed {
            prop_assert_eq!(next, s);
        }
    }

    #[test]
    fn the_one_integer_encoding_is_the_same_bucket(p in policy(), tokens in 0u64..50, last in 0u64..1_000_000,
                                                   gap in 0u64..200_000_000) {
        let s = BucketState { tokens: tokens.min(p.capacity()), last_refill_us: last };
        let now = last + gap;
        prop_assert_eq!(from_full_at(&p, full_at(&p, s), now), refill(&p, s, now));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A caller whose clock reads earlier than the stored state (another thread stored a later one meanwhile),
    /// even close to the clock's zero, decodes without panicking and never sees more tokens than exist.
    #[test]
    fn decoding_at_an_earlier_instant_never_mints_tokens(p in policy(), tokens in 0u64..50, last in 0u64..5_000_000,
                                                         behind in 0u64..10_000_000, later in 0u64..10_000_000) {
        let s = BucketState { tokens: tokens.min(p.capacity()), last_refill_us: last };
        let early = last.saturating_sub(behind);
        let decoded = from_full_at(&p, full_at(&p, s), early);
        prop_assert!(decoded.tokens <= s.tokens);
        // And from then on it never gets ahead of the true bucket.
        let at = last + later;
        prop_assert!(refill(&p, decoded, at).tokens <= refill(&p, s, at).tokens);
    }
}
