//! The token-bucket algorithm of bucket, as a pure function: no I/O, no async, no clock of its own.
//!
//! Every store (memory, Redis's Lua script, PostgreSQL's SQL statement) computes the same thing this crate does;
//! `refill.rs` holds the math and its proof sketch, `policy.rs` the limits a bucket may have, `gcra.rs` the
//! one-integer encoding the memory store keeps per key, `clock.rs` where "now" comes from,
//! `all.rs` several buckets decided all or nothing.

mod all;
mod clock;
mod decision;
mod gcra;
mod policy;
mod refill;

pub use all::{decide_all, AllDecided, Demand};
pub use clock::{Clock, ManualClock, MonotonicClock, SystemClock};
pub use decision::{Decision, Wait};
pub use gcra::{from_full_at, full_at};
pub use policy::{Policy, PolicyError, MAX_CAPACITY, MAX_FILL_TIME_US};
pub use refill::{decide, peek, refill, BucketState};
