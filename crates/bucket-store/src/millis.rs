//! Durations in configuration: whole milliseconds, one grammar (an integer) for every timeout and interval, read
//! under a name ending in `_ms` so a file says its unit where it says the value; the one window shorter than a
//! millisecond is whole microseconds, under a name ending in `_us`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Reads an integer number of milliseconds (`#[serde(deserialize_with = "crate::millis::deserialize")]`).
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_millis)
}

/// Reads an integer number of microseconds (`#[serde(deserialize_with = "crate::millis::deserialize_us")]`).
pub fn deserialize_us<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_micros)
}
