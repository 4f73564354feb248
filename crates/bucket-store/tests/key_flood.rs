//! A flood of fresh keys keeps the memory store bounded by one refill window of keys. (Hostile keys through every
//! store are part of the contract suite: `contract.rs`.)

use std::sync::Arc;

use bucket_core::{ManualClock, Policy};
use bucket_store::MemoryStore;

/// 10,000 new keys a second for a simulated minute, with the evictor running every simulated second as in
/// production (`evict_interval_ms` = 1000): the map never holds more than the keys of one refill window plus one
/// eviction period, however many keys were ever seen.
#[test]
fn a_key_flood_keeps_the_memory_store_bounded() {
    const PER_SECOND: u64 = 10_000;
    const SECONDS: u64 = 60;
    const STEP_US: u64 = 1_000_000 / PER_SECOND;
    // The default policy: capacity 10, one token a second. A bucket that spent one token is full again after
    // one second, so it is evictable one second after its last use.
    let policy = Policy::from_interval_us(10, 1_000_000).expect("valid policy");
    let refill_window_keys = PER_SECOND as usize; // keys that can be non-full at one instant: one second's worth
    let clock = ManualClock::new(1);
    let store = MemoryStore::with_clock(Arc::new(clock.clone()));
    let mut peak = 0;
    for second in 0..SECONDS {
        for i in 0..PER_SECOND {
            let decision = store.check_now(&format!("flood-{second}-{i}"), &policy, 1);
            assert!(decision.allowed);
            clock.advance_us(STEP_US);
        }
        peak = peak.max(store.len());
        let evicted = store.evict_full();
        assert!(evicted > 0, "second {second}: the evictor freed nothing");
        assert!(
            store.len() <= refill_window_keys,
            "second {second}: {} buckets survive eviction; only the last second's {refill_window_keys} may",
            store.len()
        );
    }
    assert!(peak <= 2 * refill_window_keys, "peak {peak} buckets for {} keys a second", PER_SECOND);
    assert!(peak >= refill_window_keys, "peak {peak}: the flood did not create buckets (test is vacuous)");
}
