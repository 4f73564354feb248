//! Every malformed request is a 4xx with a JSON `{"error", "detail"}` body, and the server keeps serving after.

mod common;

use actix_web::http::header::HeaderValue;
use actix_web::http::{Method, StatusCode};
use actix_web::test::{call_service, init_service, read_body_json, TestRequest};
use bucket_api::build_app;
use bucket_core::ManualClock;
use common::{config, state};
use serde_json::{json, Value};

/// (what is wrong, the request, expected status, expected `error` code, a fragment of `detail`)
fn bad_requests() -> Vec<(&'static str, TestRequest, u16, &'static str, String)> {
    let check = |body: Value| TestRequest::post().uri("/v1/check").set_json(body);
    let raw = |body: &'static str| {
        TestRequest::post().uri("/v1/check").insert_header(("content-type", "application/json")).set_payload(body)
    };
    let long_key = "k".repeat(256);
    vec![
        ("empty key", check(json!({"key": ""})), 400, "invalid_key", "empty".into()),
        ("256-byte key", check(json!({"key": long_key})), 400, "invalid_key", "256 bytes".into()),
        ("cost 0", check(json!({"key": "a", "cost": 0})), 400, "invalid_cost", "at least 1".into()),
        (
            "cost above capacity",
            check(json!({"key": "a", "cost": 11})),
            400,
            "invalid_cost",
            "cost 11 exceeds capacity 10: this request can never be allowed".into(),
        ),
        ("negative cost", check(json!({"key": "a", "cost": -1})), 400, "invalid_json", "-1".into()),
        ("key of the wrong type", check(json!({"key": 7})), 400, "invalid_json", "invalid type".into()),
        ("missing key", check(json!({"cost": 1})), 400, "invalid_json", "key".into()),
        ("unknown field", check(json!({"key": "a", "cots": 2})), 400, "invalid_json", "cots".into()),
        ("malformed JSON", raw("{\"key\": "), 400, "invalid_json", "JSON".into()),
        ("not JSON at all", raw("key=a"), 400, "invalid_json", "JSON".into()),
        ("unknown policy", check(json!({"key": "a", "policy": "gold"})), 400, "unknown_policy", "gold".into()),
        (
            "body over max_body_bytes",
            check(json!({"key": "x".repeat(1000)})),
            413,
            "payload_too_large",
            "512 bytes".into(),
        ),
        (
            "non-UTF-8 user header",
            TestRequest::get().uri("/").insert_header(("X-User-ID", HeaderValue::from_bytes(b"\xff\xfe").unwrap())),
            400,
            "invalid_header",
            "UTF-8".into(),
        ),
        (
            "empty user header",
            TestRequest::get().uri("/").insert_header(("X-User-ID", "")),
            400,
            "invalid_header",
            "empty".into(),
        ),
        (
            "over-long user header",
            TestRequest::get().uri("/").insert_header(("X-User-ID", "u".repeat(300))),
            400,
            "invalid_key",
            "255".into(),
        ),
        (
            "over-long key in a path",
            TestRequest::get().uri(&format!("/v1/buckets/{}", "p".repeat(256))),
            400,
            "invalid_key",
            "255".into(),
        ),
        (
            "unknown peek policy",
            TestRequest::get().uri("/v1/buckets/a?policy=gold"),
            400,
            "unknown_policy",
            "gold".into(),
        ),
        ("unknown query field", TestRequest::get().uri("/v1/buckets/a?polcy=x"), 400, "invalid_path", "polcy".into()),
        ("unknown route", TestRequest::get().uri("/v2/nothing"), 404, "not_found", "/v2/nothing".into()),
        ("wrong method", TestRequest::put().uri("/v1/check"), 405, "method_not_allowed", "POST".into()),
        (
            "wrong method on a probe",
            TestRequest::default().method(Method::DELETE).uri("/healthz"),
            405,
            "method_not_allowed",
            "GET".into(),
        ),
    ]
}

#[actix_web::test]
async fn every_bad_input_is_a_json_4xx_and_the_server_keeps_serving() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(bucket_api::Config { max_body_bytes: 512, ..config() }, &clock))).await;
    for (i, (what, req, status, code, detail)) in bad_requests().into_iter().enumerate() {
        let res = call_service(&app, req.to_request()).await;
        assert_eq!(res.status().as_u16(), status, "{what}");
        let content_type = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert_eq!(content_type, "application/json", "{what}");
        let body: Value = read_body_json(res).await;
        assert_eq!(body["error"], code, "{what}: {body}");
        let text = body["detail"].as_str().unwrap_or_default();
        assert!(text.contains(&detail), "{what}: detail {text:?} should mention {detail:?}");

        let ok = TestRequest::post().uri("/v1/check").set_json(json!({"key": format!("after-{i}")})).to_request();
        assert_eq!(call_service(&app, ok).await.status(), StatusCode::OK, "still serving after: {what}");
    }
}

#[actix_web::test]
async fn a_key_of_exactly_255_bytes_is_accepted() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(config(), &clock))).await;
    // Multi-byte characters: the limit is in bytes, as the database column counts them.
    let key = "é".repeat(127) + "k";
    assert_eq!(key.len(), 255);
    let res = call_service(&app, TestRequest::post().uri("/v1/check").set_json(json!({"key": key})).to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let too_long = "é".repeat(128);
    let res =
        call_service(&app, TestRequest::post().uri("/v1/check").set_json(json!({"key": too_long})).to_request()).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[actix_web::test]
async fn a_wrong_method_names_the_allowed_ones() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(config(), &clock))).await;
    let res = call_service(&app, TestRequest::post().uri("/v1/buckets/a").to_request()).await;
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers().get("allow").unwrap(), "GET, DELETE");
}
