//! Passwords and TLS in cluster and sentinel mode, live: a Redis Cluster with `requirepass`/`masterauth` (and one
//! speaking only TLS, replication and cluster bus included) is used through `redis://:pass@` and `rediss://` seed
//! URLs, a Sentinel group whose servers and sentinels all require a password through `redis://:pass@` sentinel
//! URLs (and one speaking only TLS, through `rediss://:pass@`); every node answers the health probe over the same
//! credentials. A wrong password is a store failure with a readable reason and the dependency down, never a panic.

use std::time::Duration;

use bucket_core::Policy;
use bucket_store::redis::{RedisConfig, RedisMode, RedisStore};
use bucket_store::{NodeRole, Store};
use bucket_testkit::redis_sentinel::MASTER_NAME;
use bucket_testkit::tls::TestCa;
use bucket_testkit::{RedisCluster, RedisSecurity, RedisSentinelGroup, RedisTls};

const PASSWORD: &str = "s3cret-for-tests";

fn policy() -> Policy {
    Policy::from_interval_us(3, 3_600_000_000).unwrap()
}

fn config(url: &str, mode: RedisMode, security: &RedisSecurity) -> RedisConfig {
    let mut config = bucket_testkit::redis_server::config(url);
    config.mode = mode;
    config.tls_ca_file = security.ca_file();
    config.command_timeout = Duration::from_secs(2);
    config.connect_timeout = Duration::from_secs(2);
    if mode == RedisMode::Sentinel {
        config.sentinel_master = Some(MASTER_NAME.to_owned());
    }
    config
}

/// Three of capacity 3 allowed and the fourth refused, then a health check that finds the dependency up and every
/// node (`expected` of them) answering; returns the health detail.
async fn decides_and_every_node_answers(config: RedisConfig, expected: usize) -> String {
    let store = RedisStore::connect(config).expect("valid configuration");
    for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
        for n in 0..3 {
            assert!(store.check(key, &policy(), 1).await.unwrap().decision.allowed, "key {i}, check {n}");
        }
        assert!(!store.check(key, &policy(), 1).await.unwrap().decision.allowed);
    }
    let health = store.health().await.remove(0);
    assert!(health.up, "{health:?}");
    assert_eq!(health.nodes.len(), expected, "{health:?}");
    assert!(health.nodes.iter().all(|node| node.up), "{health:?}");
    health.detail
}

/// With a wrong password: checks fail with the server's reason, the dependency is down and says why.
async fn a_wrong_password_is_a_readable_failure(config: RedisConfig) {
    let store = RedisStore::connect(config).expect("a wrong password is only found out when connecting");
    let error = store.check("k", &policy(), 1).await.expect_err("refused");
    let readable = |text: &str| {
        let text = text.to_lowercase();
        text.contains("wrongpass") || text.contains("password") || text.contains("auth")
    };
    assert!(readable(&error.to_string()), "{error}");
    let health = store.health().await.remove(0);
    assert!(!health.up, "{health:?}");
    assert!(readable(&health.detail), "{health:?}");
    assert!(!health.detail.contains(PASSWORD) && !error.to_string().contains(PASSWORD), "no password in messages");
    println!("wrong password: check: {error}\n  health: {}", health.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_behind_a_password_is_used_and_a_wrong_one_refused() {
    let security = RedisSecurity::password(PASSWORD);
    let cluster = tokio::task::spawn_blocking({
        let security = security.clone();
        move || RedisCluster::start_with(security)
    })
    .await
    .unwrap();
    assert!(cluster.url().starts_with(&format!("redis://:{PASSWORD}@")));
    let detail = decides_and_every_node_answers(config(&cluster.url(), RedisMode::Cluster, &security), 6).await;
    assert!(detail.starts_with("cluster_state ok"), "{detail}");

    let wrong = cluster.url().replace(PASSWORD, "not-the-password");
    a_wrong_password_is_a_readable_failure(config(&wrong, RedisMode::Cluster, &security)).await;
    let none = cluster.url().replace(&format!(":{PASSWORD}@"), "");
    let store = RedisStore::connect(config(&none, RedisMode::Cluster, &security)).unwrap();
    assert!(store.check("k", &policy(), 1).await.is_err(), "no password, no decision");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_with_a_password_is_used_over_rediss() {
    let ca = TestCa::new();
    let tls = RedisTls { cert: ca.cert_file(), key: ca.key_file(), ca: ca.ca_file() };
    let security = RedisSecurity { password: Some(PASSWORD.to_owned()), tls: Some(tls) };
    let cluster = tokio::task::spawn_blocking({
        let security = security.clone();
        move || RedisCluster::start_with(security)
    })
    .await
    .unwrap();
    assert!(cluster.url().starts_with(&format!("rediss://:{PASSWORD}@")));
    let detail = decides_and_every_node_answers(config(&cluster.url(), RedisMode::Cluster, &security), 6).await;
    assert!(detail.starts_with("cluster_state ok"), "{detail}");

    // Without the CA the servers' certificate is not trusted: refused, never plain text.
    let other = TestCa::new();
    let mut untrusted = config(&cluster.url(), RedisMode::Cluster, &security);
    untrusted.tls_ca_file = Some(other.ca_file());
    let store = RedisStore::connect(untrusted).unwrap();
    assert!(store.check("k", &policy(), 1).await.is_err());
    assert!(!store.health().await.remove(0).up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_group_behind_a_password_is_used_and_a_wrong_one_refused() {
    let security = RedisSecurity::password(PASSWORD);
    let group = tokio::task::spawn_blocking({
        let security = security.clone();
        move || RedisSentinelGroup::start_with(security)
    })
    .await
    .unwrap();
    assert!(group.url().starts_with(&format!("redis://:{PASSWORD}@")));
    // The master, its two replicas and the three sentinels.
    let detail = decides_and_every_node_answers(config(&group.url(), RedisMode::Sentinel, &security), 6).await;
    assert!(detail.contains("named by 3 of 3 sentinels"), "{detail}");
    let store = RedisStore::connect(config(&group.url(), RedisMode::Sentinel, &security)).unwrap();
    let nodes = store.nodes().await;
    let master = nodes.iter().find(|node| node.role == NodeRole::Master).expect("the master");
    assert_eq!(master.addr, format!("127.0.0.1:{}", group.master_port()));

    let wrong = group.url().replace(PASSWORD, "not-the-password");
    a_wrong_password_is_a_readable_failure(config(&wrong, RedisMode::Sentinel, &security)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_sentinel_group_with_a_password_is_used_over_rediss() {
    let ca = TestCa::new();
    let tls = RedisTls { cert: ca.cert_file(), key: ca.key_file(), ca: ca.ca_file() };
    let security = RedisSecurity { password: Some(PASSWORD.to_owned()), tls: Some(tls) };
    let group = tokio::task::spawn_blocking({
        let security = security.clone();
        move || RedisSentinelGroup::start_with(security)
    })
    .await
    .unwrap();
    assert!(group.url().starts_with(&format!("rediss://:{PASSWORD}@")));
    let detail = decides_and_every_node_answers(config(&group.url(), RedisMode::Sentinel, &security), 6).await;
    assert!(detail.contains("named by 3 of 3 sentinels"), "{detail}");
}
