//! The `{key}` of `/v1/buckets/{key}` and `/v1/policies/{key}`, decoded strictly from the raw path.
//!
//! The key is the rest of the path after the second segment, so a `/` in a key may be sent raw
//! (`/v1/buckets/tenant/alice`) or encoded (`tenant%2Falice`): both are the key `tenant/alice`, as in a JSON body.
//! Decoding is strict where actix's is lossy: a malformed `%` escape or bytes that are not UTF-8 are a 400, never
//! a U+FFFD that would fold distinct keys into one bucket.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};
use bucket_store::Key;

use crate::error::ApiError;

/// A validated bucket key taken from the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathKey(pub String);

impl PathKey {
    /// The key.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl FromRequest for PathKey {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(key_of_path(req.uri().path()).map(PathKey))
    }
}

/// The key in a raw `/v1/<collection>/<key...>` path, percent-decoded and validated.
pub fn key_of_path(path: &str) -> Result<String, ApiError> {
    let raw = path.splitn(4, '/').nth(3).unwrap_or_default();
    let key = percent_decode(raw)?;
    Key::new(&key)?;
    Ok(key)
}

fn percent_decode(raw: &str) -> Result<String, ApiError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or_else(|| {
                ApiError::InvalidPath(format!("malformed percent escape at byte {i} of the key in the path"))
            })?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::InvalidPath("the key in the path is not UTF-8 once decoded".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_decode_strictly_from_the_rest_of_the_path() {
        assert_eq!(key_of_path("/v1/buckets/alice").unwrap(), "alice");
        assert_eq!(key_of_path("/v1/buckets/tenant/alice").unwrap(), "tenant/alice");
        assert_eq!(key_of_path("/v1/buckets/tenant%2Falice").unwrap(), "tenant/alice");
        assert_eq!(key_of_path("/v1/buckets/a+b%20c").unwrap(), "a+b c");
        assert_eq!(key_of_path("/v1/buckets/%D0%BA").unwrap(), "к");
        assert!(matches!(key_of_path("/v1/buckets/a%FFb"), Err(ApiError::InvalidPath(_))));
        assert!(matches!(key_of_path("/v1/buckets/a%F"), Err(ApiError::InvalidPath(_))));
        assert!(matches!(key_of_path("/v1/buckets/a%zzb"), Err(ApiError::InvalidPath(_))));
        assert!(matches!(key_of_path("/v1/buckets/a%00b"), Err(ApiError::InvalidKey(_))));
        assert!(matches!(key_of_path("/v1/buckets/"), Err(ApiError::InvalidKey(_))));
    }
}
