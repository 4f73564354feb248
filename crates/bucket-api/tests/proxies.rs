//! The snippets of `deploy/proxies/` in front of a real nginx and a real Caddy (Debian's packages, installed by
//! `cargo xtask test`), with bucket-api as configured by `deploy/proxies/bucket.toml` and a counting upstream as the
//! application: what reaches the application is exactly what bucket allowed, and every client sees the rate-limit
//! headers. A missing nginx or caddy fails these tests (never a skip).

use std::net::IpAddr;
use std::time::Duration;

use bucket_api::{Config, Running};
use bucket_testkit::snippets::{caddy_site, nginx_site, snippet};
use bucket_testkit::{free_port, Caddy, CountingUpstream, Nginx, SnippetAddrs};
use reqwest::header::HeaderMap;
use serde_json::Value;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Nginx,
    Caddy,
}

enum Proxy {
    Nginx(Nginx),
    Caddy(Caddy),
}

impl Proxy {
    fn url(&self) -> String {
        match self {
            Proxy::Nginx(p) => p.url(),
            Proxy::Caddy(p) => p.url(),
        }
    }

    fn logs(&self) -> String {
        match self {
            Proxy::Nginx(p) => p.logs(),
            Proxy::Caddy(p) => p.logs(),
        }
    }
}

/// bucket-api, the application and the proxy, wired as the README says.
struct Rig {
    api: Option<Running>,
    upstream: CountingUpstream,
    proxy: Proxy,
}

/// `deploy/proxies/bucket.toml` on a free port. The default policy refills once per 1,000 s instead of every
/// second, so that no token arrives while a test counts (the `search` policy keeps its real 1/s).
fn bucket_config() -> Config {
    let mut config = Config::from_toml_str(&snippet("bucket.toml")).expect("deploy/proxies/bucket.toml parses");
    config.listen = "127.0.0.1:0".into();
    config.refill_per_sec = 0.001;
    config.workers = 2;
    config
}

impl Rig {
    async fn start(kind: Kind) -> Self {
        let api = bucket_api::start(bucket_config(), slog::Logger::root(slog::Discard, slog::o!()))
            .await
            .expect("bucket-api starts");
        let upstream = CountingUpstream::start().await;
        let addrs = SnippetAddrs { bucket: api.addr(), app: upstream.addr(), listen_port: free_port() };
        let proxy = match kind {
            Kind::Nginx => Proxy::Nginx(Nginx::start(&nginx_site(addrs), addrs.listen_port)),
            Kind::Caddy => Proxy::Caddy(Caddy::start(&caddy_site(addrs), addrs.listen_port)),
        };
        Self { api: Some(api), upstream, proxy }
    }

    async fn stop_bucket(&mut self) {
        if let Some(api) = self.api.take() {
            api.stop().await;
        }
    }
}

/// A client connecting from `from` (any 127.0.0.0/8 address works on Linux), so tests keyed by address differ.
fn client_from(from: &str) -> reqwest::Client {
    let addr: IpAddr = from.parse().expect("a loopback address");
    reqwest::Client::builder().local_address(addr).timeout(Duration::from_secs(10)).build().expect("client")
}

fn client() -> reqwest::Client {
    client_from("127.0.0.1")
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body {:?} is not JSON: {e}", self.body))
    }
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("the proxy answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.expect("a body");
    Answer { status, headers, body }
}

async fn get(client: &reqwest::Client, url: &str, user: Option<&str>) -> Answer {
    let mut request = client.get(url);
    if let Some(user) = user {
        request = request.header("X-User-ID", user);
    }
    send(request).await
}

/// Every rate-limit header a client is promised, consistent with `remaining`.
fn assert_rate_limit_headers(answer: &Answer, remaining: u64, context: &str) {
    for name in ["x-data-source", "ratelimit-policy", "ratelimit", "x-ratelimit-limit", "x-ratelimit-reset"] {
        assert!(answer.header(name).is_some(), "{context}: no {name} header in {answer:?}");
    }
    assert_eq!(answer.header("x-ratelimit-limit"), Some("10"), "{context}");
    assert_eq!(answer.header("x-ratelimit-remaining"), Some(remaining.to_string().as_str()), "{context}");
    let ratelimit = answer.header("ratelimit").unwrap_or_default();
    assert!(ratelimit.starts_with(&format!("\"default\";r={remaining};")), "{context}: RateLimit {ratelimit:?}");
}

async fn fifteen_requests_for_one_user_let_exactly_ten_through(kind: Kind) {
    let rig = Rig::start(kind).await;
    let client = client();
    let mut answers = Vec::new();
    for _ in 0..15 {
        answers.push(get(&client, &rig.proxy.url(), Some("alice")).await);
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [[200; 10].as_slice(), &[429; 5]].concat(), "{kind:?}: {}", rig.proxy.logs());
    assert_eq!(rig.upstream.count(), 10, "{kind:?}: the application saw every allowed request and no other");
    for (i, answer) in answers.iter().enumerate() {
        let context = format!("{kind:?} request {}", i + 1);
        if answer.status == 200 {
            assert_eq!(answer.body, "upstream ok\n", "{context}: the application answered");
            assert_rate_limit_headers(answer, 9 - i as u64, &context);
        } else {
            let retry_after: u64 = answer.header("retry-after").and_then(|v| v.parse().ok()).unwrap_or(0);
            assert!(retry_after >= 1, "{context}: Retry-After {:?}", answer.header("retry-after"));
            assert_rate_limit_headers(answer, 0, &context);
            assert_eq!(answer.header("content-type"), Some("application/json"), "{context}");
            assert_eq!(answer.json()["error"], "rate_limited", "{context}");
        }
    }
    // The application gets the client's request; behind Caddy also the decision's headers (copy_headers).
    let seen = rig.upstream.seen();
    assert!(seen.iter().all(|s| s.header("x-user-id") == Some("alice")), "{kind:?}: {seen:?}");
    if let Kind::Caddy = kind {
        assert_eq!(seen[0].header("ratelimit"), Some("\"default\";r=9;t=1000"), "{seen:?}");
    }
}

async fn waiting_retry_after_then_succeeds(kind: Kind) {
    // The `search` location's policy: capacity 2, one token per second, on the real clock.
    let rig = Rig::start(kind).await;
    let client = client();
    let url = format!("{}/search/q", rig.proxy.url());
    for _ in 0..2 {
        assert_eq!(get(&client, &url, Some("searcher")).await.status, 200);
    }
    let refused = get(&client, &url, Some("searcher")).await;
    assert_eq!(refused.status, 429, "{kind:?}: {}", rig.proxy.logs());
    assert_eq!(refused.header("ratelimit-policy"), Some("\"search\";q=2;w=2"), "{kind:?}");
    // The next token is less than a second away, and Retry-After rounds up: exactly 1.
    assert_eq!(refused.header("retry-after"), Some("1"), "{kind:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = get(&client, &url, Some("searcher")).await;
    assert_eq!(again.status, 200, "{kind:?}: waiting the advertised Retry-After must be enough");
    assert_eq!(rig.upstream.count(), 3, "{kind:?}");
}

async fn two_users_are_independent(kind: Kind) {
    let rig = Rig::start(kind).await;
    let client = client();
    let mut allowed = [0, 0];
    for _ in 0..12 {
        for (i, user) in ["ann", "ben"].into_iter().enumerate() {
            if get(&client, &rig.proxy.url(), Some(user)).await.status == 200 {
                allowed[i] += 1;
            }
        }
    }
    assert_eq!(allowed, [10, 10], "{kind:?}");
    assert_eq!(rig.upstream.count(), 20, "{kind:?}");
}

async fn a_spoofed_forwarding_header_does_not_mint_a_bucket(kind: Kind) {
    let rig = Rig::start(kind).await;
    // No X-User-ID: the client is keyed by the address the proxy saw, 127.0.0.23, whatever it claims.
    let client = client_from("127.0.0.23");
    let mut statuses = Vec::new();
    for i in 0..15 {
        let request = client
            .get(rig.proxy.url())
            .header("X-Forwarded-For", format!("198.51.100.{i}"))
            .header("Forwarded", format!("for=192.0.2.{i}"))
            .header("X-Real-IP", format!("203.0.113.{i}"));
        statuses.push(send(request).await.status);
    }
    assert_eq!(statuses, [[200; 10].as_slice(), &[429; 5]].concat(), "{kind:?}: {}", rig.proxy.logs());
    assert_eq!(rig.upstream.count(), 10, "{kind:?}");
    // Another address is another bucket: keying is by the real peer, not one bucket for everybody.
    assert_eq!(get(&client_from("127.0.0.24"), &rig.proxy.url(), None).await.status, 200, "{kind:?}");
}

/// With bucket stopped nothing reaches the application: nginx answers 503 with `Retry-After: 1` and a JSON body
/// (the snippet's `@bucket_unavailable`), Caddy its own 502.
async fn with_bucket_stopped_the_gate_is_closed(kind: Kind) {
    let mut rig = Rig::start(kind).await;
    let client = client();
    assert_eq!(get(&client, &rig.proxy.url(), Some("early")).await.status, 200);
    rig.stop_bucket().await;
    for _ in 0..3 {
        let answer = get(&client, &rig.proxy.url(), Some("late")).await;
        match kind {
            Kind::Nginx => {
                assert_eq!(answer.status, 503, "{answer:?}");
                assert_eq!(answer.header("retry-after"), Some("1"));
                assert_eq!(answer.json()["error"], "rate_limiter_unavailable");
            }
            Kind::Caddy => assert_eq!(answer.status, 502, "{answer:?}"),
        }
    }
    assert_eq!(rig.upstream.count(), 1, "{kind:?}: nothing passed while bucket was down");
}

/// A mistake on bucket's side (here a bad `X-User-ID`, refused with a 400) never opens the gate.
async fn a_bucket_error_never_opens_the_gate(kind: Kind) {
    let rig = Rig::start(kind).await;
    let too_long = "x".repeat(300);
    let answer = get(&client(), &rig.proxy.url(), Some(&too_long)).await;
    match kind {
        // auth_request turns the 400 into a 500, the snippet that into its 503.
        Kind::Nginx => assert_eq!(answer.status, 503, "{answer:?}"),
        // Caddy passes bucket's answer on whole.
        Kind::Caddy => {
            assert_eq!(answer.status, 400, "{answer:?}");
            assert_eq!(answer.json()["error"], "invalid_key");
        }
    }
    assert_eq!(rig.upstream.count(), 0, "{kind:?}");
}

macro_rules! per_proxy {
    ($($scenario:ident),* $(,)?) => {
        mod nginx {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Kind::Nginx).await;
                }
            )*
        }
        mod caddy {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Kind::Caddy).await;
                }
            )*
        }
    };
}

per_proxy!(
    fifteen_requests_for_one_user_let_exactly_ten_through,
    waiting_retry_after_then_succeeds,
    two_users_are_independent,
    a_spoofed_forwarding_header_does_not_mint_a_bucket,
    with_bucket_stopped_the_gate_is_closed,
    a_bucket_error_never_opens_the_gate,
);
