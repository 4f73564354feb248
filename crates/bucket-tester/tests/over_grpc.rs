//! The tester over gRPC against the real bucket-api's gateway front (memory store, a limits file in a temporary
//! directory), in-process and as the compiled binary: every scenario passes as Envoy would see the limits, the
//! capacity is read from the header or from a fresh bucket, and servers that don't limit as configured FAIL.

mod support;

use std::process::Command;

use bucket_api::rls::config::ResponseHeaders;
use bucket_tester::{run, Descriptors, GrpcTarget, Options, ScenarioName, Verdict};

/// Fast rules, so refill and drip finish in about a second each.
const LIMITS: &str = r#"
domain: tester
descriptors:
  # Capacity 5 (burst), refilled at 20 per second.
  - key: user
    rate_limit:
      name: per-user
      unit: second
      requests_per_unit: 20
      burst: 5
  # Nested: free-plan users, 5 per second each.
  - key: plan
    value: free
    descriptors:
      - key: user
        rate_limit:
          name: free-per-user
          unit: second
          requests_per_unit: 5
  # One bucket for every /shared/* path: users sharing it are not independent.
  - key: path
    value: /shared/*
    share_threshold: true
    rate_limit:
      unit: hour
      requests_per_unit: 5
  # Decided and counted, never refused.
  - key: canary
    shadow_mode: true
    rate_limit:
      unit: second
      requests_per_unit: 5
"#;

fn grpc(url: String, descriptors: &[&str], user_key: Option<&str>, scenarios: Vec<ScenarioName>) -> Options {
    let raw: Vec<String> = descriptors.iter().map(|d| d.to_string()).collect();
    let descriptors = Descriptors::parse(&raw, user_key).expect("valid descriptors");
    Options {
        target: url,
        grpc: Some(GrpcTarget { domain: "tester".into(), descriptors }),
        scenarios,
        ..Options::default()
    }
}

/// Runs the compiled tester with `args` (blocking, so off the async workers).
async fn tester(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_bucket-tester")).args(args).output().expect("binary runs")
    })
    .await
    .expect("runner thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes_over_grpc_and_cache_vs_db_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let api = support::start_gateway(LIMITS, dir.path(), |_| {}).await;
    let report = run(&grpc(support::grpc_url_of(&api), &[], Some("user"), vec![])).await.expect("reachable");
    api.stop().await;

    let policy = report.policy.as_ref().expect("policy learned");
    assert_eq!(policy.name, "per-user");
    assert_eq!((policy.capacity, policy.capacity_from), (5, "RateLimit-Policy"));
    assert_eq!((policy.refill_per_sec, policy.rate_from), (20.0, "current_limit"));
    assert_eq!(report.scenarios.len(), ScenarioName::ALL.len());
    for s in &report.scenarios {
        let expected = if s.name == ScenarioName::CacheVsDb { Verdict::Skip } else { Verdict::Pass };
        assert_eq!(s.verdict, expected, "{}: {}", s.name, s.reason);
    }
    let burst = report.get(ScenarioName::Burst).unwrap();
    // The rule refills 20 tokens/s, so a burst slowed by a busy machine may see a token come back mid-run (the
    // tester then sends more and allows for it in its verdict, checked above): the capacity part is exact, the
    // counts are bounded.
    assert!(burst.reason.ends_with("(capacity 5); headers consistent"), "{}", burst.reason);
    let allowed: u64 = burst.reason.split(' ').next().and_then(|n| n.parse().ok()).expect("count first");
    assert!(allowed >= 5, "{}", burst.reason);
    assert!(report.get(ScenarioName::CacheVsDb).unwrap().reason.starts_with("over gRPC no answer names the store"));
    assert_eq!(report.exit_code(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_response_headers_the_burst_is_read_from_a_fresh_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let api = support::start_gateway(LIMITS, dir.path(), |c| c.rls.response_headers = ResponseHeaders::None).await;
    let scenarios = vec![ScenarioName::Burst, ScenarioName::Refill, ScenarioName::Concurrent, ScenarioName::MultiUser];
    let report = run(&grpc(support::grpc_url_of(&api), &["user={user}"], None, scenarios)).await.expect("reachable");
    api.stop().await;

    let policy = report.policy.as_ref().expect("policy learned");
    assert_eq!((policy.capacity, policy.capacity_from, policy.refill_per_sec), (5, "limit_remaining", 20.0));
    for s in &report.scenarios {
        assert_eq!(s.verdict, Verdict::Pass, "{}: {}", s.name, s.reason);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_passes_a_nested_descriptor_and_prints_only_json() {
    let dir = tempfile::tempdir().unwrap();
    let api = support::start_gateway(LIMITS, dir.path(), |_| {}).await;
    let url = support::grpc_url_of(&api);
    let out = tester(&["--grpc", &url, "--domain", "tester", "--descriptor", "plan=free,user={user}", "--json"]).await;
    api.stop().await;

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(
        (report["passed"].as_u64(), report["failed"].as_u64(), report["skipped"].as_u64()),
        (Some(5), Some(0), Some(1)),
        "{report:#}"
    );
    assert_eq!(report["policy"]["name"], "free-per-user");
    assert_eq!(report["policy"]["capacity"], 5);
    assert_eq!(report["policy"]["refill_per_sec"], 5.0);
    assert_eq!(report["target"], url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_that_never_refuses_fails_burst_and_concurrent_and_the_binary_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let api = support::start_gateway(LIMITS, dir.path(), |_| {}).await;
    let url = support::grpc_url_of(&api);
    // A shadow rule reports its limit (5 per second) but answers OK: Envoy would let everything through.
    let report = run(&grpc(url.clone(), &["canary={user}"], None, vec![ScenarioName::Burst, ScenarioName::Concurrent]))
        .await
        .expect("reachable");
    let binary = tester(&["--grpc", &url, "--domain", "tester", "--user-key", "canary", "--scenario", "burst"]).await;
    api.stop().await;

    let burst = report.get(ScenarioName::Burst).expect("burst ran");
    assert_eq!(burst.verdict, Verdict::Fail);
    assert!(burst.reason.starts_with("over-admitted: 10 of 10 allowed, capacity 5"), "{}", burst.reason);
    let concurrent = report.get(ScenarioName::Concurrent).expect("concurrent ran");
    assert_eq!(concurrent.verdict, Verdict::Fail);
    assert!(concurrent.reason.starts_with("over-admitted: 20 of 20 allowed"), "{}", concurrent.reason);
    assert_eq!(report.exit_code(), 1);

    assert_eq!(binary.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&binary.stdout);
    assert!(stdout.contains("[burst] #1 user=tester-burst-"), "per-request lines: {stdout}");
    assert!(stdout.contains(" OK remaining="), "gRPC codes in the lines: {stdout}");
    assert!(stdout.contains("0 passed, 1 failed, 0 skipped"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_sharing_one_bucket_fail_multi_user() {
    let dir = tempfile::tempdir().unwrap();
    let api = support::start_gateway(LIMITS, dir.path(), |_| {}).await;
    // Every /shared/* path is one bucket, so the user in the path makes no bucket of its own.
    let opts = grpc(support::grpc_url_of(&api), &["path=/shared/{user}"], None, vec![ScenarioName::MultiUser]);
    let report = run(&opts).await.expect("reachable");
    api.stop().await;

    let multi = report.get(ScenarioName::MultiUser).expect("multi-user ran");
    assert_eq!(multi.verdict, Verdict::Fail);
    assert!(multi.reason.contains("users are not independent (do the rules give each value"), "{}", multi.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_no_rule_matches_fail_every_scenario_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let api = support::start_gateway(LIMITS, dir.path(), |_| {}).await;
    let opts = grpc(support::grpc_url_of(&api), &["region={user}"], None, vec![ScenarioName::Burst]);
    let report = run(&opts).await.expect("reachable");
    api.stop().await;

    let burst = report.get(ScenarioName::Burst).expect("burst reported");
    assert_eq!(burst.verdict, Verdict::Fail);
    assert!(burst.reason.contains("has no current_limit: no rule in the domain matched it"), "{}", burst.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_problems_exit_2_with_the_reason() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let nowhere = format!("http://127.0.0.1:{port}");
    let cases: [(&[&str], &str); 5] = [
        (&["--grpc", &nowhere, "--user-key", "user"], "--grpc needs --domain NAME"),
        (&["--grpc", &nowhere, "--domain", "d", "--descriptor", "user=alice"], "no descriptor varies by user"),
        (&["--grpc", &nowhere, "--domain", "d", "--user-key", "u", "--target", &nowhere], "--target and --grpc"),
        (&["--grpc", &nowhere, "--domain", "d", "--user-key", "u", "--require-tiered"], "--require-tiered needs HTTP"),
        (&["--grpc", &nowhere, "--domain", "d", "--user-key", "u"], "the gRPC port is open only when BUCKET_LIMITS"),
    ];
    for (args, expected) in cases {
        let out = tester(args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
