//! Decisions through the real routing: status, headers and body of `GET /`, `POST /v1/check` and peeks.

mod common;

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::test::{call_service, init_service, read_body_json, TestRequest};
use bucket_api::build_app;
use bucket_api::config::PolicyConfig;
use bucket_api::headers::DecisionBody;
use bucket_core::ManualClock;
use common::{config, header, header_u64, sf_param, state};
use serde_json::json;

#[actix_web::test]
async fn fifteen_instant_requests_give_ten_200_then_five_429_with_consistent_headers() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(config(), &clock))).await;
    let mut statuses = Vec::new();
    for i in 0..15u64 {
        let res =
            call_service(&app, TestRequest::get().uri("/").insert_header(("X-User-ID", "alice")).to_request()).await;
        let status = res.status();
        statuses.push(status.as_u16());

        assert_eq!(header(&res, "X-Data-Source"), "memory");
        assert_eq!(header(&res, "RateLimit-Policy"), "\"default\";q=10;w=10");
        let ratelimit = header(&res, "RateLimit");
        assert!(ratelimit.starts_with("\"default\";"), "{ratelimit}");
        let remaining = header_u64(&res, "X-RateLimit-Remaining");
        assert_eq!(sf_param(&ratelimit, "r"), remaining, "RateLimit r must equal X-RateLimit-Remaining");
        assert_eq!(header_u64(&res, "X-RateLimit-Limit"), 10);
        // One token per second, so the bucket is full again after one second per missing token.
        assert_eq!(header_u64(&res, "X-RateLimit-Reset"), 10 - remaining);
        let t = sf_param(&ratelimit, "t");

        if i < 10 {
            assert_eq!(status, StatusCode::OK, "request {i}");
            assert_eq!(remaining, 9 - i);
            assert_eq!(t, 1, "a token is missing, the next arrives in 1 s");
            assert!(res.headers().get("Retry-After").is_none(), "no Retry-After on a 200");
        } else {
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "request {i}");
            assert_eq!(remaining, 0);
            let retry_after = header_u64(&res, "Retry-After");
            assert!(retry_after >= 1, "a 429 never says Retry-After: 0");
            assert!(retry_after >= t, "Retry-After {retry_after} earlier than t {t}");
            assert_eq!(retry_after, 1);
        }
        let body: DecisionBody = read_body_json(res).await;
        assert_eq!(body.allowed, i < 10);
        assert_eq!((&*body.key, body.cost, body.limit), ("alice", 1, 10));
        assert_eq!(body.remaining, remaining);
        assert_eq!(body.reset_after_ms, remaining.abs_diff(10) * 1000);
        assert_eq!(body.retry_after_ms, if i < 10 { None } else { Some(1000) });
        assert_eq!(body.source, "memory");
        assert_eq!(body.policy.name, "default");
        assert_eq!((body.policy.capacity, body.policy.interval_us), (10, 1_000_000));
    }
    assert_eq!(statuses, [[200; 10].as_slice(), [429; 5].as_slice()].concat());
}

#[actix_web::test]
async fn the_decision_body_has_exactly_the_documented_fields() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(config(), &clock))).await;
    let req = TestRequest::post().uri("/v1/check").set_json(json!({"key": "alice"})).to_request();
    let body: serde_json::Value = read_body_json(call_service(&app, req).await).await;
    assert_eq!(
        body,
        json!({"allowed": true, "key": "alice", "cost": 1, "limit": 10, "remaining": 9, "reset_after_ms": 1000,
               "retry_after_ms": null, "source": "memory",
               "policy": {"name": "default", "capacity": 10, "refill_per_sec": 1.0, "interval_us": 1000000}})
    );
}

#[actix_web::test]
async fn waiting_exactly_the_advertised_time_is_enough_and_a_microsecond_less_is_not() {
    // 3 tokens/s is 333,333 µs per token: waits that are not whole milliseconds exercise the rounding up.
    let clock = ManualClock::new(1);
    let cfg = bucket_api::Config { capacity: 2, refill_per_sec: 3.0, ..config() };
    let app = init_service(build_app(state(cfg, &clock))).await;
    let check = || TestRequest::post().uri("/v1/check").set_json(json!({"key": "bob", "cost": 2})).to_request();

    assert_eq!(call_service(&app, check()).await.status(), StatusCode::OK);
    clock.advance_us(100_000);
    let refused = call_service(&app, check()).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header_u64(&refused, "Retry-After"), 1);
    let body: DecisionBody = read_body_json(refused).await;
    // 2 tokens take 666,666 µs, 100,000 of which have passed: 566,666 µs, rounded up to 567 ms.
    assert_eq!(body.retry_after_ms, Some(567));

    clock.advance_us(566_666 - 1);
    assert_eq!(call_service(&app, check()).await.status(), StatusCode::TOO_MANY_REQUESTS);
    clock.advance_us(1);
    let allowed = call_service(&app, check()).await;
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(header_u64(&allowed, "X-RateLimit-Remaining"), 0);
}

#[actix_web::test]
async fn a_client_that_sleeps_retry_after_seconds_is_allowed() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(config(), &clock))).await;
    let get = || TestRequest::get().uri("/").insert_header(("X-User-ID", "carol")).to_request();
    for _ in 0..10 {
        assert_eq!(call_service(&app, get()).await.status(), StatusCode::OK);
    }
    let refused = call_service(&app, get()).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    clock.advance_us(header_u64(&refused, "Retry-After") * 1_000_000);
    assert_eq!(call_service(&app, get()).await.status(), StatusCode::OK);
}

#[actix_web::test]
async fn without_the_user_header_the_peer_ip_is_the_key_whatever_the_port() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(config(), &clock))).await;
    let from =
        |port: u16| TestRequest::get().uri("/").peer_addr(format!("10.1.2.3:{port}").parse().unwrap()).to_request();
    let first: DecisionBody = read_body_json(call_service(&app, from(5000)).await).await;
    let second: DecisionBody = read_body_json(call_service(&app, from(5001)).await).await;
    assert_eq!(first.key, "10.1.2.3");
    assert_eq!((first.remaining, second.remaining), (9, 8), "both connections share the address's bucket");

    let named =
        TestRequest::get().uri("/").insert_header(("X-User-ID", "dave")).peer_addr("10.1.2.3:5002".parse().unwrap());
    let body: DecisionBody = read_body_json(call_service(&app, named.to_request()).await).await;
    assert_eq!((&*body.key, body.remaining), ("dave", 9), "the header wins over the address");
}

#[actix_web::test]
async fn with_peer_fallback_off_a_missing_header_is_a_400() {
    let clock = ManualClock::new(1);
    let cfg = bucket_api::Config { peer_fallback: false, ..config() };
    let app = init_service(build_app(state(cfg, &clock))).await;
    let req = TestRequest::get().uri("/").peer_addr("10.1.2.3:5000".parse().unwrap()).to_request();
    let res = call_service(&app, req).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = read_body_json(res).await;
    assert_eq!(body["error"], "missing_identity");
    assert!(body["detail"].as_str().unwrap().contains("X-User-ID"));
}

#[actix_web::test]
async fn the_user_header_name_is_configurable() {
    let clock = ManualClock::new(1);
    let cfg = bucket_api::Config { user_header: "X-Api-Key".into(), ..config() };
    let app = init_service(build_app(state(cfg, &clock))).await;
    let req = TestRequest::get().uri("/").insert_header(("X-Api-Key", "k-123")).to_request();
    let body: DecisionBody = read_body_json(call_service(&app, req).await).await;
    assert_eq!(body.key, "k-123");
}

#[actix_web::test]
async fn a_named_policy_from_the_config_governs_the_request_and_its_headers() {
    let clock = ManualClock::new(1);
    let policies = BTreeMap::from([("premium".to_string(), PolicyConfig { capacity: 3, refill_per_sec: 0.5 })]);
    let app = init_service(build_app(state(bucket_api::Config { policies, ..config() }, &clock))).await;
    let check =
        || TestRequest::post().uri("/v1/check").set_json(json!({"key": "erin", "policy": "premium"})).to_request();
    let res = call_service(&app, check()).await;
    assert_eq!(header(&res, "RateLimit-Policy"), "\"premium\";q=3;w=6");
    assert_eq!(header(&res, "RateLimit"), "\"premium\";r=2;t=2");
    let body: DecisionBody = read_body_json(res).await;
    assert_eq!((&*body.policy.name, body.limit, body.policy.interval_us), ("premium", 3, 2_000_000));
    call_service(&app, check()).await;
    call_service(&app, check()).await;
    let refused = call_service(&app, check()).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header_u64(&refused, "Retry-After"), 2);

    let default = TestRequest::post().uri("/v1/check").set_json(json!({"key": "erin", "policy": "default"}));
    let body: DecisionBody = read_body_json(call_service(&app, default.to_request()).await).await;
    assert_eq!(body.policy.name, "default", "`default` names the default policy");

    let unknown = TestRequest::post().uri("/v1/check").set_json(json!({"key": "erin", "policy": "gold"}));
    let res = call_service(&app, unknown.to_request()).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = read_body_json(res).await;
    assert_eq!(body["error"], "unknown_policy");
}

#[actix_web::test]
async fn a_cost_above_one_takes_that_many_tokens() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(config(), &clock))).await;
    let check =
        |cost: u64| TestRequest::post().uri("/v1/check").set_json(json!({"key": "fay", "cost": cost})).to_request();
    let body: DecisionBody = read_body_json(call_service(&app, check(7)).await).await;
    assert_eq!((body.allowed, body.remaining, body.cost), (true, 3, 7));
    let refused = call_service(&app, check(4)).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(sf_param(&header(&refused, "RateLimit"), "t"), 1, "t counts to `cost` tokens on a 429");
    let body: DecisionBody = read_body_json(refused).await;
    assert_eq!((body.remaining, body.retry_after_ms), (3, Some(1000)), "a refusal takes nothing");
}

#[actix_web::test]
async fn peeking_shows_the_bucket_and_takes_nothing() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(config(), &clock))).await;
    let fresh = call_service(&app, TestRequest::get().uri("/v1/buckets/gus").to_request()).await;
    assert_eq!(fresh.status(), StatusCode::OK);
    assert_eq!(header(&fresh, "RateLimit"), "\"default\";r=10;t=0", "a full bucket waits for nothing");
    assert_eq!(header_u64(&fresh, "X-RateLimit-Reset"), 0);

    call_service(&app, TestRequest::get().uri("/").insert_header(("X-User-ID", "gus")).to_request()).await;
    for _ in 0..3 {
        let res = call_service(&app, TestRequest::get().uri("/v1/buckets/gus").to_request()).await;
        assert_eq!(header(&res, "X-Data-Source"), "memory");
        let body: DecisionBody = read_body_json(res).await;
        assert_eq!((body.allowed, body.cost, body.remaining), (true, 0, 9));
    }
}

#[actix_web::test]
async fn a_check_body_is_json_whatever_its_content_type_and_escaped_keys_are_one_bucket() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(config(), &clock))).await;
    // Gateways and scripts omit or mislabel the type; none of these is refused with 415.
    let labels =
        [None, Some("application/json"), Some("application/json; charset=utf-8"), Some("text/plain"), Some("")];
    for (i, label) in labels.into_iter().enumerate() {
        let mut req = TestRequest::post().uri("/v1/check").set_payload(r#"{"key":"caf\u00e9"}"#);
        if let Some(label) = label {
            req = req.insert_header(("content-type", label));
        }
        let res = call_service(&app, req.to_request()).await;
        assert_eq!(res.status(), StatusCode::OK, "content type {label:?}");
        let body: DecisionBody = read_body_json(res).await;
        // The escaped and the plain spelling of a key are the same bucket.
        assert_eq!((body.key.as_ref(), body.remaining), ("café", 9 - i as u64), "content type {label:?}");
    }
    let res =
        call_service(&app, TestRequest::post().uri("/v1/check").set_json(json!({"key": "café"})).to_request()).await;
    assert_eq!(read_body_json::<DecisionBody, _>(res).await.remaining, 9 - labels.len() as u64);
}
