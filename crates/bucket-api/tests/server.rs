//! The embedding contract: `start` binds a real socket, serves real HTTP, and `stop` shuts it down.

use bucket_api::{start, Config, StartError};

fn quiet() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

#[actix_web::test]
async fn start_serves_real_http_on_an_ephemeral_port_and_stops() {
    let config = Config { listen: "127.0.0.1:0".into(), workers: 1, ..Config::default() };
    let running = start(config, quiet()).await.expect("server starts");
    let addr = running.addr();
    assert_ne!(addr.port(), 0, "the real port is reported");

    let client = reqwest::Client::new();
    let res = client.get(format!("http://{addr}/")).header("X-User-ID", "real-http").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-data-source"], "memory");
    assert_eq!(res.headers()["ratelimit"], "\"default\";r=9;t=1");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["remaining"], 9);

    running.stop().await;
    let after = client.get(format!("http://{addr}/healthz")).send().await;
    assert!(after.is_err(), "nothing listens after stop");
}

#[actix_web::test]
async fn a_malformed_store_url_is_a_clear_start_error() {
    let config = Config {
        listen: "127.0.0.1:0".into(),
        store: bucket_api::config::StoreKind::Redis,
        redis_url: Some("not a url".into()),
        ..Config::default()
    };
    let err = start(config, quiet()).await.err().expect("a malformed REDIS_URL cannot start");
    assert!(matches!(err, StartError::Store(ref e) if !e.is_transient()), "{err:?}");
}

#[actix_web::test]
async fn an_unusable_listen_address_names_the_setting() {
    let config = Config { listen: "not-an-address".into(), workers: 1, ..Config::default() };
    let err = start(config, quiet()).await.err().expect("cannot bind");
    assert!(matches!(err, StartError::Bind { .. }));
    let chain = format!("{:#}", anyhow::Error::from(err));
    assert!(chain.contains("not-an-address") && chain.contains("BUCKET_LISTEN"), "{chain}");
}
