//! TLS to PostgreSQL (`sslmode`) and Redis (`rediss://`) against private servers that present a certificate from a
//! throw-away CA: the stores connect, decide, and are verifiably encrypted; a wrong CA, or a server without TLS
//! under `sslmode=require`, fails clearly and never continues in plain text.

use std::time::Duration;

use bucket_core::Policy;
use bucket_store::postgres::{PostgresConfig, PostgresStore};
use bucket_store::redis::{RedisConfig, RedisStore};
use bucket_store::{Store, StoreError};
use bucket_testkit::tls::{PrivatePostgres, TestCa, TlsRedis};
use diesel::sql_types::{BigInt, Bool};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

fn pg_config(url: String, ca: Option<&TestCa>) -> PostgresConfig {
    let mut config = PostgresConfig::new(url);
    config.tls_ca_file = ca.map(TestCa::ca_file);
    config.connect_timeout = Duration::from_secs(5);
    config.pool_size = 2;
    config
}

#[derive(QueryableByName)]
struct Sessions {
    #[diesel(sql_type = BigInt)]
    encrypted: i64,
    #[diesel(sql_type = BigInt)]
    plain: i64,
}

/// The store's sessions on the server as `pg_stat_ssl` sees them (the inspecting session itself excluded).
async fn sessions(url: &str) -> Sessions {
    let mut conn = AsyncPgConnection::establish(&format!("{url}?sslmode=disable")).await.expect("inspect");
    diesel::sql_query(
        "SELECT count(*) FILTER (WHERE s.ssl) AS encrypted, count(*) FILTER (WHERE NOT s.ssl) AS plain \
         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()",
    )
    .get_result(&mut conn)
    .await
    .expect("query pg_stat_ssl")
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    ssl: bool,
}

#[tokio::test]
async fn postgres_over_tls_verifies_the_server_and_encrypts() {
    let ca = TestCa::new();
    let server = PrivatePostgres::start(Some(&ca));
    let policy = Policy::from_interval_us(2, 1_000_000).unwrap();

    let store = PostgresStore::connect(pg_config(format!("{}?sslmode=require", server.url()), Some(&ca)))
        .await
        .expect("sslmode=require with the right CA connects");
    assert!(store.check("k", &policy, 1).await.unwrap().decision.allowed);
    let seen = sessions(&server.url()).await;
    assert!(seen.encrypted >= 1 && seen.plain == 0, "{} encrypted, {} plain", seen.encrypted, seen.plain);
    drop(store);

    // The inspector itself proves plain text was possible, so the check above is not vacuous.
    let mut plain = AsyncPgConnection::establish(&format!("{}?sslmode=disable", server.url())).await.unwrap();
    let flag: Flag = diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result(&mut plain)
        .await
        .unwrap();
    assert!(!flag.ssl);

    // A CA file alone means verify-full: no sslmode needed.
    let store = PostgresStore::connect(pg_config(server.url(), Some(&ca))).await.expect("CA file alone verifies");
    assert!(store.check("k", &policy, 1).await.unwrap().decision.allowed);
    drop(store);

    // Another CA: refused at once, as a configuration error (not transient, so nothing retries it forever).
    let other = TestCa::new();
    let Err(err) =
        PostgresStore::connect(pg_config(format!("{}?sslmode=verify-full", server.url()), Some(&other))).await
    else {
        panic!("a certificate from another CA is refused")
    };
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("TLS") && err.to_string().contains("invalid peer certificate"), "{err}");

    // verify-full checks the name: `localhost` reaches the same server, but the certificate names 127.0.0.1 only.
    let wrong_name = server.url().replace("127.0.0.1", "localhost");
    let Err(err) = PostgresStore::connect(pg_config(format!("{wrong_name}?sslmode=verify-full"), Some(&ca))).await
    else {
        panic!("a certificate for another name is refused")
    };
    assert!(err.to_string().contains("not valid for name"), "{err}");
    assert!(!err.is_transient(), "{err}");
    // verify-ca accepts the same certificate under any name.
    let store = PostgresStore::connect(pg_config(format!("{wrong_name}?sslmode=verify-ca"), Some(&ca)))
        .await
        .expect("verify-ca does not check the name");
    assert!(store.check("k", &policy, 1).await.is_ok());
}

#[tokio::test]
async fn sslmode_require_never_falls_back_to_plain_text() {
    let server = PrivatePostgres::start(None);
    let Err(err) = PostgresStore::connect(pg_config(format!("{}?sslmode=require", server.url()), None)).await else {
        panic!("a server without TLS is refused under sslmode=require")
    };
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("server does not support TLS"), "{err}");
    assert!(matches!(err, StoreError::Backend { .. }));

    // `prefer` (the default) does continue in plain text: that is what it means, and why it is not the
    // recommended setting.
    let store = PostgresStore::connect(pg_config(server.url(), None)).await.expect("prefer falls back");
    assert!(store.check("k", &Policy::from_interval_us(1, 1_000_000).unwrap(), 1).await.unwrap().decision.allowed);
    assert_eq!(sessions(&server.url()).await.encrypted, 0);
}

fn redis_config(url: String, ca: Option<&TestCa>) -> RedisConfig {
    let mut config = RedisConfig::new(url);
    config.tls_ca_file = ca.map(TestCa::ca_file);
    config.command_timeout = Duration::from_secs(5);
    config.connect_timeout = Duration::from_secs(5);
    config
}

#[tokio::test]
async fn redis_over_tls_decides_and_plain_text_is_refused() {
    let ca = TestCa::new();
    let server = TlsRedis::start(&ca);
    let policy = Policy::from_interval_us(1, 60_000_000).unwrap();

    let store = RedisStore::connect(redis_config(server.url(), Some(&ca))).unwrap();
    store.ping().await.expect("rediss:// with the right CA connects");
    assert!(store.check("k", &policy, 1).await.unwrap().decision.allowed);
    // The second check sees the first one's state: the script really ran on this server.
    assert!(!store.check("k", &policy, 1).await.unwrap().decision.allowed);

    // The same port without TLS: no answer is taken for one.
    let plain = RedisStore::connect(redis_config(server.plain_url(), None)).unwrap();
    assert!(plain.check("k", &policy, 1).await.is_err());

    // Another CA: the handshake fails, so the store never decides.
    let other = TestCa::new();
    let wrong = RedisStore::connect(redis_config(server.url(), Some(&other))).unwrap();
    let err = wrong.ping().await.expect_err("a certificate from another CA is refused");
    assert!(err.to_string().contains("UnknownIssuer") || err.to_string().contains("certificate"), "{err}");

    // A CA file with a plain URL would never be used: refused as a configuration error.
    assert!(RedisStore::connect(redis_config(server.plain_url(), Some(&ca))).is_err());
}
