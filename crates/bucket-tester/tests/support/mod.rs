//! Servers for the tester's own tests, each on a free port in its own thread with its own actix system, so a
//! `#[tokio::test]` can drive the tester against it and stop it afterwards.

#![allow(dead_code)] // each test binary uses its own subset of these helpers

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};

/// A server running on its own thread; `stop` shuts it down and joins the thread.
pub struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    handle: ServerHandle,
    thread: JoinHandle<()>,
}

impl TestServer {
    /// Stops accepting, finishes in-flight requests and waits for the thread.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
    }
}

/// A server that never limits anything, yet sends plausible headers: what the tester must catch.
pub fn always_allows() -> TestServer {
    spawn(|cfg: &mut web::ServiceConfig| {
        cfg.default_service(web::to(|| async {
            HttpResponse::Ok()
                .insert_header(("X-Data-Source", "memory"))
                .insert_header(("RateLimit-Policy", r#""default";q=5;w=1"#))
                .insert_header(("RateLimit", r#""default";r=4;t=1"#))
                .insert_header(("X-RateLimit-Limit", "5"))
                .insert_header(("X-RateLimit-Remaining", "4"))
                .insert_header(("X-RateLimit-Reset", "1"))
                .json(serde_json::json!({
                    "allowed": true, "remaining": 4, "limit": 5, "source": "memory",
                    "policy": {"name": "default", "capacity": 5, "refill_per_sec": 5.0}
                }))
        }));
    })
}

/// Serves the routes `configure` sets up on a free port, on a new thread, and returns once it is listening.
pub fn spawn(configure: impl Fn(&mut web::ServiceConfig) + Send + Clone + 'static) -> TestServer {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let served = actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || App::new().configure(configure.clone()))
                .workers(1)
                .disable_signals()
                .bind("127.0.0.1:0")?;
            let addr: SocketAddr = server.addrs()[0];
            let server = server.run();
            let _ = tx.send((addr, server.handle()));
            server.await
        });
        served.expect("test server failed");
    });
    let (addr, handle) = rx.recv().expect("test server did not start");
    TestServer { url: format!("http://{addr}"), handle, thread }
}

/// The real service on a free port with the memory store and a given default policy, logs discarded.
pub async fn start_api(capacity: u64, refill_per_sec: f64) -> bucket_api::Running {
    let config = bucket_api::Config {
        listen: "127.0.0.1:0".into(),
        capacity,
        refill_per_sec,
        workers: 2,
        ..bucket_api::Config::default()
    };
    bucket_api::start(config, slog::Logger::root(slog::Discard, slog::o!())).await.expect("bucket-api starts")
}

/// The base URL of a started service.
pub fn url_of(api: &bucket_api::Running) -> String {
    format!("http://{}", api.addr())
}

/// A minimal server following the documented headers over `store`: several of them sharing one `MemoryStore`
/// behave like API instances sharing one backend, which the real service can only do through Redis or
/// PostgreSQL.
pub fn contract_server(store: bucket_store::MemoryStore, capacity: u64, refill_per_sec: f64) -> TestServer {
    advertising(store, capacity, refill_per_sec, refill_per_sec)
}

/// Like [`contract_server`], but the body claims `advertised` tokens per second while the bucket refills at
/// `refill_per_sec`: a server whose refill is slower than it says.
pub fn advertising(
    store: bucket_store::MemoryStore,
    capacity: u64,
    refill_per_sec: f64,
    advertised: f64,
) -> TestServer {
    use actix_web::HttpRequest;
    use bucket_core::{Policy, Wait};

    let policy = Policy::from_rate(capacity, refill_per_sec).expect("valid test policy");
    let secs = |us: u64| us.div_ceil(1_000_000);
    spawn(move |cfg: &mut web::ServiceConfig| {
        let store = store.clone();
        cfg.default_service(web::to(move |req: HttpRequest| {
            let store = store.clone();
            async move {
                let key = req.headers().get("x-user-id").and_then(|v| v.to_str().ok()).unwrap_or("anon").to_string();
                let d = store.check_now(&key, &policy, 1);
                let t = match d.retry_after {
                    Some(Wait::After(w)) => secs(w).max(1),
                    Some(Wait::Never) => u64::MAX,
                    None => secs(d.next_token_after_us),
                };
                let mut res = if d.allowed { HttpResponse::Ok() } else { HttpResponse::TooManyRequests() };
                res.insert_header(("X-Data-Source", "memory"))
                    .insert_header((
                        "RateLimit-Policy",
                        format!(r#""default";q={};w={}"#, capacity, secs(policy.fill_time_us())),
                    ))
                    .insert_header(("RateLimit", format!(r#""default";r={};t={t}"#, d.remaining)))
                    .insert_header(("X-RateLimit-Limit", capacity.to_string()))
                    .insert_header(("X-RateLimit-Remaining", d.remaining.to_string()))
                    .insert_header(("X-RateLimit-Reset", secs(d.reset_after_us).to_string()));
                if !d.allowed {
                    res.insert_header(("Retry-After", t.to_string()));
                }
                res.json(serde_json::json!({
                    "allowed": d.allowed, "key": key, "cost": 1, "limit": capacity, "remaining": d.remaining,
                    "source": "memory",
                    "policy": {"name": "default", "capacity": capacity, "refill_per_sec": advertised}
                }))
            }
        }));
    })
}

/// The real service on free ports with the memory store and `yaml` as its limits file (in `dir`), so its gRPC
/// gateway front is on; `tweak` adjusts the configuration first.
pub async fn start_gateway(
    yaml: &str,
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut bucket_api::Config),
) -> bucket_api::Running {
    let limits = dir.join("limits.yaml");
    std::fs::write(&limits, yaml).expect("limits file written");
    let mut config = bucket_api::Config { listen: "127.0.0.1:0".into(), workers: 2, ..bucket_api::Config::default() };
    config.rls.limits = Some(limits);
    config.rls.grpc_listen = "127.0.0.1:0".into();
    tweak(&mut config);
    bucket_api::start(config, slog::Logger::root(slog::Discard, slog::o!())).await.expect("bucket-api starts")
}

/// The gRPC URL of a started service with a limits file.
pub fn grpc_url_of(api: &bucket_api::Running) -> String {
    format!("http://{}", api.grpc_addr().expect("the gRPC front is on with a limits file"))
}
