//! The routing table: every route, the JSON error handlers for extractors, and the HTTP metrics middleware.

pub mod auth;
pub mod buckets;
pub mod check;
pub mod fields;
pub mod health;
pub mod json_body;
pub mod metrics;
pub mod path_key;
pub mod policies;
pub mod ratelimit;

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, Resource};
use utoipa_swagger_ui::SwaggerUi;

use crate::error::ApiError;
use crate::metrics::UNMATCHED_ROUTE;
use crate::openapi;
use crate::state::AppState;

/// The application with production routing and middleware; `main` serves it and tests drive it through
/// `actix_web::test::init_service`.
pub fn build_app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    // One shared handle: the middleware runs on every request, so it bumps one reference count instead of cloning
    // every metric family.
    let metrics = std::sync::Arc::new(state.metrics.clone());
    let limit = state.config.max_body_bytes;
    App::new()
        .app_data(state)
        .app_data(json_config(limit))
        .app_data(
            web::PathConfig::default().error_handler(|e: PathError, _| ApiError::InvalidPath(e.to_string()).into()),
        )
        .app_data(
            web::QueryConfig::default()
                .error_handler(|e: QueryPayloadError, _| ApiError::InvalidPath(e.to_string()).into()),
        )
        .wrap_fn(move |req, srv| {
            let metrics = std::sync::Arc::clone(&metrics);
            let method = req.method().clone();
            let started = Instant::now();
            let response = srv.call(req);
            async move {
                let response = response.await?;
                // The matched pattern, never the raw path: keys in paths would give every caller its own series.
                // Every resource of ours is named by its label (no allocation per request); only services that
                // are not (Swagger UI) derive it from the pattern.
                let request = response.request();
                let status = response.status();
                match request.match_name() {
                    Some(route) => metrics.record_http(route, method.as_str(), status, started.elapsed()),
                    None => {
                        let route = request.match_pattern().map(|pattern| route_label(&pattern));
                        let route = route.as_deref().unwrap_or(UNMATCHED_ROUTE);
                        metrics.record_http(route, method.as_str(), status, started.elapsed());
                    }
                }
                Ok(response)
            }
        })
        .service(resource("/", "GET").route(web::get().to(check::index)))
        .service(resource("/v1/check", "POST").route(web::post().to(check::check)))
        .service(resource("/v1/ratelimit", "POST").route(web::post().to(ratelimit::ratelimit)))
        // Any method: nginx's auth_request keeps the client's method, Caddy and Traefik send GET.
        .service(named("/v1/auth").route(web::route().to(auth::forward_auth)))
        .service(
            resource("/v1/buckets/{key:.+}", "GET, DELETE")
                .route(web::get().to(buckets::peek))
                .route(web::delete().to(buckets::reset)),
        )
        .service(
            resource("/v1/policies/{key:.+}", "GET, PUT, DELETE")
                .route(web::get().to(policies::get))
                .route(web::put().to(policies::put))
                .route(web::delete().to(policies::delete)),
        )
        .service(resource("/metrics", "GET").route(web::get().to(metrics::metrics)))
        .service(resource("/healthz", "GET").route(web::get().to(health::healthz)))
        .service(resource("/readyz", "GET").route(web::get().to(health::readyz)))
        .service(SwaggerUi::new("/swagger-ui/{_:.*}").url("/api-docs/openapi.json", openapi::spec()))
        .service(web::resource("/swagger-ui").route(web::get().to(swagger_redirect)))
        .default_service(web::to(not_found))
}

/// A route pattern as the OpenAPI document spells it, so metric labels match the spec: `/v1/buckets/{key:.+}` is
/// `/v1/buckets/{key}` (the patterns' regexes contain no `}`).
fn route_label(pattern: &str) -> String {
    let mut label = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        label.push_str(&rest[..open]);
        let variable = &rest[open..];
        let close = variable.find('}').map_or(variable.len(), |i| i + 1);
        match variable[..close].split_once(':') {
            Some((name, _)) => {
                label.push_str(name);
                label.push('}');
            }
            None => label.push_str(&variable[..close]),
        }
        rest = &variable[close..];
    }
    label.push_str(rest);
    label
}

/// A resource named by its metric label, which the metrics middleware reads without building it per request.
fn named(path: &str) -> Resource {
    web::resource(path).name(&route_label(path))
}

/// A resource whose wrong-method answer is a JSON 405 naming the `allowed` methods, like every other error.
fn resource(path: &str, allowed: &'static str) -> Resource {
    named(path).default_service(web::to(move |req: HttpRequest| async move {
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed { method: req.method().to_string(), allowed })
    }))
}

/// Body errors as JSON: 413 over the limit, 415 for a refused content type, 400 for anything unparsable (serde's
/// message names the unknown or mistyped field). `POST /v1/check` reads its body without the extractor
/// (`json_body`), with the same answers.
fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        // Gateways and scripts often omit or mislabel the content type; the body is parsed as JSON regardless.
        .content_type_required(false)
        .content_type(|_| true)
        .error_handler(move |e, _| {
            let error = match e {
                JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
                    ApiError::PayloadTooLarge { limit }
                }
                JsonPayloadError::ContentType => ApiError::UnsupportedMediaType(e.to_string()),
                JsonPayloadError::Deserialize(inner) => ApiError::InvalidJson(format!("invalid JSON body: {inner}")),
                other => ApiError::InvalidJson(format!("cannot read the body: {other}")),
            };
            error.into()
        })
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!("no route for {} {}", req.method(), req.path())))
}

async fn swagger_redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect().insert_header((header::LOCATION, "/swagger-ui/")).finish()
}
