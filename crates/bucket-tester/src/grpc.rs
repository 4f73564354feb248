//! One `ShouldRateLimit` call to a gateway front, as Envoy makes it, turned into the same [`Reply`] the HTTP
//! client gives: allowed or refused from `overall_code`, remaining tokens and the limit from the judged
//! descriptor's status, `RateLimit`, `RateLimit-Policy` and `Retry-After` from `response_headers_to_add`.

use std::time::Duration;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tonic::transport::{Channel, Endpoint};

use crate::client::{error_chain, parse_reply, Reply, RequestError};
use crate::descriptors::Descriptors;

/// `OVER_LIMIT` as the protobuf carries it.
pub const OVER_LIMIT_CODE: i32 = Code::OverLimit as i32;

/// Status codes standing in for the gRPC answer where scenarios ask `allowed()`/`denied()`.
const OK: u16 = 200;
const OVER_LIMIT: u16 = 429;

/// Where and what to ask over gRPC: the domain and the descriptors of every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcTarget {
    /// The limits' domain, as Envoy's `domain` setting names it.
    pub domain: String,
    /// The descriptors, with the user's place marked.
    pub descriptors: Descriptors,
}

/// The limit a descriptor status reports (`current_limit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentLimit {
    /// The rule's name (or its descriptor path).
    pub name: String,
    /// `requests_per_unit`.
    pub requests_per_unit: u32,
    /// The unit's length in seconds; `None` for `UNKNOWN` or a value this client doesn't know.
    pub unit_secs: Option<u64>,
}

impl CurrentLimit {
    /// Tokens per second the limit refills at, when its unit is known.
    pub fn refill_per_sec(&self) -> Option<f64> {
        Some(f64::from(self.requests_per_unit) / self.unit_secs? as f64)
    }
}

/// What only a gRPC answer carries, for the checks that read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcStatus {
    /// `overall_code` as sent.
    pub overall_code: i32,
    /// How many statuses came back (one per descriptor is the contract).
    pub statuses: usize,
    /// How many descriptors were sent.
    pub sent: usize,
    /// The judged descriptor's own code.
    pub code: Option<i32>,
    /// The judged descriptor's `current_limit`.
    pub limit: Option<CurrentLimit>,
    /// The judged descriptor's `duration_until_reset`.
    pub until_reset: Option<Duration>,
}

impl GrpcStatus {
    /// `OK`, `OVER_LIMIT` or `UNKNOWN`, as a request line shows it.
    pub fn code_name(code: i32) -> &'static str {
        Code::try_from(code).map_or("UNKNOWN", |c| c.as_str_name())
    }
}

/// Clients of the target and each instance, over one HTTP/2 connection each, sharing the request template.
pub struct GrpcClient {
    target: GrpcTarget,
    channels: Vec<(String, RateLimitServiceClient<Channel>)>,
}

impl GrpcClient {
    /// Connects to every URL now, so an unreachable one is reported as such (`Err((url, cause))`) before any
    /// scenario runs; `timeout` bounds each connection attempt and each call.
    pub async fn connect(urls: &[&str], target: GrpcTarget, timeout: Duration) -> Result<Self, (String, String)> {
        let mut channels = Vec::with_capacity(urls.len());
        for url in urls {
            let unreachable = |e: &dyn std::fmt::Display| {
                (url.to_string(), format!("{e}; the gRPC port is open only when BUCKET_LIMITS names a limits file"))
            };
            let endpoint = Endpoint::from_shared(url.to_string())
                .map_err(|e| (url.to_string(), e.to_string()))?
                .connect_timeout(timeout)
                .timeout(timeout);
            let channel = endpoint.connect().await.map_err(|e| unreachable(&error_chain(&e)))?;
            channels.push((url.to_string(), RateLimitServiceClient::new(channel)));
        }
        Ok(GrpcClient { target, channels })
    }

    /// `ShouldRateLimit` at `url` (the target or an instance) with the descriptors filled in for `user`.
    pub async fn hit(&self, url: &str, user: &str) -> Result<Reply, RequestError> {
        let Some((_, client)) = self.channels.iter().find(|(u, _)| u == url) else {
            return Err(RequestError { unreachable: true, message: format!("{url}: not connected") });
        };
        let request = RateLimitRequest {
            domain: self.target.domain.clone(),
            descriptors: self
                .target
                .descriptors
                .fill(user)
                .into_iter()
                .map(|entries| RateLimitDescriptor {
                    entries: entries.into_iter().map(|(key, value)| Entry { key, value }).collect(),
                    ..RateLimitDescriptor::default()
                })
                .collect(),
            hits_addend: 0,
        };
        // A clone shares the connection; tonic's client methods take `&mut self`.
        let answer = client.clone().should_rate_limit(request).await.map_err(|status| RequestError {
            unreachable: false,
            message: format!("gRPC {:?}: {}", status.code(), status.message()),
        })?;
        Ok(to_reply(&answer.into_inner(), self.target.descriptors.judged, self.target.descriptors.len()))
    }
}

/// Unit lengths as envoyproxy/ratelimit gives them (a month is 30 days, a year 365): bucket-limits' table, looked up
/// by the protobuf name both use.
fn unit_secs(unit: i32) -> Option<u64> {
    bucket_limits::Unit::parse(Unit::try_from(unit).ok()?.as_str_name()).map(bucket_limits::Unit::as_secs)
}

/// The reply an answer to `sent` descriptors amounts to, judged on descriptor `judged`.
fn to_reply(answer: &RateLimitResponse, judged: usize, sent: usize) -> Reply {
    let status = match Code::try_from(answer.overall_code) {
        Ok(Code::Ok) => OK,
        Ok(Code::OverLimit) => OVER_LIMIT,
        _ => 0,
    };
    let mut headers = HeaderMap::new();
    for h in &answer.response_headers_to_add {
        // A header that isn't a valid HTTP header reads as absent, as a malformed one does over HTTP.
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(h.key.as_bytes()), HeaderValue::from_str(&h.value)) {
            headers.append(name, value);
        }
    }
    let mut reply = parse_reply(status, &headers, b"");
    let own = answer.statuses.get(judged);
    reply.remaining = own.map(|s| u64::from(s.limit_remaining));
    reply.reset = own.and_then(|s| s.duration_until_reset.as_ref()).map(|d| {
        let whole = u64::try_from(d.seconds).unwrap_or(0);
        whole + u64::from(d.nanos > 0)
    });
    reply.grpc = Some(GrpcStatus {
        overall_code: answer.overall_code,
        statuses: answer.statuses.len(),
        sent,
        code: own.map(|s| s.code),
        limit: own.and_then(|s| s.current_limit.as_ref()).map(|l| CurrentLimit {
            name: l.name.clone(),
            requests_per_unit: l.requests_per_unit,
            unit_secs: unit_secs(l.unit),
        }),
        until_reset: own
            .and_then(|s| s.duration_until_reset.as_ref())
            .map(|d| Duration::new(u64::try_from(d.seconds).unwrap_or(0), u32::try_from(d.nanos).unwrap_or(0))),
    });
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::HeaderValue as PbHeader;
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{DescriptorStatus, RateLimit};
    use envoy_types::pb::google::protobuf::Duration as PbDuration;

    fn answer(overall: Code, remaining: u32, headers: &[(&str, &str)]) -> RateLimitResponse {
        RateLimitResponse {
            overall_code: overall as i32,
            statuses: vec![
                DescriptorStatus::default(),
                DescriptorStatus {
                    code: overall as i32,
                    current_limit: Some(RateLimit {
                        name: "per-user".into(),
                        requests_per_unit: 5,
                        unit: Unit::Minute as i32,
                    }),
                    limit_remaining: remaining,
                    duration_until_reset: Some(PbDuration { seconds: 11, nanos: 5 }),
                    ..DescriptorStatus::default()
                },
            ],
            response_headers_to_add: headers
                .iter()
                .map(|(k, v)| PbHeader { key: k.to_string(), value: v.to_string(), ..PbHeader::default() })
                .collect(),
            ..RateLimitResponse::default()
        }
    }

    #[test]
    fn an_answer_reads_like_a_reply_on_the_judged_descriptor() {
        let headers = [("ratelimit-policy", r#""per-user";q=8;w=96"#), ("ratelimit", r#""per-user";r=0;t=12"#)];
        let r = to_reply(&answer(Code::OverLimit, 0, &[headers[0], headers[1], ("retry-after", "12")]), 1, 2);
        assert!(r.denied() && !r.allowed());
        assert_eq!((r.remaining, r.reset, r.retry_after), (Some(0), Some(12), Some(12)));
        assert_eq!(r.policy.as_ref().map(|p| p.quota), Some(8));
        assert_eq!(r.ratelimit.as_ref().map(|p| p.remaining), Some(0));
        let g = r.grpc.expect("gRPC detail");
        assert_eq!((g.statuses, g.code), (2, Some(Code::OverLimit as i32)));
        let limit = g.limit.expect("current_limit");
        assert_eq!((limit.name.as_str(), limit.requests_per_unit, limit.unit_secs), ("per-user", 5, Some(60)));
        assert_eq!(limit.refill_per_sec(), Some(5.0 / 60.0));
        assert_eq!(g.until_reset, Some(Duration::new(11, 5)));
    }

    #[test]
    fn an_unknown_code_is_neither_allowed_nor_refused_and_bad_headers_read_as_absent() {
        let r = to_reply(&answer(Code::Unknown, 3, &[("bad header", "x"), ("retry-after", "\u{7f}")]), 1, 2);
        assert!(!r.allowed() && !r.denied());
        assert_eq!(r.retry_after, None);
        assert_eq!(GrpcStatus::code_name(Code::Unknown as i32), "UNKNOWN");
        assert_eq!(GrpcStatus::code_name(99), "UNKNOWN");
        // A judged index past the statuses: nothing to read, nothing panics.
        let r = to_reply(&answer(Code::Ok, 3, &[]), 5, 6);
        assert_eq!((r.remaining, r.grpc.and_then(|g| g.limit)), (None, None));
    }

    #[test]
    fn units_have_upstreams_lengths() {
        assert_eq!(unit_secs(Unit::Week as i32), Some(604_800));
        assert_eq!(unit_secs(Unit::Month as i32), Some(2_592_000));
        assert_eq!(unit_secs(Unit::Unknown as i32), None);
        assert_eq!(unit_secs(42), None);
    }
}
