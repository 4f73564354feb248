//! `decide_all` against `decide` bucket by bucket: all or nothing, and otherwise the very same answers.

use bucket_core::{decide, decide_all, peek, BucketState, Demand, Policy};
use proptest::prelude::*;

fn demand() -> impl Strategy<Value = Demand> {
    (1u64..50, 1u64..2_000_000, 0u64..60, 0u64..100_000_000, 0u64..60).prop_map(|(c, i, t, l, cost)| {
        let policy = Policy::from_interval_us(c, i).unwrap();
        Demand { policy, state: BucketState { tokens: t.min(c), last_refill_us: l }, cost }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn all_or_nothing_and_each_bucket_answers_as_decide_would(
        demands in prop::collection::vec(demand(), 0..6),
        now in 0u64..200_000_000,
    ) {
        let all = decide_all(&demands, now);
        let each: Vec<_> = demands.iter().map(|d| decide(&d.policy, d.state, now, d.cost)).collect();
        prop_assert_eq!(all.allowed, each.iter().all(|(d, _)| d.allowed));
        prop_assert_eq!(all.decisions.len(), demands.len());
        prop_assert_eq!(all.after.len(), demands.len());
        for (i, (d, (alone, after))) in demands.iter().zip(&each).enumerate() {
            prop_assert_eq!(all.decisions[i].allowed, alone.allowed, "bucket {} on its own", i);
            if all.allowed {
                prop_assert_eq!(all.decisions[i], *alone);
                prop_assert_eq!(all.after[i], *after);
            } else {
                // Nothing is debited, not even a refill is stored.
                prop_assert_eq!(all.after[i], d.state);
                let untouched = if alone.allowed { peek(&d.policy, d.state, now) } else { *alone };
                prop_assert_eq!(all.decisions[i], untouched);
            }
        }
    }
}
