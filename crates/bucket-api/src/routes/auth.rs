//! `/v1/auth`: the forward-auth form of a decision, asked by nginx `auth_request`, Caddy `forward_auth` and Traefik
//! `ForwardAuth` before they forward a request.
//!
//! It decides for the caller exactly as `GET /` does (same identity rules, same decision path), so a proxy adds rate
//! limiting to a site without the site knowing. Every answer is safe to put in front of a gate: only a decision that
//! allowed (or the configured `fail_open`) is a 2xx; a refusal is 429 (or 403 with `?deny_status=403`, because
//! nginx turns any other status into a 500), bad input is a 4xx, a store outage in `fail_closed` a 503. All three
//! proxies treat any non-2xx as "do not forward", so a mistake in bucket or in the proxy's URL closes the gate.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use slog::Drain as _;
use utoipa::IntoParams;

use crate::error::{ApiError, ErrorBody};
use crate::routes::check::decide_logged;
use crate::state::AppState;

/// Query of `/v1/auth`: set per proxy location, e.g. `/v1/auth?policy=search&cost=5&deny_status=403`. Unknown
/// parameters are refused so a misspelt `polcy=` is not silently the default policy.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuthQuery {
    /// A policy from the `[policies.*]` configuration; a per-key policy set by an operator still wins.
    #[param(example = "search")]
    pub policy: Option<String>,
    /// Tokens this request takes (1 to the policy's capacity; default 1).
    #[param(value_type = Option<u64>, minimum = 1, example = 1)]
    pub cost: Option<String>,
    /// Status of a refusal: 429 (default) or 403 for nginx `auth_request`, which passes only 401 and 403 on.
    #[param(value_type = Option<u16>, example = 403)]
    pub deny_status: Option<String>,
}

/// Decide for a proxied request (forward auth)
///
/// For nginx `auth_request`, Caddy `forward_auth`, Traefik `ForwardAuth`. Every method is answered alike (nginx
/// keeps the client's; only GET is listed here, as operation ids must be unique). The caller is found as for
/// `GET /`. Allowed: 200 with the rate-limit headers for the proxy to copy to its client. Refused: 429 (or
/// `deny_status`) with `Retry-After`, the same headers and an error body. The original request
/// (`X-Forwarded-Method`, `X-Forwarded-Uri` or `X-Original-URI`) is logged with the decision.
#[utoipa::path(
    get,
    path = "/v1/auth",
    operation_id = "forward_auth",
    tag = "decisions",
    params(
        AuthQuery,
        ("X-User-ID" = Option<String>, Header,
            description = "Caller id (1 to 255 bytes, no control characters); when absent the client address is \
                used: the peer's, or behind a trusted proxy the one it forwarded",
            min_length = 1, max_length = 255, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"),
    ),
    responses(
        (status = 200, response = crate::openapi::Allowed),
        (status = 429, response = crate::openapi::Refused),
        (status = 403, response = crate::openapi::Refused),
        (status = 400, description = "Bad caller id, cost or deny_status, unknown policy or parameter", body = ErrorBody),
        (status = 503, description = "Store down and failure mode `fail_closed`", body = ErrorBody),
    )
)]
pub async fn forward_auth(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<AuthQuery>,
) -> Result<HttpResponse, ApiError> {
    let AuthQuery { policy, cost, deny_status } = query.into_inner();
    let cost = parse_cost(cost.as_deref())?;
    let deny_status = parse_deny_status(deny_status.as_deref())?;
    let key = state.caller(&req)?;
    // The proxied method and URI go on the decision's debug line; copying two headers into a child logger is
    // skipped when that line would be filtered out anyway, so the common path allocates nothing for logging.
    let log = if state.log.is_debug_enabled() {
        let (method, uri) = original_request(&req);
        state.log.new(slog::o!("method" => method, "uri" => uri))
    } else {
        state.log.clone()
    };
    let decided = decide_logged(&state, &log, &key, cost, policy.as_deref()).await?;
    if decided.status() == StatusCode::TOO_MANY_REQUESTS {
        return Ok(refusal(&decided, deny_status));
    }
    Ok(decided)
}

/// `?cost=`: a whole number of tokens; 0 and "above capacity" are refused by the shared decision path.
fn parse_cost(raw: Option<&str>) -> Result<u64, ApiError> {
    match raw {
        None => Ok(1),
        Some(raw) => {
            raw.parse().map_err(|_| ApiError::InvalidCost(format!("cost {raw:?} is not a whole number of tokens")))
        }
    }
}

/// `?deny_status=`: 429 (default) or 403. Anything else would be a status some proxy treats as "allowed" or
/// turns into a 500, so it is refused.
fn parse_deny_status(raw: Option<&str>) -> Result<StatusCode, ApiError> {
    match raw {
        None | Some("429") => Ok(StatusCode::TOO_MANY_REQUESTS),
        Some("403") => Ok(StatusCode::FORBIDDEN),
        Some(other) => Err(ApiError::InvalidPath(format!("deny_status must be 429 or 403, not {other:?}"))),
    }
}

/// The method and URI of the request the proxy is deciding on, as each proxy names them (for the log only). nginx's
/// subrequest keeps the client's method, so without a header the request's own is the original.
fn original_request(req: &HttpRequest) -> (String, String) {
    let text = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let method = text("x-forwarded-method").or_else(|| text("x-original-method"));
    let method = method.unwrap_or_else(|| req.method().to_string());
    let uri = text("x-forwarded-uri").or_else(|| text("x-original-uri")).unwrap_or_default();
    (method, uri)
}

/// A refusal for a proxy to hand to its client: the decision's headers (`Retry-After`, `RateLimit`...) with a
/// short error body instead of the decision (the client did not ask bucket anything, so its key stays private).
fn refusal(decided: &HttpResponse, status: StatusCode) -> HttpResponse {
    let retry_after = decided.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).unwrap_or("1");
    let body =
        ErrorBody { error: "rate_limited".into(), detail: format!("too many requests: retry after {retry_after} s") };
    let mut response = HttpResponse::build(status);
    for (name, value) in decided.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            response.append_header((name.clone(), value.clone()));
        }
    }
    response.json(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_and_deny_status_parse_or_explain() {
        assert_eq!(parse_cost(None).unwrap(), 1);
        assert_eq!(parse_cost(Some("7")).unwrap(), 7);
        for bad in ["", "-1", "1.5", "two", "99999999999999999999999"] {
            assert_eq!(parse_cost(Some(bad)).unwrap_err().code(), "invalid_cost", "{bad:?}");
        }
        assert_eq!(parse_deny_status(None).unwrap(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(parse_deny_status(Some("403")).unwrap(), StatusCode::FORBIDDEN);
        for bad in ["200", "204", "401", "500", "forbidden"] {
            assert!(parse_deny_status(Some(bad)).is_err(), "{bad:?} must not be accepted");
        }
    }
}
