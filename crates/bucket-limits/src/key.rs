//! The bucket key of a matched descriptor: which bucket a request draws from.
//!
//! Like upstream's cache key it is made of the domain and every entry of the request's descriptor (key and value,
//! or the configured pattern for an entry matched by a `share_threshold` wildcard, so all the values that pattern
//! matches share one bucket). Unlike upstream's (`domain_key_value_…`, ambiguous as soon as a value holds `_`), every
//! part is length-prefixed, so two different descriptors never share a bucket by accident:
//!
//! ```text
//! rl:9:messaging/12:message_type=9:marketing/9:to_number=10:2061111111
//! rl:4:test/5:files*7:files/*          (share_threshold: the pattern, marked by `*` instead of `=`)
//! ```
//!
//! A store key is 1–255 bytes without control characters. When the encoding is longer, or a value holds a control
//! character, the key is `rl#` followed by the 64 lowercase hex digits of the SHA-256 of the same encoding: still
//! unambiguous (the encoding is injective; SHA-256 is collision-resistant), and never equal to a readable key, which
//! starts with `rl:`.

use std::fmt::Write;

use sha2::{Digest, Sha256};

/// Longest key every store accepts (`bucket_store::Key::MAX_BYTES`).
pub const MAX_KEY_BYTES: usize = 255;

/// One entry of a request's descriptor as it goes into the key.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Part<'a> {
    /// The request's own value: one bucket per value.
    Value(&'a str),
    /// A `share_threshold` pattern: one bucket for every value it matches.
    Shared(&'a str),
}

/// The bucket key for `domain` and the descriptor's entries.
pub(crate) fn bucket_key<'a>(domain: &str, entries: impl Iterator<Item = (&'a str, Part<'a>)>) -> String {
    let mut out = String::with_capacity(64);
    out.push_str("rl:");
    length_prefixed(&mut out, domain);
    for (key, part) in entries {
        out.push('/');
        length_prefixed(&mut out, key);
        let (mark, text) = match part {
            Part::Value(v) => ('=', v),
            Part::Shared(p) => ('*', p),
        };
        out.push(mark);
        length_prefixed(&mut out, text);
    }
    if out.len() <= MAX_KEY_BYTES && !out.chars().any(char::is_control) {
        return out;
    }
    let digest = Sha256::digest(out.as_bytes());
    let mut hashed = String::with_capacity(3 + 64);
    hashed.push_str("rl#");
    for byte in digest.iter() {
        // Writing to a String cannot fail.
        let _ = write!(hashed, "{byte:02x}");
    }
    hashed
}

fn length_prefixed(out: &mut String, text: &str) {
    // Every request derives a key: itoa spares the formatting machinery on that path.
    out.push_str(itoa::Buffer::new().format(text.len()));
    out.push(':');
    out.push_str(text);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(domain: &str, entries: &[(&str, &str)]) -> String {
        bucket_key(domain, entries.iter().map(|(k, v)| (*k, Part::Value(v))))
    }

    #[test]
    fn readable_key_spells_out_every_part() {
        assert_eq!(key("messaging", &[("to_number", "2061111111")]), "rl:9:messaging/9:to_number=10:2061111111");
        assert_eq!(key("d", &[("k", "")]), "rl:1:d/1:k=0:");
        assert_eq!(bucket_key("test", [("files", Part::Shared("files/*"))].into_iter()), "rl:4:test/5:files*7:files/*");
    }

    #[test]
    fn separators_inside_values_never_collide() {
        let a = key("d", &[("a", "b_c")]);
        let b = key("d", &[("a_b", "c")]);
        let c = key("d", &[("a", "b/1:c=0:")]);
        let d = key("d", &[("a", "b"), ("c", "")]);
        assert_ne!(a, b);
        assert_ne!(c, d);
        assert_ne!(key("d_a", &[("b", "c")]), key("d", &[("a_b", "c")]));
        assert_ne!(
            bucket_key("d", [("k", Part::Value("v*"))].into_iter()),
            bucket_key("d", [("k", Part::Shared("v*"))].into_iter())
        );
    }

    #[test]
    fn long_or_control_keys_are_hashed_and_still_distinct() {
        let long = key("d", &[("k", &"v".repeat(300))]);
        assert!(long.starts_with("rl#"));
        assert_eq!(long.len(), 67);
        assert!(long[3..].chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(long, key("d", &[("k", &"v".repeat(301))]));
        let control = key("d", &[("k", "a\nb")]);
        assert!(control.starts_with("rl#"));
        assert_ne!(control, key("d", &[("k", "a\rb")]));
    }

    /// A key's parts: the domain and each entry's (key, shared, value).
    type Decoded = (String, Vec<(String, bool, String)>);

    /// Reads a readable key back into its parts: if this always recovers the input, the encoding is injective.
    fn decode(key: &str) -> Option<Decoded> {
        fn take(s: &str) -> Option<(String, &str)> {
            let (len, rest) = s.split_once(':')?;
            let len: usize = len.parse().ok()?;
            Some((rest.get(..len)?.to_owned(), rest.get(len..)?))
        }
        let (domain, mut rest) = take(key.strip_prefix("rl:")?)?;
        let mut entries = Vec::new();
        while let Some(r) = rest.strip_prefix('/') {
            let (k, r) = take(r)?;
            let shared = r.starts_with('*');
            let (v, r) = take(r.get(1..)?)?;
            entries.push((k, shared, v));
            rest = r;
        }
        rest.is_empty().then_some((domain, entries))
    }

    proptest::proptest! {
        #[test]
        fn readable_keys_decode_to_their_parts(
            domain in "[a-z_/=:*0-9]{0,6}",
            entries in proptest::collection::vec(("[a-z_/=:*0-9]{0,5}", proptest::bool::ANY, "[a-z_/=:*0-9]{0,5}"), 0..4),
        ) {
            let k = bucket_key(&domain, entries.iter().map(|(k, shared, v)| {
                (k.as_str(), if *shared { Part::Shared(v.as_str()) } else { Part::Value(v.as_str()) })
            }));
            proptest::prop_assert_eq!(decode(&k), Some((domain.clone(), entries.clone())));
        }
    }

    #[test]
    fn every_key_is_a_valid_store_key() {
        for k in [key("d", &[("k", "v")]), key("d", &[("k", &"é".repeat(200))]), key("d", &[("k", "\0")])] {
            assert!(!k.is_empty() && k.len() <= MAX_KEY_BYTES, "{k}");
            assert!(!k.chars().any(char::is_control), "{k}");
        }
    }
}
