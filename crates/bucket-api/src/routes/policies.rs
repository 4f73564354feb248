//! Per-key limits set by an operator (admin only): they win over the default and named policies.

use actix_web::{web, HttpResponse};
use bucket_core::Policy;
use bucket_store::PolicyStore;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AdminAuth;
use crate::error::{ApiError, ErrorBody};
use crate::routes::fields;
use crate::routes::path_key::PathKey;
use crate::state::AppState;

/// Body of `PUT /v1/policies/{key}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    /// Largest burst (1 to 2147483647).
    #[schema(example = 100, minimum = 1, maximum = 2147483647)]
    #[serde(deserialize_with = "fields::capacity")]
    pub capacity: u64,
    /// Tokens gained per second (above 0, at most 1000000; fractions allowed).
    #[schema(example = 1.5, exclusive_minimum = 0, maximum = 1000000)]
    #[serde(deserialize_with = "fields::refill_per_sec")]
    pub refill_per_sec: f64,
}

/// A key's policy as stored (the rate is kept as whole microseconds per token, so it may differ slightly from
/// what was sent: 3/s is stored as 333333 µs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PolicyResponse {
    /// The key.
    #[schema(example = "alice")]
    pub key: String,
    /// Largest burst.
    #[schema(example = 100)]
    pub capacity: u64,
    /// Tokens gained per second.
    #[schema(example = 1.5)]
    pub refill_per_sec: f64,
    /// Microseconds per token.
    #[schema(example = 666667)]
    pub interval_us: u64,
}

impl PolicyResponse {
    fn new(key: String, policy: &Policy) -> Self {
        Self {
            key,
            capacity: policy.capacity(),
            refill_per_sec: policy.refill_per_sec(),
            interval_us: policy.interval_us(),
        }
    }
}

/// A key's own policy (admin)
#[utoipa::path(
    get,
    path = "/v1/policies/{key}",
    operation_id = "get_policy",
    tag = "policies",
    params(("key" = String, Path, description = "The bucket's key: 1 to 255 bytes of UTF-8 without control characters; a `/` may be sent raw or as `%2F`", min_length = 1, max_length = 255, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The key's policy", body = PolicyResponse),
        (status = 400, description = "Bad key", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 403, description = "Admin routes are disabled (no BUCKET_ADMIN_TOKEN)", body = ErrorBody),
        (status = 404, description = "The key has no policy of its own", body = ErrorBody),
    )
)]
pub async fn get(_admin: AdminAuth, state: web::Data<AppState>, key: PathKey) -> Result<HttpResponse, ApiError> {
    let key = key.into_inner();
    match state.store.policy(&key).await? {
        Some(policy) => Ok(HttpResponse::Ok().json(PolicyResponse::new(key, &policy))),
        None => Err(ApiError::NotFound(format!("key `{key}` has no policy of its own"))),
    }
}

/// Set a key's own policy (admin)
///
/// The bucket's tokens are kept: raising a limit does not hand out a fresh burst.
#[utoipa::path(
    put,
    path = "/v1/policies/{key}",
    operation_id = "put_policy",
    tag = "policies",
    params(("key" = String, Path, description = "The bucket's key: 1 to 255 bytes of UTF-8 without control characters; a `/` may be sent raw or as `%2F`", min_length = 1, max_length = 255, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$")),
    request_body = PolicyRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Stored", body = PolicyResponse),
        (status = 400, description = "Not a valid policy, or malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 403, description = "Admin routes are disabled (no BUCKET_ADMIN_TOKEN)", body = ErrorBody),
    )
)]
pub async fn put(
    _admin: AdminAuth,
    state: web::Data<AppState>,
    key: PathKey,
    body: web::Json<PolicyRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = key.into_inner();
    let policy = Policy::from_rate(body.capacity, body.refill_per_sec)?;
    state.store.set_policy(&key, &policy).await?;
    Ok(HttpResponse::Ok().json(PolicyResponse::new(key, &policy)))
}

/// Remove a key's own policy (admin)
#[utoipa::path(
    delete,
    path = "/v1/policies/{key}",
    operation_id = "delete_policy",
    tag = "policies",
    params(("key" = String, Path, description = "The bucket's key: 1 to 255 bytes of UTF-8 without control characters; a `/` may be sent raw or as `%2F`", min_length = 1, max_length = 255, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed; the key follows the default or named policy again"),
        (status = 400, description = "Bad key", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 403, description = "Admin routes are disabled (no BUCKET_ADMIN_TOKEN)", body = ErrorBody),
        (status = 404, description = "The key had no policy of its own", body = ErrorBody),
    )
)]
pub async fn delete(_admin: AdminAuth, state: web::Data<AppState>, key: PathKey) -> Result<HttpResponse, ApiError> {
    let key = key.into_inner();
    if state.store.delete_policy(&key).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!("key `{key}` has no policy of its own")))
    }
}
