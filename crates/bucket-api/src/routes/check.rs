//! The decision routes: `GET /` (the seed's form, one token for the caller) and `POST /v1/check` (the service form).

use std::borrow::Cow;
use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use bucket_store::{Key, StoreError};
use serde::Deserialize;
use slog::{debug, warn, Logger};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::failure_mode::on_store_error;
use crate::headers::{cost_exceeds, decision_response, AppliedPolicy};
use crate::routes::{fields, json_body};
use crate::state::AppState;

/// Body of `POST /v1/check`; unknown fields are refused so a misspelt `cots` is not silently a cost of 1.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest<'a> {
    /// The bucket: a user id, an API key, `route:user`... (1 to 255 bytes).
    #[schema(example = "alice", min_length = 1, max_length = 255, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$")]
    // Borrowed from the request body unless it contains escapes: a decision copies no key.
    #[serde(borrow, deserialize_with = "fields::key")]
    pub key: Cow<'a, str>,
    /// Tokens to take (1 to the policy's capacity).
    #[serde(default = "one", deserialize_with = "fields::cost")]
    #[schema(default = 1, minimum = 1, example = 1)]
    pub cost: u64,
    /// A policy from the `[policies.*]` configuration; a per-key policy set by an operator still wins.
    #[schema(example = json!(null))]
    pub policy: Option<String>,
}

fn one() -> u64 {
    1
}

/// Take one token for the caller (seed compatibility)
///
/// The caller is the value of the `X-User-ID` header (configurable), or the peer's IP when it is absent.
#[utoipa::path(
    get,
    path = "/",
    operation_id = "take_one",
    tag = "decisions",
    params(("X-User-ID" = Option<String>, Header,
        description = "Caller id (1 to 255 bytes, no control characters); when absent the client address is used: \
            the peer's, or behind a trusted proxy the one it forwarded",
        min_length = 1, max_length = 255, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$")),
    responses(
        (status = 200, response = crate::openapi::Allowed),
        (status = 429, response = crate::openapi::Denied),
        (status = 400, description = "Empty, over-long or non-UTF-8 caller id", body = ErrorBody),
        (status = 503, description = "Store down and failure mode `fail_closed`", body = ErrorBody),
    )
)]
pub async fn index(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let key = state.caller(&req)?;
    decide(&state, &key, 1, None).await
}

/// Take `cost` tokens from a bucket
///
/// For gateways and apps that ask before doing work. 200 when the tokens were taken, 429 when not (nothing is
/// taken then), with the same headers as `GET /`.
#[utoipa::path(
    post,
    path = "/v1/check",
    tag = "decisions",
    request_body = CheckRequest,
    responses(
        (status = 200, response = crate::openapi::Allowed),
        (status = 429, response = crate::openapi::Denied),
        (status = 400, description = "Bad key, cost 0 or above capacity, unknown policy, malformed JSON",
            body = ErrorBody),
        (status = 413, description = "Body over `max_body_bytes`", body = ErrorBody),
        (status = 503, description = "Store down and failure mode `fail_closed`", body = ErrorBody),
    )
)]
pub async fn check(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_body::read(&req, payload, state.config.max_body_bytes).await?;
    let CheckRequest { key, cost, policy } = json_body::decode(&body)?;
    Key::new(&key)?;
    decide(&state, &key, cost, policy.as_deref()).await
}

/// One decision, from validation to response, shared by every decision route (`/v1/auth` too).
pub(crate) async fn decide(
    state: &AppState,
    key: &str,
    cost: u64,
    policy: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    decide_logged(state, &state.log, key, cost, policy).await
}

/// [`decide`], logging the decision on `log` (a logger carrying the route's own context, e.g. the proxied URI).
pub(crate) async fn decide_logged(
    state: &AppState,
    log: &Logger,
    key: &str,
    cost: u64,
    policy: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    if cost == 0 {
        return Err(ApiError::InvalidCost("cost must be at least 1".into()));
    }
    let requested = state.requested_policy(policy)?;
    let applied = match state.effective_policy(key, requested.clone()).await {
        Ok(applied) => applied,
        Err(e) => return store_failed(state, log, key, cost, &requested, e),
    };
    // Checked before the store is asked: a cost above capacity can never be allowed, so it is the caller's error.
    if cost > applied.policy.capacity() {
        return Err(cost_exceeds(cost, &applied));
    }
    let started = Instant::now();
    let result = state.store.check_as_task(key, &applied.policy, cost).await;
    let elapsed = started.elapsed();
    match result {
        Ok(outcome) => {
            let d = &outcome.decision;
            state.metrics.record_decision(d.allowed, outcome.source, cost, state.store_label(), elapsed);
            debug!(log, "decision";
                "user_id" => key, "source" => outcome.source.as_str(), "allowed" => d.allowed,
                "remaining" => d.remaining, "cost" => cost, "policy" => &applied.name);
            decision_response(&outcome, key, cost, &applied)
        }
        Err(e) => store_failed(state, log, key, cost, &applied, e),
    }
}

/// Applies the failure mode, counting and logging it, so an outage is visible even when callers are let through.
fn store_failed(
    state: &AppState,
    log: &Logger,
    key: &str,
    cost: u64,
    applied: &AppliedPolicy,
    error: StoreError,
) -> Result<HttpResponse, ApiError> {
    let mode = state.config.failure_mode;
    if let Some(suppressed) = state.count_store_failure() {
        warn!(log, "store failed; answering with the failure mode";
            "user_id" => key, "mode" => mode.as_str(), "error" => %error, "suppressed" => suppressed);
    }
    if cost > applied.policy.capacity() {
        return Err(cost_exceeds(cost, applied));
    }
    let outcome = on_store_error(mode, &applied.policy, &error)?;
    state.metrics.decisions.with_label_values(&["allowed", outcome.source.as_str()]).inc();
    decision_response(&outcome, key, cost, applied)
}
