//! The two routes: `POST /check_and_report`, answered as limitador-server answers it (200 with a JSON `null`, 429
//! when a limit is reached, 500 when the storage fails), and `GET /status`, its health check and the HTTP floor.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::{web, HttpResponse, HttpResponseBuilder};
use limitador::limit::{Context, Namespace};
use limitador::{AsyncRateLimiter, CheckResult, RateLimiter};
use serde::Deserialize;

/// The library offers a blocking limiter (in-memory counters) and an async one (Redis); the server holds either.
pub enum Limiter {
    /// In-memory counters, checked inline on the worker thread.
    Blocking(RateLimiter),
    /// Counters in Redis, checked with awaited round trips.
    Async(AsyncRateLimiter),
}

/// The body limitador-server's HTTP API takes for `/check_and_report`.
#[derive(Deserialize)]
pub struct CheckAndReport {
    namespace: String,
    values: HashMap<String, String>,
    delta: u64,
    /// `"DraftVersion03"` asks for `X-RateLimit-*` headers; absent (the default) means none.
    #[serde(default)]
    response_headers: Option<String>,
}

/// The JSON body of every answer: limitador-server answers `null` whether it allows or refuses.
const NULL_BODY: &str = "null";

/// `GET /status`: the process answers; the floor beside which `/check_and_report` is measured.
pub async fn status() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(NULL_BODY)
}

/// `POST /check_and_report`: counts `delta` hits against every limit of the namespace that applies, unless one of
/// them would go over, in which case nothing is counted and the answer is 429.
pub async fn check_and_report(limiter: web::Data<Arc<Limiter>>, body: web::Json<CheckAndReport>) -> HttpResponse {
    let CheckAndReport { namespace, values, delta, response_headers } = body.into_inner();
    let namespace = Namespace::from(namespace);
    // limitador-server binds the request's values as the first entry of the CEL list `descriptors`.
    let mut ctx = Context::default();
    ctx.list_binding("descriptors".to_string(), vec![values]);
    let result = match limiter.get_ref().as_ref() {
        Limiter::Blocking(limiter) => limiter.check_rate_limited_and_update(&namespace, &ctx, delta),
        Limiter::Async(limiter) => limiter.check_rate_limited_and_update(&namespace, &ctx, delta).await,
    };
    match result {
        Ok(mut result) => {
            let mut response = if result.limited { HttpResponse::TooManyRequests() } else { HttpResponse::Ok() };
            if response_headers.as_deref() == Some("DraftVersion03") {
                add_draft03_headers(&mut response, &mut result);
            }
            response.content_type("application/json").body(NULL_BODY)
        }
        Err(error) => {
            // Every failure is logged, so a run can show it had none (limitador_compare.sh counts these lines).
            eprintln!("limitador-bench-server: check_and_report failed: {error}");
            HttpResponse::InternalServerError().content_type("application/json").body(NULL_BODY)
        }
    }
}

/// Copies the library's `X-RateLimit-Limit/Remaining/Reset` headers (the most restrictive counter) onto the answer.
fn add_draft03_headers(response: &mut HttpResponseBuilder, result: &mut CheckResult) {
    for (name, value) in result.response_header() {
        response.insert_header((name, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::StatusCode;
    use actix_web::{test, App};
    use limitador::limit::{Expression, Limit};

    fn app_data(max: u64) -> web::Data<Arc<Limiter>> {
        let limiter = RateLimiter::new(1000);
        let variable = Expression::try_from("descriptors[0].user").expect("variable parses");
        limiter.add_limit(Limit::new("ns", max, 60, Vec::new(), vec![variable]));
        web::Data::new(Arc::new(Limiter::Blocking(limiter)))
    }

    /// Posts one body to `/check_and_report` on a test service.
    macro_rules! post {
        ($app:expr, $body:expr) => {
            test::call_service(
                &$app,
                test::TestRequest::post()
                    .uri("/check_and_report")
                    .insert_header(("Content-Type", "application/json"))
                    .set_payload($body)
                    .to_request(),
            )
            .await
        };
    }

    #[actix_web::test]
    async fn refuses_with_429_after_max_hits_per_user() {
        let app = test::init_service(
            App::new().app_data(app_data(2)).route("/check_and_report", web::post().to(check_and_report)),
        )
        .await;
        let alice = r#"{"namespace":"ns","values":{"user":"alice"},"delta":1}"#;
        assert_eq!(post!(app, alice).status(), StatusCode::OK);
        assert_eq!(post!(app, alice).status(), StatusCode::OK);
        assert_eq!(post!(app, alice).status(), StatusCode::TOO_MANY_REQUESTS);
        let bob = r#"{"namespace":"ns","values":{"user":"bob"},"delta":1}"#;
        assert_eq!(post!(app, bob).status(), StatusCode::OK);
    }

    #[actix_web::test]
    async fn sends_draft03_headers_only_when_asked() {
        let app = test::init_service(
            App::new().app_data(app_data(5)).route("/check_and_report", web::post().to(check_and_report)),
        )
        .await;
        let plain = post!(app, r#"{"namespace":"ns","values":{"user":"u"},"delta":1}"#);
        assert!(plain.headers().get("X-RateLimit-Remaining").is_none());
        let asked =
            post!(app, r#"{"namespace":"ns","values":{"user":"u"},"delta":1,"response_headers":"DraftVersion03"}"#);
        assert_eq!(asked.headers().get("X-RateLimit-Remaining").map(|v| v.as_bytes()), Some(&b"3"[..]));
    }
}
