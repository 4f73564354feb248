//! What operators see: `/metrics`, `/healthz`, `/readyz`, Swagger UI and the served OpenAPI document.

mod common;

use actix_web::http::StatusCode;
use actix_web::test::{call_service, init_service, read_body, read_body_json, TestRequest};
use bucket_api::build_app;
use bucket_core::ManualClock;
use common::{config, metric, state};
use serde_json::{json, Value};

#[actix_web::test]
async fn metrics_count_what_was_sent_under_route_patterns() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(config(), &clock))).await;
    for _ in 0..12 {
        call_service(&app, TestRequest::get().uri("/").insert_header(("X-User-ID", "mia")).to_request()).await;
    }
    let check = TestRequest::post().uri("/v1/check").set_json(json!({"key": "max", "cost": 4}));
    call_service(&app, check.to_request()).await;
    call_service(&app, TestRequest::get().uri("/v1/buckets/secret-user-42").to_request()).await;
    call_service(&app, TestRequest::get().uri("/no/such/route").to_request()).await;
    call_service(&app, TestRequest::post().uri("/v1/check").set_json(json!({"key": ""})).to_request()).await;

    let res = call_service(&app, TestRequest::get().uri("/metrics").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("content-type").unwrap().to_str().unwrap().starts_with("text/plain"));
    let text = String::from_utf8(read_body(res).await.to_vec()).unwrap();

    let allowed = [("outcome", "allowed"), ("source", "memory")];
    assert_eq!(metric(&text, "bucket_decisions_total", &allowed), Some(11.0));
    assert_eq!(metric(&text, "bucket_decisions_total", &[("outcome", "denied"), ("source", "memory")]), Some(2.0));
    assert_eq!(metric(&text, "bucket_tokens_consumed_total", &[]), Some(14.0), "10 of cost 1, one of cost 4");
    assert_eq!(metric(&text, "bucket_requests_denied_total", &[]), Some(2.0));
    assert_eq!(metric(&text, "bucket_decision_duration_seconds_count", &[("store", "memory")]), Some(13.0));
    let http = |route: &str, method: &str, status: &str| {
        metric(&text, "http_requests_total", &[("route", route), ("method", method), ("status", status)])
    };
    assert_eq!(http("/", "GET", "200"), Some(10.0));
    assert_eq!(http("/", "GET", "429"), Some(2.0));
    assert_eq!(http("/v1/check", "POST", "200"), Some(1.0));
    assert_eq!(http("/v1/check", "POST", "400"), Some(1.0));
    assert_eq!(http("/v1/buckets/{key}", "GET", "200"), Some(1.0));
    assert_eq!(http("unmatched", "GET", "404"), Some(1.0));
    assert!(!text.contains("secret-user-42") && !text.contains("/no/such/route"), "raw paths never become labels");
    assert_eq!(metric(&text, "http_request_duration_seconds_count", &[("route", "/")]), Some(12.0));
    assert_eq!(metric(&text, "bucket_write_queue_depth", &[]), Some(0.0));
    assert_eq!(metric(&text, "bucket_store_errors_total", &[("store", "memory")]), Some(0.0), "alertable from start");
    assert_eq!(metric(&text, "bucket_failure_mode_total", &[("mode", "fail_open")]), Some(0.0));
}

#[actix_web::test]
async fn health_and_readiness_report_the_store() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(config(), &clock))).await;
    let res = call_service(&app, TestRequest::get().uri("/healthz").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(read_body_json::<Value, _>(res).await, json!({"status": "ok"}));

    call_service(&app, TestRequest::get().uri("/").insert_header(("X-User-ID", "nia")).to_request()).await;
    let res = call_service(&app, TestRequest::get().uri("/readyz").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = read_body_json(res).await;
    assert_eq!(body["status"], "ready");
    assert_eq!(body["dependencies"], json!([{"name": "memory", "up": true, "detail": "1 buckets"}]));
}

#[actix_web::test]
async fn swagger_ui_is_served_from_vendored_assets_and_the_spec_lists_every_route() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(config(), &clock))).await;
    let res = call_service(&app, TestRequest::get().uri("/swagger-ui/").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("content-type").unwrap().to_str().unwrap().starts_with("text/html"));
    let html = String::from_utf8(read_body(res).await.to_vec()).unwrap();
    assert!(html.contains("swagger-ui"), "{html}");

    let init = call_service(&app, TestRequest::get().uri("/swagger-ui/swagger-initializer.js").to_request()).await;
    let js = String::from_utf8(read_body(init).await.to_vec()).unwrap();
    assert!(js.contains("/api-docs/openapi.json"), "the UI loads our spec");

    let redirect = call_service(&app, TestRequest::get().uri("/swagger-ui").to_request()).await;
    assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(redirect.headers().get("location").unwrap(), "/swagger-ui/");

    let spec: Value =
        read_body_json(call_service(&app, TestRequest::get().uri("/api-docs/openapi.json").to_request()).await).await;
    let operations = [
        ("/", "get"),
        ("/v1/check", "post"),
        ("/v1/buckets/{key}", "get"),
        ("/v1/buckets/{key}", "delete"),
        ("/v1/policies/{key}", "get"),
        ("/v1/policies/{key}", "put"),
        ("/v1/policies/{key}", "delete"),
        ("/metrics", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ];
    for (path, method) in operations {
        assert!(spec["paths"][path][method].is_object(), "{method} {path} missing from the spec");
    }
    assert_eq!(spec["paths"]["/v1/policies/{key}"]["put"]["security"], json!([{"bearer": []}]));
    assert_eq!(spec["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let denied_headers = &spec["components"]["responses"]["Denied"]["headers"];
    for name in [
        "Retry-After",
        "RateLimit",
        "RateLimit-Policy",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "X-Data-Source",
    ] {
        assert!(denied_headers[name].is_object(), "429 response documents {name}");
    }
}
