//! `--instances`: the concurrent scenario spread over several API instances passes when they share one store
//! and catches the over-admission when they don't.

mod support;

use bucket_store::MemoryStore;
use bucket_tester::{run, Options, ScenarioName, Verdict};

const CAPACITY: u64 = 5;
/// Slow enough that nothing refills while the requests are in flight, so the count is exact.
const RATE: f64 = 0.5;

fn concurrent_over(instances: Vec<String>) -> Options {
    Options {
        target: instances[0].clone(),
        instances,
        scenarios: vec![ScenarioName::Concurrent],
        concurrency: Some(30),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_one_store_never_over_admit() {
    let store = MemoryStore::new();
    let a = support::contract_server(store.clone(), CAPACITY, RATE);
    let b = support::contract_server(store, CAPACITY, RATE);
    let report = run(&concurrent_over(vec![a.url.clone(), b.url.clone()])).await.expect("instances reachable");
    a.stop().await;
    b.stop().await;

    let s = report.get(ScenarioName::Concurrent).expect("concurrent ran");
    assert_eq!(s.verdict, Verdict::Pass, "{}", s.reason);
    assert!(s.reason.starts_with("5 of 30 allowed at once over 2 instances"), "{}", s.reason);
    assert_eq!(s.requests, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_with_separate_memory_stores_are_caught_over_admitting() {
    let a = support::start_api(CAPACITY, RATE).await;
    let b = support::start_api(CAPACITY, RATE).await;
    let report = run(&concurrent_over(vec![support::url_of(&a), support::url_of(&b)])).await.expect("reachable");
    a.stop().await;
    b.stop().await;

    let s = report.get(ScenarioName::Concurrent).expect("concurrent ran");
    assert_eq!(s.verdict, Verdict::Fail);
    assert!(s.reason.starts_with("over-admitted: 10 of 30 allowed over 2 instances"), "{}", s.reason);
    assert!(s.reason.ends_with("the instances may not share one store"), "{}", s.reason);
    assert_eq!(report.exit_code(), 1);
}
