//! Two instances on one shared store: a reset or a policy change made through one reaches the other's refusal cache
//! at once, instead of when the remembered refusal's `Retry-After` runs out (an hour here).

mod common;
mod tiered_rig;

use std::time::{Duration, Instant};

use bucket_api::config::StoreKind;
use bucket_testkit::Fault;
use tiered_rig::{Api, Backends};

const TOKEN: &str = "admin-secret";
/// How long a notification may take to arrive on a loaded 2-core machine; far below the hour it replaces.
const PROMPTLY: Duration = Duration::from_secs(5);

async fn admin(api: &Api, method: reqwest::Method, path: &str, body: Option<serde_json::Value>) -> u16 {
    let mut req = api.client.request(method, format!("{}{path}", api.url)).bearer_auth(TOKEN);
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.expect("an answer").status().as_u16()
}

/// `a` refuses `key` from its refusal cache: the store is not asked, and the header says so.
async fn refused_from_cache(a: &Api, key: &str) {
    let refused = a.get(key).await;
    assert_eq!((refused.status, refused.retry_after.as_deref()), (429, Some("3600")), "{refused:?}");
    let again = a.get(key).await;
    assert_eq!((again.status, again.source.as_deref()), (429, Some("refusal-cache")), "{again:?}");
}

/// Asks `a` until it allows `key`; a refusal meanwhile comes from the cache and takes nothing, so polling is safe.
async fn allowed_within(a: &Api, key: &str, within: Duration, what: &str) {
    let started = Instant::now();
    loop {
        let reply = a.get(key).await;
        if reply.status == 200 {
            return;
        }
        assert!(started.elapsed() < within, "{what}: still refused after {within:?}: {reply:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asks `a` until it refuses `key` (a policy deletion elsewhere has reached it).
async fn refused_within(a: &Api, key: &str, within: Duration) {
    let started = Instant::now();
    while a.get(key).await.status != 429 {
        assert!(started.elapsed() < within, "{key} still allowed after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn changes_elsewhere_reach_the_refusal_cache(store: StoreKind) {
    let backends = Backends::new().await;
    let config = || {
        let mut config = backends.config(store, 1);
        config.refill_per_sec = 1.0 / 3600.0;
        config.admin_token = Some(TOKEN.into());
        // Generous bounds for a loaded machine; a policy cache TTL and a refusal cache lifetime of a minute, so
        // only the notification can explain an answer within `PROMPTLY`.
        config.redis.command_timeout = Duration::from_secs(2);
        config.redis.connect_timeout = Duration::from_secs(2);
        config.postgres.connect_timeout = Duration::from_secs(5);
        config.postgres.statement_timeout = Duration::from_secs(5);
        config.tiered.policy_cache_ttl = Duration::from_secs(60);
        config.tiered.refusal_cache_ttl = Duration::from_secs(60);
        config
    };
    let (a, b) = (Api::quiet(config()).await, Api::quiet(config()).await);

    assert_eq!(a.get("caller").await.status, 200);
    refused_from_cache(&a, "caller").await;
    assert_eq!(admin(&b, reqwest::Method::DELETE, "/v1/buckets/caller", None).await, 204);
    allowed_within(&a, "caller", PROMPTLY, "a reset through the other instance").await;

    refused_from_cache(&a, "caller").await;
    // Tokens are kept by a policy change; a faster refill makes the next token due at once.
    let faster = serde_json::json!({ "capacity": 1, "refill_per_sec": 1000.0 });
    assert_eq!(admin(&b, reqwest::Method::PUT, "/v1/policies/caller", Some(faster)).await, 200);
    allowed_within(&a, "caller", PROMPTLY, "a policy changed through the other instance").await;
    assert_eq!(admin(&b, reqwest::Method::DELETE, "/v1/policies/caller", None).await, 204);
    refused_within(&a, "caller", PROMPTLY).await;

    // The store drops every connection, the listener's too, and comes back: the listener subscribes again, and a
    // reset made after that is heard as before.
    let proxy = if store == StoreKind::Postgres { &backends.pg_proxy } else { &backends.redis_proxy };
    proxy.set(Fault::Reset);
    let started = Instant::now();
    while proxy.open_connections() > 0 {
        assert!(started.elapsed() < PROMPTLY, "the proxy kept connections open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.set(Fault::Pass);
    refused_from_cache(&a, "caller").await;
    let started = Instant::now();
    // The first command on a pooled connection the proxy reset fails (503); the pool then replaces it.
    while admin(&b, reqwest::Method::DELETE, "/v1/buckets/caller", None).await != 204 {
        assert!(started.elapsed() < PROMPTLY, "reset through b kept failing after the store came back");
    }
    allowed_within(&a, "caller", PROMPTLY, "a reset after the store came back").await;

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reset_and_policy_change_elsewhere_reach_the_refusal_cache() {
    changes_elsewhere_reach_the_refusal_cache(StoreKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_reset_and_policy_change_elsewhere_reach_the_refusal_cache() {
    changes_elsewhere_reach_the_refusal_cache(StoreKind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_reset_and_policy_change_elsewhere_reach_the_refusal_cache() {
    changes_elsewhere_reach_the_refusal_cache(StoreKind::Tiered).await;
}
