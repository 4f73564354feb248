//! What a check answers when the store cannot decide: the configured failure mode, as a pure function.

use bucket_core::{Decision, Policy};
use bucket_store::{Outcome, Source, StoreError};

use crate::config::FailureMode;
use crate::error::ApiError;

/// Turns a store failure into the outcome `fail_open` grants, or the 503 `fail_closed` answers.
///
/// A fail-open allowance reports 0 remaining and the wait of an empty bucket: the limiter does not know the real
/// state, and telling clients the bucket is spent makes well-behaved ones slow down instead of bursting into an
/// unguarded service.
pub fn on_store_error(mode: FailureMode, policy: &Policy, error: &StoreError) -> Result<Outcome, ApiError> {
    match mode {
        FailureMode::FailOpen => Ok(Outcome {
            decision: Decision {
                allowed: true,
                limit: policy.capacity(),
                remaining: 0,
                reset_after_us: policy.fill_time_us(),
                next_token_after_us: policy.interval_us(),
                retry_after: None,
            },
            source: Source::FailOpen,
        }),
        FailureMode::FailClosed => Err(ApiError::StoreUnavailable(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use actix_web::body::to_bytes;
    use actix_web::ResponseError;

    use super::*;
    use crate::headers::{decision_response, AppliedPolicy};

    fn outage() -> StoreError {
        StoreError::Unavailable { backend: "redis", detail: "connection refused".into() }
    }

    fn default_policy() -> AppliedPolicy {
        AppliedPolicy { name: "default".into(), policy: Policy::from_rate(10, 1.0).unwrap() }
    }

    #[actix_web::test]
    async fn fail_open_allows_marked_with_nothing_remaining() {
        let applied = default_policy();
        let outcome = on_store_error(FailureMode::FailOpen, &applied.policy, &outage()).unwrap();
        assert_eq!(outcome.source, Source::FailOpen);
        assert!(outcome.decision.allowed);
        let res = decision_response(&outcome, "alice", 1, &applied).unwrap();
        assert_eq!(res.status(), 200);
        let header = |name: &str| res.headers().get(name).unwrap().to_str().unwrap().to_string();
        assert_eq!(header("x-data-source"), "fail-open");
        assert_eq!(header("x-ratelimit-remaining"), "0");
        assert_eq!(header("ratelimit"), "\"default\";r=0;t=1");
        assert!(res.headers().get("retry-after").is_none());
        let body: serde_json::Value = serde_json::from_slice(&to_bytes(res.into_body()).await.unwrap()).unwrap();
        assert_eq!((body["allowed"].as_bool(), body["source"].as_str()), (Some(true), Some("fail-open")));
    }

    #[actix_web::test]
    async fn fail_closed_is_a_503_asking_to_retry_in_a_second() {
        let err = on_store_error(FailureMode::FailClosed, &default_policy().policy, &outage()).unwrap_err();
        let res = err.error_response();
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers().get("retry-after").unwrap(), "1");
        let body: serde_json::Value = serde_json::from_slice(&to_bytes(res.into_body()).await.unwrap()).unwrap();
        assert_eq!(body["error"], "store_unavailable");
        assert!(body["detail"].as_str().unwrap().contains("connection refused"));
    }
}
