//! Resident memory of the memory store per live key, measured in-process without HTTP in the way.
//!
//! Fills a `MemoryStore` with 1,000,000 distinct 16-byte keys (each left one token short, so none is evictable),
//! reads `VmRSS` from /proc/self/status before and after, then lets every bucket refill on the manual clock, evicts
//! them and reads it again. Prints one `MEMORY {json}` line that `cargo xtask bench` copies into docs/perf.md.
//!
//! Run: `cargo bench -p bucket-store --bench memory_rss`.

use std::fmt::Write as _;
use std::sync::Arc;

use bucket_core::{ManualClock, Policy};
use bucket_store::MemoryStore;

const KEYS: u64 = 1_000_000;
const KEY_BYTES: u64 = 16;

/// VmRSS in KiB, or 0 where /proc is missing (then the printed numbers say so plainly).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let clock = ManualClock::new(1_000_000);
    let store = MemoryStore::with_clock(Arc::new(clock.clone()));
    let policy = Policy::from_rate(10, 1.0).expect("valid policy");
    let mut key = String::with_capacity(KEY_BYTES as usize);
    let before = rss_kib();
    for i in 0..KEYS {
        key.clear();
        write!(key, "k{i:015}").expect("write to a String");
        store.check_now(&key, &policy, 1);
    }
    let full = rss_kib();
    let live = store.len() as u64;
    clock.advance_us(10_000_000);
    let evicted = store.evict_full();
    let after = rss_kib();
    let per_key = (full.saturating_sub(before) * 1024) as f64 / live.max(1) as f64;
    println!(
        "MEMORY {{\"keys\":{live},\"key_bytes\":{KEY_BYTES},\"rss_before_kib\":{before},\"rss_full_kib\":{full},\
         \"rss_evicted_kib\":{after},\"evicted\":{evicted},\"left\":{},\"bytes_per_key\":{per_key:.1},\
         \"overhead_per_key\":{:.1}}}",
        store.len(),
        per_key - KEY_BYTES as f64
    );
}
