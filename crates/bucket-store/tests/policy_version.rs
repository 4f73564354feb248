//! The policy version and the full policy list every store exposes for `CachedPolicies`' snapshot: the version
//! changes with every policy write (in PostgreSQL also with hand edits), and the list is exactly what is stored.
//! Real servers: PostgreSQL on a schema of its own, Redis under a prefix of its own.

use std::time::Duration;

use bucket_core::Policy;
use bucket_store::postgres::PostgresStore;
use bucket_store::redis::RedisStore;
use bucket_store::tiered::{TieredConfig, TieredStore};
use bucket_store::{CachedPolicies, MemoryStore, PolicyStore};
use bucket_testkit::{database_url, pg, redis, redis_server, Fault, FaultProxy, RedisPrefix, Shared, TestSchema};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

fn sorted(mut all: Vec<(String, Policy)>) -> Vec<(String, Policy)> {
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// Sets, replaces and deletes policies through `store`, asserting after each write that the version moved and the
/// full list matches.
async fn writes_move_the_version<S: PolicyStore>(store: &S) {
    let (gold, silver) = (Policy::per_minute(1000).unwrap(), Policy::per_minute(100).unwrap());
    let v0 = store.policy_version().await.unwrap();
    assert_eq!(store.all_policies().await.unwrap(), vec![]);

    store.set_policy("alice", &gold).await.unwrap();
    let v1 = store.policy_version().await.unwrap();
    assert_ne!(v1, v0, "a set changes the version");
    assert_eq!(store.policy_version().await.unwrap(), v1, "reads do not");

    store.set_policy("bob", &silver).await.unwrap();
    store.set_policy("alice", &silver).await.unwrap();
    let v2 = store.policy_version().await.unwrap();
    assert!(v2 != v1 && v2 != v0, "a replacement changes it too");
    assert_eq!(sorted(store.all_policies().await.unwrap()), vec![("alice".into(), silver), ("bob".into(), silver)]);

    assert!(store.delete_policy("bob").await.unwrap());
    let v3 = store.policy_version().await.unwrap();
    assert!(![v0, v1, v2].contains(&v3), "a deletion changes it");
    assert_eq!(store.all_policies().await.unwrap(), vec![("alice".to_owned(), silver)]);
}

#[tokio::test]
async fn memory_store_bumps_its_version_on_every_policy_write() {
    writes_move_the_version(&MemoryStore::new()).await;
}

#[tokio::test]
async fn postgres_bumps_its_version_on_every_policy_write_hand_edits_included() {
    let schema = TestSchema::new();
    let store = schema.store().await;
    writes_move_the_version(&store).await;

    // A hand edit in a session on this schema, and one from a session whose search_path is elsewhere (the
    // trigger's function carries its own search_path): both count.
    let before = store.policy_version().await.unwrap();
    schema.sql().await.batch_execute("UPDATE policies SET capacity = 7 WHERE key = 'alice'").await.unwrap();
    let after_edit = store.policy_version().await.unwrap();
    assert_ne!(after_edit, before);
    let mut elsewhere = AsyncPgConnection::establish(&database_url()).await.unwrap();
    elsewhere
        .batch_execute(&format!(
            "SET search_path TO public; INSERT INTO \"{}\".policies (key, capacity, interval_us) VALUES ('eve', 2, 5)",
            schema.name
        ))
        .await
        .unwrap();
    let after_insert = store.policy_version().await.unwrap();
    assert_ne!(after_insert, after_edit);
    let all = sorted(store.all_policies().await.unwrap());
    assert_eq!(all.iter().map(|(k, p)| (k.as_str(), p.capacity())).collect::<Vec<_>>(), [("alice", 7), ("eve", 2)]);

    // A statement that changes nothing is still a statement; what matters is that no real change is missed.
    schema.sql().await.batch_execute("DELETE FROM policies").await.unwrap();
    assert_ne!(store.policy_version().await.unwrap(), after_insert);
    assert_eq!(store.all_policies().await.unwrap(), vec![]);
}

#[tokio::test]
async fn redis_bumps_its_version_and_indexes_policy_keys() {
    let shared = Shared::new();
    let store = &shared.store;
    writes_move_the_version(store).await;

    let mut conn = shared.raw().await;
    let members: Vec<String> =
        redis::cmd("SMEMBERS").arg(store.policy_index_key()).query_async(&mut conn).await.unwrap();
    assert_eq!(members, ["alice"], "the index follows sets and deletes");
    assert!(
        store.policy_index_key().starts_with(&shared.prefix) && store.policy_version_key().starts_with(&shared.prefix)
    );

    // A key in the index whose hash is gone (deleted between the two reads of all_policies) is skipped.
    let _: () = redis::cmd("SADD").arg(store.policy_index_key()).arg("ghost").query_async(&mut conn).await.unwrap();
    assert_eq!(store.all_policies().await.unwrap().len(), 1);
}

#[tokio::test]
async fn policies_written_before_the_index_existed_are_indexed_on_the_first_version_read() {
    let shared = Shared::new();
    let store = &shared.store;
    let mut conn = shared.raw().await;
    // As a release without the index left them: policy hashes only, one with braces in its key.
    for (key, capacity) in [("legacy", 5), ("odd}{key", 6)] {
        let _: () = redis::cmd("HSET")
            .arg(store.policy_key(key))
            .arg("c")
            .arg(capacity)
            .arg("i")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let version = store.policy_version().await.unwrap();
    let all = sorted(store.all_policies().await.unwrap());
    let found: Vec<_> = all.iter().map(|(k, p)| (k.as_str(), p.capacity())).collect();
    assert_eq!(found, [("legacy", 5), ("odd}{key", 6)]);
    assert_eq!(store.policy_version().await.unwrap(), version, "indexed once, then a plain read");
}

#[tokio::test]
async fn two_redis_instances_share_one_version() {
    let shared = Shared::new();
    let mut config = redis_server::config(&shared.url);
    config.key_prefix = shared.prefix.clone();
    let other = RedisStore::connect(config).unwrap();
    let before = shared.store.policy_version().await.unwrap();
    other.set_policy("carol", &Policy::per_hour(5).unwrap()).await.unwrap();
    assert_ne!(shared.store.policy_version().await.unwrap(), before);
    assert_eq!(shared.store.all_policies().await.unwrap(), vec![("carol".to_owned(), Policy::per_hour(5).unwrap())]);
}

#[tokio::test]
async fn tiered_reads_postgres_and_an_outage_keeps_the_snapshot() {
    let schema = TestSchema::new();
    schema.store().await; // schema and tables, created directly
    let keys = RedisPrefix::shared();
    let pg_proxy = FaultProxy::start(pg::upstream()).await;
    let mut pg_config = schema.config.clone();
    pg_config.url = schema.url_via(pg_proxy.addr());
    pg_config.connect_timeout = Duration::from_millis(500);
    pg_config.statement_timeout = Duration::from_millis(500);
    let pg = PostgresStore::connect(pg_config).await.unwrap();
    let redis = RedisStore::connect(keys.config(&keys.url)).unwrap();
    let config = TieredConfig { retry_interval: Duration::from_secs(60), ..TieredConfig::default() };
    let tiered = TieredStore::new(redis, pg, config, bucket_store::tiered::no_events()).await;
    writes_move_the_version(&tiered).await;

    // A zero TTL: every look-up reads the version, so only the outage path can answer from the snapshot.
    let cached = CachedPolicies::new(tiered.clone(), Duration::ZERO, 100);
    let silver = Policy::per_minute(100).unwrap();
    assert_eq!(cached.policy("alice").await.unwrap(), Some(silver));
    pg_proxy.set(Fault::Refuse);
    assert!(tiered.policy_version().await.unwrap_err().is_transient());
    assert!(tiered.all_policies().await.unwrap_err().is_transient(), "marked down: fails at once");
    assert_eq!(cached.policy("alice").await.unwrap(), Some(silver), "the last snapshot answers");
    assert_eq!(cached.policy("stranger").await.unwrap(), None);
}
