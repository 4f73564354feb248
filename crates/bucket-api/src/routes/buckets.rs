//! A bucket's state without spending (`GET`), and an operator's reset (`DELETE`, admin only).

use actix_web::{web, HttpResponse};
use bucket_store::Store;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::AdminAuth;
use crate::error::{ApiError, ErrorBody};
use crate::headers::decision_response;
use crate::routes::path_key::PathKey;
use crate::state::AppState;

/// Query of `GET /v1/buckets/{key}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PeekQuery {
    /// Report the bucket under this configured policy instead of the default (a per-key policy still wins).
    pub policy: Option<String>,
}

/// A bucket's state, taking nothing
///
/// Same headers and body as a decision with `cost` 0; always 200.
#[utoipa::path(
    get,
    path = "/v1/buckets/{key}",
    operation_id = "peek_bucket",
    tag = "buckets",
    params(("key" = String, Path, description = "The bucket's key: 1 to 255 bytes of UTF-8 without control characters; a `/` may be sent raw or as `%2F`", min_length = 1, max_length = 255, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"), PeekQuery),
    responses(
        (status = 200, response = crate::openapi::Allowed),
        (status = 400, description = "Bad key or unknown policy", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
pub async fn peek(
    state: web::Data<AppState>,
    key: PathKey,
    query: web::Query<PeekQuery>,
) -> Result<HttpResponse, ApiError> {
    let key = key.into_inner();
    let requested = state.requested_policy(query.policy.as_deref())?;
    let applied = state.effective_policy(&key, requested).await?;
    let outcome = state.store.peek(&key, &applied.policy).await?;
    decision_response(&outcome, &key, 0, &applied)
}

/// Refill a bucket now (admin)
///
/// Admin only: a caller able to reset its own bucket would not be limited.
#[utoipa::path(
    delete,
    path = "/v1/buckets/{key}",
    operation_id = "reset_bucket",
    tag = "buckets",
    params(("key" = String, Path, description = "The bucket's key: 1 to 255 bytes of UTF-8 without control characters; a `/` may be sent raw or as `%2F`", min_length = 1, max_length = 255, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "The bucket is full"),
        (status = 400, description = "Bad key", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 403, description = "Admin routes are disabled (no BUCKET_ADMIN_TOKEN)", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
pub async fn reset(_admin: AdminAuth, state: web::Data<AppState>, key: PathKey) -> Result<HttpResponse, ApiError> {
    state.store.reset(&key.0).await?;
    Ok(HttpResponse::NoContent().finish())
}
