//! A minimal HTTP front for Kuadrant's `limitador` library, shaped like limitador-server's `POST /check_and_report`,
//! so `loadtest/limitador_compare.sh` can put the same wrk load on it and on bucket (docs/perf.md section 12).
//!
//! Settings, all from the environment:
//! - `LIMITADOR_BENCH_LISTEN`: address to bind (default `127.0.0.1:8090`)
//! - `LIMITADOR_BENCH_STORAGE`: `memory` (the library's default, a bounded in-process cache) or `redis`
//! - `LIMITADOR_BENCH_REDIS_URL`: the Redis for `redis` (default `redis://127.0.0.1:6379`)
//! - `LIMITADOR_BENCH_NAMESPACE`: the namespace of the one limit (default `bench`); every Redis key of a counter
//!   starts with `namespace:{NAMESPACE}`, so a unique namespace per run keeps runs apart in a shared Redis
//! - `LIMITADOR_BENCH_MAX`, `LIMITADOR_BENCH_SECONDS`: the limit, `MAX` hits per fixed window of `SECONDS` per
//!   user (default 10 per 10 s)
//! - `LIMITADOR_BENCH_CACHE_SIZE`: how many counters the in-memory storage keeps (default 1,000,000)
//! - `LIMITADOR_BENCH_WORKERS`: actix workers (default: actix's own default, one per core)

mod handlers;

use std::sync::Arc;

use actix_web::{web, App, HttpServer};
use limitador::limit::{Expression, Limit};
use limitador::storage::redis::AsyncRedisStorage;
use limitador::{AsyncRateLimiter, RateLimiter};

use crate::handlers::{check_and_report, status, Limiter};

/// The one descriptor entry the bench limit counts by, as limitador-server's CEL context exposes it.
const USER_VARIABLE: &str = "descriptors[0].user";

/// Reads one setting, falling back to its default when unset.
fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// Reads one numeric setting, with a message naming it when it does not parse.
fn number(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(raw) => raw.trim().parse().map_err(|e| format!("invalid {name}={raw:?}: {e}")),
        Err(_) => Ok(default),
    }
}

/// Builds the limiter and its one limit from the environment.
async fn build_limiter() -> Result<(Limiter, String), String> {
    let namespace = setting("LIMITADOR_BENCH_NAMESPACE", "bench");
    let max = number("LIMITADOR_BENCH_MAX", 10)?;
    let seconds = number("LIMITADOR_BENCH_SECONDS", 10)?;
    let variable = Expression::try_from(USER_VARIABLE).map_err(|e| format!("bad variable {USER_VARIABLE}: {e:?}"))?;
    let limit = Limit::new(namespace.as_str(), max, seconds, Vec::new(), vec![variable]);
    let storage = setting("LIMITADOR_BENCH_STORAGE", "memory");
    let limiter = match storage.as_str() {
        "memory" => {
            let limiter = RateLimiter::new(number("LIMITADOR_BENCH_CACHE_SIZE", 1_000_000)?);
            limiter.add_limit(limit);
            Limiter::Blocking(limiter)
        }
        "redis" => {
            let url = setting("LIMITADOR_BENCH_REDIS_URL", "redis://127.0.0.1:6379");
            let redis = AsyncRedisStorage::new(&url).await.map_err(|e| format!("cannot reach Redis at {url}: {e}"))?;
            let limiter = AsyncRateLimiter::new_with_storage(Box::new(redis));
            limiter.add_limit(limit);
            Limiter::Async(limiter)
        }
        other => return Err(format!("invalid LIMITADOR_BENCH_STORAGE={other:?}: expected memory or redis")),
    };
    Ok((limiter, format!("storage={storage} namespace={namespace} limit={max} per {seconds}s per {USER_VARIABLE}")))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let (limiter, summary) = match build_limiter().await {
        Ok(built) => built,
        Err(message) => {
            eprintln!("limitador-bench-server: {message}");
            std::process::exit(2);
        }
    };
    let listen = setting("LIMITADOR_BENCH_LISTEN", "127.0.0.1:8090");
    let workers = match number("LIMITADOR_BENCH_WORKERS", 0) {
        Ok(workers) => workers,
        Err(message) => {
            eprintln!("limitador-bench-server: {message}");
            std::process::exit(2);
        }
    };
    let data = web::Data::new(Arc::new(limiter));
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/status", web::get().to(status))
            .route("/check_and_report", web::post().to(check_and_report))
    });
    if workers > 0 {
        server = server.workers(usize::try_from(workers).unwrap_or(1));
    }
    let server = server.bind(&listen)?;
    eprintln!("limitador-bench-server: listening on {listen}, {summary}");
    server.run().await
}
