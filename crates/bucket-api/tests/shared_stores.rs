//! Two `bucket-api` instances sharing one store, hit concurrently over HTTP: the shared stores never grant more
//! than the bucket holds, whichever instance a request reaches (exactly C of N).

mod common;
mod tiered_rig;

use std::time::Duration;

use bucket_api::config::{FailureMode, StoreKind};
use tiered_rig::{Api, Backends};

const CAPACITY: u64 = 50;
const REQUESTS: usize = 200;

/// Fires `REQUESTS` concurrent `GET /` for one key, alternating between the instances; returns (200s, 429s).
async fn hammer(apis: &[Api; 2], key: &str) -> (usize, usize) {
    let requests = (0..REQUESTS).map(|i| apis[i % 2].get(key));
    let replies = futures::future::join_all(requests).await;
    let count = |status| replies.iter().filter(|r| r.status == status).count();
    let (allowed, denied) = (count(200), count(429));
    assert_eq!(allowed + denied, REQUESTS, "only 200 and 429 expected: {replies:?}");
    assert!(replies.iter().all(|r| r.source.as_deref() != Some("fail-open")), "{replies:?}");
    (allowed, denied)
}

async fn two_instances_grant_exactly_capacity(store: StoreKind) {
    let backends = Backends::new().await;
    // One after the other, as a rolling deploy would; the schema already exists, so neither migrates.
    let config = || {
        let mut config = backends.config(store, CAPACITY);
        // A store failure must show, not pass as a fail-open 200; and this test proves atomicity, not latency,
        // so the bounds are generous for a loaded 2-core CI machine.
        config.failure_mode = FailureMode::FailClosed;
        config.postgres.connect_timeout = Duration::from_secs(10);
        config.postgres.statement_timeout = Duration::from_secs(10);
        config.redis.command_timeout = Duration::from_secs(5);
        config.redis.connect_timeout = Duration::from_secs(5);
        config.tiered.policy_cache_ttl = Duration::from_secs(1);
        config
    };
    let apis = [Api::quiet(config()).await, Api::quiet(config()).await];
    assert_eq!(hammer(&apis, "hot").await, (50, 150), "store {store:?}");
    // A second key, now that every pool is warm.
    assert_eq!(hammer(&apis, "hot-2").await, (50, 150), "store {store:?}");
    if store != StoreKind::Redis {
        // PostgreSQL holds exactly what was granted: committed before each answer (sync writes).
        let (tokens, _, version) = backends.pg_state("hot").await.expect("row");
        assert_eq!((tokens, version), (0, 50), "store {store:?}");
    }
    let [a, b] = apis;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_instances_never_over_admit() {
    two_instances_grant_exactly_capacity(StoreKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_redis_instances_never_over_admit() {
    two_instances_grant_exactly_capacity(StoreKind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tiered_instances_never_over_admit() {
    two_instances_grant_exactly_capacity(StoreKind::Tiered).await;
}
