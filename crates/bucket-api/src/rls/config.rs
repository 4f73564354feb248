//! `[rls]`: the gateway front (Envoy's rate limit service protocol and envoyproxy/ratelimit's limits files).

use std::path::PathBuf;

use serde::Deserialize;

/// Which limits' `RateLimit`/`RateLimit-Policy` headers a gateway is asked to add to its response
/// (`BUCKET_RLS_RESPONSE_HEADERS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseHeaders {
    /// Every limit that applied, one list member each.
    All,
    /// The limit closest to refusing (fewest tokens left): what a client most needs to pace itself.
    #[default]
    Closest,
    /// None: the gateway adds its own, or nothing.
    None,
}

impl ResponseHeaders {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseHeaders::All => "all",
            ResponseHeaders::Closest => "closest",
            ResponseHeaders::None => "none",
        }
    }
}

/// The gateway front's settings; with no `limits` file it is off and the gRPC port is not opened.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RlsConfig {
    /// envoyproxy/ratelimit-format YAML: one file or a directory of them (`BUCKET_LIMITS`); watched and reloaded.
    pub limits: Option<PathBuf>,
    /// Address of the gRPC `RateLimitService` (`BUCKET_GRPC_LISTEN`); port 0 picks a free one.
    pub grpc_listen: String,
    /// Decide and debit, count would-be refusals, but answer OK for every rule (`BUCKET_SHADOW_MODE`).
    pub shadow_mode: bool,
    /// Which limits' headers go into `response_headers_to_add` (`BUCKET_RLS_RESPONSE_HEADERS`).
    pub response_headers: ResponseHeaders,
}

impl Default for RlsConfig {
    fn default() -> Self {
        Self {
            limits: None,
            grpc_listen: "0.0.0.0:8081".into(),
            shadow_mode: false,
            response_headers: ResponseHeaders::Closest,
        }
    }
}
