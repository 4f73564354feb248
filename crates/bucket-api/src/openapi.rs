//! The OpenAPI document, generated from the handlers' annotations; `docs/openapi.json` is a checked copy.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToResponse};

use crate::error::ErrorBody;
use crate::headers::{DecisionBody, PolicyBody};
use crate::routes::{auth, buckets, check, health, metrics, policies, ratelimit};

/// A decision that took the tokens (or a peek), with every rate-limit header.
#[derive(ToResponse)]
#[response(
    description = "Allowed: the tokens were taken",
    headers(
        ("X-Data-Source" = String,
            description = "Part that decided: memory, redis, postgres, new-user, fail-open, or refusal-cache (a refusal \
                this instance remembered answered; no store was asked)"),
        ("RateLimit-Policy" = String,
            description = "Quota and window, e.g. `\"default\";q=10;w=10` (window in whole seconds, rounded up)"),
        ("RateLimit" = String,
            description = "Remaining tokens and whole seconds until the next one, e.g. `\"default\";r=9;t=1`"),
        ("X-RateLimit-Limit" = u64, description = "Capacity"),
        ("X-RateLimit-Remaining" = u64, description = "Tokens left"),
        ("X-RateLimit-Reset" = u64, description = "Whole seconds until the bucket is full, rounded up"),
    )
)]
pub struct Allowed(pub DecisionBody<'static>);

/// A refused decision: nothing was taken.
#[derive(ToResponse)]
#[response(
    description = "Denied: not enough tokens; nothing was taken",
    headers(
        ("Retry-After" = u64, description = "Whole seconds until `cost` tokens are available, rounded up, at least 1"),
        ("X-Data-Source" = String,
            description = "Part that decided; `refusal-cache` when a refusal this instance remembered answered and no \
                store was asked"),
        ("RateLimit-Policy" = String, description = "Quota and window, e.g. `\"default\";q=10;w=10`"),
        ("RateLimit" = String,
            description = "Remaining tokens and whole seconds until `cost` tokens, e.g. `\"default\";r=0;t=1`"),
        ("X-RateLimit-Limit" = u64, description = "Capacity"),
        ("X-RateLimit-Remaining" = u64, description = "Tokens left"),
        ("X-RateLimit-Reset" = u64, description = "Whole seconds until the bucket is full, rounded up"),
    )
)]
pub struct Denied(pub DecisionBody<'static>);

/// A forward-auth refusal (`/v1/auth`): the decision's headers for the proxy to hand on, and a short error body.
#[derive(ToResponse)]
#[response(
    description = "Refused: not enough tokens; nothing was taken. 429, or 403 with `deny_status=403`",
    headers(
        ("Retry-After" = u64, description = "Whole seconds until `cost` tokens are available, rounded up, at least 1"),
        ("X-Data-Source" = String,
            description = "Part that decided; `refusal-cache` when a refusal this instance remembered answered and no \
                store was asked"),
        ("RateLimit-Policy" = String, description = "Quota and window, e.g. `\"default\";q=10;w=10`"),
        ("RateLimit" = String,
            description = "Remaining tokens and whole seconds until `cost` tokens, e.g. `\"default\";r=0;t=1`"),
        ("X-RateLimit-Limit" = u64, description = "Capacity"),
        ("X-RateLimit-Remaining" = u64, description = "Tokens left"),
        ("X-RateLimit-Reset" = u64, description = "Whole seconds until the bucket is full, rounded up"),
    )
)]
pub struct Refused(pub ErrorBody);

/// Declares the bearer scheme the admin routes' `security(("bearer" = []))` refers to.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The configured BUCKET_ADMIN_TOKEN"))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "bucket", description = "Token-bucket rate limiting as a service"),
    paths(
        check::index,
        check::check,
        ratelimit::ratelimit,
        auth::forward_auth,
        buckets::peek,
        buckets::reset,
        policies::get,
        policies::put,
        policies::delete,
        health::healthz,
        health::readyz,
        metrics::metrics,
    ),
    components(
        schemas(
            DecisionBody,
            PolicyBody,
            ErrorBody,
            ratelimit::RateLimitRequestJson,
            ratelimit::RateLimitResponseJson
        ),
        responses(Allowed, Denied, Refused)
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "decisions", description = "Take tokens"),
        (name = "buckets", description = "Inspect and reset buckets"),
        (name = "policies", description = "Per-key limits (admin)"),
        (name = "operations", description = "Health and metrics"),
    )
)]
struct ApiDoc;

/// The OpenAPI document served at `/api-docs/openapi.json`.
pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as pretty JSON with a trailing newline: the form `docs/openapi.json` is committed in.
pub fn spec_json() -> Result<String, serde_json::Error> {
    spec().to_pretty_json().map(|mut s| {
        s.push('\n');
        s
    })
}
