//! The tester against bucket-api on the tiered store (Redis in front of PostgreSQL): all six scenarios pass,
//! cache-vs-db included (new-user, then redis).

mod support;

use bucket_api::config::StoreKind;
use bucket_tester::{run, Options, ScenarioName, Verdict};
use bucket_testkit::{database_url, RedisPrefix, TestSchema};

/// A fast policy, but slower than `against_api.rs`'s 20/s: a tiered request is a Redis script plus a committed
/// PostgreSQL write, ~20 ms on a loaded 2-core CI machine, and the refill scenario counts its tokens back one
/// request at a time after measuring the elapsed time, so at 20/s the tokens arriving during the count (one per
/// 50 ms) pushed it past its ±1 (seen: "6 tokens after 0.15s at 20/s; expected 3 ±1"). At 5/s one token takes
/// 200 ms, and the scenarios still finish in a few seconds.
const CAPACITY: u64 = 5;
const RATE: f64 = 5.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes_against_the_tiered_store() {
    let schema = TestSchema::new();
    let keys = RedisPrefix::shared();
    let mut config = bucket_api::Config {
        listen: "127.0.0.1:0".into(),
        store: StoreKind::Tiered,
        database_url: Some(database_url()),
        redis_url: Some(keys.url.clone()),
        capacity: CAPACITY,
        refill_per_sec: RATE,
        workers: 2,
        ..bucket_api::Config::default()
    };
    config.postgres.schema = Some(schema.name.clone());
    config.redis.key_prefix = keys.prefix.clone();
    let api = bucket_api::start(config, slog::Logger::root(slog::Discard, slog::o!())).await.expect("starts");
    let options = Options { target: support::url_of(&api), require_tiered: true, ..Options::default() };
    let report = run(&options).await.expect("api reachable");
    api.stop().await;

    assert_eq!(report.scenarios.len(), ScenarioName::ALL.len());
    for s in &report.scenarios {
        assert_eq!(s.verdict, Verdict::Pass, "{}: {}", s.name, s.reason);
    }
    assert_eq!(
        report.get(ScenarioName::CacheVsDb).map(|s| s.reason.as_str()),
        Some("new-user then redis: the row was created, then the cache answered")
    );
    assert_eq!(report.exit_code(), 0);
}
