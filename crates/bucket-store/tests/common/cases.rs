//! One table of cases that the core, the Lua script and the SQL statement must all agree on (README.md, "The exact algorithm").
//!
//! Each row is a policy, a stored state, the instant of the check and its cost, and the expected decision and
//! stored state after it. Times are µs since the Unix epoch, as Redis `TIME` and PostgreSQL timestamps give them.
//! A new rule of the algorithm is added here first. The expected values are written out by hand, not computed.
#![allow(dead_code)]

/// A state as stored: `None` is a key never seen (a full bucket).
pub type Stored = Option<(u64, u64)>;

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    pub capacity: u64,
    pub interval_us: u64,
    pub stored: Stored,
    pub now_us: u64,
    pub cost: u64,
    pub allowed: bool,
    /// Whole tokens after the decision (what `remaining` reports).
    pub remaining: u64,
    /// The state the store holds afterwards: `(tokens, last_refill_us)`. For a refused check it equals the stored
    /// state, or, for a key never seen, `None` when the store did not create it. Stores that create the key anyway
    /// (PostgreSQL's insert) must hold a full bucket, which is equivalent.
    pub after: Stored,
    /// Microseconds until `cost` tokens are there, for refused checks with `cost <= capacity`.
    pub retry_after_us: Option<u64>,
}

/// A fixed base time (2026-01-01T00:00:00Z) so that values look like real timestamps.
pub const T0: u64 = 1_767_225_600_000_000;
const S: u64 = 1_000_000;

pub const CASES: &[Case] = &[
    Case {
        name: "new key is a full bucket",
        capacity: 10,
        interval_us: S,
        stored: None,
        now_us: T0,
        cost: 1,
        allowed: true,
        remaining: 9,
        after: Some((9, T0)),
        retry_after_us: None,
    },
    Case {
        name: "cost above one on a new key",
        capacity: 10,
        interval_us: S,
        stored: None,
        now_us: T0,
        cost: 4,
        allowed: true,
        remaining: 6,
        after: Some((6, T0)),
        retry_after_us: None,
    },
    Case {
        name: "empty bucket refuses and changes nothing",
        capacity: 10,
        interval_us: S,
        stored: Some((0, T0)),
        now_us: T0 + 300_000,
        cost: 1,
        allowed: false,
        remaining: 0,
        after: Some((0, T0)),
        retry_after_us: Some(700_000),
    },
    Case {
        name: "refill adds whole tokens and keeps the part-token",
        capacity: 10,
        interval_us: S,
        stored: Some((0, T0)),
        now_us: T0 + 2_500_000,
        cost: 1,
        allowed: true,
        remaining: 1,
        after: Some((1, T0 + 2 * S)),
        retry_after_us: None,
    },
    Case {
        name: "exactly one interval later one token is there",
        capacity: 10,
        interval_us: S,
        stored: Some((0, T0)),
        now_us: T0 + S,
        cost: 1,
        allowed: true,
        remaining: 0,
        after: Some((0, T0 + S)),
        retry_after_us: None,
    },
    Case {
        name: "one microsecond early is refused",
        capacity: 10,
        interval_us: S,
        stored: Some((0, T0)),
        now_us: T0 + S - 1,
        cost: 1,
        allowed: false,
        remaining: 0,
        after: Some((0, T0)),
        retry_after_us: Some(1),
    },
    Case {
        name: "refill stops at capacity and restarts the clock",
        capacity: 10,
        interval_us: S,
        stored: Some((3, T0)),
        now_us: T0 + 3600 * S + 17,
        cost: 2,
        allowed: true,
        remaining: 8,
        after: Some((8, T0 + 3600 * S + 17)),
        retry_after_us: None,
    },
    Case {
        name: "cost larger than what refilled is refused with the exact wait",
        capacity: 10,
        interval_us: S,
        stored: Some((2, T0)),
        now_us: T0 + 400_000,
        cost: 5,
        allowed: false,
        remaining: 2,
        after: Some((2, T0)),
        retry_after_us: Some(2_600_000),
    },
    Case {
        name: "cost equal to capacity on a full bucket",
        capacity: 10,
        interval_us: S,
        stored: Some((10, T0)),
        now_us: T0 + 5,
        cost: 10,
        allowed: true,
        remaining: 0,
        after: Some((0, T0 + 5)),
        retry_after_us: None,
    },
    Case {
        name: "clock behind the stored time mints nothing",
        capacity: 10,
        interval_us: S,
        stored: Some((0, T0 + 60 * S)),
        now_us: T0,
        cost: 1,
        allowed: false,
        remaining: 0,
        after: Some((0, T0 + 60 * S)),
        retry_after_us: Some(S),
    },
    Case {
        name: "fast rate: 100 per second",
        capacity: 100,
        interval_us: 10_000,
        stored: Some((0, T0)),
        now_us: T0 + 123_456,
        cost: 10,
        allowed: true,
        remaining: 2,
        after: Some((2, T0 + 120_000)),
        retry_after_us: None,
    },
    Case {
        name: "slow rate: 100 per hour, partly refilled",
        capacity: 100,
        interval_us: 36_000_000,
        stored: Some((50, T0)),
        now_us: T0 + 100 * S,
        cost: 53,
        allowed: false,
        remaining: 52,
        after: Some((50, T0)),
        retry_after_us: Some(8 * S),
    },
    Case {
        name: "non-divisible rate: 3 per second",
        capacity: 5,
        interval_us: 333_333,
        stored: Some((0, T0)),
        now_us: T0 + S,
        cost: 3,
        allowed: true,
        remaining: 0,
        after: Some((0, T0 + 999_999)),
        retry_after_us: None,
    },
    Case {
        name: "large capacity near the exactness bound",
        capacity: 1 << 20,
        interval_us: 1 << 33,
        stored: Some((5, T0)),
        now_us: T0 + (1 << 34) + 9,
        cost: 7,
        allowed: true,
        remaining: 0,
        after: Some((0, T0 + (1 << 34))),
        retry_after_us: None,
    },
];
