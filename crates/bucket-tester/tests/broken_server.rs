//! The tester against servers that break the contract: the scenarios that should notice must FAIL, with reasons,
//! and the binary must exit 1. Catching these is the tester's reason to exist, so it is tested like any behaviour.

mod support;

use std::process::Command;

use bucket_store::MemoryStore;
use bucket_tester::{run, Options, ScenarioName, Verdict};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_refuses_fails_burst_and_concurrent() {
    let server = support::always_allows();
    let opts = Options {
        target: server.url.clone(),
        scenarios: vec![ScenarioName::Burst, ScenarioName::Concurrent, ScenarioName::MultiUser],
        ..Options::default()
    };
    let report = run(&opts).await.expect("server reachable");
    let url = server.url.clone();
    let binary = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_bucket-tester"))
            .args(["--target", &url, "--quiet", "--scenario", "burst"])
            .output()
            .expect("binary runs")
    })
    .await
    .expect("runner thread");
    server.stop().await;

    let burst = report.get(ScenarioName::Burst).expect("burst ran");
    assert_eq!(burst.verdict, Verdict::Fail);
    assert!(burst.reason.contains("over-admitted: 10 of 10 allowed"), "{}", burst.reason);
    let concurrent = report.get(ScenarioName::Concurrent).expect("concurrent ran");
    assert_eq!(concurrent.verdict, Verdict::Fail);
    assert!(concurrent.reason.contains("over-admitted: 20 of 20 allowed"), "{}", concurrent.reason);
    assert_eq!(report.get(ScenarioName::MultiUser).map(|s| s.verdict), Some(Verdict::Fail));
    assert_eq!(report.exit_code(), 1);

    assert_eq!(binary.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&binary.stdout);
    assert!(stdout.contains("FAIL") && stdout.contains("0 passed, 1 failed, 0 skipped"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refilling_slower_than_it_says_fails_refill_and_drip() {
    // Claims 20 tokens/s, refills 5/s: after the 125 ms the tester waits for 2.5 tokens, none has arrived.
    let server = support::advertising(MemoryStore::new(), 5, 5.0, 20.0);
    let opts = Options {
        target: server.url.clone(),
        scenarios: vec![ScenarioName::Refill, ScenarioName::Drip],
        ..Options::default()
    };
    let report = run(&opts).await.expect("server reachable");
    server.stop().await;

    let refill = report.get(ScenarioName::Refill).expect("refill ran");
    assert_eq!(refill.verdict, Verdict::Fail);
    assert!(refill.reason.starts_with("0 tokens after"), "{}", refill.reason);
    let drip = report.get(ScenarioName::Drip).expect("drip ran");
    assert_eq!(drip.verdict, Verdict::Fail);
    assert!(drip.reason.starts_with("paced request 1 of 8 refused"), "{}", drip.reason);
}
