//! The memory store's behaviour through its public interface, on a frozen clock.

use std::sync::Arc;

use bucket_core::{ManualClock, Policy};
use bucket_store::{MemoryStore, PolicyStore, Source, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_tasks_on_one_key_grant_exactly_capacity() {
    let clock = ManualClock::new(1_000_000);
    let store = MemoryStore::with_clock(Arc::new(clock));
    let policy = Policy::from_rate(100, 1.0).unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut allowed = 0;
                for _ in 0..10 {
                    if store.check("hot", &policy, 1).await.unwrap().decision.allowed {
                        allowed += 1;
                    }
                }
                allowed
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 100);
}

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

#[tokio::test]
async fn reset_refills_and_policies_round_trip() {
    let store = MemoryStore::with_clock(Arc::new(ManualClock::new(1)));
    let policy = Policy::from_rate(10, 1.0).unwrap();
    store.check("k", &policy, 10).await.unwrap();
    assert!(!store.check("k", &policy, 1).await.unwrap().decision.allowed);
    store.reset("k").await.unwrap();
    assert_eq!(store.peek("k", &policy).await.unwrap().decision.remaining, 10);

    let custom = Policy::per_minute(100).unwrap();
    assert_eq!(store.policy("k").await.unwrap(), None);
    store.set_policy("k", &custom).await.unwrap();
    assert_eq!(store.policy("k").await.unwrap(), Some(custom));
    assert!(store.delete_policy("k").await.unwrap());
    assert!(!store.delete_policy("k").await.unwrap());
}
