//! What limit the server enforces, learned from one probing request so no scenario hard-codes 10 and 1/s.
//!
//! Capacity is the `q` of `RateLimit-Policy`. The rate comes from the JSON body's `policy.refill_per_sec` when the
//! server sends one, because `w` is rounded up to whole seconds and so only bounds the rate from below; without a
//! body the tester falls back to `q / w`, which errs on the slow side (waits a little longer, never too little).

use std::time::Duration;

use serde::Serialize;

use crate::client::{Reply, RequestError};
use crate::grpc::GrpcStatus;
use crate::transport::Transport;

/// Slowest rate accepted: one token per 11.6 days. Anything slower is a misconfiguration, and the durations
/// computed from it would overflow.
const MIN_RATE: f64 = 1e-6;
/// Fastest rate accepted: a token per nanosecond is already beyond what a check over HTTP can observe.
const MAX_RATE: f64 = 1e9;

/// The limit every scenario plans against.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    /// The policy's name from the header, e.g. `default`.
    pub name: String,
    /// Tokens a full bucket holds.
    pub capacity: u64,
    /// Tokens gained per second.
    pub refill_per_sec: f64,
    /// Where the rate was read: `body` (exact), `header` (`q / w`, rounded) or `current_limit` (gRPC).
    pub rate_from: &'static str,
    /// Where the capacity was read: `RateLimit-Policy`, `limit_remaining` (a fresh bucket's) or
    /// `requests_per_unit`.
    pub capacity_from: &'static str,
}

impl Policy {
    /// Time for one token to arrive (`discover` guarantees a rate for which this is well within range).
    pub fn interval(&self) -> Duration {
        Duration::try_from_secs_f64(1.0 / self.refill_per_sec).unwrap_or(Duration::MAX)
    }

    /// Whole tokens that can arrive in `elapsed`: the slack a scenario allows for refill while it runs.
    pub fn tokens_in(&self, elapsed: Duration) -> u64 {
        (elapsed.as_secs_f64() * self.refill_per_sec).floor() as u64
    }
}

/// Why the policy could not be learned.
#[derive(Debug, Clone)]
pub enum DiscoverError {
    /// No connection: the caller should say the server isn't running.
    Unreachable(String),
    /// The server answered, but not in a way the policy can be read from: every scenario fails with this.
    Unusable(String),
}

impl From<RequestError> for DiscoverError {
    fn from(e: RequestError) -> Self {
        if e.unreachable {
            DiscoverError::Unreachable(e.message)
        } else {
            DiscoverError::Unusable(format!("probe request failed: {}", e.message))
        }
    }
}

/// Sends one request as `probe_user` (a throwaway id, so the token it spends belongs to nobody) and reads the policy.
pub async fn discover(client: &Transport, url: &str, probe_user: &str) -> Result<Policy, DiscoverError> {
    let reply = client.hit(url, probe_user).await?;
    match &reply.grpc {
        Some(grpc) => from_grpc_reply(&reply, grpc),
        None => from_reply(&reply),
    }
    .map_err(DiscoverError::Unusable)
}

/// The policy a gRPC answer on a fresh bucket describes (see the module comment), or why it describes none.
fn from_grpc_reply(reply: &Reply, grpc: &GrpcStatus) -> Result<Policy, String> {
    if !reply.allowed() && !reply.denied() {
        return Err(format!("probe answered {}, expected OK or OVER_LIMIT", reply.unexpected()));
    }
    let Some(limit) = &grpc.limit else {
        return Err("the judged descriptor's status has no current_limit: no rule in the domain matched it, or \
                    it is unlimited (check --domain and --descriptor against the limits file)"
            .into());
    };
    if limit.requests_per_unit == 0 {
        return Err(format!("rule {:?} has requests_per_unit 0: nothing can ever be allowed", limit.name));
    }
    let Some(refill_per_sec) = limit.refill_per_sec() else {
        return Err(format!("rule {:?} has an unknown unit: no refill rate", limit.name));
    };
    if !(MIN_RATE..=MAX_RATE).contains(&refill_per_sec) {
        return Err(format!("implausible refill rate {refill_per_sec}/s: expected {MIN_RATE} to {MAX_RATE}"));
    }
    let per_unit = u64::from(limit.requests_per_unit);
    // With several descriptors, the header may describe another limit (the one closest to refusing).
    let header = reply.policy.as_ref().filter(|_| grpc.sent == 1).map(|p| p.quota).filter(|q| *q > 0);
    // The probe's bucket is fresh (its user is new), so one allowed request of cost 1 leaves capacity - 1.
    let observed = reply.remaining.filter(|_| reply.allowed()).map(|r| r + 1);
    let (capacity, capacity_from) = match (header, observed) {
        (Some(q), _) => (q, "RateLimit-Policy"),
        (None, Some(c)) => (c, "limit_remaining"),
        (None, None) => (per_unit, "requests_per_unit"),
    };
    Ok(Policy { name: limit.name.clone(), capacity, refill_per_sec, rate_from: "current_limit", capacity_from })
}

/// The policy a decision reply describes, or why it describes none.
fn from_reply(reply: &Reply) -> Result<Policy, String> {
    if !reply.allowed() && !reply.denied() {
        let why = reply.body_error().map(|e| format!(" ({e})")).unwrap_or_default();
        return Err(format!("probe answered HTTP {}{why}, expected 200 or 429", reply.status));
    }
    let Some(field) = reply.policy.clone() else {
        return Err("probe reply has no readable RateLimit-Policy header".into());
    };
    if field.quota == 0 {
        return Err("RateLimit-Policy says q=0: nothing can ever be allowed".into());
    }
    let (refill_per_sec, rate_from) = match (reply.body_refill_per_sec(), field.window) {
        (Some(rate), _) => (rate, "body"),
        (None, Some(w)) if w > 0 => (field.quota as f64 / w as f64, "header"),
        _ => return Err("no refill rate: the body has no policy.refill_per_sec and RateLimit-Policy has no w".into()),
    };
    if !(MIN_RATE..=MAX_RATE).contains(&refill_per_sec) {
        return Err(format!(
            "implausible refill rate {refill_per_sec}/s (from the {rate_from}): expected {MIN_RATE} to {MAX_RATE}"
        ));
    }
    Ok(Policy { name: field.name, capacity: field.quota, refill_per_sec, rate_from, capacity_from: "RateLimit-Policy" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::PolicyField;

    fn reply(status: u16, q: u64, w: Option<u64>, body: Option<serde_json::Value>) -> Reply {
        Reply {
            status,
            source: None,
            limit: None,
            remaining: None,
            reset: None,
            retry_after: None,
            ratelimit: None,
            policy: Some(PolicyField { name: "default".into(), quota: q, window: w }),
            body,
            grpc: None,
        }
    }

    #[test]
    fn the_body_rate_wins_over_the_rounded_window() {
        let body = serde_json::json!({"policy": {"refill_per_sec": 0.3}});
        let p = from_reply(&reply(200, 10, Some(34), Some(body))).unwrap();
        assert_eq!((p.capacity, p.refill_per_sec, p.rate_from), (10, 0.3, "body"));
    }

    #[test]
    fn without_a_body_the_rate_is_quota_over_window() {
        let p = from_reply(&reply(429, 10, Some(4), None)).unwrap();
        assert_eq!((p.capacity, p.refill_per_sec, p.rate_from), (10, 2.5, "header"));
    }

    #[test]
    fn unusable_replies_say_why() {
        let mut no_header = reply(200, 10, Some(10), None);
        no_header.policy = None;
        let tiny = serde_json::json!({"policy": {"refill_per_sec": 1e-12}});
        let cases = [
            (reply(503, 10, Some(10), None), "HTTP 503"),
            (no_header, "no readable RateLimit-Policy"),
            (reply(200, 0, Some(10), None), "q=0"),
            (reply(200, 10, None, None), "no refill rate"),
            (reply(200, 10, Some(10), Some(tiny)), "implausible refill rate"),
        ];
        for (r, expected) in cases {
            let err = from_reply(&r).unwrap_err();
            assert!(err.contains(expected), "{err:?} should mention {expected:?}");
        }
    }

    fn grpc_reply(allowed: bool, remaining: u64, rate: (u32, Option<u64>), q: Option<u64>) -> Reply {
        let mut r = reply(if allowed { 200 } else { 429 }, q.unwrap_or(0), None, None);
        r.policy = r.policy.filter(|_| q.is_some());
        r.remaining = Some(remaining);
        let limit = crate::grpc::CurrentLimit { name: "per-user".into(), requests_per_unit: rate.0, unit_secs: rate.1 };
        r.grpc = Some(GrpcStatus {
            overall_code: if allowed { 1 } else { 2 },
            statuses: 1,
            sent: 1,
            code: None,
            limit: Some(limit),
            until_reset: None,
        });
        r
    }

    fn learn(r: &Reply) -> Result<Policy, String> {
        from_grpc_reply(r, r.grpc.as_ref().unwrap())
    }

    #[test]
    fn over_grpc_the_rate_is_per_unit_and_the_capacity_the_header_or_a_fresh_bucket() {
        let p = learn(&grpc_reply(true, 3, (5, Some(60)), Some(8))).unwrap();
        assert_eq!((p.capacity, p.capacity_from, p.refill_per_sec), (8, "RateLimit-Policy", 5.0 / 60.0));
        assert_eq!(p.rate_from, "current_limit");
        let p = learn(&grpc_reply(true, 7, (5, Some(1)), None)).unwrap();
        assert_eq!((p.capacity, p.capacity_from), (8, "limit_remaining"));
        let p = learn(&grpc_reply(false, 0, (5, Some(1)), None)).unwrap();
        assert_eq!((p.capacity, p.capacity_from), (5, "requests_per_unit"));
    }

    #[test]
    fn over_grpc_unusable_limits_say_why() {
        let mut unmatched = grpc_reply(true, 0, (5, Some(1)), None);
        unmatched.grpc.as_mut().unwrap().limit = None;
        let mut unknown = grpc_reply(true, 0, (5, Some(1)), None);
        unknown.status = 0;
        unknown.grpc.as_mut().unwrap().overall_code = 0;
        let cases = [
            (unmatched, "no current_limit"),
            (unknown, "probe answered overall_code"),
            (grpc_reply(false, 0, (0, Some(1)), None), "requests_per_unit 0"),
            (grpc_reply(true, 0, (5, None), None), "unknown unit"),
        ];
        for (r, expected) in cases {
            let err = learn(&r).unwrap_err();
            assert!(err.contains(expected), "{err:?} should mention {expected:?}");
        }
    }

    #[test]
    fn tokens_in_rounds_down() {
        let p = Policy {
            name: "default".into(),
            capacity: 10,
            refill_per_sec: 2.0,
            rate_from: "body",
            capacity_from: "RateLimit-Policy",
        };
        assert_eq!(p.tokens_in(Duration::from_millis(1499)), 2);
        assert_eq!(p.tokens_in(Duration::from_millis(1500)), 3);
        assert_eq!(p.interval(), Duration::from_millis(500));
    }
}
