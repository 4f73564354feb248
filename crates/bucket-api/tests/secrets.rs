//! Secrets never reach the logs: the start-up log (captured from a real `start` into a buffer, in both formats),
//! the warnings of a store that cannot connect, and `Config::redacted()` never show the passwords of
//! `DATABASE_URL`/`REDIS_URL` (URL userinfo, URL-encoded, `?password=`, libpq `password=`) or the admin token.

use std::io::{self, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bucket_api::config::{Config, LogFormat, StoreKind};
use bucket_api::start;
use slog::{o, Drain, Logger};

const ADMIN_TOKEN: &str = "adm1n-T0ken-never-logged";

/// Every secret a test configuration holds, in every spelling that would count as a leak.
const SECRETS: &[&str] = &[
    ADMIN_TOKEN,
    "pg-Secr%40t",
    "pg-Secr@t",
    "r3dis-Pass",
    "kv-S3cret",
    "quoted S3cret",
    "q-S3cret",
    "lone-R3dis-secret",
];

/// A `Write` over a shared buffer, so a test reads what a logger wrote.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().map_err(|_| io::Error::other("poisoned"))?.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The production formats (JSON with default keys, or plain text), synchronously into `buffer`.
fn logger(format: LogFormat, buffer: &Buffer) -> Logger {
    match format {
        LogFormat::Json => {
            let drain = slog_json::Json::new(buffer.clone()).add_default_keys().build();
            Logger::root(Mutex::new(drain).fuse(), o!("service" => "bucket-api"))
        }
        LogFormat::Text => {
            let decorator = slog_term::PlainSyncDecorator::new(buffer.clone());
            Logger::root(slog_term::FullFormat::new(decorator).build().fuse(), o!("service" => "bucket-api"))
        }
    }
}

fn assert_no_secret(text: &str, what: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} leaks {secret:?}:\n{text}");
    }
}

/// A port nothing listens on: connections to it are refused at once.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn base(store: StoreKind, database_url: Option<String>, redis_url: Option<String>) -> Config {
    Config {
        listen: "127.0.0.1:0".into(),
        workers: 1,
        store,
        database_url,
        redis_url,
        admin_token: Some(ADMIN_TOKEN.into()),
        ..Config::default()
    }
}

#[test]
fn redacted_config_hides_every_password_form_and_the_token() {
    let urls = [
        ("postgres://app:pg-Secr%40t@db:5432/bucket", "postgres://app:***@db:5432/bucket"),
        ("postgres://app:pg-Secr@t@db/bucket", "postgres://app:***@db/bucket"),
        ("host=db user=app password=kv-S3cret dbname=bucket", "host=db user=app password=*** dbname=bucket"),
        ("host=db password='quoted S3cret' dbname=bucket", "host=db password=*** dbname=bucket"),
        (
            "postgres://db/bucket?user=app&password=q-S3cret&sslmode=require",
            "postgres://db/bucket?user=app&password=***&sslmode=require",
        ),
    ];
    for (database_url, shown) in urls {
        let config =
            base(StoreKind::Memory, Some(database_url.into()), Some("redis://default:r3dis-Pass@cache:6379/0".into()));
        let printed = config.redacted().to_string();
        assert_no_secret(&printed, database_url);
        assert!(printed.contains(&format!("database_url = {shown}\n")), "{printed}");
        assert!(printed.contains("redis_url = redis://default:***@cache:6379/0\n"), "{printed}");
        assert!(printed.contains("admin_token = <redacted>\n"), "{printed}");
        // The same view as structured log fields.
        let buffer = Buffer::default();
        slog::info!(logger(LogFormat::Json, &buffer), "config"; config.redacted());
        assert_no_secret(&buffer.text(), database_url);
    }
    let lone = base(StoreKind::Memory, None, Some("redis://lone-R3dis-secret@cache".into()));
    assert_no_secret(&lone.redacted().to_string(), "a lone Redis userinfo");
}

/// A real start, logging into a buffer, with a store that answers (memory), one that is down but tolerated
/// (Redis on a closed port), and one start that keeps retrying (PostgreSQL on a closed port, cut short).
#[actix_web::test]
async fn the_start_up_log_never_shows_a_password_or_the_token() {
    for format in [LogFormat::Json, LogFormat::Text] {
        let port = closed_port();
        let memory = base(
            StoreKind::Memory,
            Some(format!("postgres://app:pg-Secr%40t@127.0.0.1:{port}/bucket")),
            Some(format!("redis://:r3dis-Pass@127.0.0.1:{port}/0")),
        );
        let redis_down = base(StoreKind::Redis, None, Some(format!("redis://app:r3dis-Pass@127.0.0.1:{port}/0")));
        for (what, config) in [("memory", memory), ("redis down", redis_down)] {
            let buffer = Buffer::default();
            let running = start(config, logger(format, &buffer)).await.unwrap_or_else(|e| panic!("{what}: {e}"));
            running.stop().await;
            let text = buffer.text();
            assert!(text.contains("starting") && text.contains("listening"), "{what}: nothing captured:\n{text}");
            assert!(text.contains("127.0.0.1"), "{what}: the URLs' hosts are still shown:\n{text}");
            assert_no_secret(&text, what);
        }
        for database_url in [
            format!("postgres://app:pg-Secr%40t@127.0.0.1:{port}/bucket"),
            format!("host=127.0.0.1 port={port} user=app password=kv-S3cret dbname=bucket"),
            format!("postgres://127.0.0.1:{port}/bucket?user=app&password=q-S3cret"),
        ] {
            let buffer = Buffer::default();
            let config = base(StoreKind::Postgres, Some(database_url.clone()), None);
            // PostgreSQL down at start means retrying forever: the start is dropped once its first warning is
            // captured (bounded polling, ten seconds at most).
            let captured = buffer.clone();
            let first_warning = async move {
                while !captured.text().contains("postgres unreachable") {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::select! {
                outcome = start(config, logger(format, &buffer)) => match outcome {
                    Ok(running) => panic!("started against a closed port at {}", running.addr()),
                    Err(e) => assert_no_secret(&format!("{:#}", anyhow::Error::from(e)), "the start error"),
                },
                _ = tokio::time::timeout(Duration::from_secs(10), first_warning) => {}
            }
            let text = buffer.text();
            assert!(text.contains("postgres unreachable"), "{database_url}: no retry warning captured:\n{text}");
            assert_no_secret(&text, &database_url);
        }
    }
}

/// A TLS setting never quietly connects in plain text. `rediss://` to the shared (plain-text) Redis starts degraded,
/// reporting Redis unreachable, instead of talking to it unencrypted; `sslmode=require` against a server whose
/// certificate is not trusted (or that has no TLS) refuses to start, at once and naming TLS, rather than retrying.
/// The successful TLS paths are proved against private TLS servers in bucket-store's `tests/tls.rs`.
#[actix_web::test]
async fn tls_settings_never_fall_back_to_plain_text() {
    let redis_url = std::env::var("BUCKET_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let tls_url = redis_url.replacen("redis://", "rediss://", 1);
    let buffer = Buffer::default();
    let running = start(base(StoreKind::Redis, None, Some(tls_url)), logger(LogFormat::Text, &buffer))
        .await
        .expect("an unreachable Redis is tolerated at start");
    running.stop().await;
    let text = buffer.text();
    assert!(text.contains("redis unreachable at start"), "rediss:// reached a plain-text Redis:\n{text}");

    let database =
        std::env::var("BUCKET_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let separator = if database.contains('?') { '&' } else { '?' };
    let config = base(StoreKind::Postgres, Some(format!("{database}{separator}sslmode=require")), None);
    let outcome = tokio::time::timeout(Duration::from_secs(10), start(config, Logger::root(slog::Discard, o!())))
        .await
        .expect("an untrusted certificate must fail at once, not retry forever");
    match outcome {
        Ok(running) => panic!("sslmode=require started without a verified TLS session, at {}", running.addr()),
        Err(e) => {
            let chain = format!("{:#}", anyhow::Error::from(e));
            assert!(chain.contains("TLS"), "{chain}");
        }
    }
}
