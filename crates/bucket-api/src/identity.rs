//! Who is asking: the bucket key of a request, from the configured header or the peer address, and what a key
//! may look like.

use actix_web::HttpRequest;

use crate::error::ApiError;

/// Longest key in bytes: the seed schema's `user_id VARCHAR(255)`.
pub const MAX_KEY_BYTES: usize = 255;

/// Rejects keys no store can hold: empty ones and ones over [`MAX_KEY_BYTES`].
pub fn validate_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::InvalidKey("key must not be empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ApiError::InvalidKey(format!("key is {} bytes; the limit is {MAX_KEY_BYTES}", key.len())));
    }
    Ok(())
}

/// The caller's key: the value of `header` if present, else the peer's IP when `peer_fallback` is on.
///
/// The peer's port is left out because it changes with every connection. Behind a proxy every caller shares the
/// proxy's address, so such deployments should set the header (or turn the fallback off to make it mandatory).
pub fn caller_key(req: &HttpRequest, header: &str, peer_fallback: bool) -> Result<String, ApiError> {
    if let Some(value) = req.headers().get(header) {
        let key = std::str::from_utf8(value.as_bytes())
            .map_err(|_| ApiError::InvalidHeader(format!("header {header} is not valid UTF-8")))?
            .trim();
        if key.is_empty() {
            return Err(ApiError::InvalidHeader(format!("header {header} is empty")));
        }
        validate_key(key)?;
        return Ok(key.to_string());
    }
    if !peer_fallback {
        return Err(ApiError::MissingIdentity(format!("header {header} is required")));
    }
    req.peer_addr()
        .map(|addr| addr.ip().to_string())
        .ok_or_else(|| ApiError::MissingIdentity(format!("no {header} header and no peer address to fall back on")))
}
