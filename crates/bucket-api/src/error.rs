//! Every way a request can fail, and the one JSON shape (`{"error", "detail"}`) each becomes.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use bucket_store::StoreError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every 4xx and 5xx: a stable machine code and a sentence for the human reading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable code to branch on, e.g. `invalid_cost`, `store_unavailable`.
    #[schema(example = "invalid_cost")]
    pub error: String,
    /// What went wrong and how to fix it.
    #[schema(example = "cost 11 exceeds capacity 10: this request can never be allowed")]
    pub detail: String,
}

/// A failed request; the variant fixes the status and the code, the message is the `detail`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The bucket key is empty or longer than 255 bytes.
    #[error("{0}")]
    InvalidKey(String),
    /// The cost is 0 or above the capacity.
    #[error("{0}")]
    InvalidCost(String),
    /// The request names a policy the configuration does not define.
    #[error("unknown policy `{0}`: define it under [policies.{0}] in the config file")]
    UnknownPolicy(String),
    /// The body is not JSON of the expected shape.
    #[error("{0}")]
    InvalidJson(String),
    /// The body's content type is not accepted.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body exceeds `max_body_bytes`.
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The caller header is empty or not UTF-8.
    #[error("{0}")]
    InvalidHeader(String),
    /// No caller header and peer fallback is off (or there is no peer address).
    #[error("{0}")]
    MissingIdentity(String),
    /// A path segment could not be decoded.
    #[error("{0}")]
    InvalidPath(String),
    /// A rate-limit request (`POST /v1/ratelimit`) that cannot be decided: empty domain, a descriptor without
    /// entries, an over-long value.
    #[error("{0}")]
    InvalidDescriptor(String),
    /// A policy body does not make a valid policy.
    #[error("invalid policy: {0}")]
    InvalidPolicy(#[from] bucket_core::PolicyError),
    /// An admin route without the right bearer token.
    #[error("admin routes need `Authorization: Bearer <BUCKET_ADMIN_TOKEN>`")]
    Unauthorized,
    /// An admin route while no admin token is configured.
    #[error("admin routes are disabled: set BUCKET_ADMIN_TOKEN")]
    AdminDisabled,
    /// No such route, or no such thing at it.
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not with this method.
    #[error("method {method} is not allowed here; allowed: {allowed}")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The methods the route accepts.
        allowed: &'static str,
    },
    /// The store could not answer and the failure mode (or the route) does not allow guessing.
    #[error("the rate-limit store is unavailable: {0}")]
    StoreUnavailable(String),
    /// The store answered with something unusable; retrying will not help.
    #[error("the rate-limit store failed: {0}")]
    Store(String),
    /// A bug or an environment problem on our side (e.g. metrics could not be encoded).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The machine-readable `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidKey(_) => "invalid_key",
            ApiError::InvalidCost(_) => "invalid_cost",
            ApiError::UnknownPolicy(_) => "unknown_policy",
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::InvalidHeader(_) => "invalid_header",
            ApiError::MissingIdentity(_) => "missing_identity",
            ApiError::InvalidPath(_) => "invalid_path",
            ApiError::InvalidDescriptor(_) => "invalid_descriptor",
            ApiError::InvalidPolicy(_) => "invalid_policy",
            ApiError::Unauthorized => "unauthorized",
            ApiError::AdminDisabled => "admin_disabled",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::StoreUnavailable(_) => "store_unavailable",
            ApiError::Store(_) => "store_error",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The JSON body this error is sent as.
    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: self.code().into(), detail: self.to_string() }
    }
}

/// A key no store can hold is the caller's fault.
impl From<bucket_store::KeyError> for ApiError {
    fn from(e: bucket_store::KeyError) -> Self {
        ApiError::InvalidKey(e.to_string())
    }
}

/// Transient store failures are worth retrying (503); anything else is our fault (500).
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_transient() {
            ApiError::StoreUnavailable(e.to_string())
        } else {
            ApiError::Store(e.to_string())
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidKey(_)
            | ApiError::InvalidCost(_)
            | ApiError::UnknownPolicy(_)
            | ApiError::InvalidJson(_)
            | ApiError::InvalidHeader(_)
            | ApiError::MissingIdentity(_)
            | ApiError::InvalidPath(_)
            | ApiError::InvalidDescriptor(_)
            | ApiError::InvalidPolicy(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::AdminDisabled => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::MethodNotAllowed { allowed, .. } => {
                response.insert_header((header::ALLOW, *allowed));
            }
            // The limiter cannot say when the store is back; one second keeps well-behaved clients from hammering.
            ApiError::StoreUnavailable(_) => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            _ => {}
        }
        response.json(self.body())
    }
}
