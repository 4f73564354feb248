//! The time units a rule may refill over, with the same lengths envoyproxy/ratelimit gives them (a month is 30
//! days, a year 365), so a file means the same rate in both services.

use std::fmt;
use std::time::Duration;

/// The `unit` of a `rate_limit` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// 1 s.
    Second,
    /// 60 s.
    Minute,
    /// 3,600 s.
    Hour,
    /// 86,400 s.
    Day,
    /// 7 days.
    Week,
    /// 30 days, as upstream's fixed-length month.
    Month,
    /// 365 days.
    Year,
}

impl Unit {
    /// Every unit, shortest first.
    pub const ALL: [Unit; 7] = [Unit::Second, Unit::Minute, Unit::Hour, Unit::Day, Unit::Week, Unit::Month, Unit::Year];

    /// The unit's length in seconds.
    pub fn as_secs(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Week => 7 * 86_400,
            Unit::Month => 30 * 86_400,
            Unit::Year => 365 * 86_400,
        }
    }

    /// The unit's length.
    pub fn as_duration(self) -> Duration {
        Duration::from_secs(self.as_secs())
    }

    /// The name envoyproxy/ratelimit's protocol uses (`SECOND`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Second => "SECOND",
            Unit::Minute => "MINUTE",
            Unit::Hour => "HOUR",
            Unit::Day => "DAY",
            Unit::Week => "WEEK",
            Unit::Month => "MONTH",
            Unit::Year => "YEAR",
        }
    }

    /// Parses a file's `unit`: the protocol's enum names in any ASCII case (`second`, `SECOND`, `Second`), as
    /// upstream upper-cases the text before looking it up.
    pub fn parse(text: &str) -> Option<Unit> {
        Unit::ALL.into_iter().find(|u| u.as_str().eq_ignore_ascii_case(text))
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_have_upstream_lengths() {
        let secs: Vec<u64> = Unit::ALL.iter().map(|u| u.as_secs()).collect();
        assert_eq!(secs, [1, 60, 3600, 86400, 604800, 2_592_000, 31_536_000]);
    }

    #[test]
    fn unit_names_parse_in_any_ascii_case_and_nothing_else() {
        assert_eq!(Unit::parse("second"), Some(Unit::Second));
        assert_eq!(Unit::parse("MINUTE"), Some(Unit::Minute));
        assert_eq!(Unit::parse("Week"), Some(Unit::Week));
        for bad in ["", "unknown", "seconds", "sec", " second", "UNKNOWN"] {
            assert_eq!(Unit::parse(bad), None, "{bad:?}");
        }
    }
}
