//! The gateway front on every shared store, two instances at once: concurrent requests carrying several limits on
//! overlapping buckets take, per bucket, exactly the costs of the requests that were allowed — never more than the
//! capacity, and nothing for a refused request — and a store outage answers as the failure mode says.

mod common;
mod gateway_rig;
mod tiered_rig;

use std::collections::HashMap;

use bucket_api::config::{FailureMode, StoreKind};
use bucket_api::Config;
use bucket_testkit::Fault;
use gateway_rig::{ok, request, Gateway};
use tiered_rig::{patient_postgres, patient_redis, Backends};

/// Three buckets with room for 20, 20 and 12 (one token an hour: nothing refills during the test).
const LIMITS: &str = r#"
domain: shop
descriptors:
  - key: user
    rate_limit:
      unit: hour
      requests_per_unit: 20
  - key: team
    rate_limit:
      unit: hour
      requests_per_unit: 12
"#;

const CAPACITY: [(&str, &str, u64); 3] = [("user", "u1", 20), ("user", "u2", 20), ("team", "t", 12)];

/// Which buckets each kind of request carries: single limits and overlapping pairs and triples.
const SHAPES: [&[usize]; 5] = [&[0], &[0, 2], &[1, 2], &[0, 1, 2], &[2]];

async fn exact_across_two_instances(a: &Gateway, b: &Gateway) {
    let tasks: Vec<_> = (0..150)
        .map(|i| {
            let shape = SHAPES[i % SHAPES.len()];
            let cost = 1 + (i * 7 % 3) as u32;
            let entries: Vec<[(&str, &str); 1]> = shape.iter().map(|&b| [(CAPACITY[b].0, CAPACITY[b].1)]).collect();
            let descriptors: Vec<&[(&str, &str)]> = entries.iter().map(|e| &e[..]).collect();
            let req = request("shop", &descriptors, cost);
            let client = if i % 2 == 0 { a.grpc.clone() } else { b.grpc.clone() };
            tokio::spawn(async move {
                let answer = client.clone().should_rate_limit(req).await.expect("answered").into_inner();
                (shape, u64::from(cost), ok(&answer))
            })
        })
        .collect();
    let mut granted: HashMap<usize, u64> = HashMap::new();
    let mut refused = 0;
    for task in tasks {
        let (shape, cost, allowed) = task.await.unwrap();
        if allowed {
            for &bucket in shape {
                *granted.entry(bucket).or_default() += cost;
            }
        } else {
            refused += 1;
        }
    }
    assert!(refused > 0, "the load must exceed the capacity for the test to mean anything");
    for (bucket, &(key, value, capacity)) in CAPACITY.iter().enumerate() {
        // One more token through the other instance shows what is left: consumed = capacity − left.
        let probe = b.ask(request("shop", &[&[(key, value)]], 1)).await;
        let left = u64::from(probe.statuses[0].limit_remaining) + u64::from(ok(&probe));
        let consumed = capacity - left;
        let expected = granted.get(&bucket).copied().unwrap_or(0);
        assert_eq!(consumed, expected, "{key}={value}: consumed {consumed}, allowed requests cost {expected}");
        assert!(consumed <= capacity, "{key}={value}: {consumed} > {capacity}");
    }
}

async fn on_shared_store(store: StoreKind) {
    let backends = Backends::new().await;
    let config = patient_redis(patient_postgres(backends.config(store, 10)));
    let a = Gateway::start(config.clone(), LIMITS).await;
    let b = Gateway::beside(config, &a).await;
    exact_across_two_instances(&a, &b).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_one_instance_is_exact_under_concurrency() {
    let a = Gateway::start(Config { workers: 2, ..Config::default() }, LIMITS).await;
    exact_across_two_instances(&a, &a).await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_instances_are_exact_all_or_nothing() {
    on_shared_store(StoreKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_two_instances_are_exact_all_or_nothing() {
    on_shared_store(StoreKind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_two_instances_are_exact_all_or_nothing() {
    on_shared_store(StoreKind::Tiered).await;
}

async fn redis_down(mode: FailureMode) -> Result<(), tonic::Status> {
    let backends = Backends::new().await;
    let mut config = backends.config(StoreKind::Redis, 10);
    config.failure_mode = mode;
    let gw = Gateway::start(config, LIMITS).await;
    assert!(ok(&gw.ask(request("shop", &[&[("user", "u")]], 1)).await));
    backends.redis_proxy.set(Fault::Refuse);
    let answer = gw.try_ask(request("shop", &[&[("user", "u")], &[("team", "t")]], 1)).await;
    let failures = gw.metric("bucket_failure_mode_total", &[("mode", mode.as_str())]).await;
    assert!(failures >= 1.0, "the failure mode is counted");
    backends.redis_proxy.set(Fault::Pass);
    gw.stop().await;
    answer.map(|a| assert!(ok(&a), "{a:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_fail_open_answers_ok() {
    redis_down(FailureMode::FailOpen).await.expect("fail_open answers OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_fail_closed_answers_unavailable() {
    let status = redis_down(FailureMode::FailClosed).await.expect_err("fail_closed is a gRPC error");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
}
