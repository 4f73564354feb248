//! The connection budget the service logs at start (`postgres.pool_size` against the server's `max_connections`),
//! read from a server of the test's own whose limit is small enough to fill.

use bucket_core::Policy;
use bucket_store::postgres::{PostgresConfig, PostgresStore};
use bucket_store::Store;
use bucket_testkit::{PostgresOptions, PrivatePostgres};
use diesel_async::{AsyncConnection, AsyncPgConnection};

#[tokio::test]
async fn the_budget_counts_the_servers_limit_and_every_open_session() {
    let settings = ["max_connections=12", "superuser_reserved_connections=2"].map(String::from).to_vec();
    let server = PrivatePostgres::launch(PostgresOptions { settings, ..PostgresOptions::default() }).expect("postgres");
    let mut config = PostgresConfig::new(server.url());
    config.pool_size = 6;
    config.prune_interval = std::time::Duration::ZERO;
    let store = PostgresStore::connect(config).await.expect("store");
    assert!(store.check("k", &Policy::from_rate(10, 1.0).unwrap(), 1).await.unwrap().decision.allowed);

    let before = store.connection_limit().await.expect("limit");
    assert_eq!(before.usable, 10, "max_connections - superuser_reserved_connections");
    assert!((1..=2).contains(&before.in_use), "the store's own session(s): {before:?}");
    assert_eq!(before.instances_that_fit(6), 1);
    assert!(!before.pool_exceeds_headroom(6), "{before:?}");

    // Five other clients take most of what is left: this pool of six no longer fits.
    let mut others = Vec::new();
    for _ in 0..5 {
        others.push(AsyncPgConnection::establish(&server.url()).await.expect("session"));
    }
    let after = store.connection_limit().await.expect("limit");
    assert_eq!(after.in_use, before.in_use + 5, "{after:?}");
    assert!(after.pool_exceeds_headroom(6), "{after:?}");
    assert!(!after.pool_exceeds_headroom(10 - after.in_use as usize + 1), "{after:?}");
}
