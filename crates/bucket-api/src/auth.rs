//! The admin guard: an extractor that admits a request only with the configured bearer token.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

/// Proof that the request carried the admin token; an admin handler takes it as its first argument.
#[derive(Debug, Clone, Copy)]
pub struct AdminAuth;

impl FromRequest for AdminAuth {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authorize(req))
    }
}

fn authorize(req: &HttpRequest) -> Result<AdminAuth, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("application state is not registered".into()))?;
    let Some(expected) = state.config.admin_token.as_ref().map(ExposeSecret::expose_secret) else {
        return Err(ApiError::AdminDisabled);
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or(ApiError::Unauthorized)?;
    // Constant time over the token's bytes, so response timing does not reveal how much of a guess was right
    // (only the length can leak, as `ct_eq` answers unequal lengths at once).
    if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(AdminAuth)
    } else {
        Err(ApiError::Unauthorized)
    }
}
