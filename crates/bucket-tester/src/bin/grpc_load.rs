//! `bucket-grpc-load`: a closed-loop load generator for Envoy's `ShouldRateLimit`, for `cargo xtask bench` (no Go,
//! no Docker). N requests are kept in flight over a few HTTP/2 connections for a warm-up, then for the measured
//! seconds; it prints one `BENCH {json}` line like `loadtest/bench_http.lua` does for wrk, so the two compare.
//!
//! Shapes: `hot` sends one descriptor value (all but the first `capacity` refused), `many` a value drawn at random
//! from a pool (100,000 by default) on every request.

use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use tonic::transport::{Channel, Endpoint};

/// Keeps `--concurrency` `ShouldRateLimit` calls in flight and reports decisions per second and latency.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// gRPC URL of the rate limit service.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    url: String,
    /// The limits' domain.
    #[arg(long, default_value = "bench")]
    domain: String,
    /// The descriptor's one entry key; its value is the simulated user.
    #[arg(long, default_value = "user")]
    key: String,
    /// `hot`: one value; `many`: a random value from `--pool` per request.
    #[arg(long, value_enum, default_value = "many")]
    shape: Shape,
    /// Prefix of every value, so runs don't share buckets.
    #[arg(long, default_value = "load")]
    prefix: String,
    /// Distinct values of `many`.
    #[arg(long, default_value_t = 100_000)]
    pool: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// HTTP/2 connections the requests are spread over.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Client threads (wrk's `-t`): 1 keeps the client's share of the CPU comparable to `wrk -t1`.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Seconds of the same load before measuring (not counted).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Shape {
    Hot,
    Many,
}

/// What one task saw.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    over_limit: u64,
    errors: u64,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(cli.threads.max(1)).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("bucket-grpc-load: cannot start the runtime: {e}");
                return std::process::ExitCode::from(2);
            }
        };
    match runtime.block_on(run(&cli)) {
        Ok(line) => {
            println!("BENCH {line}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bucket-grpc-load: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(cli: &Cli) -> Result<serde_json::Value, String> {
    let mut clients = Vec::new();
    for _ in 0..cli.connections.max(1) {
        let endpoint = Endpoint::from_shared(cli.url.clone()).map_err(|e| format!("{}: {e}", cli.url))?;
        let channel = endpoint.connect().await.map_err(|e| format!("cannot connect to {}: {e}", cli.url))?;
        clients.push(RateLimitServiceClient::new(channel));
    }
    if cli.warmup > 0 {
        phase(cli, &clients, Duration::from_secs(cli.warmup), 1).await?;
    }
    let started = Instant::now();
    let tally = phase(cli, &clients, Duration::from_secs(cli.duration), 2).await?;
    let elapsed = started.elapsed();
    let mut latencies = tally.latencies_us;
    latencies.sort_unstable();
    let pct = |p: f64| -> u32 {
        let i = ((latencies.len() as f64 * p / 100.0).ceil() as usize).clamp(1, latencies.len().max(1)) - 1;
        latencies.get(i).copied().unwrap_or(0)
    };
    let requests = latencies.len() as u64;
    let mean = latencies.iter().map(|l| u64::from(*l)).sum::<u64>() as f64 / requests.max(1) as f64;
    Ok(serde_json::json!({
        "requests": requests,
        "duration_us": elapsed.as_micros() as u64,
        "over_limit": tally.over_limit,
        "errors": tally.errors,
        "p50_us": pct(50.0), "p99_us": pct(99.0), "p999_us": pct(99.9),
        "mean_us": mean, "max_us": latencies.last().copied().unwrap_or(0),
    }))
}

/// Keeps `concurrency` calls in flight for `length`; `seed` varies the random values between phases.
async fn phase(
    cli: &Cli,
    clients: &[RateLimitServiceClient<Channel>],
    length: Duration,
    seed: u64,
) -> Result<Tally, String> {
    let end = Instant::now() + length;
    let mut tasks = Vec::with_capacity(cli.concurrency);
    for i in 0..cli.concurrency.max(1) {
        let client = clients[i % clients.len()].clone();
        let (domain, key, prefix, shape, pool) =
            (cli.domain.clone(), cli.key.clone(), cli.prefix.clone(), cli.shape, cli.pool.max(1));
        // xorshift64*: enough to spread `many` over the pool; never zero.
        let mut state = (seed << 32) ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        tasks.push(tokio::spawn(async move {
            let mut client = client;
            let mut tally = Tally::default();
            while Instant::now() < end {
                let value = match shape {
                    Shape::Hot => format!("{prefix}-hot"),
                    Shape::Many => {
                        state ^= state >> 12;
                        state ^= state << 25;
                        state ^= state >> 27;
                        format!("{prefix}-{}", state.wrapping_mul(0x2545_F491_4F6C_DD1D) % pool)
                    }
                };
                let request = RateLimitRequest {
                    domain: domain.clone(),
                    descriptors: vec![RateLimitDescriptor {
                        entries: vec![Entry { key: key.clone(), value }],
                        ..RateLimitDescriptor::default()
                    }],
                    hits_addend: 0,
                };
                let sent = Instant::now();
                let answer = client.should_rate_limit(request).await;
                tally.latencies_us.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                match answer {
                    Ok(a) if a.get_ref().overall_code == Code::OverLimit as i32 => tally.over_limit += 1,
                    Ok(_) => {}
                    Err(_) => tally.errors += 1,
                }
            }
            tally
        }));
    }
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await.map_err(|e| format!("a load task failed: {e}"))?;
        all.latencies_us.extend(t.latencies_us);
        all.over_limit += t.over_limit;
        all.errors += t.errors;
    }
    Ok(all)
}
