//! The proxy snippets checked without running a proxy: Traefik's (Traefik is not packaged in Debian, so it cannot
//! run here) field by field, and every snippet's `/v1/auth` query against a bucket-api configured by
//! `deploy/proxies/bucket.toml`, so a snippet naming a policy the configuration lacks fails here and not in
//! production.

use std::collections::BTreeSet;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::test::{call_service, init_service, TestRequest};
use bucket_api::{build_app, AppState, Config};
use bucket_core::ManualClock;
use bucket_store::{AnyStore, MemoryStore};
use bucket_testkit::snippets::snippet;
use serde_json::Value;

/// The headers bucket sets on a decision; a proxy must hand each of them on.
const RATE_LIMIT_HEADERS: [&str; 6] = [
    "X-Data-Source",
    "RateLimit",
    "RateLimit-Policy",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
];

fn traefik() -> Value {
    // serde-saphyr (the project's YAML reader) into a JSON value: every key in Traefik's file is a string.
    serde_saphyr::from_str(&snippet("traefik.yml")).expect("deploy/proxies/traefik.yml is YAML")
}

fn strings(value: &Value, context: &str) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{context} is not a list"))
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("{context} holds a non-string")).to_string())
        .collect()
}

/// `(name, forwardAuth)` of every forward-auth middleware.
fn forward_auths(doc: &Value) -> Vec<(String, Value)> {
    let middlewares = doc["http"]["middlewares"].as_object().expect("http.middlewares");
    let found: Vec<(String, Value)> =
        middlewares.iter().filter_map(|(name, m)| Some((name.clone(), m.get("forwardAuth")?.clone()))).collect();
    assert!(!found.is_empty(), "no forwardAuth middleware in traefik.yml");
    found
}

#[test]
fn traefik_forward_auth_asks_v1_auth_and_hands_the_headers_on() {
    for (name, auth) in forward_auths(&traefik()) {
        let address = auth["address"].as_str().unwrap_or_default();
        assert!(address.starts_with("http://127.0.0.1:8080/v1/auth"), "{name}: address {address:?}");
        // Traefik passes any non-2xx on whole, so bucket's own 429 reaches the client; a 403 would hide it.
        assert!(!address.contains("deny_status"), "{name}: Traefik needs no deny_status");
        // false: Traefik writes X-Forwarded-For itself from the address it sees.
        assert_eq!(auth["trustForwardHeader"].as_bool(), Some(false), "{name}: trustForwardHeader");
        // Only listed headers reach bucket, and none that could name the client's address.
        let request = strings(&auth["authRequestHeaders"], &format!("{name}.authRequestHeaders"));
        for forbidden in ["forwarded", "x-forwarded-for", "x-real-ip"] {
            assert!(!request.iter().any(|h| h.eq_ignore_ascii_case(forbidden)), "{name} passes {forbidden} on");
        }
        let response: BTreeSet<String> =
            strings(&auth["authResponseHeaders"], &format!("{name}.authResponseHeaders")).into_iter().collect();
        for header in RATE_LIMIT_HEADERS {
            assert!(response.contains(header), "{name}: authResponseHeaders lacks {header}");
        }
    }
}

#[test]
fn traefik_routers_use_defined_middlewares_and_services() {
    let doc = traefik();
    let http = &doc["http"];
    let routers = http["routers"].as_object().expect("http.routers");
    assert!(!routers.is_empty());
    let mut used = BTreeSet::new();
    for (name, router) in routers {
        assert!(router["rule"].as_str().is_some_and(|r| !r.is_empty()), "{name}: rule");
        let service = router["service"].as_str().unwrap_or_default();
        assert!(http["services"].get(service).is_some(), "{name}: service {service:?} is not defined");
        let middlewares = strings(&router["middlewares"], &format!("{name}.middlewares"));
        assert!(
            middlewares.iter().any(|m| http["middlewares"][m.as_str()].get("forwardAuth").is_some()),
            "router {name} is not rate limited"
        );
        used.extend(middlewares);
    }
    for (name, _) in forward_auths(&doc) {
        assert!(used.contains(&name), "middleware {name} is defined but no router uses it");
    }
}

/// Every `/v1/auth?...` a snippet asks, with the query as the proxy sends it.
fn snippet_queries() -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for (_, auth) in forward_auths(&traefik()) {
        let address = auth["address"].as_str().unwrap_or_default();
        queries.push(("traefik.yml".into(), address.split_once("/v1/auth").map_or("", |(_, q)| q).to_string()));
    }
    for line in snippet("nginx.conf").lines().filter(|l| l.contains("proxy_pass http://bucket/v1/auth")) {
        let query = line.split_once("/v1/auth").map_or("", |(_, q)| q).trim_end_matches(';').trim();
        queries.push(("nginx.conf".into(), query.to_string()));
    }
    for line in snippet("Caddyfile").lines().filter(|l| l.trim_start().starts_with("import bucket ")) {
        let args = line.trim_start().trim_start_matches("import bucket ").trim();
        queries.push(("Caddyfile".into(), format!("?{args}")));
    }
    queries
}

#[actix_web::test]
async fn every_snippet_query_is_one_bucket_toml_accepts() {
    let config = Config::from_toml_str(&snippet("bucket.toml")).expect("bucket.toml parses");
    let clock = ManualClock::new(1);
    let store = AnyStore::Memory(MemoryStore::with_clock(Arc::new(clock)));
    let state = AppState::new(config, store, slog::Logger::root(slog::Discard, slog::o!())).expect("valid");
    let app = init_service(build_app(actix_web::web::Data::new(state))).await;
    let queries = snippet_queries();
    for file in ["traefik.yml", "nginx.conf", "Caddyfile"] {
        assert!(queries.iter().filter(|(f, _)| f == file).count() >= 2, "{file}: default and search: {queries:?}");
    }
    for (i, (file, query)) in queries.iter().enumerate() {
        let req = TestRequest::get().uri(&format!("/v1/auth{query}")).insert_header(("X-User-ID", format!("u{i}")));
        let status = call_service(&app, req.to_request()).await.status();
        assert_eq!(status, StatusCode::OK, "{file}: /v1/auth{query} is refused by bucket.toml's bucket");
    }
}

/// A snippet as the README shows it: without its comment lines, blank runs squeezed.
fn without_comments(text: &str) -> String {
    let mut lines: Vec<&str> = Vec::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        if line.trim().is_empty() && lines.last().is_none_or(|last| last.trim().is_empty()) {
            continue;
        }
        lines.push(line);
    }
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    lines.join("\n")
}

#[test]
fn the_readme_shows_the_tested_snippets() {
    let readme_path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(readme_path).expect("README.md");
    for name in ["bucket.toml", "nginx.conf", "Caddyfile"] {
        let shown = without_comments(&snippet(name));
        assert!(readme.contains(&format!("\n{shown}\n```")), "README.md does not show deploy/proxies/{name} as it is");
    }
    // Traefik's `bucket` middleware: the file's first lines up to the second middleware.
    let traefik = without_comments(&snippet("traefik.yml"));
    let shown = traefik.split("\n    bucket-search:").next().unwrap_or_default();
    assert!(readme.contains(&format!("\n{shown}\n```")), "README.md does not show traefik.yml's bucket middleware");
}
