//! The shared case table, run against bucket-core directly (the reference the script and the SQL must match).

mod common;

use bucket_core::{decide, BucketState, Policy, Wait};
use common::cases::CASES;

#[test]
fn core_matches_every_case() {
    for case in CASES {
        let policy = Policy::from_interval_us(case.capacity, case.interval_us).unwrap();
        let stored = match case.stored {
            Some((tokens, last_refill_us)) => BucketState { tokens, last_refill_us },
            None => BucketState::full(&policy, case.now_us),
        };
        let (decision, after) = decide(&policy, stored, case.now_us, case.cost);
        assert_eq!(decision.allowed, case.allowed, "{}", case.name);
        assert_eq!(decision.remaining, case.remaining, "{}", case.name);
        let expected_after = case.after.map(|(tokens, last_refill_us)| BucketState { tokens, last_refill_us });
        assert_eq!(Some(after), expected_after.or(Some(stored)), "{}", case.name);
        let retry = decision.retry_after.map(|w| match w {
            Wait::After(us) => us,
            Wait::Never => u64::MAX,
        });
        assert_eq!(retry, case.retry_after_us, "{}", case.name);
    }
}
