//! The tiered service with its dependencies broken on purpose (README.md, "Stores: which to pick", tiered points 4 to 6): a fault
//! proxy in front of Redis and one in front of PostgreSQL switch between working, slow, hung, resetting and gone.
//! Every request must still be answered, in bounded time, never with a 5xx unless `fail_closed` says so, and no
//! fault may let a key be granted more than its capacity.

mod common;
mod tiered_rig;

use std::time::Duration;

use bucket_api::config::FailureMode;
use bucket_api::config::WriteMode::{Sync, WriteBehind};
use bucket_testkit::Fault;
use tiered_rig::{patient_postgres, patient_redis, tiered, Api, Backends, CapturedLog, Reply};

const FALLBACKS: &str = "bucket_fallbacks_total";
const UP: &str = "bucket_dependency_up";
const REDIS_TO_PG: [(&str, &str); 2] = [("from", "redis"), ("to", "postgres")];

/// Sends `n` concurrent requests for each key.
async fn burst(api: &Api, keys: &[&str], n: usize) -> Vec<Reply> {
    let requests = keys.iter().flat_map(|key| (0..n).map(move |_| api.get(key)));
    futures::future::join_all(requests).await
}

fn source(reply: &Reply) -> &str {
    reply.source.as_deref().unwrap_or("none")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_answered_from_postgres_and_stale_redis_data_never_regrants() {
    let backends = Backends::new().await;
    let log = CapturedLog::default();
    let api = Api::start(patient_postgres(tiered(&backends, 5, Sync)), log.logger()).await;
    let keys = ["a", "b", "c", "d"];
    for key in keys.iter().chain(&["untouched"]) {
        assert_eq!(source(&api.get(key).await), "new-user");
    }
    for _ in 0..2 {
        assert_eq!(api.get("drained").await.status, 200);
    }

    // Redis stops: connections reset, the port refuses.
    backends.redis_proxy.set(Fault::Refuse);
    let replies = burst(&api, &keys, 4).await;
    assert!(replies.iter().all(|r| r.status == 200 || r.status == 429), "{replies:?}");
    assert!(replies.iter().all(|r| source(r) == "postgres"), "{replies:?}");
    assert!(replies.iter().all(|r| r.took < Duration::from_secs(2)), "{replies:?}");
    // 4 of each key's 5 tokens are left: 4 requests each, all granted, by PostgreSQL.
    assert_eq!(replies.iter().filter(|r| r.status == 200).count(), 16);
    // Drain a key through PostgreSQL: it had 3 tokens left. (Exactly 3 requests: a refusal now could be answered
    // from the API's refusal cache after recovery, and this test wants the store to decide.)
    for _ in 0..3 {
        let reply = api.get("drained").await;
        if (reply.status, source(&reply)) != (200, "postgres") {
            log.dump();
        }
        assert_eq!((reply.status, source(&reply)), (200, "postgres"));
    }
    assert!(api.metric(FALLBACKS, &REDIS_TO_PG).await >= 19.0);
    assert_eq!(api.metric(UP, &[("dependency", "redis")]).await, 0.0);
    // Redis kept its data through the outage, and believes 3 tokens are left.
    assert_eq!(backends.redis_state("drained").await.map(|s| s.0), Some(3));

    // Redis comes back with that stale data: the keys PostgreSQL changed are deleted before Redis decides.
    backends.redis_proxy.set(Fault::Pass);
    api.wait_for_metric(UP, &[("dependency", "redis")], Duration::from_secs(5), |v| v == 1.0).await;
    let after = api.get("drained").await;
    assert_eq!((after.status, source(&after)), (429, "postgres"), "reloaded from PostgreSQL, still empty");
    let pg = backends.pg_state("drained").await;
    assert_eq!(pg.map(|s| (s.0, s.2)), Some((0, 5)));
    assert_eq!(backends.redis_state("drained").await, pg, "Redis now holds PostgreSQL's state");
    // A key PostgreSQL did not touch kept its Redis state and is served by Redis again.
    let untouched = api.get("untouched").await;
    assert_eq!((untouched.status, source(&untouched)), (200, "redis"));
    assert!(api.metric("bucket_redis_invalidations_total", &[]).await >= 5.0);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_decided_in_redis_queued_and_replayed() {
    let backends = Backends::new().await;
    let api = Api::quiet(patient_redis(tiered(&backends, 10, Sync))).await;
    for key in ["q1", "q2"] {
        assert_eq!(api.get(key).await.status, 200);
    }
    let before = backends.pg_state("q1").await.expect("row committed in sync mode");

    // PostgreSQL hangs: connections stay open, nothing answers.
    backends.pg_proxy.set(Fault::Stall);
    let replies = burst(&api, &["q1", "q2", "fresh"], 4).await;
    assert!(replies.iter().all(|r| r.status == 200 && source(r) == "redis"), "{replies:?}");
    // Bounded by one statement timeout (300 ms), paid once by whoever found PostgreSQL down.
    assert!(replies.iter().all(|r| r.took < Duration::from_secs(2)), "{replies:?}");
    assert!(api.metric("bucket_write_queue_depth", &[]).await > 0.0);
    assert_eq!(api.metric(UP, &[("dependency", "postgres")]).await, 0.0);
    assert!(api.metric(FALLBACKS, &[("from", "postgres"), ("to", "queue")]).await > 0.0);
    assert_eq!(backends.pg_state("q1").await, Some(before), "nothing reached PostgreSQL");

    backends.pg_proxy.set(Fault::Pass);
    api.wait_for_metric("bucket_write_queue_depth", &[], Duration::from_secs(5), |v| v == 0.0).await;
    api.wait_for_metric(UP, &[("dependency", "postgres")], Duration::from_secs(5), |v| v == 1.0).await;
    for key in ["q1", "q2", "fresh"] {
        let redis = backends.redis_state(key).await.expect("in redis");
        assert_eq!(backends.pg_state(key).await, Some(redis), "{key}: PostgreSQL equals Redis");
    }
    assert_eq!(backends.pg_state("q1").await.map(|s| (s.0, s.2)), Some((5, 5)));
    api.stop().await;
}

/// Both dependencies hang; the answers must come within the timeouts, in the configured failure mode.
async fn both_down(mode: FailureMode) -> Vec<Reply> {
    both_down_logged(mode, &CapturedLog::default()).await
}

async fn both_down_logged(mode: FailureMode, log: &CapturedLog) -> Vec<Reply> {
    let backends = Backends::new().await;
    let mut config = tiered(&backends, 5, Sync);
    config.failure_mode = mode;
    let api = Api::start(config, log.logger()).await;
    assert_eq!(api.get("k").await.status, 200);
    backends.redis_proxy.set(Fault::Stall);
    backends.pg_proxy.set(Fault::Stall);
    let mut replies = Vec::new();
    for _ in 0..3 {
        replies.push(api.get("k").await);
    }
    replies.extend(burst(&api, &["k", "other"], 5).await);
    assert!(replies.iter().all(|r| r.took < Duration::from_secs(3)), "{replies:?}");
    backends.redis_proxy.set(Fault::Pass);
    backends.pg_proxy.set(Fault::Pass);
    api.stop().await;
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_down_fail_open_allows_marked_and_promptly() {
    let replies = both_down(FailureMode::FailOpen).await;
    assert!(replies.iter().all(|r| r.status == 200 && source(r) == "fail-open"), "{replies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_down_fail_closed_answers_503_with_retry_after_promptly() {
    let log = CapturedLog::default();
    let started = std::time::Instant::now();
    let replies = both_down_logged(FailureMode::FailClosed, &log).await;
    assert!(replies.iter().all(|r| r.status == 503 && r.retry_after.as_deref() == Some("1")), "{replies:?}");
    // The outage is logged, but not once per request: the first failure, then at most one line per interval,
    // each counting the failures it stands for (`log_throttle.rs`).
    let lines = log.matching("store failed; answering with the failure mode");
    let intervals = started.elapsed().as_secs() / bucket_api::log_throttle::LOG_EVERY.as_secs();
    assert!(!lines.is_empty() && lines.len() as u64 <= 1 + intervals, "{} replies, lines {lines:?}", replies.len());
    assert!(lines[0].contains("suppressed=0") && lines[0].contains("mode=fail_closed"), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_redis_falls_back_within_its_timeout_and_returns_without_over_admitting() {
    let backends = Backends::new().await;
    let api = Api::quiet(patient_postgres(tiered(&backends, 5, Sync))).await;
    let mut granted = 0;
    for _ in 0..2 {
        granted += usize::from(api.get("slow").await.status == 200);
    }
    // Three times the 100 ms command timeout, each way.
    backends.redis_proxy.set(Fault::Latency(Duration::from_millis(300)));
    for _ in 0..2 {
        let reply = api.get("slow").await;
        assert_eq!((reply.status, source(&reply)), (200, "postgres"), "{reply:?}");
        // Redis timeout (100 ms) + the PostgreSQL path, with a wide margin for a loaded machine.
        assert!(reply.took < Duration::from_millis(1500), "{reply:?}");
        granted += 1;
    }
    assert!(api.metric(FALLBACKS, &REDIS_TO_PG).await >= 1.0);

    backends.redis_proxy.set(Fault::Pass);
    api.wait_for_metric(UP, &[("dependency", "redis")], Duration::from_secs(5), |v| v == 1.0).await;
    // The scripts that timed out may still have run in Redis (spending tokens there), which only ever errs on
    // the side of refusing; what counts is that the five tokens are never exceeded.
    let mut sources = Vec::new();
    for _ in 0..5 {
        let reply = api.get("slow").await;
        granted += usize::from(reply.status == 200);
        sources.push(reply.source.unwrap_or_default());
    }
    assert_eq!(granted, 5, "{sources:?}");
    assert_eq!(sources.last().map(String::as_str), Some("redis"), "{sources:?}");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_resetting_connections_under_load_costs_no_errors_and_recovers_in_seconds() {
    let backends = Backends::new().await;
    let api = Api::quiet(patient_postgres(tiered(&backends, 50, Sync))).await;
    let keys = ["r1", "r2", "r3", "r4"];
    let warm = burst(&api, &keys, 2).await;
    assert!(warm.iter().all(|r| r.status == 200), "{warm:?}");
    let (resets, load) = tokio::join!(
        async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            backends.redis_proxy.set(Fault::Reset);
        },
        burst(&api, &keys, 25)
    );
    let () = resets;
    let mut replies = warm;
    replies.extend(load);
    replies.extend(burst(&api, &keys, 5).await);
    assert!(replies.iter().all(|r| r.status == 200 || r.status == 429), "{replies:?}");

    backends.redis_proxy.set(Fault::Pass);
    let started = std::time::Instant::now();
    api.wait_for_metric(UP, &[("dependency", "redis")], Duration::from_secs(5), |v| v == 1.0).await;
    let recovery = started.elapsed();
    let tail = burst(&api, &keys, 2).await;
    assert!(tail.iter().all(|r| source(r) == "redis" || source(r) == "postgres"), "{tail:?}");
    let again = burst(&api, &keys, 1).await;
    assert!(again.iter().all(|r| source(r) == "redis"), "{again:?}");
    replies.extend(tail);
    replies.extend(again);
    // 32 + 8 + 4 = 44 requests per key of capacity 50: none may be refused, and none granted twice is shown by
    // PostgreSQL holding exactly one version per grant.
    for key in keys {
        let (tokens, _, version) = backends.pg_state(key).await.expect("row");
        assert!(tokens + version <= 50, "{key}: {tokens} left after {version} grants");
    }
    // No pool exhaustion: connections through the proxy stay within the pool size (32), resets included.
    assert!(backends.redis_proxy.open_connections() <= 32, "{} open", backends.redis_proxy.open_connections());
    println!("redis marked up again {recovery:?} after the resets stopped");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stall_fills_the_bounded_queue_reports_drops_then_drains() {
    let backends = Backends::new().await;
    let mut config = patient_redis(tiered(&backends, 10, WriteBehind));
    config.tiered.queue_capacity = 3;
    let log = CapturedLog::default();
    let api = Api::start(config, log.logger()).await;
    assert_eq!(api.get("w0").await.status, 200);
    api.wait_for_metric("bucket_write_queue_depth", &[], Duration::from_secs(5), |v| v == 0.0).await;

    backends.pg_proxy.set(Fault::Stall);
    // Six keys, three places: whatever does not fit is dropped, counted and logged; every request is answered.
    let keys = ["w1", "w2", "w3", "w4", "w5", "w6"];
    for key in keys {
        let reply = api.get(key).await;
        assert_eq!((reply.status, source(&reply)), (200, "redis"), "{reply:?}");
    }
    // Queued and in-flight writes together never exceed the bound, however often the flusher retries.
    assert_eq!(api.metric("bucket_write_queue_depth", &[]).await, 3.0);
    assert_eq!(api.metric("bucket_write_queue_dropped_total", &[]).await, 3.0);
    let dropped = 3.0;
    assert!(log.contains("write queue full"), "the drop is logged");

    backends.pg_proxy.set(Fault::Pass);
    api.wait_for_metric("bucket_write_queue_depth", &[], Duration::from_secs(5), |v| v == 0.0).await;
    let mut landed = 0;
    for key in keys {
        if let Some(row) = backends.pg_state(key).await {
            assert_eq!(Some(row), backends.redis_state(key).await, "{key}");
            landed += 1;
        }
    }
    // Every write either reached PostgreSQL or was counted as dropped: none vanished silently.
    assert_eq!(landed as f64, keys.len() as f64 - dropped, "{landed} rows, {dropped} dropped");
    api.stop().await;
}
