//! The decision body written straight into bytes. Every decision route answers with this one document, and
//! through serde it cost a tenth of a `GET /` (docs/perf.md §4c: per-field dispatch, escaping the constant field
//! names, a growing buffer). Written by hand because the document is ours and fixed; the strings that come from
//! outside (the key, the policy name) still go through serde_json's escaping. [`DecisionBody`] stays the schema
//! that OpenAPI, clients and tests read, and a test holds the two byte for byte equal.

use crate::headers::DecisionBody;

/// Appends `body` as JSON, the bytes `serde_json::to_vec(body)` gives.
pub fn write(body: &DecisionBody<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(if body.allowed { b"{\"allowed\":true,\"key\":" } else { b"{\"allowed\":false,\"key\":" });
    string(out, &body.key);
    number(out, b",\"cost\":", body.cost);
    number(out, b",\"limit\":", body.limit);
    number(out, b",\"remaining\":", body.remaining);
    number(out, b",\"reset_after_ms\":", body.reset_after_ms);
    match body.retry_after_ms {
        Some(ms) => number(out, b",\"retry_after_ms\":", ms),
        None => out.extend_from_slice(b",\"retry_after_ms\":null"),
    }
    out.extend_from_slice(b",\"source\":");
    string(out, &body.source);
    out.extend_from_slice(b",\"policy\":{\"name\":");
    string(out, &body.policy.name);
    number(out, b",\"capacity\":", body.policy.capacity);
    out.extend_from_slice(b",\"refill_per_sec\":");
    rate(out, body.policy.refill_per_sec);
    number(out, b",\"interval_us\":", body.policy.interval_us);
    out.extend_from_slice(b"}}");
}

fn number(out: &mut Vec<u8>, field: &[u8], n: u64) {
    out.extend_from_slice(field);
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Below this a whole rate is written as digits and `.0`, exactly what serde_json writes for it (the test checks
/// both sides of the bound); larger or fractional rates, and non-finite ones (`null`), go through serde_json.
const WHOLE_RATE_BELOW: f64 = 1e9;

fn rate(out: &mut Vec<u8>, r: f64) {
    // Most policies refill a whole number of tokens a second; writing it as an integer saves about 120 of a
    // decision's 25,000 instructions (docs/perf.md §18).
    if r.fract() == 0.0 && (1.0..WHOLE_RATE_BELOW).contains(&r) {
        out.extend_from_slice(itoa::Buffer::new().format(r as u64).as_bytes());
        out.extend_from_slice(b".0");
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &r);
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    // Keys are mostly plain; only a string that needs escaping pays for serde_json's escaper.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::headers::PolicyBody;

    fn body<'a>(key: &'a str, name: &'a str, retry: Option<u64>, rate: f64) -> DecisionBody<'a> {
        DecisionBody {
            allowed: retry.is_none(),
            key: Cow::Borrowed(key),
            cost: 3,
            limit: 10,
            remaining: 7,
            reset_after_ms: 1500,
            retry_after_ms: retry,
            source: Cow::Borrowed("memory"),
            policy: PolicyBody { name: Cow::Borrowed(name), capacity: 10, refill_per_sec: rate, interval_us: 100_000 },
        }
    }

    #[test]
    fn the_bytes_are_what_serde_writes() {
        let keys = ["alice", "", "quote\"back\\slash", "tab\there", "nul\u{0}x", "ünï😀", "\u{7f}del", "a/b?c=d"];
        for key in keys {
            let rates = [
                (None, 10.0),
                (Some(250), 0.5),
                (Some(u64::MAX), 1.0 / 3.0),
                (None, 1e-9),
                (None, 1.0),
                (Some(1), 999_999_999.0),
                (None, WHOLE_RATE_BELOW),
                (None, 1e16),
                (None, 1e300),
                (None, f64::NAN),
                (None, f64::INFINITY),
                (None, -0.0),
                (None, 0.0),
                (None, 1e15),
            ];
            for (retry, rate) in rates {
                let b = body(key, "per-route.v2", retry, rate);
                let mut mine = Vec::new();
                write(&b, &mut mine);
                let serde = serde_json::to_vec(&b).unwrap();
                assert_eq!(String::from_utf8_lossy(&mine), String::from_utf8_lossy(&serde), "key {key:?}");
            }
        }
    }
}
