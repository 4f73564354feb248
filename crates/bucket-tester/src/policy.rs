//! What limit the server enforces, learned from one probing request so no scenario hard-codes 10 and 1/s.
//!
//! Capacity is the `q` of `RateLimit-Policy`. The rate comes from the JSON body's `policy.refill_per_sec` when the
//! server sends one, because `w` is rounded up to whole seconds and so only bounds the rate from below; without a
//! body the tester falls back to `q / w`, which errs on the slow side (waits a little longer, never too little).

use std::time::Duration;

use serde::Serialize;

use crate::client::{Client, Reply, RequestError};

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
    /// Where the rate was read: `body` (exact) or `header` (`q / w`, rounded).
    pub rate_from: &'static str,
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
pub async fn discover(client: &Client, url: &str, probe_user: &str) -> Result<Policy, DiscoverError> {
    let reply = client.hit(url, probe_user).await?;
    from_reply(&reply).map_err(DiscoverError::Unusable)
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
    Ok(Policy { name: field.name, capacity: field.quota, refill_per_sec, rate_from })
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

    #[test]
    fn tokens_in_rounds_down() {
        let p = Policy { name: "default".into(), capacity: 10, refill_per_sec: 2.0, rate_from: "body" };
        assert_eq!(p.tokens_in(Duration::from_millis(1499)), 2);
        assert_eq!(p.tokens_in(Duration::from_millis(1500)), 3);
        assert_eq!(p.interval(), Duration::from_millis(500));
    }
}
