//! The tester against the real bucket-api, in-process and as the compiled binary: every scenario passes, and
//! cache-vs-db is skipped because the service runs with the memory store.

mod support;

use std::process::Command;

use bucket_tester::{run, Options, ScenarioName, Verdict};

/// A fast policy, so the refill and drip scenarios finish in about a second each.
const CAPACITY: u64 = 5;
const RATE: f64 = 20.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes_against_bucket_api() {
    let api = support::start_api(CAPACITY, RATE).await;
    let report = run(&Options { target: support::url_of(&api), ..Options::default() }).await.expect("api reachable");
    api.stop().await;

    let policy = report.policy.as_ref().expect("policy learned");
    assert_eq!((policy.capacity, policy.refill_per_sec, policy.rate_from), (CAPACITY, RATE, "body"));
    assert_eq!(report.scenarios.len(), ScenarioName::ALL.len());
    for s in &report.scenarios {
        let expected = if s.name == ScenarioName::CacheVsDb { Verdict::Skip } else { Verdict::Pass };
        assert_eq!(s.verdict, expected, "{}: {}", s.name, s.reason);
        assert!(s.requests > 0, "{} sent no requests", s.name);
    }
    assert_eq!(
        report.get(ScenarioName::CacheVsDb).map(|s| s.reason.as_str()),
        Some("server uses the memory store: no cache or database to compare")
    );
    assert_eq!(report.exit_code(), 0);
}

/// Runs the compiled tester with `args` (blocking, so off the async workers).
async fn tester(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_bucket-tester")).args(args).output().expect("binary runs")
    })
    .await
    .expect("runner thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_zero_and_prints_only_json() {
    let api = support::start_api(CAPACITY, RATE).await;
    let url = support::url_of(&api);
    let all = tester(vec!["--target".into(), url.clone(), "--json".into()]).await;
    let tiered = tester(
        ["--target", &url, "--json", "--scenario", "cache-vs-db", "--require-tiered"].map(String::from).to_vec(),
    )
    .await;
    api.stop().await;

    let stderr = String::from_utf8_lossy(&all.stderr);
    assert_eq!(all.status.code(), Some(0), "stderr: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&all.stdout).expect("stdout is one JSON document");
    assert_eq!(
        (report["passed"].as_u64(), report["failed"].as_u64(), report["skipped"].as_u64()),
        (Some(5), Some(0), Some(1))
    );
    assert_eq!(report["policy"]["capacity"], CAPACITY);
    assert_eq!(report["scenarios"][0]["name"], "burst");

    // --require-tiered turns the memory-store skip into a failure, and the exit code follows.
    assert_eq!(tiered.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&tiered.stdout).expect("stdout is one JSON document");
    assert_eq!(report["scenarios"][0]["verdict"], "fail");
}
