//! Deserializers for JSON body fields whose errors name the field and the accepted range, since serde's own
//! messages ("invalid type: floating point `1.5`, expected u64") leave the caller guessing which field was wrong.
//!
//! Integers beyond `u64::MAX` arrive as floats (serde_json without arbitrary precision), so they are refused here
//! with the same message as any other fraction instead of being rounded.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};

/// `key`: a string (its length and characters are checked by `bucket_store::Key`), borrowed from the input when
/// it has no escapes.
pub fn key<'de, D: Deserializer<'de>>(d: D) -> Result<Cow<'de, str>, D::Error> {
    struct KeyVisitor;
    impl<'de> Visitor<'de> for KeyVisitor {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("`key` to be a string of 1 to 255 bytes")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_string()))
        }
    }
    d.deserialize_str(KeyVisitor)
}

/// `cost`: a whole number (the route checks the bounds).
pub fn cost<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(WholeNumber { field: "cost", range: "a whole number from 1 to the policy's capacity" })
}

/// `capacity`: a whole number (the policy checks the bounds).
pub fn capacity<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(WholeNumber { field: "capacity", range: "a whole number from 1 to 2147483647" })
}

/// `refill_per_sec`: a number, not a string such as `"NaN"` (the policy checks the bounds).
pub fn refill_per_sec<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    d.deserialize_any(Rate)
}

struct WholeNumber {
    field: &'static str,
    range: &'static str,
}

impl WholeNumber {
    fn refuse<E: de::Error>(&self, got: impl fmt::Display) -> E {
        E::custom(format_args!("`{}` must be {}; got {got}", self.field, self.range))
    }
}

impl Visitor<'_> for WholeNumber {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` to be {}", self.field, self.range)
    }

    /// 0 passes here: the route refuses it with its own code (`invalid_cost`, `invalid_policy`).
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(self.refuse(v)),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        Err(self.refuse(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        Err(self.refuse(format_args!("the string {v:?}")))
    }
}

struct Rate;

impl Rate {
    fn refuse<E: de::Error>(got: impl fmt::Display) -> E {
        E::custom(format_args!("`refill_per_sec` must be a number above 0 and at most 1000000; got {got}"))
    }
}

impl Visitor<'_> for Rate {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`refill_per_sec` to be a number above 0 and at most 1000000")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        // Exactness is irrelevant here: anything beyond 2^53 is far above the policy's limit and refused there.
        self.visit_f64(v as f64)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        self.visit_f64(v as f64)
    }

    /// Any number passes here: the policy refuses 0, negatives and rates too fast with `invalid_policy`.
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        Err(Self::refuse(format_args!("the string {v:?}")))
    }
}
