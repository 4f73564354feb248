//! Whether one decision reply agrees with itself and with the policy: the header contract of DESIGN §3.
//!
//! Each check yields a sentence naming the header (or gRPC field) and what was seen, so a FAIL says exactly what
//! to fix. A gRPC answer is held to its own contract: one status per descriptor, the judged one's
//! `current_limit`, `limit_remaining` and `duration_until_reset`, and the headers for the gateway when it adds any.

use crate::client::Reply;
use crate::grpc::{GrpcStatus, OVER_LIMIT_CODE};
use crate::policy::Policy;

/// Everything wrong with `reply`'s headers and body, for a request of cost 1; empty when it is consistent.
pub fn problems(reply: &Reply, policy: &Policy) -> Vec<String> {
    if let Some(grpc) = &reply.grpc {
        return grpc_problems(reply, grpc, policy);
    }
    let mut out = Vec::new();
    if reply.source.is_none() {
        out.push("X-Data-Source missing".to_string());
    }
    match &reply.policy {
        None => out.push("RateLimit-Policy missing or malformed".into()),
        Some(p) if p.quota != policy.capacity => {
            out.push(format!("RateLimit-Policy q={} but capacity is {}", p.quota, policy.capacity))
        }
        Some(_) => {}
    }
    if reply.limit != Some(policy.capacity) {
        out.push(format!("X-RateLimit-Limit {} but capacity is {}", shown(reply.limit), policy.capacity));
    }
    let Some(remaining) = reply.remaining else {
        out.push("X-RateLimit-Remaining missing or not a whole number".into());
        return out;
    };
    match reply.reset {
        None => out.push("X-RateLimit-Reset missing or not whole seconds".into()),
        // A bucket that isn't full needs time to become full again.
        Some(0) if remaining < policy.capacity => {
            out.push(format!("X-RateLimit-Reset 0 with {remaining} of {} remaining", policy.capacity))
        }
        Some(_) => {}
    }
    if remaining > policy.capacity {
        out.push(format!("X-RateLimit-Remaining {remaining} exceeds capacity {}", policy.capacity));
    }
    match &reply.ratelimit {
        None => out.push("RateLimit missing or malformed".into()),
        Some(r) if r.remaining != remaining => {
            out.push(format!("RateLimit r={} disagrees with X-RateLimit-Remaining {remaining}", r.remaining))
        }
        Some(_) => {}
    }
    if let Some(allowed) = reply.body.as_ref().and_then(|b| b.get("allowed")).and_then(|a| a.as_bool()) {
        if allowed != reply.allowed() {
            out.push(format!("body says allowed={allowed} on HTTP {}", reply.status));
        }
    }
    if reply.denied() {
        // A refusal of cost 1 means less than one whole token was left.
        if remaining != 0 {
            out.push(format!("429 with X-RateLimit-Remaining {remaining}"));
        }
        match reply.retry_after {
            None => out.push("429 without a whole-seconds Retry-After".into()),
            Some(0) => out.push("429 with Retry-After 0 (must be at least 1, rounded up)".into()),
            Some(ra) => {
                if let Some(t) = reply.ratelimit.as_ref().and_then(|r| r.reset) {
                    if ra < t {
                        out.push(format!("Retry-After {ra} is earlier than RateLimit t={t}"));
                    }
                }
            }
        }
    }
    out
}

/// The gRPC answer's contract, for a request of cost 1 whose descriptors are the ones the policy was learned from.
fn grpc_problems(reply: &Reply, grpc: &GrpcStatus, policy: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    if grpc.statuses != grpc.sent {
        out.push(format!("{} statuses for {} descriptors", grpc.statuses, grpc.sent));
    }
    let Some(limit) = &grpc.limit else {
        out.push("the judged descriptor's status has no current_limit".into());
        return out;
    };
    if limit.name != policy.name || limit.refill_per_sec() != Some(policy.refill_per_sec) {
        out.push(format!(
            "current_limit {:?} ({} per {}s) is not the probe's {:?} at {}/s",
            limit.name,
            limit.requests_per_unit,
            shown(limit.unit_secs),
            policy.name,
            policy.refill_per_sec
        ));
    }
    let Some(remaining) = reply.remaining else {
        out.push("no status for the judged descriptor".into());
        return out;
    };
    if remaining > policy.capacity {
        out.push(format!("limit_remaining {remaining} exceeds capacity {}", policy.capacity));
    }
    match grpc.until_reset {
        None => out.push("duration_until_reset missing".into()),
        Some(d) if d.is_zero() && remaining < policy.capacity => {
            out.push(format!("duration_until_reset 0 with {remaining} of {} remaining", policy.capacity))
        }
        Some(_) => {}
    }
    // The rest reads one limit's view; with several descriptors the headers may describe another one.
    if grpc.sent != 1 || grpc.statuses != 1 {
        return out;
    }
    if reply.denied() {
        if grpc.code != Some(OVER_LIMIT_CODE) {
            out.push("OVER_LIMIT overall but the descriptor's own code is not OVER_LIMIT".into());
        }
        if remaining != 0 {
            out.push(format!("OVER_LIMIT with limit_remaining {remaining}"));
        }
    }
    // A gateway front may add no headers at all (`BUCKET_RLS_RESPONSE_HEADERS=none`); when it adds them, they agree.
    if reply.policy.is_none() && reply.ratelimit.is_none() && reply.retry_after.is_none() {
        return out;
    }
    if let Some(p) = reply.policy.as_ref().filter(|p| p.quota != policy.capacity) {
        out.push(format!("RateLimit-Policy q={} but capacity is {}", p.quota, policy.capacity));
    }
    match &reply.ratelimit {
        None => out.push("RateLimit header missing or malformed beside the others".into()),
        Some(r) if r.remaining != remaining => {
            out.push(format!("RateLimit r={} disagrees with limit_remaining {remaining}", r.remaining))
        }
        Some(_) => {}
    }
    if reply.denied() {
        match reply.retry_after {
            None | Some(0) => out.push("OVER_LIMIT without a Retry-After of at least 1s".into()),
            Some(_) => {}
        }
    }
    out
}

fn shown(v: Option<u64>) -> String {
    v.map_or_else(|| "missing".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{PolicyField, RateLimitField};

    fn policy() -> Policy {
        Policy {
            name: "default".into(),
            capacity: 10,
            refill_per_sec: 1.0,
            rate_from: "body",
            capacity_from: "RateLimit-Policy",
        }
    }

    fn denied() -> Reply {
        Reply {
            status: 429,
            source: Some("memory".into()),
            limit: Some(10),
            remaining: Some(0),
            reset: Some(10),
            retry_after: Some(1),
            ratelimit: Some(RateLimitField { name: "default".into(), remaining: 0, reset: Some(1) }),
            policy: Some(PolicyField { name: "default".into(), quota: 10, window: Some(10) }),
            body: Some(serde_json::json!({"allowed": false})),
            grpc: None,
        }
    }

    #[test]
    fn a_contract_reply_has_no_problems() {
        assert_eq!(problems(&denied(), &policy()), Vec::<String>::new());
    }

    #[test]
    fn each_broken_header_is_named() {
        let mut r = denied();
        r.retry_after = Some(0);
        r.limit = Some(11);
        r.ratelimit = Some(RateLimitField { name: "default".into(), remaining: 2, reset: Some(1) });
        r.body = Some(serde_json::json!({"allowed": true}));
        let found = problems(&r, &policy());
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found.iter().any(|p| p.contains("Retry-After 0")));
        assert!(found.iter().any(|p| p.contains("X-RateLimit-Limit 11")));
        assert!(found.iter().any(|p| p.contains("r=2")));
        assert!(found.iter().any(|p| p.contains("allowed=true on HTTP 429")));
    }

    fn grpc_denied() -> Reply {
        let mut r = denied();
        r.source = None;
        r.limit = None;
        r.body = None;
        r.grpc = Some(GrpcStatus {
            overall_code: OVER_LIMIT_CODE,
            statuses: 1,
            sent: 1,
            code: Some(OVER_LIMIT_CODE),
            limit: Some(crate::grpc::CurrentLimit {
                name: "default".into(),
                requests_per_unit: 10,
                unit_secs: Some(10),
            }),
            until_reset: Some(std::time::Duration::from_secs(10)),
        });
        r
    }

    #[test]
    fn a_grpc_answer_is_held_to_its_own_contract() {
        assert_eq!(problems(&grpc_denied(), &policy()), Vec::<String>::new());
        // Without gateway headers there is nothing for them to disagree with.
        let mut bare = grpc_denied();
        (bare.policy, bare.ratelimit, bare.retry_after) = (None, None, None);
        assert_eq!(problems(&bare, &policy()), Vec::<String>::new());

        let mut r = grpc_denied();
        r.remaining = Some(2);
        r.retry_after = None;
        let g = r.grpc.as_mut().unwrap();
        g.code = Some(1);
        g.until_reset = None;
        g.limit.as_mut().unwrap().requests_per_unit = 20;
        let found = problems(&r, &policy());
        assert_eq!(found.len(), 6, "{found:?}");
        for expected in [
            "current_limit \"default\" (20 per 10s)",
            "duration_until_reset missing",
            "own code",
            "limit_remaining 2",
            "r=0 disagrees",
            "without a Retry-After",
        ] {
            assert!(found.iter().any(|p| p.contains(expected)), "{expected}: {found:?}");
        }
    }

    #[test]
    fn a_status_per_descriptor_is_the_contract() {
        let mut r = grpc_denied();
        r.grpc.as_mut().unwrap().sent = 2;
        // With two descriptors the header checks are off (they may describe the other limit).
        assert_eq!(problems(&r, &policy()), vec!["1 statuses for 2 descriptors".to_string()]);
    }

    #[test]
    fn retry_after_earlier_than_t_is_a_problem() {
        let mut r = denied();
        r.retry_after = Some(1);
        r.ratelimit = Some(RateLimitField { name: "default".into(), remaining: 0, reset: Some(3) });
        assert_eq!(problems(&r, &policy()), vec!["Retry-After 1 is earlier than RateLimit t=3".to_string()]);
    }
}
