//! The gateway front on the memory store, called as Envoy calls it (gRPC `ShouldRateLimit` over TCP) and as
//! envoyproxy/ratelimit's `/json` is called (`POST /v1/ratelimit`): limits at capacity, several limits all or
//! nothing, unmatched, unlimited and shadow rules, bad input, and the limits file reloaded while serving.

mod common;
mod gateway_rig;

use std::time::Duration;

use bucket_api::Config;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use gateway_rig::{header, ok, over, request, Gateway};

const LIMITS: &str = r#"
domain: edge
descriptors:
  - key: user
    rate_limit:
      unit: hour
      requests_per_unit: 5
  - key: user
    value: mallory
    rate_limit:
      unit: second
      requests_per_unit: 0
  - key: plan
    value: free
    rate_limit:
      name: free-plan
      unit: hour
      requests_per_unit: 3
  - key: path
    value: /health
    rate_limit:
      unlimited: true
  - key: canary
    shadow_mode: true
    rate_limit:
      unit: hour
      requests_per_unit: 1
"#;

fn config() -> Config {
    Config { workers: 1, ..Config::default() }
}

#[tokio::test]
async fn a_limit_refuses_exactly_at_capacity_and_says_when_to_retry() {
    let gw = Gateway::start(config(), LIMITS).await;
    let alice = request("edge", &[&[("user", "alice")]], 0);
    let mut remaining = Vec::new();
    for _ in 0..7 {
        let answer = gw.ask(alice.clone()).await;
        remaining.push((ok(&answer), answer.statuses[0].limit_remaining));
        let limit = answer.statuses[0].current_limit.as_ref().expect("the rule is reported");
        assert_eq!((limit.requests_per_unit, limit.unit), (5, Unit::Hour as i32));
        assert!(header(&answer, "ratelimit").is_some(), "{answer:?}");
        if !ok(&answer) {
            assert!(over(&answer, 0));
            let retry: u64 = header(&answer, "retry-after").expect("Retry-After on a refusal").parse().unwrap();
            // One token every 720 s.
            assert!((1..=720).contains(&retry), "{retry}");
            assert!(answer.statuses[0].duration_until_reset.as_ref().is_some_and(|d| d.seconds > 3000));
        }
    }
    let expected = [(true, 4), (true, 3), (true, 2), (true, 1), (true, 0), (false, 0), (false, 0)];
    assert_eq!(remaining, expected);
    // Another value of the key-only descriptor is another bucket.
    assert!(ok(&gw.ask(request("edge", &[&[("user", "bob")]], 0)).await));
    assert_eq!(gw.metric("bucket_limit_decisions_total", &[("domain", "edge"), ("outcome", "refused")]).await, 2.0);
    gw.stop().await;
}

#[tokio::test]
async fn a_refused_request_takes_nothing_from_its_other_limits() {
    let gw = Gateway::start(config(), LIMITS).await;
    let both = request("edge", &[&[("user", "carol")], &[("plan", "free")]], 0);
    for _ in 0..3 {
        assert!(ok(&gw.ask(both.clone()).await));
    }
    let refused = gw.ask(both.clone()).await;
    assert!(!ok(&refused));
    assert!(!over(&refused, 0), "carol's own limit had room: {refused:?}");
    assert!(over(&refused, 1), "the plan's limit refused: {refused:?}");
    assert_eq!(refused.statuses[0].limit_remaining, 2, "carol's bucket untouched");
    assert_eq!(refused.statuses[1].current_limit.as_ref().unwrap().name, "free-plan");
    // Carol alone: 5 − 3 allowed requests, the refused one took nothing.
    let alone = gw.ask(request("edge", &[&[("user", "carol")]], 0)).await;
    assert!(ok(&alone));
    assert_eq!(alone.statuses[0].limit_remaining, 1);
    gw.stop().await;
}

#[tokio::test]
async fn a_blocked_value_refuses_the_request_without_touching_its_other_limits() {
    let gw = Gateway::start(config(), LIMITS).await;
    let blocked = gw.ask(request("edge", &[&[("user", "ivy")], &[("user", "mallory")]], 0)).await;
    assert!(!ok(&blocked) && over(&blocked, 1) && !over(&blocked, 0), "{blocked:?}");
    assert_eq!(blocked.statuses[1].current_limit.as_ref().unwrap().requests_per_unit, 0);
    let ivy = gw.ask(request("edge", &[&[("user", "ivy")]], 0)).await;
    assert_eq!(ivy.statuses[0].limit_remaining, 4, "ivy's bucket was not debited by the blocked request");
    gw.stop().await;
}

#[tokio::test]
async fn unmatched_unlimited_and_shadow_rules_never_refuse() {
    let gw = Gateway::start(config(), LIMITS).await;
    let unknown_domain = gw.ask(request("elsewhere", &[&[("user", "dave")]], 0)).await;
    assert!(ok(&unknown_domain) && unknown_domain.statuses[0].current_limit.is_none());
    let unknown_key = gw.ask(request("edge", &[&[("region", "eu")]], 0)).await;
    assert!(ok(&unknown_key) && unknown_key.statuses[0].current_limit.is_none());
    for _ in 0..3 {
        let health = gw.ask(request("edge", &[&[("path", "/health")]], 0)).await;
        assert!(ok(&health));
        assert_eq!(health.statuses[0].limit_remaining, u32::MAX);
    }
    // The shadow rule has one token an hour: the second request would be refused, and is answered OK.
    for _ in 0..2 {
        assert!(ok(&gw.ask(request("edge", &[&[("canary", "x")]], 0)).await));
    }
    let shadow = [("domain", "edge"), ("outcome", "shadow_refused")];
    assert_eq!(gw.metric("bucket_limit_decisions_total", &shadow).await, 1.0);
    // The unknown domain under the empty label, the unknown key under its (configured) domain.
    for domain in ["", "edge"] {
        let no_rule = [("domain", domain), ("outcome", "no_rule")];
        assert_eq!(gw.metric("bucket_limit_decisions_total", &no_rule).await, 1.0, "{domain:?}");
    }
    assert_eq!(gw.metric("bucket_limit_decisions_total", &[("outcome", "unlimited")]).await, 3.0);
    // An unknown domain is not a label of its own: callers choose domains, the label set must stay bounded.
    assert!(!gw.metrics().await.contains("elsewhere"));
    gw.stop().await;
}

#[tokio::test]
async fn global_shadow_mode_debits_and_counts_but_never_refuses() {
    let mut config = config();
    config.rls.shadow_mode = true;
    let gw = Gateway::start(config, LIMITS).await;
    let erin = request("edge", &[&[("user", "erin")]], 0);
    for _ in 0..8 {
        assert!(ok(&gw.ask(erin.clone()).await));
    }
    let shadow = [("domain", "edge"), ("outcome", "shadow_refused")];
    assert_eq!(gw.metric("bucket_limit_decisions_total", &shadow).await, 3.0);
    gw.stop().await;
}

#[tokio::test]
async fn a_cost_above_capacity_is_over_limit_not_an_error() {
    let gw = Gateway::start(config(), LIMITS).await;
    let answer = gw.ask(request("edge", &[&[("user", "frank")]], 6)).await;
    assert!(!ok(&answer) && over(&answer, 0), "{answer:?}");
    // hits_addend is the cost of every descriptor: 2 + 2 fits in 5, the third 2 does not.
    let two = request("edge", &[&[("user", "grace")]], 2);
    let allowed: Vec<bool> =
        futures::future::join_all((0..3).map(|_| gw.ask(two.clone()))).await.iter().map(ok).collect();
    assert_eq!(allowed.iter().filter(|a| **a).count(), 2, "{allowed:?}");
    gw.stop().await;
}

#[tokio::test]
async fn malformed_requests_are_invalid_argument_naming_the_field() {
    let gw = Gateway::start(config(), LIMITS).await;
    let long = "v".repeat(256);
    let cases = [
        (request("", &[&[("user", "a")]], 0), "domain"),
        (request("edge", &[], 0), "descriptors"),
        (request("edge", &[&[]], 0), "descriptors[0]"),
        (request("edge", &[&[("user", "a")], &[("", "b")]], 0), "descriptors[1].entries[0].key"),
        (request("edge", &[&[("user", &long)]], 0), "descriptors[0].entries[0].value"),
    ];
    for (bad, field) in cases {
        let status = gw.try_ask(bad).await.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{field}: {status:?}");
        assert!(status.message().contains(field), "{field}: {}", status.message());
    }
    gw.stop().await;
}

#[tokio::test]
async fn the_json_form_answers_like_envoyproxy_ratelimit_json() {
    let gw = Gateway::start(config(), LIMITS).await;
    let url = format!("{}/v1/ratelimit", gw.url);
    let body = serde_json::json!({
        "domain": "edge",
        "descriptors": [{"entries": [{"key": "plan", "value": "free"}]}],
        "hitsAddend": 2
    });
    let first = gw.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let first: serde_json::Value = first.json().await.unwrap();
    assert_eq!(first["overallCode"], "OK");
    assert_eq!(first["statuses"][0]["currentLimit"]["unit"], "HOUR");
    assert_eq!(first["statuses"][0]["limitRemaining"], 1);
    let second = gw.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(second.status(), 429);
    let second: serde_json::Value = second.json().await.unwrap();
    assert_eq!(second["statuses"][0]["code"], "OVER_LIMIT");
    let bad = gw.http.post(&url).json(&serde_json::json!({"domain": "", "descriptors": []})).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let bad: serde_json::Value = bad.json().await.unwrap();
    assert_eq!(bad["error"], "invalid_descriptor");
    gw.stop().await;
}

#[tokio::test]
async fn without_a_limits_file_there_is_no_grpc_port_and_the_json_route_says_why() {
    let config = Config { listen: "127.0.0.1:0".into(), ..config() };
    let running = bucket_api::start(config, slog::Logger::root(slog::Discard, slog::o!())).await.unwrap();
    assert!(running.grpc_addr().is_none());
    let url = format!("http://{}/v1/ratelimit", running.addr());
    let body = serde_json::json!({"domain": "edge", "descriptors": [{"entries": [{"key": "user", "value": "a"}]}]});
    let res = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 404);
    running.stop().await;
}

#[tokio::test]
async fn the_limits_file_is_reloaded_and_a_bad_edit_keeps_the_last_good_limits() {
    let gw = Gateway::start(config(), LIMITS).await;
    let henry = request("edge", &[&[("user", "henry")]], 0);
    assert_eq!(gw.ask(henry.clone()).await.statuses[0].current_limit.as_ref().unwrap().requests_per_unit, 5);

    // A good edit, written in place.
    std::fs::write(&gw.limits, LIMITS.replace("requests_per_unit: 5", "requests_per_unit: 50")).unwrap();
    let limit_of = |a: &envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse| {
        a.statuses[0].current_limit.as_ref().map(|l| l.requests_per_unit)
    };
    gw.eventually(henry.clone(), |a| limit_of(a) == Some(50)).await;

    // A bad edit: a misspelt key. The last good limits stay, and the rejection shows.
    std::fs::write(&gw.limits, LIMITS.replace("requests_per_unit: 3", "request_per_unit: 3")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ready = gw.readyz().await;
        if ready["limits"]["last_error"].as_str().is_some_and(|e| e.contains("request_per_unit")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the bad edit never showed in /readyz: {ready}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(gw.metric("bucket_limits_reload_total", &[("result", "rejected")]).await >= 1.0);
    assert_eq!(limit_of(&gw.ask(henry.clone()).await), Some(50));

    // An atomic replacement (`mv` over the file), as editors and ConfigMap updates do.
    let staged = gw.dir.path().join("staged.tmp");
    std::fs::write(&staged, LIMITS.replace("requests_per_unit: 5", "requests_per_unit: 7")).unwrap();
    std::fs::rename(&staged, &gw.limits).unwrap();
    gw.eventually(henry.clone(), |a| limit_of(a) == Some(7)).await;
    assert!(gw.readyz().await["limits"]["last_error"].is_null());
    gw.stop().await;
}
