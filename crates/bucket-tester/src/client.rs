//! One request to a bucket server over HTTP, turned into the fields the scenarios judge (`grpc.rs` turns a gRPC
//! answer into the same fields).
//!
//! Every header is parsed into an `Option`: missing and malformed look the same to the scenarios, which report
//! them instead of failing to parse. Nothing here panics on what a server sends.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName};

use crate::grpc::GrpcStatus;

/// A reusable HTTP client that names the caller in the configured user header.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    user_header: HeaderName,
}

/// What one decision response said, as far as it could be read.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status: 200 allowed, 429 refused, anything else is a server problem.
    pub status: u16,
    /// `X-Data-Source`: which store decided.
    pub source: Option<String>,
    /// `X-RateLimit-Limit`.
    pub limit: Option<u64>,
    /// `X-RateLimit-Remaining`.
    pub remaining: Option<u64>,
    /// `X-RateLimit-Reset`, in seconds.
    pub reset: Option<u64>,
    /// `Retry-After` in whole seconds (an HTTP-date or a fraction reads as absent).
    pub retry_after: Option<u64>,
    /// The `RateLimit` header's first member (`r`, `t`).
    pub ratelimit: Option<RateLimitField>,
    /// The `RateLimit-Policy` header's first member (`q`, `w`).
    pub policy: Option<PolicyField>,
    /// The JSON body, when it was JSON.
    pub body: Option<serde_json::Value>,
    /// What a gRPC answer said beyond the shared fields; `None` over HTTP.
    pub grpc: Option<GrpcStatus>,
}

impl Reply {
    /// Whether the server let the request through.
    pub fn allowed(&self) -> bool {
        self.status == 200
    }

    /// Whether the server refused it for rate-limiting (as opposed to failing).
    pub fn denied(&self) -> bool {
        self.status == 429
    }

    /// The answer's code as a request line shows it: `200`, `429`… over HTTP, `OK`, `OVER_LIMIT`… over gRPC.
    pub fn code(&self) -> String {
        match &self.grpc {
            Some(g) => GrpcStatus::code_name(g.overall_code).to_string(),
            None => self.status.to_string(),
        }
    }

    /// What an answer that is neither allowed nor refused was: `HTTP 503`, or `overall_code UNKNOWN`.
    pub fn unexpected(&self) -> String {
        match &self.grpc {
            Some(g) => format!("overall_code {}", GrpcStatus::code_name(g.overall_code)),
            None => format!("HTTP {}", self.status),
        }
    }

    /// The body's `policy.refill_per_sec`, the exact rate, which the whole-second headers can only approximate.
    pub fn body_refill_per_sec(&self) -> Option<f64> {
        self.body.as_ref()?.get("policy")?.get("refill_per_sec")?.as_f64().filter(|r| r.is_finite() && *r > 0.0)
    }

    /// The body's `error` and `detail`, for explaining an unexpected status.
    pub fn body_error(&self) -> Option<String> {
        let body = self.body.as_ref()?;
        let error = body.get("error")?.as_str()?;
        Some(match body.get("detail").and_then(|d| d.as_str()) {
            Some(detail) => format!("{error}: {detail}"),
            None => error.to_string(),
        })
    }
}

/// One policy from `RateLimit-Policy`: the quota a bucket holds and the seconds it takes to refill from empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyField {
    /// The policy's name (the item), e.g. `default`.
    pub name: String,
    /// `q`: the quota, which is the bucket's capacity.
    pub quota: u64,
    /// `w`: seconds to refill from empty, rounded up; optional in the draft.
    pub window: Option<u64>,
}

/// One member of `RateLimit`: what is left of a policy's quota and when more arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitField {
    /// The policy's name (the item), e.g. `default`.
    pub name: String,
    /// `r`: whole tokens remaining.
    pub remaining: u64,
    /// `t`: seconds until the next token (or until `cost` tokens after a refusal), rounded up.
    pub reset: Option<u64>,
}

/// The first member of a structured-field list (RFC 9651) such as `"default";q=10;w=10`: its name (a string or a
/// token) and a lookup of its parameters as non-negative integers. `None` when the value is not a valid list.
fn first_member(value: &str) -> Option<(String, impl Fn(&str) -> Option<u64>)> {
    let list: sfv::List = sfv::Parser::new(value).parse().ok()?;
    let sfv::ListEntry::Item(item) = list.into_iter().next()? else { return None };
    let name = match &item.bare_item {
        sfv::BareItem::String(name) => name.as_str().to_string(),
        sfv::BareItem::Token(name) => name.as_str().to_string(),
        _ => return None,
    };
    let uint = move |key: &str| {
        let (_, value) = item.params.iter().find(|(k, _)| k.as_str() == key)?;
        u64::try_from(i64::from(value.as_integer()?)).ok()
    };
    Some((name, uint))
}

/// Reads the first policy of a `RateLimit-Policy` value; `None` when it is malformed or has no `q`.
fn parse_policy(value: &str) -> Option<PolicyField> {
    let (name, uint) = first_member(value)?;
    Some(PolicyField { quota: uint("q")?, window: uint("w"), name })
}

/// Reads the first member of a `RateLimit` value; `None` when it is malformed or has no `r`.
fn parse_ratelimit(value: &str) -> Option<RateLimitField> {
    let (name, uint) = first_member(value)?;
    Some(RateLimitField { remaining: uint("r")?, reset: uint("t"), name })
}

/// Why a request got no reply at all.
#[derive(Debug, Clone)]
pub struct RequestError {
    /// True when no connection could be made or it timed out: the server is down, not misbehaving.
    pub unreachable: bool,
    /// The cause, with reqwest's error chain spelled out (its top-level message alone says little).
    pub message: String,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// An error with its causes spelled out (reqwest's and tonic's top-level messages hide the reason).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    message
}

impl From<reqwest::Error> for RequestError {
    fn from(e: reqwest::Error) -> Self {
        RequestError { unreachable: e.is_connect() || e.is_timeout(), message: error_chain(&e) }
    }
}

impl Client {
    /// Builds a client; `timeout` bounds each request so a hung server is a FAIL, not a hung tester.
    pub fn new(user_header: &str, timeout: Duration) -> anyhow::Result<Self> {
        let user_header = HeaderName::from_bytes(user_header.as_bytes())
            .map_err(|_| anyhow::anyhow!("{user_header:?} is not a valid header name"))?;
        let http = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).build()?;
        Ok(Client { http, user_header })
    }

    /// `GET url` as `user`: the seed-compatible route that spends one token.
    pub async fn hit(&self, url: &str, user: &str) -> Result<Reply, RequestError> {
        let response = self.http.get(url).header(self.user_header.clone(), user).send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
        Ok(parse_reply(status, &headers, &bytes))
    }

    /// The dependency names `GET /readyz` lists under the base `url` (`memory`; `redis`; `postgres`; `redis` and
    /// `postgres` for tiered): how the server says which store it runs. `None` when it has no such route or the
    /// body is not the documented shape.
    pub async fn dependencies(&self, url: &str) -> Option<Vec<String>> {
        let readyz = reqwest::Url::parse(url).ok()?.join("/readyz").ok()?;
        let body: serde_json::Value = self.http.get(readyz).send().await.ok()?.json().await.ok()?;
        body.get("dependencies")?
            .as_array()?
            .iter()
            .map(|dependency| Some(dependency.get("name")?.as_str()?.to_string()))
            .collect()
    }
}

/// The fields of a reply from its status, headers and body (also used for a gRPC answer's headers).
pub(crate) fn parse_reply(status: u16, headers: &HeaderMap, body: &[u8]) -> Reply {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let number = |name: &str| text(name).and_then(|v| v.parse::<u64>().ok());
    Reply {
        status,
        source: text("x-data-source").map(str::to_string),
        limit: number("x-ratelimit-limit"),
        remaining: number("x-ratelimit-remaining"),
        reset: number("x-ratelimit-reset"),
        retry_after: number("retry-after"),
        ratelimit: text("ratelimit").and_then(parse_ratelimit),
        policy: text("ratelimit-policy").and_then(parse_policy),
        body: serde_json::from_slice(body).ok(),
        grpc: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn reads_every_documented_header_and_the_body_rate() {
        let h = headers(&[
            ("x-data-source", "memory"),
            ("ratelimit-policy", r#""default";q=10;w=10"#),
            ("ratelimit", r#""default";r=0;t=2"#),
            ("x-ratelimit-limit", "10"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "10"),
            ("retry-after", " 2 "),
        ]);
        let body = br#"{"allowed":false,"policy":{"name":"default","capacity":10,"refill_per_sec":0.5}}"#;
        let r = parse_reply(429, &h, body);
        assert!(r.denied() && !r.allowed());
        assert_eq!(r.source.as_deref(), Some("memory"));
        assert_eq!((r.limit, r.remaining, r.reset, r.retry_after), (Some(10), Some(0), Some(10), Some(2)));
        assert_eq!(r.policy.as_ref().map(|p| (p.quota, p.window)), Some((10, Some(10))));
        assert_eq!(r.ratelimit.as_ref().map(|p| (p.remaining, p.reset)), Some((0, Some(2))));
        assert_eq!(r.body_refill_per_sec(), Some(0.5));
    }

    #[test]
    fn odd_values_read_as_absent_instead_of_failing() {
        let h = headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"), ("x-ratelimit-limit", "-3")]);
        let r = parse_reply(200, &h, b"not json");
        assert_eq!((r.retry_after, r.limit, r.source.as_deref()), (None, None, None));
        assert!(r.body.is_none() && r.body_refill_per_sec().is_none());
    }

    #[test]
    fn rate_limit_fields_read_names_parameters_and_several_members() {
        let p = parse_policy(r#"burst;q=100;w=60 ,  "daily";q=1000;w=86400"#).unwrap();
        assert_eq!(p, PolicyField { name: "burst".into(), quota: 100, window: Some(60) });
        let p = parse_policy(r#""a \"q\" b";pk=:abc:;qu="x";flag;q=5"#).unwrap();
        assert_eq!((p.name.as_str(), p.quota, p.window), (r#"a "q" b"#, 5, None));
        let r = parse_ratelimit(r#""default";r=3;t=1"#).unwrap();
        assert_eq!(r, RateLimitField { name: "default".into(), remaining: 3, reset: Some(1) });
    }

    #[test]
    fn malformed_rate_limit_fields_read_as_absent() {
        for bad in ["", "10", r#""default;q=10"#, r#""default";q=10,"#, r#""default";Q=10"#, "default;q=1 0"] {
            assert_eq!(parse_policy(bad), None, "{bad:?} should not parse");
        }
        for bad in [r#""default";w=10"#, r#""default";q=-1"#, r#""default";q=1.5"#, r#"("default");q=1"#] {
            assert_eq!(parse_policy(bad), None, "{bad:?} has no whole quota");
        }
    }

    #[test]
    fn an_error_body_explains_itself() {
        let r = parse_reply(503, &HeaderMap::new(), br#"{"error":"unavailable","detail":"redis down"}"#);
        assert_eq!(r.body_error().as_deref(), Some("unavailable: redis down"));
    }
}
