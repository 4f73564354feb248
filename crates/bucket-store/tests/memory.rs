//! The memory store's behaviour through its public interface, on a frozen clock.

use std::sync::Arc;

use bucket_core::{ManualClock, Policy};
use bucket_store::{MemoryStore, Source, Store};

#[test]
fn threads_hammering_one_key_and_many_keys_stay_exact() {
    let clock = ManualClock::new(1);
    let store = MemoryStore::with_clock(Arc::new(clock));
    let policy = Policy::from_rate(1000, 1.0).unwrap();
    let granted: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let store = &store;
                scope.spawn(move || {
                    let mut hot = 0;
                    for i in 0..2000 {
                        if store.check_now("hot", &policy, 1).allowed {
                            hot += 1;
                        }
                        assert!(store.check_now(&format!("cold-{t}-{i}"), &policy, 1).allowed);
                    }
                    hot
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(granted, 1000);
}

#[tokio::test]
async fn full_buckets_are_evicted_and_come_back_full() {
    let clock = ManualClock::new(1);
    let store = MemoryStore::with_clock(Arc::new(clock.clone()));
    let policy = Policy::from_rate(10, 1.0).unwrap();
    for i in 0..1000 {
        store.check(&format!("user-{i}"), &policy, 1).await.unwrap();
    }
    store.check("busy", &policy, 10).await.unwrap();
    assert_eq!(store.len(), 1001);
    assert_eq!(store.evict_full(), 0, "nothing has refilled yet");
    clock.advance_us(1_000_000);
    assert_eq!(store.evict_full(), 1000, "one token refilled the single-use buckets");
    assert_eq!(store.len(), 1, "the drained bucket is still refilling");
    let o = store.check("user-1", &policy, 1).await.unwrap();
    assert_eq!((o.decision.remaining, o.source), (9, Source::Memory));
    let busy = store.peek("busy", &policy).await.unwrap().decision;
    assert_eq!(busy.remaining, 1);
}

#[tokio::test]
async fn refused_checks_and_full_buckets_store_nothing() {
    let store = MemoryStore::with_clock(Arc::new(ManualClock::new(1)));
    let policy = Policy::from_rate(10, 1.0).unwrap();
    let o = store.check("k", &policy, 11).await.unwrap();
    assert!(!o.decision.allowed);
    assert!(store.peek("k", &policy).await.unwrap().decision.allowed);
    assert!(store.is_empty());
}
