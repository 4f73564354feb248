//! The one place an [`Outcome`] becomes an HTTP answer: status, rate-limit headers and JSON body.
//!
//! Every route that returns a decision (`GET /`, `POST /v1/check`, `GET /v1/buckets/{key}`) calls
//! [`decision_response`], so the headers cannot drift between routes. Seconds in headers are whole and rounded
//! up, so a client that waits exactly what it was told is then allowed; `Retry-After` is at least 1 (a 429 never
//! says "retry now") and never earlier than the `t` of `RateLimit`.

use std::borrow::Cow;

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::web::BytesMut;
use actix_web::HttpResponse;
use bucket_core::{Decision, Policy, Wait};
use bucket_store::Outcome;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;

/// Header naming the part that decided (`memory`, `redis`, `postgres`, `new-user`, `fail-open`, `refusal-cache`).
pub const X_DATA_SOURCE: &str = "x-data-source";
/// IETF draft header describing the quota: `"name";q=<capacity>;w=<seconds to refill from empty>`.
pub const RATELIMIT_POLICY: &str = "ratelimit-policy";
/// IETF draft header with the current state: `"name";r=<remaining>;t=<seconds>`.
pub const RATELIMIT: &str = "ratelimit";
/// Widely used header: the capacity.
pub const X_RATELIMIT_LIMIT: &str = "x-ratelimit-limit";
/// Widely used header: tokens left.
pub const X_RATELIMIT_REMAINING: &str = "x-ratelimit-remaining";
/// Widely used header: seconds until the bucket is full again (relative, not an epoch).
pub const X_RATELIMIT_RESET: &str = "x-ratelimit-reset";

// The same names as header constants, so building a response parses none of them.
const H_X_DATA_SOURCE: HeaderName = HeaderName::from_static(X_DATA_SOURCE);
const H_RATELIMIT_POLICY: HeaderName = HeaderName::from_static(RATELIMIT_POLICY);
const H_RATELIMIT: HeaderName = HeaderName::from_static(RATELIMIT);
const H_X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static(X_RATELIMIT_LIMIT);
const H_X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static(X_RATELIMIT_REMAINING);
const H_X_RATELIMIT_RESET: HeaderName = HeaderName::from_static(X_RATELIMIT_RESET);

/// A policy together with the name it is reported under: `default`, a configured name, or `user` for a per-key one.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedPolicy {
    /// Name shown in `RateLimit-Policy`, `RateLimit` and the JSON body; borrowed for `default` and `user`, so the
    /// usual request copies no name.
    pub name: Cow<'static, str>,
    /// The limits.
    pub policy: Policy,
}

/// The policy part of a decision body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PolicyBody<'a> {
    /// `default`, the configured policy's name, or `user` for a per-key override.
    #[schema(example = "default")]
    pub name: Cow<'a, str>,
    /// Largest burst.
    #[schema(example = 10)]
    pub capacity: u64,
    /// Tokens gained per second.
    #[schema(example = 1.0)]
    pub refill_per_sec: f64,
    /// Microseconds per token: the exact rate the stores use.
    #[schema(example = 1000000)]
    pub interval_us: u64,
}

/// The JSON body of every decision (200 and 429); field names are a contract with `bucket-tester`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DecisionBody<'a> {
    /// Whether the tokens were taken.
    pub allowed: bool,
    /// The bucket's key.
    #[schema(example = "alice")]
    pub key: Cow<'a, str>,
    /// Tokens asked for (0 for a peek).
    #[schema(example = 1)]
    pub cost: u64,
    /// The capacity.
    #[schema(example = 10)]
    pub limit: u64,
    /// Tokens left.
    #[schema(example = 9)]
    pub remaining: u64,
    /// Milliseconds until the bucket is full again, rounded up.
    #[schema(example = 1000)]
    pub reset_after_ms: u64,
    /// On a refusal, milliseconds until `cost` tokens are there, rounded up; `null` when allowed.
    #[schema(example = json!(null))]
    pub retry_after_ms: Option<u64>,
    /// The backend that decided, as in `X-Data-Source`.
    #[schema(example = "memory")]
    pub source: Cow<'a, str>,
    /// The policy applied.
    pub policy: PolicyBody<'a>,
}

/// Whole seconds from µs, rounded up: the unit of every rate-limit header.
pub fn ceil_secs(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

/// Whole milliseconds from µs, rounded up: the unit of the JSON body.
pub fn ceil_millis(us: u64) -> u64 {
    us.div_ceil(1_000)
}

/// Header values of one decision, computed apart from actix so their arithmetic is unit-tested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitHeaders {
    /// `RateLimit-Policy` value.
    pub policy: String,
    /// `RateLimit` value.
    pub ratelimit: String,
    /// `X-RateLimit-Limit`.
    pub limit: u64,
    /// `X-RateLimit-Remaining`.
    pub remaining: u64,
    /// `X-RateLimit-Reset`.
    pub reset: u64,
    /// `Retry-After`, on a refusal only.
    pub retry_after: Option<u64>,
}

/// The numbers behind `RateLimit-Policy` and `RateLimit`, apart from any formatting, so the gateway front writes
/// them straight into its own header values while sharing this arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderNumbers {
    /// `q`: the capacity.
    pub quota: u64,
    /// `w`: whole seconds to refill from empty, rounded up.
    pub window: u64,
    /// `r`: tokens left.
    pub remaining: u64,
    /// `t`: seconds until the next token, or until `cost` tokens on a refusal (then at least 1).
    pub t: u64,
    /// `Retry-After`, on a refusal only.
    pub retry_after: Option<u64>,
}

impl HeaderNumbers {
    /// The numbers for `decision` under `policy`; `None` when the decision can never turn into an allowance
    /// (`Wait::Never`).
    pub fn new(decision: &Decision, policy: &Policy) -> Option<Self> {
        let window = ceil_secs(policy.fill_time_us());
        let (t, retry_after) = match decision.retry_after {
            None => (ceil_secs(decision.next_token_after_us), None),
            Some(Wait::After(wait)) => {
                let t = ceil_secs(wait).max(1);
                (t, Some(t))
            }
            Some(Wait::Never) => return None,
        };
        Some(Self { quota: policy.capacity(), window, remaining: decision.remaining, t, retry_after })
    }
}

impl RateLimitHeaders {
    /// The headers for `decision` under `applied`; `None` when the decision can never turn into an allowance
    /// (`Wait::Never`), which callers report as a 400 instead of a 429 with a meaningless wait.
    pub fn new(decision: &Decision, applied: &AppliedPolicy) -> Option<Self> {
        let name = &applied.name;
        let n = HeaderNumbers::new(decision, &applied.policy)?;
        Some(Self {
            policy: format!("\"{name}\";q={};w={}", n.quota, n.window),
            ratelimit: format!("\"{name}\";r={};t={}", n.remaining, n.t),
            limit: decision.limit,
            remaining: decision.remaining,
            reset: ceil_secs(decision.reset_after_us),
            retry_after: n.retry_after,
        })
    }
}

/// The body for `outcome`, as sent; it borrows its strings, so building it copies none.
pub fn decision_body<'a>(outcome: &Outcome, key: &'a str, cost: u64, applied: &'a AppliedPolicy) -> DecisionBody<'a> {
    let d = &outcome.decision;
    DecisionBody {
        allowed: d.allowed,
        key: Cow::Borrowed(key),
        cost,
        limit: d.limit,
        remaining: d.remaining,
        reset_after_ms: ceil_millis(d.reset_after_us),
        retry_after_ms: match d.retry_after {
            Some(Wait::After(wait)) => Some(ceil_millis(wait).max(1)),
            Some(Wait::Never) | None => None,
        },
        source: Cow::Borrowed(outcome.source.as_str()),
        policy: PolicyBody {
            name: Cow::Borrowed(&applied.name),
            capacity: applied.policy.capacity(),
            refill_per_sec: applied.policy.refill_per_sec(),
            interval_us: applied.policy.interval_us(),
        },
    }
}

/// The full HTTP answer for a decision: 200 or 429 with every rate-limit header and the JSON body.
///
/// Built for the request path (docs/perf.md §4c): header names are constants, every header value is a slice of one
/// buffer the numbers are written into (one allocation instead of one per header), and the body is written by
/// [`crate::decision_json`]. The values are the [`RateLimitHeaders`] strings; a test holds them equal.
pub fn decision_response(
    outcome: &Outcome,
    key: &str,
    cost: u64,
    applied: &AppliedPolicy,
) -> Result<HttpResponse, ApiError> {
    let d = &outcome.decision;
    let n = HeaderNumbers::new(d, &applied.policy).ok_or_else(|| cost_exceeds(cost, applied))?;
    let status = if d.allowed { StatusCode::OK } else { StatusCode::TOO_MANY_REQUESTS };
    let name = applied.name.as_bytes();
    let mut buf = BytesMut::with_capacity(64 + 2 * name.len());
    let mut ends = [0usize; 6];
    quoted(&mut buf, name);
    push_number(&mut buf, b";q=", n.quota);
    push_number(&mut buf, b";w=", n.window);
    ends[0] = buf.len();
    quoted(&mut buf, name);
    push_number(&mut buf, b";r=", n.remaining);
    push_number(&mut buf, b";t=", n.t);
    ends[1] = buf.len();
    push_number(&mut buf, b"", d.limit);
    ends[2] = buf.len();
    push_number(&mut buf, b"", d.remaining);
    ends[3] = buf.len();
    push_number(&mut buf, b"", ceil_secs(d.reset_after_us));
    ends[4] = buf.len();
    if let Some(secs) = n.retry_after {
        push_number(&mut buf, b"", secs);
    }
    ends[5] = buf.len();
    let values = buf.freeze();
    let mut body = Vec::with_capacity(224 + key.len() + name.len());
    crate::decision_json::write(&decision_body(outcome, key, cost, applied), &mut body);
    // Straight into the response's header map, sized once: the builder converted each pair and grew the map.
    let mut response = HttpResponse::with_body(status, body).map_into_boxed_body();
    let headers = response.headers_mut();
    headers.reserve(9);
    let names =
        [&H_RATELIMIT_POLICY, &H_RATELIMIT, &H_X_RATELIMIT_LIMIT, &H_X_RATELIMIT_REMAINING, &H_X_RATELIMIT_RESET];
    headers.insert(H_X_DATA_SOURCE, HeaderValue::from_static(outcome.source.as_str()));
    let mut start = 0;
    for (i, end) in ends.into_iter().enumerate() {
        // Policy names are validated at configuration (A-Z a-z 0-9 - _ .) and the rest are digits, so every value
        // is a valid header value; the check only guards that promise.
        if let Ok(value) = HeaderValue::from_maybe_shared(values.slice(start..end)) {
            match names.get(i) {
                Some(name) => {
                    headers.insert((*name).clone(), value);
                }
                None if end > start => {
                    headers.insert(header::RETRY_AFTER, value);
                }
                None => {}
            }
        }
        start = end;
    }
    // A decision is true for one instant; no cache may replay it.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

fn quoted(buf: &mut BytesMut, name: &[u8]) {
    buf.extend_from_slice(b"\"");
    buf.extend_from_slice(name);
    buf.extend_from_slice(b"\"");
}

fn push_number(buf: &mut BytesMut, prefix: &[u8], n: u64) {
    buf.extend_from_slice(prefix);
    buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// The 400 for a cost no amount of waiting can satisfy.
pub fn cost_exceeds(cost: u64, applied: &AppliedPolicy) -> ApiError {
    ApiError::InvalidCost(format!(
        "cost {cost} exceeds capacity {}: this request can never be allowed",
        applied.policy.capacity()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_policy() -> AppliedPolicy {
        AppliedPolicy { name: "default".into(), policy: Policy::from_rate(10, 1.0).unwrap() }
    }

    fn decision(allowed: bool, remaining: u64, next_ms: u64, retry: Option<Wait>) -> Decision {
        Decision {
            allowed,
            limit: 10,
            remaining,
            reset_after_us: (10 - remaining) * 1_000_000,
            next_token_after_us: next_ms * 1000,
            retry_after: retry,
        }
    }

    #[test]
    fn seconds_round_up_and_zero_stays_zero() {
        assert_eq!(ceil_secs(0), 0);
        assert_eq!(ceil_secs(1), 1);
        assert_eq!(ceil_secs(1_000_000), 1);
        assert_eq!(ceil_secs(1_001_000), 2);
        assert_eq!(ceil_millis(1), 1);
        assert_eq!(ceil_millis(1500), 2);
        assert_eq!(ceil_millis(7000), 7);
    }

    #[test]
    fn full_bucket_reports_zero_wait_and_the_window() {
        let h = RateLimitHeaders::new(&decision(true, 10, 0, None), &default_policy()).unwrap();
        assert_eq!(h.policy, "\"default\";q=10;w=10");
        assert_eq!(h.ratelimit, "\"default\";r=10;t=0");
        assert_eq!((h.limit, h.remaining, h.reset, h.retry_after), (10, 10, 0, None));
    }

    #[test]
    fn refusal_rounds_the_wait_up_and_never_says_zero() {
        let p = default_policy();
        let short = decision(false, 0, 1, Some(Wait::After(1)));
        let h = RateLimitHeaders::new(&short, &p).unwrap();
        assert_eq!(h.retry_after, Some(1));
        assert_eq!(h.ratelimit, "\"default\";r=0;t=1");
        let long = decision(false, 0, 1, Some(Wait::After(2_001_000)));
        assert_eq!(RateLimitHeaders::new(&long, &p).unwrap().retry_after, Some(3));
    }

    #[test]
    fn the_response_carries_exactly_the_tested_header_values_and_body() {
        let p = AppliedPolicy { name: "per-route.v2".into(), policy: Policy::from_rate(10, 0.4).unwrap() };
        let cases = [
            decision(true, 10, 0, None),
            decision(true, 3, 1500, None),
            decision(false, 0, 1, Some(Wait::After(1))),
            decision(false, 2, 700, Some(Wait::After(2_001_000))),
        ];
        for d in cases {
            let outcome = Outcome { decision: d, source: bucket_store::Source::Redis };
            let response = decision_response(&outcome, "a\"key", 1, &p).unwrap();
            let expected = RateLimitHeaders::new(&d, &p).unwrap();
            let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(header(RATELIMIT_POLICY), Some(expected.policy.clone()));
            assert_eq!(header(RATELIMIT), Some(expected.ratelimit.clone()));
            assert_eq!(header(X_RATELIMIT_LIMIT), Some(expected.limit.to_string()));
            assert_eq!(header(X_RATELIMIT_REMAINING), Some(expected.remaining.to_string()));
            assert_eq!(header(X_RATELIMIT_RESET), Some(expected.reset.to_string()));
            assert_eq!(header("retry-after"), expected.retry_after.map(|s| s.to_string()));
            assert_eq!(header(X_DATA_SOURCE).as_deref(), Some("redis"));
            assert_eq!(header("cache-control").as_deref(), Some("no-store"));
            assert_eq!(header("content-type").as_deref(), Some("application/json"));
            assert_eq!(response.status(), if d.allowed { StatusCode::OK } else { StatusCode::TOO_MANY_REQUESTS });
            // An in-memory body is ready at once.
            let body = futures::executor::block_on(actix_web::body::to_bytes(response.into_body())).unwrap();
            let expected_body = serde_json::to_vec(&decision_body(&outcome, "a\"key", 1, &p)).unwrap();
            assert_eq!(body.as_ref(), expected_body.as_slice());
        }
    }

    #[test]
    fn never_is_not_a_429() {
        assert_eq!(RateLimitHeaders::new(&decision(false, 10, 0, Some(Wait::Never)), &default_policy()), None);
    }

    #[test]
    fn fractional_rates_round_the_window_up() {
        let p = AppliedPolicy { name: "slow".into(), policy: Policy::from_rate(3, 0.4).unwrap() };
        let h = RateLimitHeaders::new(&decision(true, 3, 0, None), &p).unwrap();
        assert_eq!(h.policy, "\"slow\";q=3;w=8");
    }
}
