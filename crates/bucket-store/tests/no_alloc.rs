//! The memory store's decision path allocates nothing but a new key's own bytes (and the map's amortised growth).
//!
//! A counting global allocator (this test binary's only one) tallies the calls and bytes requested by the current
//! thread, so libtest's other threads never add noise to a measurement.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use bucket_core::{ManualClock, Policy};
use bucket_store::{MemoryStore, Store};

struct Counting;

thread_local! {
    static CALLS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    // `try_with`: during thread teardown the slots may be gone; such allocations are not ours to count.
    let _ = CALLS.try_with(|c| c.set(c.get() + 1));
    let _ = BYTES.try_with(|b| b.set(b.get() + bytes as u64));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; counting touches only
// thread-locals with const initialisers, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// (calls, bytes) requested by this thread while `f` ran.
fn measure<T>(f: impl FnOnce() -> T) -> (u64, u64, T) {
    let (c0, b0) = (CALLS.with(Cell::get), BYTES.with(Cell::get));
    let out = f();
    (CALLS.with(Cell::get) - c0, BYTES.with(Cell::get) - b0, out)
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user-{i:06}")).collect()
}

#[test]
fn checks_on_existing_keys_allocate_nothing() {
    let clock = ManualClock::new(1_000_000);
    let store = MemoryStore::with_clock(Arc::new(clock.clone()));
    let policy = Policy::from_rate(10, 1.0).unwrap();
    let keys = keys(1_000);
    for k in &keys {
        store.check_now(k, &policy, 1);
    }
    // Allowed, refused (each key runs dry after 10) and refilled-then-allowed checks all take the same path.
    let (calls, bytes, allowed) = measure(|| {
        let mut allowed = 0u32;
        for round in 0..20 {
            for k in &keys {
                allowed += u32::from(store.check_now(k, &policy, 1).allowed);
            }
            if round == 14 {
                clock.advance_us(3_000_000);
            }
        }
        allowed
    });
    assert_eq!((calls, bytes), (0, 0), "the decision path allocated");
    // 9 left after warm-up, then 3 refilled: proves the loop really took allowed, refused and refilled paths.
    assert_eq!(allowed, 12 * 1_000);
}

#[test]
fn the_async_check_on_an_existing_key_allocates_nothing() {
    let store = MemoryStore::with_clock(Arc::new(ManualClock::new(1_000_000)));
    let policy = Policy::from_rate(1_000, 1.0).unwrap();
    // The first run warms the executor's thread-local parking state as well as the key.
    futures::executor::block_on(store.check("alice", &policy, 1)).unwrap();
    let (calls, bytes, outcome) = measure(|| futures::executor::block_on(store.check("alice", &policy, 1)));
    assert!(outcome.unwrap().decision.allowed);
    assert_eq!((calls, bytes), (0, 0), "Store::check allocated");
}

#[test]
fn a_new_key_allocates_its_bytes_and_amortised_map_growth_only() {
    const N: usize = 20_000;
    let store = MemoryStore::with_clock(Arc::new(ManualClock::new(1_000_000)));
    let policy = Policy::from_rate(10, 1.0).unwrap();
    let keys = keys(N);
    let key_bytes: u64 = keys.iter().map(|k| k.len() as u64).sum();
    let (calls, bytes, _) = measure(|| {
        for k in &keys {
            store.check_now(k, &policy, 1);
        }
    });
    assert_eq!(store.len(), N);
    // One box per key; the map's tables double a handful of times per shard.
    let growth_calls = calls - N as u64;
    assert!(calls >= N as u64 && growth_calls <= 400, "{calls} allocations for {N} new keys");
    let growth_per_key = (bytes - key_bytes) / N as u64;
    assert!(growth_per_key <= 128, "{growth_per_key} bytes of map growth per key");
}
