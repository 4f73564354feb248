//! Input an attacker would send, through every door (the user header, the JSON body, the path, raw HTTP): each is
//! either served as its own bucket or refused with a JSON 4xx naming what is wrong, and the server keeps serving.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use actix_web::http::header::HeaderValue;
use actix_web::http::StatusCode;
use actix_web::test::{call_service, init_service, read_body_json, TestRequest};
use bucket_api::{build_app, start, Config};
use bucket_core::ManualClock;
use common::{config, state};
use serde_json::{json, Value};

const TOKEN: &str = "hostile-admin-token";

/// Percent-encodes every byte outside the unreserved set, as a client library would for a path segment.
fn encode(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn json_of<B: actix_web::body::MessageBody>(res: actix_web::dev::ServiceResponse<B>) -> Value {
    read_body_json(res).await
}

/// An awkward key is one bucket whichever door it comes through: a body check, a header check and a path peek
/// of the same key all see the same tokens, and no other key's.
#[actix_web::test]
async fn awkward_keys_are_served_as_their_own_buckets_through_every_door() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(config(), &clock))).await;
    let keys = ["a:b", "{a}", "a}b", "a{", "*", "a*b", "a/b", "/a", "a b", "a%2Fb", "ключ", "鍵🔑", "a+b", "a?b#c"];
    for key in keys {
        let res =
            call_service(&app, TestRequest::post().uri("/v1/check").set_json(json!({"key": key})).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK, "body {key:?}");
        let body = json_of(res).await;
        assert_eq!((body["key"].as_str(), body["remaining"].as_u64()), (Some(key), Some(9)), "body {key:?}");

        // Header values carry bytes; non-ASCII keys go through as UTF-8.
        let header = HeaderValue::from_bytes(key.as_bytes()).unwrap();
        let res =
            call_service(&app, TestRequest::get().uri("/").insert_header(("X-User-ID", header)).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK, "header {key:?}");
        assert_eq!(json_of(res).await["remaining"], 8, "header {key:?} is another bucket than the body's");

        let res =
            call_service(&app, TestRequest::get().uri(&format!("/v1/buckets/{}", encode(key))).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK, "path {key:?}");
        let body = json_of(res).await;
        assert_eq!((body["key"].as_str(), body["remaining"].as_u64()), (Some(key), Some(8)), "path {key:?}");
    }
    // `a}b` spent two tokens and `a` none: braces do not fold keys together.
    let res = call_service(&app, TestRequest::get().uri("/v1/buckets/a").to_request()).await;
    assert_eq!(json_of(res).await["remaining"], 10);
}

/// A `/` in a key may be sent raw or as `%2F` in the path: both mean the same key (the key takes the rest of the
/// path), and the same as `"a/b"` in a body.
#[actix_web::test]
async fn a_slash_in_a_path_key_is_the_same_key_raw_or_encoded() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(Config { admin_token: Some(TOKEN.into()), ..config() }, &clock))).await;
    let check = TestRequest::post().uri("/v1/check").set_json(json!({"key": "tenant/alice", "cost": 3}));
    assert_eq!(call_service(&app, check.to_request()).await.status(), StatusCode::OK);
    for uri in ["/v1/buckets/tenant/alice", "/v1/buckets/tenant%2Falice", "/v1/buckets/tenant%2falice"] {
        let body = json_of(call_service(&app, TestRequest::get().uri(uri).to_request()).await).await;
        assert_eq!((body["key"].as_str(), body["remaining"].as_u64()), (Some("tenant/alice"), Some(7)), "{uri}");
    }
    let put = TestRequest::put()
        .uri("/v1/policies/tenant/alice")
        .insert_header(("Authorization", format!("Bearer {TOKEN}")))
        .set_json(json!({"capacity": 4, "refill_per_sec": 1}));
    let res = call_service(&app, put.to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_of(res).await["key"], "tenant/alice");
    let get = TestRequest::get()
        .uri("/v1/policies/tenant%2Falice")
        .insert_header(("Authorization", format!("Bearer {TOKEN}")));
    assert_eq!(call_service(&app, get.to_request()).await.status(), StatusCode::OK);
}

/// (what, request, status, `error` code, a fragment `detail` must contain)
fn refused() -> Vec<(&'static str, TestRequest, u16, &'static str, String)> {
    let check = |body: Value| TestRequest::post().uri("/v1/check").set_json(body);
    let raw = |body: Vec<u8>| {
        TestRequest::post().uri("/v1/check").insert_header(("content-type", "application/json")).set_payload(body)
    };
    let put = |body: Value| {
        TestRequest::put()
            .uri("/v1/policies/victim")
            .insert_header(("Authorization", format!("Bearer {TOKEN}")))
            .set_json(body)
    };
    let put_raw = |body: &'static str| {
        TestRequest::put()
            .uri("/v1/policies/victim")
            .insert_header(("Authorization", format!("Bearer {TOKEN}")))
            .insert_header(("content-type", "application/json"))
            .set_payload(body)
    };
    let user = |value: &[u8]| {
        TestRequest::get().uri("/").insert_header(("X-User-ID", HeaderValue::from_bytes(value).unwrap()))
    };
    vec![
        // Key length, in bytes, through each door.
        ("256-byte body key", check(json!({"key": "k".repeat(256)})), 400, "invalid_key", "256 bytes".into()),
        ("256-byte header key", user("k".repeat(256).as_bytes()), 400, "invalid_key", "256 bytes".into()),
        (
            "256-byte path key",
            TestRequest::get().uri(&format!("/v1/buckets/{}", "k".repeat(256))),
            400,
            "invalid_key",
            "256 bytes".into(),
        ),
        // NUL and other control characters: no store may see them (PostgreSQL text cannot hold NUL).
        ("NUL in a body key", check(json!({"key": "a\u{0}b"})), 400, "invalid_key", "U+0000".into()),
        ("newline in a body key", check(json!({"key": "a\nb"})), 400, "invalid_key", "U+000A".into()),
        ("NUL in a path key", TestRequest::get().uri("/v1/buckets/a%00b"), 400, "invalid_key", "U+0000".into()),
        ("tab in a header key", user(b"a\tb"), 400, "invalid_key", "U+0009".into()),
        // Not UTF-8, through each door.
        ("non-UTF-8 header key", user(b"a\xffb"), 400, "invalid_header", "UTF-8".into()),
        ("non-UTF-8 path key", TestRequest::get().uri("/v1/buckets/a%FFb"), 400, "invalid_path", "".into()),
        ("non-UTF-8 body key", raw(b"{\"key\": \"a\xffb\"}".to_vec()), 400, "invalid_json", "unicode".into()),
        // Costs: every way of not being a whole number from 1 to capacity.
        ("cost 0", check(json!({"key": "c", "cost": 0})), 400, "invalid_cost", "at least 1".into()),
        ("negative cost", check(json!({"key": "c", "cost": -5})), 400, "invalid_json", "`cost`".into()),
        ("cost above capacity", check(json!({"key": "c", "cost": 11})), 400, "invalid_cost", "capacity 10".into()),
        (
            "cost above u32::MAX",
            check(json!({"key": "c", "cost": u64::from(u32::MAX) + 1})),
            400,
            "invalid_cost",
            "4294967296".into(),
        ),
        ("cost u64::MAX", check(json!({"key": "c", "cost": u64::MAX})), 400, "invalid_cost", "capacity 10".into()),
        (
            "cost above u64::MAX",
            raw(b"{\"key\": \"c\", \"cost\": 18446744073709551616}".to_vec()),
            400,
            "invalid_json",
            "`cost`".into(),
        ),
        ("cost as a string", check(json!({"key": "c", "cost": "1"})), 400, "invalid_json", "`cost`".into()),
        ("cost as a float", check(json!({"key": "c", "cost": 1.5})), 400, "invalid_json", "`cost`".into()),
        ("cost as 1.0", check(json!({"key": "c", "cost": 1.0})), 400, "invalid_json", "`cost`".into()),
        ("cost null", check(json!({"key": "c", "cost": null})), 400, "invalid_json", "`cost`".into()),
        ("key as a number", check(json!({"key": 7})), 400, "invalid_json", "`key`".into()),
        ("unknown field", check(json!({"key": "c", "admin": true})), 400, "invalid_json", "admin".into()),
        ("nested junk", check(json!({"key": {"$ne": null}})), 400, "invalid_json", "`key`".into()),
        // Policies: nothing that is not a usable rate.
        ("capacity 0", put(json!({"capacity": 0, "refill_per_sec": 1})), 400, "invalid_policy", "".into()),
        ("refill 0", put(json!({"capacity": 5, "refill_per_sec": 0})), 400, "invalid_policy", "refill".into()),
        ("negative refill", put(json!({"capacity": 5, "refill_per_sec": -1})), 400, "invalid_policy", "refill".into()),
        (
            "refill as \"NaN\"",
            put(json!({"capacity": 5, "refill_per_sec": "NaN"})),
            400,
            "invalid_json",
            "refill_per_sec".into(),
        ),
        (
            "refill as \"Infinity\"",
            put(json!({"capacity": 5, "refill_per_sec": "Infinity"})),
            400,
            "invalid_json",
            "refill_per_sec".into(),
        ),
        ("refill 1e999", put_raw("{\"capacity\": 5, \"refill_per_sec\": 1e999}"), 400, "invalid_json", "".into()),
        ("bare NaN", put_raw("{\"capacity\": 5, \"refill_per_sec\": NaN}"), 400, "invalid_json", "".into()),
        ("refill too fast", put(json!({"capacity": 5, "refill_per_sec": 1e7})), 400, "invalid_policy", "".into()),
        (
            "negative capacity",
            put(json!({"capacity": -1, "refill_per_sec": 1})),
            400,
            "invalid_json",
            "`capacity`".into(),
        ),
        (
            "capacity above u64::MAX",
            put_raw("{\"capacity\": 18446744073709551616, \"refill_per_sec\": 1}"),
            400,
            "invalid_json",
            "`capacity`".into(),
        ),
        (
            "capacity above the column",
            put(json!({"capacity": 4_294_967_296u64, "refill_per_sec": 1})),
            400,
            "invalid_policy",
            "".into(),
        ),
        (
            "unknown policy field",
            put(json!({"capacity": 5, "refill_per_sec": 1, "burst": 9})),
            400,
            "invalid_json",
            "burst".into(),
        ),
        ("body over max_body_bytes", check(json!({"key": "x".repeat(600)})), 413, "payload_too_large", "512".into()),
    ]
}

#[actix_web::test]
async fn hostile_input_is_a_json_4xx_naming_the_problem_and_the_server_keeps_serving() {
    let clock = ManualClock::new(1);
    let config = Config { admin_token: Some(TOKEN.into()), max_body_bytes: 512, ..config() };
    let app = init_service(build_app(state(config, &clock))).await;
    for (what, req, status, code, detail) in refused() {
        let res = call_service(&app, req.to_request()).await;
        assert_eq!(res.status().as_u16(), status, "{what}");
        let content_type = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert_eq!(content_type, "application/json", "{what}");
        let body = json_of(res).await;
        assert_eq!(body["error"], code, "{what}: {body}");
        let text = body["detail"].as_str().unwrap_or_default();
        assert!(text.contains(&detail), "{what}: detail {text:?} should mention {detail:?}");
    }
    // Nothing refused above spent or created anything.
    let body = json_of(call_service(&app, TestRequest::get().uri("/v1/buckets/c").to_request()).await).await;
    assert_eq!(body["remaining"], 10);
    let get = TestRequest::get().uri("/v1/policies/victim").insert_header(("Authorization", format!("Bearer {TOKEN}")));
    assert_eq!(call_service(&app, get.to_request()).await.status(), StatusCode::NOT_FOUND);
    let ok = TestRequest::post().uri("/v1/check").set_json(json!({"key": "after"}));
    assert_eq!(call_service(&app, ok.to_request()).await.status(), StatusCode::OK);
}

#[actix_web::test]
async fn keys_of_255_bytes_are_accepted_through_every_door() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(config(), &clock))).await;
    let key = "k".repeat(255);
    let res = call_service(&app, TestRequest::post().uri("/v1/check").set_json(json!({"key": key})).to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res =
        call_service(&app, TestRequest::get().uri("/").insert_header(("X-User-ID", key.as_str())).to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = call_service(&app, TestRequest::get().uri(&format!("/v1/buckets/{key}")).to_request()).await;
    assert_eq!(json_of(res).await["remaining"], 8);
}

/// Sends raw bytes to a real server and returns the status line's code, with a bound on the whole exchange so a
/// hang fails the test instead of stalling it.
fn raw_status(addr: SocketAddr, request: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer and close before reading everything: a failed write is fine, the answer is what counts.
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no answer within 10 s: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("no status: {text:?}"))
}

/// What only a real socket shows: actix's own limits on header size, bytes a client library would never send,
/// and a body larger than the limit; every one is a 4xx, promptly, and the server then still answers 200.
#[actix_web::test]
async fn raw_http_abuse_is_refused_promptly_and_the_server_keeps_serving() {
    let config = Config { listen: "127.0.0.1:0".into(), workers: 1, max_body_bytes: 1024, ..Config::default() };
    let running = start(config, slog::Logger::root(slog::Discard, slog::o!())).await.expect("server starts");
    let addr = running.addr();
    let huge_header = format!("GET / HTTP/1.1\r\nHost: x\r\nX-User-ID: {}\r\n\r\n", "u".repeat(256 * 1024));
    let many_headers =
        format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", (0..500).map(|i| format!("X-H{i}: v\r\n")).collect::<String>());
    let huge_body = format!(
        "POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"key\":\"{}\"}}",
        2 * 1024 * 1024 + 10,
        "b".repeat(2 * 1024 * 1024)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a 256 KiB header value", huge_header.into_bytes()),
        ("500 headers", many_headers.into_bytes()),
        ("NUL in the user header", b"GET / HTTP/1.1\r\nHost: x\r\nX-User-ID: a\0b\r\n\r\n".to_vec()),
        ("a bare CR in the user header", b"GET / HTTP/1.1\r\nHost: x\r\nX-User-ID: a\rb\r\n\r\n".to_vec()),
        ("a 2 MiB body", huge_body.into_bytes()),
        ("a raw space in the path", b"GET /v1/buckets/a b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
    ];
    for (what, request) in cases {
        let status = tokio::task::spawn_blocking(move || raw_status(addr, &request)).await.unwrap();
        assert!((400..500).contains(&status), "{what}: status {status}");
        let ok = tokio::task::spawn_blocking(move || {
            raw_status(addr, b"GET / HTTP/1.1\r\nHost: x\r\nX-User-ID: after\r\nConnection: close\r\n\r\n")
        })
        .await
        .unwrap();
        assert_eq!(ok, 200, "still serving after {what}");
    }
    running.stop().await;
}
