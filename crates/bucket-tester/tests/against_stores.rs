//! The tester against bucket-api on each shared store: every scenario passes on PostgreSQL, Redis and tiered
//! (Redis in front of PostgreSQL). cache-vs-db passes on tiered (new-user, then redis) and is skipped, with the
//! store named, on the others: they have no cache in front of a database, which is not a fault.

mod support;

use bucket_api::config::StoreKind;
use bucket_tester::{run, Options, Report, ScenarioName, Verdict};
use bucket_testkit::{database_url, RedisPrefix, TestSchema};

/// A fast policy, but slower than `against_api.rs`'s 20/s: a tiered request is a Redis script plus a committed
/// PostgreSQL write, ~20 ms on a loaded 2-core CI machine, and the refill scenario counts its tokens back one
/// request at a time after measuring the elapsed time, so at 20/s the tokens arriving during the count (one per
/// 50 ms) pushed it past its ±1 (seen: "6 tokens after 0.15s at 20/s; expected 3 ±1"). At 5/s one token takes
/// 200 ms, and the scenarios still finish in a few seconds.
const CAPACITY: u64 = 5;
const RATE: f64 = 5.0;

/// Runs the tester with `options` against bucket-api on `store`, in a schema and key prefix of its own.
async fn run_against(store: StoreKind, options: Options) -> Report {
    let schema = TestSchema::new();
    let keys = RedisPrefix::shared();
    let mut config = bucket_api::Config {
        listen: "127.0.0.1:0".into(),
        store,
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
    let options = Options { target: support::url_of(&api), ..options };
    let report = run(&options).await.expect("api reachable");
    api.stop().await;
    report
}

/// Every scenario but cache-vs-db passed, and cache-vs-db ended as `verdict` with `reason`.
fn assert_report(report: &Report, verdict: Verdict, reason: &str) {
    assert_eq!(report.scenarios.len(), ScenarioName::ALL.len());
    for s in report.scenarios.iter().filter(|s| s.name != ScenarioName::CacheVsDb) {
        assert_eq!(s.verdict, Verdict::Pass, "{}: {}", s.name, s.reason);
    }
    let cache = report.get(ScenarioName::CacheVsDb).expect("cache-vs-db ran");
    assert_eq!((cache.verdict, cache.reason.as_str()), (verdict, reason));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes_against_the_tiered_store() {
    let report = run_against(StoreKind::Tiered, Options { require_tiered: true, ..Options::default() }).await;
    assert_report(&report, Verdict::Pass, "new-user then redis: the row was created, then the cache answered");
    assert_eq!(report.exit_code(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_vs_db_is_skipped_against_the_redis_store() {
    let report = run_against(StoreKind::Redis, Options::default()).await;
    assert_report(&report, Verdict::Skip, "server uses the redis store, not tiered: no cache in front of a database");
    assert_eq!(report.exit_code(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_vs_db_is_skipped_against_the_postgres_store() {
    let report = run_against(StoreKind::Postgres, Options::default()).await;
    assert_report(
        &report,
        Verdict::Skip,
        "server uses the postgres store, not tiered: no cache in front of a database",
    );
    assert_eq!(report.exit_code(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_tiered_fails_cache_vs_db_against_the_redis_store() {
    let only = Options { scenarios: vec![ScenarioName::CacheVsDb], require_tiered: true, ..Options::default() };
    let report = run_against(StoreKind::Redis, only).await;
    let cache = report.get(ScenarioName::CacheVsDb).expect("cache-vs-db ran");
    assert_eq!(cache.verdict, Verdict::Fail, "{}", cache.reason);
    assert!(cache.reason.ends_with("and --require-tiered was given"), "{}", cache.reason);
    assert_eq!(report.exit_code(), 1);
}
