//! The memory store's behaviour through its public interface, on a frozen clock.

use std::sync::Arc;

use bucket_core::{ManualClock, Policy};
use bucket_store::{Limit, MemoryStore, Source, Store};

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

/// OS threads mixing single-key checks, multi-key requests over overlapping keys in every order, resets and the
/// evictor on the same keys: every bucket gave exactly the tokens the allowed requests took (so the lock bits never
/// lost a write nor let a refused request debit), and nothing deadlocked.
#[test]
fn lock_bits_keep_single_and_multi_key_checks_exact_across_threads() {
    let clock = ManualClock::new(1);
    let store = MemoryStore::with_clock(Arc::new(clock));
    let policy = Policy::from_interval_us(3_000, 3_600_000_000).unwrap();
    let keys = ["p", "q", "r", "s"];
    let taken: Vec<[u64; 4]> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6u64)
            .map(|t| {
                let store = &store;
                scope.spawn(move || {
                    let mut taken = [0u64; 4];
                    let mut seed = t + 1;
                    for _ in 0..3_000 {
                        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                        let pick = (seed >> 33) as usize;
                        let cost = 1 + (pick as u64 >> 8) % 3;
                        if pick.is_multiple_of(4) {
                            let k = (pick >> 4) % 4;
                            if store.check_now(keys[k], &policy, cost).allowed {
                                taken[k] += cost;
                            }
                        } else {
                            // Two or three keys, in a thread-dependent order (the store sorts them itself).
                            let (a, b, c) = ((pick >> 4) % 4, (pick >> 6) % 4, (pick >> 10) % 4);
                            let chosen: Vec<usize> = if pick % 4 == 1 { vec![a, b] } else { vec![c, b, a] };
                            let limits: Vec<Limit<'_>> =
                                chosen.iter().map(|&k| Limit { key: keys[k], policy, cost }).collect();
                            if store.check_all_now(&limits).allowed {
                                for &k in &chosen {
                                    taken[k] += cost;
                                }
                            }
                        }
                    }
                    taken
                })
            })
            .collect();
        // Meanwhile: the evictor and resets of keys nobody checks, on the same shards' neighbours.
        let store = &store;
        scope.spawn(move || {
            for i in 0..2_000 {
                store.evict_full();
                futures::executor::block_on(store.reset(&format!("other-{}", i % 7))).unwrap();
            }
        });
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (k, key) in keys.iter().enumerate() {
        let given: u64 = taken.iter().map(|t| t[k]).sum();
        let left = futures::executor::block_on(store.peek(key, &policy)).unwrap().decision.remaining;
        assert_eq!(3_000 - left, given, "{key}");
    }
}

/// A reset waits for a multi-key request holding the bucket, then empties it; refused requests leave no bucket.
#[tokio::test]
async fn multi_key_requests_leave_nothing_behind_when_refused_and_reset_still_works() {
    let store = MemoryStore::with_clock(Arc::new(ManualClock::new(1)));
    let policy = Policy::from_rate(10, 1.0).unwrap();
    let out = store.check_all(&[Limit { key: "a", policy, cost: 1 }, Limit { key: "b", policy, cost: 11 }]).await;
    assert!(!out.unwrap().allowed);
    assert!(store.is_empty(), "a refused request inserted buckets");
    let out = store.check_all(&[Limit { key: "a", policy, cost: 4 }, Limit { key: "b", policy, cost: 10 }]).await;
    assert!(out.unwrap().allowed);
    assert_eq!(store.len(), 2);
    store.reset("b").await.unwrap();
    assert_eq!(store.peek("b", &policy).await.unwrap().decision.remaining, 10);
    assert_eq!(store.peek("a", &policy).await.unwrap().decision.remaining, 6);
}
