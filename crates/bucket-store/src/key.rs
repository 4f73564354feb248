//! What a bucket key may be: a storage constraint, so it is checked here, once, for every store alike.

use std::fmt;
use std::ops::Deref;

/// A key every store can hold: 1 to [`Key::MAX_BYTES`] bytes of text without control characters.
///
/// Control characters (NUL above all) are refused for every store alike: PostgreSQL text cannot hold NUL, and a key
/// that breaks one store must not be accepted by another, or moving stores would change who is limited. Borrowed,
/// so validating costs no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key<'a>(&'a str);

/// Why a string cannot be a key; the message tells the caller what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The empty string.
    #[error("key must not be empty")]
    Empty,
    /// Longer than [`Key::MAX_BYTES`].
    #[error("key is {0} bytes; the limit is {max}", max = Key::MAX_BYTES)]
    TooLong(usize),
    /// Holds a control character.
    #[error("key contains the control character U+{:04X}; keys are printable text", u32::from(*.0))]
    ControlCharacter(char),
}

impl<'a> Key<'a> {
    /// Longest key in bytes: the seed schema's `user_id VARCHAR(255)`.
    pub const MAX_BYTES: usize = 255;

    /// `key` if every store can hold it.
    pub fn new(key: &'a str) -> Result<Self, KeyError> {
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > Self::MAX_BYTES {
            return Err(KeyError::TooLong(key.len()));
        }
        if let Some(c) = key.chars().find(|c| c.is_control()) {
            return Err(KeyError::ControlCharacter(c));
        }
        Ok(Self(key))
    }

    /// The key's text.
    pub fn as_str(self) -> &'a str {
        self.0
    }
}

impl Deref for Key<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        self.0
    }
}

impl fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_every_store_can_hold_and_none_other() {
        assert_eq!(Key::new(""), Err(KeyError::Empty));
        assert_eq!(Key::new(&"k".repeat(256)), Err(KeyError::TooLong(256)));
        assert!(Key::new(&"k".repeat(255)).is_ok());
        assert!(Key::new(&"é".repeat(127)).is_ok(), "254 bytes");
        assert_eq!(Key::new(&"é".repeat(128)), Err(KeyError::TooLong(256)), "bytes, not characters");
        for hostile in ["a\0b", "a\nb", "a\u{7f}", "\u{9b}"] {
            assert!(matches!(Key::new(hostile), Err(KeyError::ControlCharacter(_))), "{hostile:?}");
        }
        assert_eq!(Key::new("a b{}*:/é").map(Key::as_str), Ok("a b{}*:/é"));
        assert_eq!(
            Key::new("a\0b").unwrap_err().to_string(),
            "key contains the control character U+0000; keys are printable text"
        );
    }
}
