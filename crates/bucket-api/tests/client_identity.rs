//! Who a caller without `X-User-ID` is: the peer, or behind a trusted proxy the first untrusted address of the
//! forwarding chain read right to left; IPv6 clients by their /64. Spoofed headers must never mint a fresh bucket.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;

use actix_web::http::StatusCode;
use actix_web::test::{call_service, init_service, read_body_json, TestRequest};
use bucket_api::build_app;
use bucket_api::config::Config;
use bucket_api::identity::parse_cidr_list;
use bucket_core::ManualClock;
use common::{config, state};
use serde_json::Value;

const PROXY: &str = "10.0.0.1:40000";

fn peer(addr: &str) -> SocketAddr {
    addr.parse().unwrap()
}

/// Capacity 10 (the default), nothing refills meanwhile: the clock is manual. One proxy network trusted.
fn behind_proxy() -> Config {
    Config { trusted_proxies: parse_cidr_list("10.0.0.0/8, fd00::/8").unwrap(), ..config() }
}

fn get(from: &str) -> TestRequest {
    TestRequest::get().uri("/").peer_addr(peer(from))
}

#[actix_web::test]
async fn a_spoofed_leftmost_x_forwarded_for_does_not_mint_a_new_bucket() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(behind_proxy(), &clock))).await;
    // The real client 203.0.113.7 spends its whole bucket through the proxy.
    for _ in 0..10 {
        let req = get(PROXY).insert_header(("X-Forwarded-For", "203.0.113.7")).to_request();
        assert_eq!(call_service(&app, req).await.status(), StatusCode::OK);
    }
    let req = get(PROXY).insert_header(("X-Forwarded-For", "203.0.113.7")).to_request();
    assert_eq!(call_service(&app, req).await.status(), StatusCode::TOO_MANY_REQUESTS);
    // Now it prepends made-up addresses, as its own header, which the proxy appends to.
    for i in 0..20 {
        let forged = format!("198.51.100.{i}, 192.0.2.{i}, 203.0.113.7");
        let req = get(PROXY).insert_header(("X-Forwarded-For", forged.as_str())).to_request();
        let res = call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "forged chain {forged:?} minted a bucket");
        let body: Value = read_body_json(res).await;
        assert_eq!(body["key"], "203.0.113.7");
    }
    // A second trusted hop in between is skipped too.
    let req = get(PROXY).insert_header(("X-Forwarded-For", "1.2.3.4, 203.0.113.7, 10.9.9.9")).to_request();
    assert_eq!(call_service(&app, req).await.status(), StatusCode::TOO_MANY_REQUESTS);
    // Forwarded works the same way, and wins over X-Forwarded-For.
    let req = get(PROXY)
        .insert_header(("Forwarded", "for=1.2.3.4, for=203.0.113.7;proto=https"))
        .insert_header(("X-Forwarded-For", "5.6.7.8"))
        .to_request();
    assert_eq!(call_service(&app, req).await.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[actix_web::test]
async fn an_untrusted_peers_forwarding_headers_are_ignored() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(behind_proxy(), &clock))).await;
    for i in 0..10 {
        let req = get("203.0.113.50:5000")
            .insert_header(("X-Forwarded-For", format!("198.51.100.{i}").as_str()))
            .insert_header(("Forwarded", format!("for=192.0.2.{i}").as_str()))
            .to_request();
        let res = call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = read_body_json(res).await;
        assert_eq!(body["key"], "203.0.113.50", "an untrusted peer named its own client");
    }
    let req = get("203.0.113.50:5001").insert_header(("X-Forwarded-For", "198.51.100.99")).to_request();
    assert_eq!(call_service(&app, req).await.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[actix_web::test]
async fn without_configuration_forwarding_headers_are_ignored_even_from_private_addresses() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(config(), &clock))).await;
    let req = get(PROXY).insert_header(("X-Forwarded-For", "203.0.113.7")).to_request();
    let body: Value = read_body_json(call_service(&app, req).await).await;
    assert_eq!(body["key"], "10.0.0.1");
}

#[actix_web::test]
async fn ipv6_addresses_in_one_64_share_a_bucket_and_across_64s_do_not() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(config(), &clock))).await;
    // Ten different hosts' worth of addresses, one /64: one bucket of 10.
    for i in 1..=10 {
        let req = get(&format!("[2001:db8:1:2::{i:x}]:443")).to_request();
        let res = call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::OK, "address {i}");
        let body: Value = read_body_json(res).await;
        assert_eq!(body["key"], "2001:db8:1:2::/64");
    }
    let req = get("[2001:db8:1:2:ffff:ffff:ffff:ffff]:443").to_request();
    assert_eq!(call_service(&app, req).await.status(), StatusCode::TOO_MANY_REQUESTS, "same /64, new address");
    let req = get("[2001:db8:1:3::1]:443").to_request();
    assert_eq!(call_service(&app, req).await.status(), StatusCode::OK, "the next /64 is someone else");
    // IPv4 keeps full addresses: neighbours are strangers.
    for addr in ["192.0.2.1:1", "192.0.2.2:1"] {
        let body: Value = read_body_json(call_service(&app, get(addr).to_request()).await).await;
        assert_eq!(body["key"], addr.trim_end_matches(":1"));
    }
}

#[actix_web::test]
async fn the_ipv6_prefix_is_configurable() {
    let env: HashMap<String, String> = [("BUCKET_IPV6_PREFIX".to_string(), "48".to_string())].into();
    let wide = Config { ipv6_prefix: Config::load(None, &env).unwrap().ipv6_prefix, ..config() };
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(wide, &clock))).await;
    let body: Value = read_body_json(call_service(&app, get("[2001:db8:1:2::1]:1").to_request()).await).await;
    assert_eq!(body["key"], "2001:db8:1::/48");
}

#[actix_web::test]
async fn forwarded_with_quoted_ipv6_and_ports_names_the_client_network() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(behind_proxy(), &clock))).await;
    let cases = [
        (r#"for="[2001:db8:cafe::17]:4711""#, "2001:db8:cafe::/64"),
        (r#"for="[2001:db8:cafe::99]""#, "2001:db8:cafe::/64"),
        (r#"for=192.0.2.43:8080;proto=http, for="[fd00::1]:80""#, "192.0.2.43"),
        (r#"For="198.51.100.17";by=10.0.0.1"#, "198.51.100.17"),
    ];
    for (forwarded, key) in cases {
        let req = get(PROXY).insert_header(("Forwarded", forwarded)).to_request();
        let res = call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::OK, "{forwarded}");
        let body: Value = read_body_json(res).await;
        assert_eq!(body["key"], key, "{forwarded}");
    }
    // The proxy itself over IPv6 is trusted the same way.
    let req = get("[fd00::2]:1").insert_header(("X-Forwarded-For", "[2001:db8:beef::5]:999")).to_request();
    let body: Value = read_body_json(call_service(&app, req).await).await;
    assert_eq!(body["key"], "2001:db8:beef::/64");
}

#[actix_web::test]
async fn malformed_forwarding_from_a_trusted_proxy_falls_back_to_the_peer() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(behind_proxy(), &clock))).await;
    let malformed: [(&str, &[u8]); 7] = [
        ("Forwarded", b"for=unknown"),
        ("Forwarded", b"for=\"[2001:db8::1\""),
        ("Forwarded", b"for=\"unterminated"),
        ("Forwarded", b"proto=https"),
        ("Forwarded", b"for=\xff\xfe"),
        ("X-Forwarded-For", b"not-an-address"),
        ("X-Forwarded-For", b"1.2.3.4, , 10.0.0.9"),
    ];
    for (name, value) in malformed {
        let header = actix_web::http::header::HeaderValue::from_bytes(value).unwrap();
        let req = get(PROXY).insert_header((name, header)).to_request();
        let res = call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::OK, "{name}: {value:?}");
        let body: Value = read_body_json(res).await;
        assert_eq!(body["key"], "10.0.0.1", "{name}: {value:?}");
    }
}

#[actix_web::test]
async fn the_user_header_wins_over_every_address() {
    let clock = ManualClock::new(1);
    let app = init_service(build_app(state(behind_proxy(), &clock))).await;
    let req =
        get(PROXY).insert_header(("X-User-ID", "alice")).insert_header(("X-Forwarded-For", "1.2.3.4")).to_request();
    let body: Value = read_body_json(call_service(&app, req).await).await;
    assert_eq!(body["key"], "alice");
}

#[test]
fn settings_come_from_the_environment_and_are_validated() {
    let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let c = Config::load(None, &HashMap::new()).unwrap();
    assert!(c.trusted_proxies.is_empty());
    assert_eq!(c.ipv6_prefix, 64);
    let c = Config::load(None, &env(&[("BUCKET_TRUSTED_PROXIES", "10.0.0.0/8, 2001:db8::/32,192.0.2.1")])).unwrap();
    let shown: Vec<String> = c.trusted_proxies.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["10.0.0.0/8", "2001:db8::/32", "192.0.2.1/32"]);
    assert!(c.redacted().to_string().contains("trusted_proxies = 10.0.0.0/8, 2001:db8::/32, 192.0.2.1/32"));
    let err = Config::load(None, &env(&[("BUCKET_TRUSTED_PROXIES", "10.0.0.0/8,proxy.local")])).unwrap_err();
    assert!(err.to_string().contains("BUCKET_TRUSTED_PROXIES") && err.to_string().contains("proxy.local"), "{err}");
    let err = Config::load(None, &env(&[("BUCKET_IPV6_PREFIX", "16")])).unwrap_err();
    assert!(err.to_string().contains("ipv6_prefix"), "{err}");
    let c = Config::from_toml_str("trusted_proxies = [\"fd00::/8\"]\nipv6_prefix = 56").unwrap();
    assert_eq!((c.trusted_proxies.len(), c.ipv6_prefix), (1, 56));
    assert!(Config::from_toml_str("trusted_proxies = [\"nonsense\"]").is_err());
}
