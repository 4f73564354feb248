//! A JSON request body read straight from the payload, for the decision route that every gateway calls.
//!
//! actix's `Json` extractor costs a `POST /v1/check` about a tenth of its instructions (docs/perf.md §4c): it looks
//! up its configuration, parses the `Content-Type` with `mime` only to accept any (this service reads a body as JSON
//! whatever it is labelled: gateways and scripts often omit or mislabel it), allocates an 8 KiB buffer and copies
//! the body into it. Here a body that arrives in one chunk, the usual case, is decoded where it lies. The answers are
//! the extractor's as `routes::json_config` maps them: 413 when the `Content-Length` or the bytes received exceed
//! the limit, 400 `invalid_json` for a body that cannot be read or decoded, with the same detail.

use actix_web::error::{JsonPayloadError, PayloadError};
use actix_web::http::header::{ContentLength, Header};
use actix_web::web::{Bytes, BytesMut};
use actix_web::HttpRequest;
use futures::{Stream, StreamExt};
use serde::Deserialize;

use crate::error::ApiError;

/// The body of `req` (its `payload`, a `web::Payload`), refused with 413 beyond `limit` bytes before more than
/// `limit` is buffered.
pub async fn read(
    req: &HttpRequest,
    mut payload: impl Stream<Item = Result<Bytes, PayloadError>> + Unpin,
    limit: usize,
) -> Result<Bytes, ApiError> {
    if let Ok(ContentLength(length)) = ContentLength::parse(req) {
        if length > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
    }
    let mut first = Bytes::new();
    // Only a body that arrives in several chunks is copied, into this.
    let mut joined: Option<BytesMut> = None;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| unreadable(e.into()))?;
        let received = joined.as_ref().map_or(first.len(), BytesMut::len);
        if received + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        match joined.as_mut() {
            Some(joined) => joined.extend_from_slice(&chunk),
            None if first.is_empty() => first = chunk,
            None => {
                let mut buf = BytesMut::with_capacity(received + chunk.len());
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&chunk);
                joined = Some(buf);
            }
        }
    }
    Ok(joined.map_or(first, BytesMut::freeze))
}

/// `body` decoded as `T`, borrowing its strings where they need no unescaping; 400 naming serde's complaint.
pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(format!("invalid JSON body: {e}")))
}

/// A payload error, worded as the `Json` extractor's error handler words it.
fn unreadable(e: JsonPayloadError) -> ApiError {
    ApiError::InvalidJson(format!("cannot read the body: {e}"))
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    async fn read_chunks(chunks: &[&'static [u8]], length: Option<usize>, limit: usize) -> Result<Bytes, ApiError> {
        let mut req = TestRequest::post();
        if let Some(length) = length {
            req = req.insert_header(("content-length", length.to_string()));
        }
        let req = req.to_http_request();
        read(&req, futures::stream::iter(chunks.iter().map(|c| Ok(Bytes::from_static(c)))), limit).await
    }

    #[actix_web::test]
    async fn a_body_in_chunks_is_joined_in_order() {
        let body = read_chunks(&[b"", b"{\"key\"", b"", b":\"a\"", b"}"], None, 64).await.unwrap();
        assert_eq!(&body[..], b"{\"key\":\"a\"}");
        let body = read_chunks(&[b"{}"], None, 2).await.unwrap();
        assert_eq!(&body[..], b"{}");
        assert!(read_chunks(&[], None, 2).await.unwrap().is_empty());
    }

    #[actix_web::test]
    async fn a_body_over_the_limit_is_refused_by_its_length_or_its_bytes() {
        for (chunks, length) in [(&[&b"{}"[..]][..], Some(3)), (&[&b"{\""[..], &b"}"[..]][..], None)] {
            let refused = read_chunks(chunks, length, 2).await;
            assert!(matches!(refused, Err(ApiError::PayloadTooLarge { limit: 2 })), "{refused:?}");
        }
    }
}
