//! Decision cost of bucket's core and memory store next to governor, the reference Rust rate limiter.
//!
//! Every group holds one `bucket` and one `governor` function on the same quota and the same key sequence, so each
//! ratio in docs/perf.md comes from one run on one machine state. Two quotas per shape:
//! - `denied`: capacity 10, 1 token/s, the example; after the first few checks almost every check is refused.
//! - `allowed`: capacity 10^9, 10^6 tokens/s; no run is long enough to empty it, so every check is allowed and writes.
//!
//! Run: `CARGO_TARGET_DIR=... cargo bench -p bucket-store --bench decide` (or `cargo xtask bench`, which also
//! turns the results into the tables). Criterion's estimates land in `<target>/criterion/<group>/<fn>/new/`.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bucket_core::{decide, BucketState, Clock, Policy};
use bucket_store::{MemoryStore, TscClock};
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// One quota, spelled for both libraries.
#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    capacity: u32,
    per_second: u32,
}

const DENIED: Shape = Shape { name: "denied", capacity: 10, per_second: 1 };
const ALLOWED: Shape = Shape { name: "allowed", capacity: 1_000_000_000, per_second: 1_000_000 };

impl Shape {
    fn policy(self) -> Policy {
        Policy::from_interval_us(u64::from(self.capacity), 1_000_000 / u64::from(self.per_second)).expect("valid")
    }

    fn quota(self) -> Quota {
        let nz = |n: u32| NonZeroU32::new(n).expect("non-zero");
        Quota::per_second(nz(self.per_second)).allow_burst(nz(self.capacity))
    }
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user-{i:08}")).collect()
}

fn group<'a>(c: &'a mut Criterion, name: String) -> BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.warm_up_time(Duration::from_millis(800)).measurement_time(Duration::from_secs(3)).sample_size(40);
    g
}

/// The pure function alone against governor's single-cell limiter: the floor either can reach.
fn core(c: &mut Criterion) {
    for shape in [DENIED, ALLOWED] {
        let mut g = group(c, format!("core_{}", shape.name));
        let policy = shape.policy();
        // The clock the memory store uses, so this group is the memory store's decision minus its map.
        let clock = TscClock::new();
        g.bench_function("bucket", |b| {
            let mut state = BucketState::full(&policy, clock.now_us());
            b.iter(|| {
                let (d, next) = decide(&policy, state, clock.now_us(), 1);
                state = next;
                // The whole decision, header values included: inlined, a bare `allowed` would let the compiler
                // drop the arithmetic every response needs.
                black_box(d)
            })
        });
        let direct = RateLimiter::direct(shape.quota());
        g.bench_function("governor", |b| b.iter(|| black_box(direct.check().is_ok())));
        g.finish();
    }
}

/// One thread, round-robin over `n` keys that all exist before timing starts.
fn keyed(c: &mut Criterion, n: usize, label: &str) {
    let keys = keys(n);
    for shape in [DENIED, ALLOWED] {
        let mut g = group(c, format!("{label}_{}", shape.name));
        let policy = shape.policy();
        let store = MemoryStore::new();
        for k in &keys {
            store.check_now(k, &policy, 1);
        }
        g.bench_function("bucket", |b| {
            let mut i = 0;
            b.iter(|| {
                i = if i + 1 == keys.len() { 0 } else { i + 1 };
                black_box(store.check_now(&keys[i], &policy, 1).allowed)
            })
        });
        drop(store);
        let limiter: DefaultKeyedRateLimiter<String> = RateLimiter::keyed(shape.quota());
        for k in &keys {
            let _ = limiter.check_key(k);
        }
        g.bench_function("governor", |b| {
            let mut i = 0;
            b.iter(|| {
                i = if i + 1 == keys.len() { 0 } else { i + 1 };
                black_box(limiter.check_key(&keys[i]).is_ok())
            })
        });
        g.finish();
    }
}

fn hot_key(c: &mut Criterion) {
    keyed(c, 1, "hot_key");
}

fn keys_10k(c: &mut Criterion) {
    keyed(c, 10_000, "keys_10k");
}

fn keys_1m(c: &mut Criterion) {
    keyed(c, 1_000_000, "keys_1m");
}

/// Wall time for `iters` checks split over two threads that start together: contention on one key's cell.
fn two_threads(iters: u64, check: impl Fn() -> bool + Sync) -> Duration {
    let barrier = Barrier::new(2);
    let per_thread = [iters.div_ceil(2), iters / 2];
    std::thread::scope(|s| {
        let handles: Vec<_> = per_thread
            .iter()
            .map(|&n| {
                let (barrier, check) = (&barrier, &check);
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..n {
                        black_box(check());
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("bench thread")).max().unwrap_or_default()
    })
}

fn hot_key_two_threads(c: &mut Criterion) {
    for shape in [DENIED, ALLOWED] {
        let mut g = group(c, format!("hot_key_2threads_{}", shape.name));
        let policy = shape.policy();
        let store = Arc::new(MemoryStore::new());
        g.bench_function("bucket", |b| {
            b.iter_custom(|iters| two_threads(iters, || store.check_now("hot", &policy, 1).allowed))
        });
        let limiter: DefaultKeyedRateLimiter<String> = RateLimiter::keyed(shape.quota());
        let key = "hot".to_string();
        g.bench_function("governor", |b| b.iter_custom(|iters| two_threads(iters, || limiter.check_key(&key).is_ok())));
        g.finish();
    }
}

criterion_group!(benches, core, hot_key, keys_10k, keys_1m, hot_key_two_threads);
criterion_main!(benches);
