//! The Redis store's shared (multiplexed) connections, through a fault proxy in front of the shared Redis: how
//! many connections concurrent calls use, and what a stalled or reset connection costs the calls sharing it.

use std::time::{Duration, Instant};

use bucket_core::Policy;
use bucket_store::redis::{RedisConfig, RedisStore};
use bucket_store::{Store, StoreError};
use bucket_testkit::redis_server::shared_upstream;
use bucket_testkit::{Fault, FaultProxy, RedisPrefix};
use futures::future::join_all;

/// Capacity 50, one token an hour: nothing refills during a test.
fn fifty_per_hour() -> Policy {
    Policy::from_interval_us(50, 3_600_000_000).unwrap()
}

/// A store through `proxy` with at most `pool_size` connections and a 150 ms bound per call.
fn store(prefix: &RedisPrefix, proxy: &FaultProxy, pool_size: usize) -> RedisStore {
    let mut config: RedisConfig = prefix.config(&proxy.redis_url());
    config.pool_size = pool_size;
    config.command_timeout = Duration::from_millis(150);
    config.connect_timeout = Duration::from_millis(500);
    RedisStore::connect(config).unwrap()
}

/// Waits (up to 2 s) until `done` holds: the proxy's counters follow socket events asynchronously.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_at_most_pool_size_connections_and_sequential_ones_one() {
    let prefix = RedisPrefix::shared();
    let proxy = FaultProxy::start(shared_upstream()).await;
    let store = store(&prefix, &proxy, 3);
    let policy = fifty_per_hour();

    // One call at a time never needs a second connection.
    for i in 0..20 {
        assert!(store.check(&format!("seq-{i}"), &policy, 1).await.unwrap().decision.allowed);
    }
    assert_eq!(proxy.accepted(), 1);

    // 300 calls at once, in three waves: never more than three connections, and all of them answered.
    for wave in 0..3 {
        let calls = (0..100).map(|i| store.check_owned(format!("w{wave}-{i}"), policy));
        for result in join_all(calls).await {
            assert!(result.unwrap().decision.allowed);
        }
        assert!(store.pool_status().size <= 3, "{:?}", store.pool_status());
    }
    assert!(proxy.accepted() <= 3, "{} connections opened", proxy.accepted());
    assert!(proxy.open_connections() <= 3, "{} open", proxy.open_connections());
    assert_eq!(store.pool_status().in_flight, 0);

    // Pipelined on shared connections, one key's concurrent checks still grant exactly its capacity.
    let calls = (0..80).map(|_| store.check_owned("hot".to_owned(), policy));
    let granted = join_all(calls).await.into_iter().filter(|r| r.as_ref().unwrap().decision.allowed).count();
    assert_eq!(granted, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection_times_out_every_call_sharing_it_and_is_replaced() {
    let prefix = RedisPrefix::shared();
    let proxy = FaultProxy::start(shared_upstream()).await;
    let store = store(&prefix, &proxy, 1);
    let policy = fifty_per_hour();
    assert!(store.check("k", &policy, 1).await.unwrap().decision.allowed);
    assert_eq!((proxy.accepted(), store.pool_status().size), (1, 1));

    proxy.set(Fault::Stall);
    let started = Instant::now();
    let shared = &store;
    let calls = (0..20).map(|i| async move {
        let store = shared;
        let result = store.check(&format!("s{i}"), &policy, 1).await;
        (result, started.elapsed())
    });
    for (result, took) in join_all(calls).await {
        assert!(matches!(result, Err(StoreError::Timeout { .. })), "{result:?}");
        // 150 ms each, all at once: sharing one stalled connection must not queue them behind each other.
        assert!(took < Duration::from_millis(400), "took {took:?}");
    }
    assert_eq!(store.pool_status().size, 0, "the stalled connection must be dropped");

    proxy.set(Fault::Pass);
    // The next call opens a new connection and succeeds at once.
    assert!(store.check("k", &policy, 1).await.unwrap().decision.allowed);
    assert_eq!(proxy.accepted(), 2);
    assert_eq!(store.pool_status().size, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_connection_fails_its_call_fast_and_is_replaced() {
    let prefix = RedisPrefix::shared();
    let proxy = FaultProxy::start(shared_upstream()).await;
    let store = store(&prefix, &proxy, 2);
    let policy = fifty_per_hour();
    // Enough concurrent calls to open both connections.
    let mut opened = false;
    for _ in 0..20 {
        let calls = (0..50).map(|i| store.check_owned(format!("warm-{i}"), policy));
        assert!(join_all(calls).await.into_iter().all(|r| r.is_ok()));
        if store.pool_status().size == 2 {
            opened = true;
            break;
        }
    }
    assert!(opened, "{:?}", store.pool_status());

    proxy.set(Fault::Reset);
    assert!(eventually(|| proxy.open_connections() == 0).await, "{} open", proxy.open_connections());
    proxy.set(Fault::Pass);

    // Each dead connection costs at most the one call that finds it broken, which fails fast and transiently.
    let mut failures = 0;
    for i in 0..12 {
        let started = Instant::now();
        match store.check(&format!("after-{i}"), &policy, 1).await {
            Ok(outcome) => assert!(outcome.decision.allowed),
            Err(e) => {
                assert!(matches!(e, StoreError::Unavailable { .. }), "{e}");
                assert!(started.elapsed() < Duration::from_millis(100), "took {:?}", started.elapsed());
                failures += 1;
            }
        }
    }
    assert!(failures <= 2, "{failures} calls failed");
    let calls = (0..50).map(|i| store.check_owned(format!("later-{i}"), policy));
    assert!(join_all(calls).await.into_iter().all(|r| r.is_ok()));
    assert!(proxy.accepted() <= 4, "{} connections opened", proxy.accepted());
}

/// `Store::check` with owned arguments, so many can run at once from one iterator.
trait CheckOwned {
    async fn check_owned(&self, key: String, policy: Policy) -> Result<bucket_store::Outcome, StoreError>;
}

impl CheckOwned for RedisStore {
    async fn check_owned(&self, key: String, policy: Policy) -> Result<bucket_store::Outcome, StoreError> {
        self.check(&key, &policy, 1).await
    }
}
