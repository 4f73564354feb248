//! The `grpc` part of `cargo xtask bench`: the gateway front (Envoy's `ShouldRateLimit`) loaded by
//! `bucket-grpc-load` (Rust, tonic; no Go, no Docker) beside `POST /v1/check` loaded by wrk, on one release API with
//! the memory store, in the same run, with the same limit (capacity 10, 1 token/s) and the same key shapes. Besides
//! decisions per second it reads the server's own CPU time around every run, so the target (gRPC at least as fast
//! per decision as `POST /v1/check`) is also judged as CPU per decision, which the client's share and the machine's
//! other load do not move.

use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::http::{wrk, Api};
use super::{load_average, tagged_json, target_dir, Args};
use crate::{interrupt, paths, process};

/// The same limit as the HTTP runs' default policy (capacity 10, 1 token/s), as a limits-file rule.
const LIMITS: &str = "domain: bench
descriptors:
  - key: user
    rate_limit:
      unit: minute
      requests_per_unit: 60
      burst: 10
";

/// `many`: a random key of 100,000 per request; `hot`: one key, all but the first 10 refused.
const SHAPES: [(&str, &str); 2] = [("many", "random key of 100,000"), ("hot", "one hot key")];
const POOL: &str = "100000";

pub(super) fn build_load_generator() -> Result<()> {
    println!("== cargo build --release -p bucket-tester --bin bucket-grpc-load");
    let status = process::run_foreground(process::cargo().current_dir(paths::workspace_root()).args([
        "build",
        "--release",
        "-p",
        "bucket-tester",
        "--bin",
        "bucket-grpc-load",
    ]))?;
    if !status.success() {
        bail!("release build of the gRPC load generator failed ({status})");
    }
    Ok(())
}

/// One `bucket-grpc-load` run; its `BENCH` line with `rps` (answered decisions per second) and the load average.
fn grpc_load(
    url: &str,
    shape: &str,
    prefix: &str,
    seconds: u64,
    warmup: u64,
    concurrency: u32,
    connections: usize,
) -> Result<Value> {
    let mut command = Command::new(target_dir().join("release/bucket-grpc-load"));
    command
        .args(["--url", url, "--shape", shape, "--prefix", prefix, "--pool", POOL])
        .args(["--concurrency", &concurrency.to_string(), "--connections", &connections.to_string(), "--threads", "1"])
        .args(["--duration", &seconds.to_string(), "--warmup", &warmup.to_string()])
        .stdin(Stdio::null());
    let load = load_average();
    let output = process::run_checked(&mut command)?;
    let mut v = tagged_json(&String::from_utf8_lossy(&output.stdout), "BENCH ")?;
    let answered = v["requests"].as_f64().unwrap_or(0.0) - v["errors"].as_f64().unwrap_or(0.0);
    v["rps"] = json!(answered / (v["duration_us"].as_f64().unwrap_or(1.0) / 1e6));
    v["load"] = json!(load);
    Ok(v)
}

pub(super) fn run_grpc(o: &Args) -> Result<Value> {
    let run_id = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let limits = dir.join("grpc-limits.yaml");
    std::fs::write(&limits, LIMITS)?;
    let grpc_port = process::free_port()?;
    let mut env = vec![
        ("BUCKET_STORE", "memory".to_string()),
        ("BUCKET_LIMITS", limits.display().to_string()),
        ("BUCKET_GRPC_LISTEN", format!("127.0.0.1:{grpc_port}")),
    ];
    env.extend(o.workers_env());
    println!("== grpc: memory store, ShouldRateLimit (bucket-grpc-load) beside POST /v1/check (wrk)");
    let api = Api::start("api-grpc", &env)?;
    let url = format!("http://127.0.0.1:{grpc_port}");
    // One HTTP/2 connection per server worker, as Envoy opens one per worker thread: each worker serves the
    // connections it accepted, so a single connection would leave the other workers idle while wrk's 32
    // connections reach all of them.
    let connections = match o.workers {
        Some(n) => n.max(1) as usize,
        None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    };
    let mut rows = Vec::new();
    for (shape, label) in SHAPES {
        if interrupt::requested() {
            bail!("interrupted");
        }
        let prefix = format!("{run_id}-{shape}");
        let check_mode = format!("check-{shape}");
        wrk(api.addr, o.warmup_s, o.connections, &[check_mode.clone(), format!("{prefix}-http-warm"), "0".into()])?;
        let before = api.cpu_seconds()?;
        let mut check =
            wrk(api.addr, o.duration_s, o.connections, &[check_mode, format!("{prefix}-http"), "0".into()])?;
        check["cpu_s"] = json!(api.cpu_seconds()? - before);
        // The warm-up is a run of its own, as wrk's, so the CPU read around the measured run is that run's only.
        grpc_load(&url, shape, &format!("{prefix}-grpc-warm"), o.warmup_s, 0, o.connections, connections)?;
        let before = api.cpu_seconds()?;
        let mut grpc = grpc_load(&url, shape, &format!("{prefix}-grpc"), o.duration_s, 0, o.connections, connections)?;
        grpc["cpu_s"] = json!(api.cpu_seconds()? - before);
        let ratio = grpc["rps"].as_f64().unwrap_or(0.0) / check["rps"].as_f64().unwrap_or(f64::NAN);
        let us_per = |v: &Value, decisions: f64| v["cpu_s"].as_f64().unwrap_or(f64::NAN) * 1e6 / decisions.max(1.0);
        let check_us = us_per(&check, check["requests"].as_f64().unwrap_or(0.0));
        let grpc_us = us_per(&grpc, grpc["requests"].as_f64().unwrap_or(0.0));
        let cpu_ratio = check_us / grpc_us;
        println!(
            "  {shape:<4} POST /v1/check {:>8.0}/s {check_us:>5.1} µs CPU | ShouldRateLimit {:>8.0}/s {grpc_us:>5.1} µs \
             CPU | gRPC ÷ HTTP: throughput {ratio:.2}, per decision (CPU) {cpu_ratio:.2}; target 1.0 (load {})",
            check["rps"].as_f64().unwrap_or(0.0),
            grpc["rps"].as_f64().unwrap_or(0.0),
            grpc["load"].as_str().unwrap_or("?")
        );
        rows.push(json!({
            "shape": shape, "label": label, "check": check, "grpc": grpc, "ratio": ratio,
            "check_cpu_us": check_us, "grpc_cpu_us": grpc_us, "cpu_ratio": cpu_ratio,
        }));
    }
    drop(api);
    Ok(json!({
        "command": format!(
            "POST /v1/check: wrk -t1 -c{c} -d{d}s --latency -s loadtest/bench_http.lua -- check-<shape>; \
             ShouldRateLimit: bucket-grpc-load --concurrency {c} --connections {n} --threads 1 --duration {d} \
             --shape <shape> (each after a {w} s warm-up); server CPU from /proc/<pid>/stat around each run",
            c = o.connections, d = o.duration_s, w = o.warmup_s, n = connections),
        "rows": rows,
    }))
}
