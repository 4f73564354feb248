//! `POST /v1/ratelimit`: Envoy's `ShouldRateLimit` as JSON, in the protobuf JSON mapping (camelCase fields, enums
//! by name, durations as `"1.5s"`), as envoyproxy/ratelimit's `/json` endpoint takes and answers it. 200 when every
//! limit allows, 429 when one refuses (nothing is taken then), 400 for a malformed request.

use actix_web::{web, HttpResponse};
use bucket_limits::Descriptor;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::rls::decide::{should_rate_limit, RlsAnswer, RlsError};
use crate::rls::request::RlsRequest;
use crate::state::AppState;

/// One descriptor entry.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryJson {
    /// The descriptor key (`remote_address`, `generic_key`, a header's descriptor key…).
    #[schema(example = "user")]
    pub key: String,
    /// Its value for this request; may be empty.
    #[serde(default)]
    #[schema(example = "alice")]
    pub value: String,
}

/// One descriptor: its entries, and optionally its own cost.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DescriptorJson {
    /// Key/value pairs, outermost first.
    pub entries: Vec<EntryJson>,
    /// This descriptor's cost, overriding the request's; 0 or absent means the request's.
    #[serde(default, alias = "hits_addend", deserialize_with = "uint64")]
    #[schema(value_type = Option<u64>, example = json!(null))]
    pub hits_addend: Option<u64>,
}

/// The request: Envoy's `RateLimitRequest` in JSON.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitRequestJson {
    /// The `domain` of the limits configuration.
    #[schema(example = "edge")]
    pub domain: String,
    /// Descriptors decided together: all allowed, or none debited.
    pub descriptors: Vec<DescriptorJson>,
    /// Tokens per descriptor; 0 or absent means 1.
    #[serde(default, alias = "hits_addend")]
    #[schema(example = 1)]
    pub hits_addend: u32,
}

/// The limit a descriptor was decided under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CurrentLimitJson {
    /// The rule's name, else its descriptor path.
    pub name: String,
    /// Requests per unit.
    pub requests_per_unit: u32,
    /// `SECOND`, `MINUTE`, `HOUR`, `DAY`, `WEEK`, `MONTH` or `YEAR`.
    #[schema(example = "MINUTE")]
    pub unit: String,
}

/// One descriptor's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DescriptorStatusJson {
    /// `OK` or `OVER_LIMIT`.
    #[schema(example = "OK")]
    pub code: String,
    /// Absent when no rule matched, or the rule is unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_limit: Option<CurrentLimitJson>,
    /// Whole tokens left in this descriptor's bucket.
    pub limit_remaining: u32,
    /// Time until the bucket is full again, e.g. `"12.5s"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "12.5s")]
    pub duration_until_reset: Option<String>,
}

/// A header for the gateway to add to its response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HeaderJson {
    /// Lower-case header name.
    pub key: String,
    /// Its value.
    pub value: String,
}

/// The answer: Envoy's `RateLimitResponse` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitResponseJson {
    /// `OK` or `OVER_LIMIT`.
    #[schema(example = "OK")]
    pub overall_code: String,
    /// One per descriptor, in request order.
    pub statuses: Vec<DescriptorStatusJson>,
    /// `RateLimit`, `RateLimit-Policy` and, when refused, `Retry-After`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub response_headers_to_add: Vec<HeaderJson>,
}

/// A `uint64` as the protobuf JSON mapping writes it (a string) or as people write it (a number).
fn uint64<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Number(u64),
        Text(String),
    }
    match Option::<Form>::deserialize(de)? {
        None => Ok(None),
        Some(Form::Number(n)) => Ok(Some(n)),
        Some(Form::Text(text)) => text.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// Decide several limits at once (Envoy's ShouldRateLimit as JSON)
///
/// The descriptors are matched against the limits file (`BUCKET_LIMITS`, envoyproxy/ratelimit's format) and decided
/// all or nothing: when any limit refuses, no bucket is debited.
#[utoipa::path(
    post,
    path = "/v1/ratelimit",
    tag = "decisions",
    request_body = RateLimitRequestJson,
    responses(
        (status = 200, description = "Every limit allowed (or no rule matched)", body = RateLimitResponseJson),
        (status = 429, description = "A limit refused; no bucket was debited", body = RateLimitResponseJson),
        (status = 400, description = "Empty domain, no descriptors, an empty entry key, a field over 255 bytes",
            body = crate::error::ErrorBody),
        (status = 404, description = "No limits file configured", body = crate::error::ErrorBody),
        (status = 413, description = "Body over `max_body_bytes`", body = crate::error::ErrorBody),
        (status = 503, description = "Store down and failure mode `fail_closed`", body = crate::error::ErrorBody),
    )
)]
pub async fn ratelimit(
    state: web::Data<AppState>,
    body: web::Json<RateLimitRequestJson>,
) -> Result<HttpResponse, ApiError> {
    let Some(limits) = state.limits.as_ref() else {
        return Err(ApiError::NotFound("no limits configured: set BUCKET_LIMITS".into()));
    };
    let request = from_json(body.into_inner());
    let limits = limits.current();
    match should_rate_limit(&state, &limits, &request).await {
        Ok(answer) => {
            let body = to_json(&answer);
            Ok(if answer.over_limit { HttpResponse::TooManyRequests() } else { HttpResponse::Ok() }.json(body))
        }
        Err(RlsError::Invalid(message)) => Err(ApiError::InvalidDescriptor(message)),
        Err(RlsError::Unavailable(message)) => Err(ApiError::StoreUnavailable(message)),
    }
}

fn from_json(request: RateLimitRequestJson) -> RlsRequest {
    let descriptor_hits = request.descriptors.iter().map(|d| d.hits_addend).collect();
    RlsRequest {
        domain: request.domain,
        descriptors: request
            .descriptors
            .into_iter()
            .map(|d| Descriptor { entries: d.entries.into_iter().map(|e| (e.key, e.value)).collect() })
            .collect(),
        descriptor_hits,
        hits_addend: u64::from(request.hits_addend),
    }
}

fn code(over_limit: bool) -> String {
    if over_limit { "OVER_LIMIT" } else { "OK" }.into()
}

fn to_json(answer: &RlsAnswer) -> RateLimitResponseJson {
    RateLimitResponseJson {
        overall_code: code(answer.over_limit),
        statuses: answer
            .statuses
            .iter()
            .map(|s| DescriptorStatusJson {
                code: code(s.over_limit),
                current_limit: s.limit.as_ref().map(|l| CurrentLimitJson {
                    name: l.name.clone(),
                    requests_per_unit: l.requests_per_unit,
                    unit: l.unit.as_str().into(),
                }),
                limit_remaining: s.remaining,
                // The protobuf JSON form of a Duration: seconds with up to nine decimals and an `s`.
                duration_until_reset: s.until_reset.map(|d| format!("{}s", d.as_secs_f64())),
            })
            .collect(),
        response_headers_to_add: answer
            .headers
            .iter()
            .map(|(key, value)| HeaderJson { key: (*key).into(), value: value.clone() })
            .collect(),
    }
}
