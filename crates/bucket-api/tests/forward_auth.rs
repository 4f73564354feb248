//! `/v1/auth`, the forward-auth route, through the real routing on a manual clock: what nginx, Caddy and Traefik
//! are told for each kind of request, and that nothing but an allowance (or `fail_open`) is ever a 2xx.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use actix_web::http::{Method, StatusCode};
use actix_web::test::{call_service, init_service, read_body, read_body_json, TestRequest};
use bucket_api::build_app;
use bucket_api::config::{Config, FailureMode, PolicyConfig, StoreKind};
use bucket_api::identity::parse_cidr_list;
use bucket_api::AppState;
use bucket_core::ManualClock;
use bucket_store::{AnyStore, MemoryStore};
use bucket_testkit::{Fault, FaultProxy, PrivateRedis};
use common::{config, header, header_u64, state};
use serde_json::Value;

fn auth(uri: &str) -> TestRequest {
    TestRequest::get().uri(uri).insert_header(("X-User-ID", "alice"))
}

#[actix_web::test]
async fn any_method_is_decided_like_get_root_and_shares_its_bucket() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(config(), &clock))).await;
    let methods = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::HEAD];
    for (i, method) in methods.iter().enumerate() {
        let res = call_service(&app, auth("/v1/auth").method(method.clone()).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK, "{method}");
        assert_eq!(header_u64(&res, "x-ratelimit-remaining"), 9 - i as u64, "{method}");
        assert_eq!(header(&res, "ratelimit-policy"), "\"default\";q=10;w=10");
        assert_eq!(header(&res, "x-data-source"), "memory");
    }
    // GET / spends the same bucket: one decision path.
    for _ in 0..4 {
        let req = TestRequest::get().uri("/").insert_header(("X-User-ID", "alice")).to_request();
        assert_eq!(call_service(&app, req).await.status(), StatusCode::OK);
    }
    let res = call_service(&app, auth("/v1/auth").to_request()).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[actix_web::test]
async fn a_refusal_is_a_429_with_retry_after_headers_and_a_small_body_and_waiting_it_succeeds() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(config(), &clock))).await;
    for _ in 0..10 {
        assert_eq!(call_service(&app, auth("/v1/auth").to_request()).await.status(), StatusCode::OK);
    }
    clock.advance_us(400_000);
    let res = call_service(&app, auth("/v1/auth").to_request()).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "retry-after"), "1", "0.6 s rounded up");
    assert_eq!(header(&res, "ratelimit"), "\"default\";r=0;t=1");
    assert_eq!(header(&res, "ratelimit-policy"), "\"default\";q=10;w=10");
    assert_eq!(header_u64(&res, "x-ratelimit-remaining"), 0);
    assert_eq!(header_u64(&res, "x-ratelimit-limit"), 10);
    assert_eq!(header(&res, "content-type"), "application/json");
    let body: Value = read_body_json(res).await;
    assert_eq!(body["error"], "rate_limited");
    assert!(body.get("key").is_none(), "the proxy's client never sees its bucket key: {body}");

    // `deny_status=403` (nginx): the same answer under another status.
    let res = call_service(&app, auth("/v1/auth?deny_status=403").to_request()).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&res, "retry-after"), "1");
    assert_eq!(header(&res, "ratelimit"), "\"default\";r=0;t=1");
    let body: Value = read_body_json(res).await;
    assert_eq!(body["error"], "rate_limited");

    // Waiting exactly Retry-After is enough.
    clock.advance_us(1_000_000);
    let res = call_service(&app, auth("/v1/auth?deny_status=403").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
}

fn with_policies() -> Config {
    let mut policies = BTreeMap::new();
    policies.insert("search".to_string(), PolicyConfig { capacity: 3, refill_per_sec: 0.5 });
    Config { policies, ..config() }
}

#[actix_web::test]
async fn policy_and_cost_come_from_the_query() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(with_policies(), &clock))).await;
    let res = call_service(&app, auth("/v1/auth?policy=search&cost=2").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "ratelimit-policy"), "\"search\";q=3;w=6");
    assert_eq!(header_u64(&res, "x-ratelimit-remaining"), 1);
    let res = call_service(&app, auth("/v1/auth?policy=search&cost=2").to_request()).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "retry-after"), "2", "one token at 0.5/s");
    let res = call_service(&app, auth("/v1/auth?policy=search").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK, "a refusal took nothing");
}

#[actix_web::test]
async fn bad_input_is_a_4xx_with_a_json_error_never_a_2xx() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(with_policies(), &clock))).await;
    let cases = [
        ("/v1/auth?policy=nope", "unknown_policy"),
        ("/v1/auth?policy=", "unknown_policy"),
        ("/v1/auth?cost=0", "invalid_cost"),
        ("/v1/auth?cost=-1", "invalid_cost"),
        ("/v1/auth?cost=abc", "invalid_cost"),
        ("/v1/auth?cost=11", "invalid_cost"),
        ("/v1/auth?policy=search&cost=4", "invalid_cost"),
        ("/v1/auth?deny_status=200", "invalid_path"),
        ("/v1/auth?deny_status=500", "invalid_path"),
        ("/v1/auth?polcy=search", "invalid_path"),
        ("/v1/auth?cost=1&cost=2", "invalid_path"),
    ];
    for (uri, code) in cases {
        let res = call_service(&app, auth(uri).to_request()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{uri}");
        let body: Value = read_body_json(res).await;
        assert_eq!(body["error"], code, "{uri}: {body}");
        assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{uri}");
    }
    let too_long = "x".repeat(256);
    let res = call_service(&app, auth("/v1/auth").insert_header(("X-User-ID", too_long)).to_request()).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST, "a key no store can hold");
    // None of them took a token.
    let res = call_service(&app, auth("/v1/auth").to_request()).await;
    assert_eq!(header_u64(&res, "x-ratelimit-remaining"), 9);
}

#[actix_web::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_keyed_and_forgeries_are_not() {
    let clock = ManualClock::new(1);
    let config = Config { trusted_proxies: parse_cidr_list("10.0.0.1").unwrap(), ..config() };
    let app = init_service(build_app(state(config, &clock))).await;
    let from_proxy = |name: &'static str, value: String| {
        TestRequest::get().uri("/v1/auth").peer_addr("10.0.0.1:4000".parse().unwrap()).insert_header((name, value))
    };
    // The client 203.0.113.7 spends its bucket, each time with a new forged address left of the real one, or
    // through X-Real-IP (nginx's `$remote_addr`).
    for i in 0..10 {
        let req = if i % 2 == 0 {
            from_proxy("X-Forwarded-For", format!("198.51.100.{i}, 203.0.113.7"))
        } else {
            from_proxy("X-Real-IP", "203.0.113.7".to_string())
        };
        assert_eq!(call_service(&app, req.to_request()).await.status(), StatusCode::OK, "request {i}");
    }
    let res = call_service(&app, from_proxy("X-Forwarded-For", "6.6.6.6, 203.0.113.7".into()).to_request()).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let res = call_service(&app, from_proxy("Forwarded", "for=6.6.6.6, for=203.0.113.7".into()).to_request()).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // X-Real-IP stands in only when X-Forwarded-For is absent.
    let req = from_proxy("X-Forwarded-For", "203.0.113.7".into()).insert_header(("X-Real-IP", "198.51.100.1"));
    assert_eq!(call_service(&app, req.to_request()).await.status(), StatusCode::TOO_MANY_REQUESTS);
    // An untrusted peer's X-Real-IP is ignored like any forwarding header.
    for _ in 0..10 {
        let req = TestRequest::get()
            .uri("/v1/auth")
            .peer_addr("192.0.2.50:4000".parse().unwrap())
            .insert_header(("X-Real-IP", "198.51.100.99"));
        assert_eq!(call_service(&app, req.to_request()).await.status(), StatusCode::OK);
    }
    let req = TestRequest::get().uri("/v1/auth").peer_addr("192.0.2.50:4001".parse().unwrap());
    assert_eq!(call_service(&app, req.to_request()).await.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// Records every log line with its logger's values (the route adds `method` and `uri` there).
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl slog::Drain for Lines {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        let mut line = record.msg().to_string();
        let _ = slog::KV::serialize(&record.kv(), record, &mut Text(&mut line));
        let _ = slog::KV::serialize(values, record, &mut Text(&mut line));
        self.0.lock().unwrap().push(line);
        Ok(())
    }
}

struct Text<'a>(&'a mut String);

impl slog::Serializer for Text<'_> {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        self.0.push_str(&format!(" {key}={val}"));
        Ok(())
    }
}

#[actix_web::test]
async fn the_original_method_and_uri_are_logged_with_the_decision() {
    let clock = ManualClock::new(1);
    let lines = Lines::default();
    let store = AnyStore::Memory(MemoryStore::with_clock(Arc::new(clock.clone())));
    let log = slog::Logger::root(slog::Fuse(lines.clone()), slog::o!());
    let state = actix_web::web::Data::new(AppState::new(config(), store, log).unwrap());
    let app = init_service(build_app(state)).await;
    let req = auth("/v1/auth")
        .method(Method::POST)
        .insert_header(("X-Forwarded-Method", "DELETE"))
        .insert_header(("X-Forwarded-Uri", "/orders/7?force=1"));
    assert_eq!(call_service(&app, req.to_request()).await.status(), StatusCode::OK);
    let req = auth("/v1/auth").insert_header(("X-Original-URI", "/search/q")); // nginx's usual name
    let res = call_service(&app, req.to_request()).await;
    assert!(!read_body(res).await.is_empty());
    let lines = lines.0.lock().unwrap().clone();
    let decisions: Vec<&String> = lines.iter().filter(|l| l.starts_with("decision")).collect();
    assert_eq!(decisions.len(), 2, "{lines:?}");
    for part in ["method=DELETE", "uri=/orders/7?force=1", "user_id=alice", "allowed=true"] {
        assert!(decisions[0].contains(part), "{part} missing from {}", decisions[0]);
    }
    assert!(decisions[1].contains("uri=/search/q"), "{}", decisions[1]);
    assert!(decisions[1].contains("method=GET"), "the request's own method without a header: {}", decisions[1]);
}

/// A real server on a Redis store whose Redis is gone: the failure mode answers `/v1/auth` as it answers `GET /`.
async fn with_the_store_down(mode: FailureMode) -> reqwest::Response {
    let redis = PrivateRedis::start();
    let proxy = FaultProxy::start(redis.addr()).await;
    let config = Config {
        listen: "127.0.0.1:0".into(),
        store: StoreKind::Redis,
        redis_url: Some(proxy.redis_url()),
        failure_mode: mode,
        workers: 1,
        ..Config::default()
    };
    let api = bucket_api::start(config, slog::Logger::root(slog::Discard, slog::o!())).await.expect("starts");
    proxy.set(Fault::Refuse);
    let url = format!("http://{}/v1/auth?deny_status=403", api.addr());
    let response = reqwest::Client::new().get(url).header("X-User-ID", "u").send().await.expect("answers");
    api.stop().await;
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_fail_open_is_a_marked_200() {
    let response = with_the_store_down(FailureMode::FailOpen).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-data-source"], "fail-open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_fail_closed_is_a_503_with_retry_after() {
    let response = with_the_store_down(FailureMode::FailClosed).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"], "store_unavailable");
}
