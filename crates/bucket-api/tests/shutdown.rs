//! Graceful shutdown of the real binary in the tiered store's two write modes: SIGTERM in the middle of load, and
//! PostgreSQL afterwards holds exactly what was granted, not a token less (write-behind: the queued writes are
//! flushed; sync: the group commits in flight finish before their requests are answered).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bucket_testkit::{database_url, free_port, RedisPrefix, TestSchema};

const CAPACITY: u64 = 1000;
const KEYS: [&str; 4] = ["s1", "s2", "s3", "s4"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_load_loses_no_granted_token() {
    // A long flush interval: at SIGTERM most grants are still queued, so only the shutdown flush saves them.
    sigterm_mid_load(&[("BUCKET_WRITE_MODE", "write_behind"), ("BUCKET_FLUSH_INTERVAL_MS", "60000")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_load_loses_no_granted_token_with_group_commit() {
    // A wide window: at SIGTERM requests are waiting in a batch on its way.
    sigterm_mid_load(&[("BUCKET_WRITE_MODE", "sync"), ("BUCKET_COMMIT_WINDOW_US", "5000")]).await;
}

/// One server at a time: two loaded servers on a small machine make Redis time out, and a write-behind fallback
/// during a Redis timeout is a documented way to lose a grant from PostgreSQL (README, tiered store's limits).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Load from eight clients, SIGTERM, then every 200 received must be in PostgreSQL.
async fn sigterm_mid_load(mode: &[(&str, &str)]) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let schema = TestSchema::new();
    let keys = RedisPrefix::shared();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_bucket-api"))
        .env_clear()
        .envs([
            ("BUCKET_LISTEN", listen.as_str()),
            ("BUCKET_STORE", "tiered"),
            ("DATABASE_URL", &database_url()),
            ("REDIS_URL", &keys.url),
            ("BUCKET_PG_SCHEMA", &schema.name),
            ("BUCKET_REDIS_KEY_PREFIX", &keys.prefix),
            ("BUCKET_CAPACITY", &CAPACITY.to_string()),
            ("BUCKET_REFILL_PER_SEC", "0.0001"),
            ("BUCKET_WORKERS", "2"),
            ("BUCKET_LOG_LEVEL", "warn"),
        ])
        .envs(mode.iter().copied())
        .stdout(Stdio::null())
        .spawn()
        .expect("start bucket-api");
    let url = format!("http://{listen}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{url}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "bucket-api did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Eight clients, each sending requests back to back until the server stops answering.
    let clients = (0..8).map(|i| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let mut granted: HashMap<&str, u64> = HashMap::new();
            for n in 0.. {
                let key = KEYS[(i + n) % KEYS.len()];
                match client.get(&url).header("X-User-ID", key).send().await {
                    Ok(res) if res.status() == 200 => *granted.entry(key).or_default() += 1,
                    Ok(res) => assert_eq!(res.status(), 429, "only decisions expected"),
                    Err(_) => break, // the listener is closed: the server is shutting down
                }
            }
            granted
        })
    });
    let clients: Vec<_> = clients.collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("run kill");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().expect("wait for bucket-api");
    assert!(exit.success(), "bucket-api exited with {exit}");

    let mut granted: HashMap<&str, u64> = HashMap::new();
    for client in clients {
        for (key, n) in client.await.unwrap() {
            *granted.entry(key).or_default() += n;
        }
    }
    let total: u64 = granted.values().sum();
    assert!(total > 0, "no load reached the server before SIGTERM");
    for key in KEYS {
        let expected = granted.get(key).copied().unwrap_or(0);
        let row = schema.row(key).await;
        let (tokens, version) = row.map_or((CAPACITY, 0), |r| (r.tokens as u64, r.version as u64));
        assert_eq!((CAPACITY - tokens, version), (expected, expected), "{key}: PostgreSQL vs 200s received");
    }
    println!("{mode:?}: {total} grants over {} keys, all in PostgreSQL after SIGTERM", KEYS.len());
}
