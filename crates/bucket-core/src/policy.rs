//! A bucket's limits, validated once so that every later computation is exact and cannot overflow.

use std::fmt;
use std::time::Duration;

/// Longest time a bucket may take to refill from empty, in µs (2^53, about 285 years).
///
/// Every intermediate value of the refill math is at most this, so it is exact in the Lua script (whose numbers are
/// IEEE doubles), in PostgreSQL's `bigint`, and in `u64`.
pub const MAX_FILL_TIME_US: u64 = 1 << 53;

/// Largest capacity: the seed schema stores tokens in a PostgreSQL `INT`.
pub const MAX_CAPACITY: u64 = i32::MAX as u64;

/// Why a set of limits cannot be a policy; the message names the field so an HTTP 400 can say what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A bucket that holds nothing would refuse every request forever.
    #[error("capacity must be at least 1")]
    ZeroCapacity,
    /// Above the seed schema's `INT` column.
    #[error("capacity must be at most {MAX_CAPACITY}")]
    CapacityTooLarge,
    /// A bucket that never refills is a quota, not a rate limit.
    #[error("refill rate must be above zero")]
    ZeroRefill,
    /// The refill interval is kept in whole microseconds.
    #[error("refill rate must be at most 1000000 tokens per second")]
    RefillTooFast,
    /// capacity × interval must stay below 2^53 µs so the math is exact everywhere.
    #[error("capacity × refill interval must be below 2^53 µs (about 285 years to refill)")]
    FillTimeTooLong,
}

/// How many tokens a bucket holds and how fast it gains them.
///
/// The rate is kept as the whole number of microseconds one token takes to arrive (`interval_us`): 10 per second
/// is one token every 100,000 µs, "100 per minute" one every 600,000 µs. A rate is exact when 1,000,000 µs (or its
/// period) divides evenly by it, and otherwise rounds to the nearest microsecond per token (3/s is 333,333 µs, i.e.
/// 3.000003/s). Whole microseconds are what PostgreSQL timestamps and Redis `TIME` carry, so all three
/// implementations share the same unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Policy {
    capacity: u64,
    interval_us: u64,
}

impl Policy {
    /// The canonical constructor: a burst of `capacity`, then one token every `interval`.
    pub fn new(capacity: u64, interval: Duration) -> Result<Self, PolicyError> {
        let interval_us = u64::try_from(interval.as_micros()).map_err(|_| PolicyError::FillTimeTooLong)?;
        Self::from_interval_us(capacity, interval_us)
    }

    /// Same as [`Policy::new`] with the interval already in microseconds (the unit stores persist).
    pub fn from_interval_us(capacity: u64, interval_us: u64) -> Result<Self, PolicyError> {
        if capacity == 0 {
            return Err(PolicyError::ZeroCapacity);
        }
        if capacity > MAX_CAPACITY {
            return Err(PolicyError::CapacityTooLarge);
        }
        if interval_us == 0 {
            return Err(PolicyError::RefillTooFast);
        }
        match capacity.checked_mul(interval_us) {
            Some(fill) if fill <= MAX_FILL_TIME_US => Ok(Self { capacity, interval_us }),
            _ => Err(PolicyError::FillTimeTooLong),
        }
    }

    /// "`capacity` tokens, refilled at `tokens_per_sec`": the form configuration files use.
    pub fn from_rate(capacity: u64, tokens_per_sec: f64) -> Result<Self, PolicyError> {
        if !tokens_per_sec.is_finite() || tokens_per_sec <= 0.0 {
            return Err(PolicyError::ZeroRefill);
        }
        let interval = (1_000_000.0 / tokens_per_sec).round();
        if interval < 1.0 {
            return Err(PolicyError::RefillTooFast);
        }
        if interval > MAX_FILL_TIME_US as f64 {
            return Err(PolicyError::FillTimeTooLong);
        }
        Self::from_interval_us(capacity, interval as u64)
    }

    /// "`amount` tokens every `period`, bursting to `capacity`", e.g. 100 per minute.
    pub fn per_period(capacity: u64, amount: u64, period: Duration) -> Result<Self, PolicyError> {
        if amount == 0 {
            return Err(PolicyError::ZeroRefill);
        }
        let period_us = period.as_micros();
        if period_us == 0 {
            return Err(PolicyError::RefillTooFast);
        }
        // Round to the nearest microsecond per token.
        let interval = (period_us + u128::from(amount) / 2) / u128::from(amount);
        let interval = u64::try_from(interval).map_err(|_| PolicyError::FillTimeTooLong)?;
        if interval == 0 {
            return Err(PolicyError::RefillTooFast);
        }
        Self::from_interval_us(capacity, interval)
    }

    /// `n` per second with a burst of `n`.
    pub fn per_second(n: u64) -> Result<Self, PolicyError> {
        Self::per_period(n, n, Duration::from_secs(1))
    }

    /// `n` per minute with a burst of `n`.
    pub fn per_minute(n: u64) -> Result<Self, PolicyError> {
        Self::per_period(n, n, Duration::from_secs(60))
    }

    /// `n` per hour with a burst of `n`.
    pub fn per_hour(n: u64) -> Result<Self, PolicyError> {
        Self::per_period(n, n, Duration::from_secs(3600))
    }

    /// Most tokens the bucket holds: the largest burst.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Microseconds for one token to arrive.
    pub fn interval_us(&self) -> u64 {
        self.interval_us
    }

    /// The refill rate for humans and headers; never used in the decision math.
    pub fn refill_per_sec(&self) -> f64 {
        1_000_000.0 / self.interval_us as f64
    }

    /// Microseconds to refill from empty: Redis keys' TTL and the `w` of `RateLimit-Policy`.
    pub fn fill_time_us(&self) -> u64 {
        self.capacity * self.interval_us
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "capacity {} refilled {}/s", self.capacity, self.refill_per_sec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_constructors_read_like_the_sentence() {
        assert_eq!(Policy::per_second(10).unwrap().interval_us(), 100_000);
        assert_eq!(Policy::per_minute(100).unwrap().interval_us(), 600_000);
        assert_eq!(Policy::per_hour(1).unwrap().interval_us(), 3_600_000_000);
        assert_eq!(Policy::from_rate(10, 1.0).unwrap().interval_us(), 1_000_000);
        assert_eq!(Policy::from_rate(10, 0.5).unwrap().interval_us(), 2_000_000);
        assert_eq!(Policy::from_rate(10, 3.0).unwrap().interval_us(), 333_333);
    }

    #[test]
    fn invalid_limits_cannot_be_built() {
        assert_eq!(Policy::from_rate(0, 1.0), Err(PolicyError::ZeroCapacity));
        assert_eq!(Policy::from_rate(10, 0.0), Err(PolicyError::ZeroRefill));
        assert_eq!(Policy::from_rate(10, -1.0), Err(PolicyError::ZeroRefill));
        assert_eq!(Policy::from_rate(10, f64::NAN), Err(PolicyError::ZeroRefill));
        assert_eq!(Policy::from_rate(10, 1e7), Err(PolicyError::RefillTooFast));
        assert_eq!(Policy::from_interval_us(MAX_CAPACITY + 1, 1), Err(PolicyError::CapacityTooLarge));
        assert_eq!(Policy::from_interval_us(1 << 20, 1 << 34), Err(PolicyError::FillTimeTooLong));
        assert_eq!(Policy::per_period(10, 0, Duration::from_secs(1)), Err(PolicyError::ZeroRefill));
        assert!(Policy::from_interval_us(1 << 20, 1 << 33).is_ok());
    }
}
