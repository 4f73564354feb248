//! Admin routes (`DELETE /v1/buckets/{key}`, `/v1/policies/{key}`): off without a token, bearer token otherwise.

mod common;

use actix_web::http::StatusCode;
use actix_web::test::{call_service, init_service, read_body_json, TestRequest};
use bucket_api::build_app;
use bucket_api::headers::DecisionBody;
use bucket_api::routes::policies::PolicyResponse;
use bucket_core::ManualClock;
use common::{config, header, state};
use serde_json::{json, Value};

const TOKEN: &str = "s3cret-token";

fn admin_config() -> bucket_api::Config {
    bucket_api::Config { admin_token: Some(TOKEN.into()), ..config() }
}

fn admin_requests() -> Vec<TestRequest> {
    vec![
        TestRequest::delete().uri("/v1/buckets/alice"),
        TestRequest::get().uri("/v1/policies/alice"),
        TestRequest::put().uri("/v1/policies/alice").set_json(json!({"capacity": 5, "refill_per_sec": 1.0})),
        TestRequest::delete().uri("/v1/policies/alice"),
    ]
}

fn check(key: &str) -> actix_web::test::TestRequest {
    TestRequest::post().uri("/v1/check").set_json(json!({"key": key}))
}

#[actix_web::test]
async fn without_a_configured_token_admin_routes_are_off() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(config(), &clock))).await;
    for req in admin_requests() {
        let req = req.insert_header(("Authorization", "Bearer anything")).to_request();
        let path = req.path().to_string();
        let res = call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path}");
        let body: Value = read_body_json(res).await;
        assert_eq!(body["error"], "admin_disabled");
        assert_eq!(body["detail"], "admin routes are disabled: set BUCKET_ADMIN_TOKEN");
    }
}

#[actix_web::test]
async fn a_missing_or_wrong_token_is_a_401() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(admin_config(), &clock))).await;
    let wrong = [None, Some("Bearer nope"), Some("Bearer s3cret-toke"), Some("Basic czNjcmV0LXRva2Vu"), Some(TOKEN)];
    for authorization in wrong {
        for req in admin_requests() {
            let req = match authorization {
                Some(value) => req.insert_header(("Authorization", value)),
                None => req,
            };
            let res = call_service(&app, req.to_request()).await;
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{authorization:?}");
            assert_eq!(header(&res, "WWW-Authenticate"), "Bearer");
            let body: Value = read_body_json(res).await;
            assert_eq!(body["error"], "unauthorized");
        }
    }
}

#[actix_web::test]
async fn reset_with_the_token_refills_the_bucket() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(admin_config(), &clock))).await;
    for _ in 0..10 {
        call_service(&app, check("alice").to_request()).await;
    }
    assert_eq!(call_service(&app, check("alice").to_request()).await.status(), StatusCode::TOO_MANY_REQUESTS);
    let reset =
        TestRequest::delete().uri("/v1/buckets/alice").insert_header(("Authorization", format!("Bearer {TOKEN}")));
    assert_eq!(call_service(&app, reset.to_request()).await.status(), StatusCode::NO_CONTENT);
    let body: DecisionBody = read_body_json(call_service(&app, check("alice").to_request()).await).await;
    assert_eq!((body.allowed, body.remaining), (true, 9));
}

#[actix_web::test]
async fn a_per_key_policy_applies_at_once_keeps_the_spent_tokens_and_beats_named_policies() {
    let clock = ManualClock::new(1);
    let mut cfg = admin_config();
    cfg.policies.insert("premium".into(), bucket_api::config::PolicyConfig { capacity: 50, refill_per_sec: 5.0 });
    let app = init_service(build_app(state(cfg, &clock))).await;
    let auth = ("Authorization", format!("Bearer {TOKEN}"));
    for _ in 0..3 {
        call_service(&app, check("alice").to_request()).await;
    }

    let none = TestRequest::get().uri("/v1/policies/alice").insert_header(auth.clone());
    assert_eq!(call_service(&app, none.to_request()).await.status(), StatusCode::NOT_FOUND);

    // Same rate, larger burst: the three spent tokens stay spent, so 97 are left, not a fresh 100.
    let put = TestRequest::put()
        .uri("/v1/policies/alice")
        .insert_header(auth.clone())
        .set_json(json!({"capacity": 100, "refill_per_sec": 1.0}));
    let res = call_service(&app, put.to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let stored: PolicyResponse = read_body_json(res).await;
    assert_eq!((stored.capacity, stored.interval_us), (100, 1_000_000));

    let res = call_service(&app, check("alice").to_request()).await;
    assert_eq!(header(&res, "RateLimit-Policy"), "\"user\";q=100;w=100");
    let body: DecisionBody = read_body_json(res).await;
    assert_eq!((&*body.policy.name, body.limit, body.remaining), ("user", 100, 96));

    let named = TestRequest::post().uri("/v1/check").set_json(json!({"key": "alice", "policy": "premium"}));
    let body: DecisionBody = read_body_json(call_service(&app, named.to_request()).await).await;
    assert_eq!(body.policy.name, "user", "an operator's per-key policy wins over the request's");

    let get = TestRequest::get().uri("/v1/policies/alice").insert_header(auth.clone());
    let got: PolicyResponse = read_body_json(call_service(&app, get.to_request()).await).await;
    assert_eq!(got, stored);

    let delete = || TestRequest::delete().uri("/v1/policies/alice").insert_header(auth.clone()).to_request();
    assert_eq!(call_service(&app, delete()).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(call_service(&app, delete()).await.status(), StatusCode::NOT_FOUND);
    let body: DecisionBody = read_body_json(call_service(&app, check("alice").to_request()).await).await;
    assert_eq!(body.policy.name, "default");
}

#[actix_web::test]
async fn an_invalid_policy_is_a_400_naming_the_problem() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(admin_config(), &clock))).await;
    let put = |body: Value| {
        TestRequest::put()
            .uri("/v1/policies/alice")
            .insert_header(("Authorization", format!("Bearer {TOKEN}")))
            .set_json(body)
            .to_request()
    };
    let cases = [
        (json!({"capacity": 0, "refill_per_sec": 1.0}), "invalid_policy", "capacity must be at least 1"),
        (json!({"capacity": 5, "refill_per_sec": 0}), "invalid_policy", "refill rate must be above zero"),
        (json!({"capacity": 5, "refill_per_sec": 1e9}), "invalid_policy", "at most 1000000"),
        (json!({"capacity": 5}), "invalid_json", "refill_per_sec"),
        (json!({"capacity": 5, "refill_per_sec": 1, "burst": 2}), "invalid_json", "burst"),
    ];
    for (body, code, detail) in cases {
        let res = call_service(&app, put(body.clone())).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
        let err: Value = read_body_json(res).await;
        assert_eq!(err["error"], code, "{body}");
        assert!(err["detail"].as_str().unwrap().contains(detail), "{body}: {err}");
    }
}
