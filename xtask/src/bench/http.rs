//! The `http` and `memory` parts of `cargo xtask bench`: the release API started once per store and loaded with
//! wrk, and its resident memory after a million keys.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

use super::{
    load_average, tagged_json, target_dir, Args, CAPACITY, REFILL_PER_SEC, RETURNING_CAPACITY, RETURNING_USERS, SHAPES,
};
use crate::{interrupt, paths, process};

pub(super) fn build_release() -> Result<()> {
    println!("== cargo build --release -p bucket-api");
    let status = process::run_foreground(process::cargo().current_dir(paths::workspace_root()).args([
        "build",
        "--release",
        "-p",
        "bucket-api",
    ]))?;
    if !status.success() {
        bail!("release build failed ({status})");
    }
    Ok(())
}

fn api_binary() -> PathBuf {
    target_dir().join("release/bucket-api")
}

/// One store configuration of the matrix.
struct StoreRun {
    label: &'static str,
    slug: &'static str,
    store: &'static str,
    write_mode: Option<&'static str>,
}

const STORES: [StoreRun; 5] = [
    StoreRun { label: "memory", slug: "memory", store: "memory", write_mode: None },
    StoreRun { label: "redis", slug: "redis", store: "redis", write_mode: None },
    StoreRun { label: "postgres", slug: "postgres", store: "postgres", write_mode: None },
    StoreRun { label: "tiered sync", slug: "tiered_sync", store: "tiered", write_mode: Some("sync") },
    StoreRun { label: "tiered write-behind", slug: "tiered_wb", store: "tiered", write_mode: Some("write_behind") },
];

/// A release API started for one run in its own process group; stopped (SIGTERM, then SIGKILL) when dropped.
pub(super) struct Api {
    child: Child,
    pub(super) addr: SocketAddr,
    log: PathBuf,
}

impl Api {
    pub(super) fn start(name: &str, env: &[(&str, String)]) -> Result<Self> {
        let port = process::free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let dir = target_dir().join("bench");
        std::fs::create_dir_all(&dir)?;
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let mut command = Command::new(api_binary());
        command
            .env("BUCKET_LISTEN", addr.to_string())
            .env("BUCKET_LOG_LEVEL", "warn")
            .env("BUCKET_CAPACITY", CAPACITY)
            .env("BUCKET_REFILL_PER_SEC", REFILL_PER_SEC)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().with_context(|| format!("starting {}", api_binary().display()))?;
        let mut api = Self { child, addr, log };
        let up = process::wait_until(Duration::from_secs(60), || {
            matches!(api.child.try_wait(), Ok(None))
                && http_get(addr, "/healthz").map(|(s, _)| s == 200).unwrap_or(false)
        });
        if !up {
            bail!("the API ({name}) did not answer /healthz; {}", bucket_testkit::process::log_tail(&api.log, 20));
        }
        Ok(api)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds the server has used so far (user + system, `/proc/<pid>/stat`): around a run, its cost per
    /// request whatever the client and the machine's other load spend.
    pub(super) fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // Fields after the command name, which is in parentheses and may hold spaces: utime and stime are the
        // 14th and 15th fields of the line, so the 12th and 13th after it.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
        let ticks: Vec<f64> = after.split_whitespace().skip(11).take(2).filter_map(|t| t.parse().ok()).collect();
        if ticks.len() != 2 {
            bail!("cannot read utime and stime from /proc/{}/stat", self.pid());
        }
        // The kernel reports them in USER_HZ, 100 on every Linux this project runs on.
        Ok((ticks[0] + ticks[1]) / 100.0)
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let group = self.child.id();
        process::signal_group(group, Signal::SIGTERM);
        if !process::wait_regardless(Duration::from_secs(15), || !matches!(self.child.try_wait(), Ok(None))) {
            process::signal_group(group, Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET over a fresh connection: status and body.
fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// One wrk run with the bench script; returns its `BENCH` line plus the load average it ran under.
pub(super) fn wrk(addr: SocketAddr, seconds: u64, connections: u32, script_args: &[String]) -> Result<Value> {
    let script = paths::in_workspace("loadtest/bench_http.lua");
    let mut command = Command::new("wrk");
    command
        .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(&script)
        .arg(format!("http://{addr}"))
        .arg("--")
        .args(script_args)
        .stdin(Stdio::null());
    let load = load_average();
    let output = process::run_checked(&mut command)?;
    let mut v = tagged_json(&String::from_utf8_lossy(&output.stdout), "BENCH ")?;
    let requests = v["requests"].as_f64().unwrap_or(0.0);
    let secs = v["duration_us"].as_f64().unwrap_or(1.0) / 1e6;
    v["rps"] = json!(requests / secs);
    v["load"] = json!(load);
    Ok(v)
}

/// Redis's cumulative command counts (`INFO commandstats`), to count round trips per request.
fn redis_calls(redis_url: &str) -> Result<BTreeMap<String, u64>> {
    let output = process::run_checked(Command::new("redis-cli").args(["-u", redis_url, "info", "commandstats"]))?;
    let mut calls = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some((name, rest)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else { continue };
        let n = rest.split(',').find_map(|f| f.strip_prefix("calls=")).and_then(|n| n.parse().ok()).unwrap_or(0);
        calls.insert(name.to_string(), n);
    }
    Ok(calls)
}

fn psql(database_url: &str, sql: &str) -> Result<String> {
    let output = process::run_checked(Command::new("psql").args([database_url, "-XAtq", "-c", sql]))?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

pub(super) fn run_http(o: &Args, database_url: &str, redis_url: &str) -> Result<Value> {
    let run_id = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut stores = Vec::new();
    for s in &STORES {
        if interrupt::requested() {
            bail!("interrupted");
        }
        println!("== http: {} store", s.label);
        let schema = format!("bench_{}_{run_id}", s.slug);
        let prefix = format!("bench:{run_id}:{}:", s.slug);
        let mut env = vec![("BUCKET_STORE", s.store.to_string())];
        if s.store != "memory" {
            env.push(("REDIS_URL", redis_url.to_string()));
            env.push(("DATABASE_URL", database_url.to_string()));
            env.push(("BUCKET_PG_SCHEMA", schema.clone()));
            env.push(("BUCKET_REDIS_KEY_PREFIX", prefix));
        }
        if let Some(mode) = s.write_mode {
            env.push(("BUCKET_WRITE_MODE", mode.to_string()));
        }
        env.extend(o.workers_env());
        let api = Api::start(&format!("api-{}", s.slug), &env)?;
        let mut shapes = serde_json::Map::new();
        // The memory store also runs the service form, so both routes are compared with the same /healthz.
        let extra: &[&str] = if s.store == "memory" { &["check_many", "check_hot"] } else { &[] };
        for shape in SHAPES.iter().map(|(shape, _)| *shape).chain(extra.iter().copied()) {
            let user_prefix = format!("{run_id}-{}-{shape}", s.slug);
            // bench_http.lua names its modes with dashes.
            let mode = shape.replace('_', "-");
            // Returning users run on an API of their own whose policy never refuses them, so every store makes
            // a decision on every request (under the default policy the faster store refused more of them, and a
            // refusal from the refusal cache asks nothing of the store: unlike work, docs/perf.md §2).
            let returning_api;
            let target = if shape == "returning" {
                let capacity = [("BUCKET_CAPACITY", RETURNING_CAPACITY.to_string())];
                returning_api = Api::start(&format!("api-{}-returning", s.slug), &[&env[..], &capacity].concat())?;
                &returning_api
            } else {
                &api
            };
            let measured = if shape == "returning" {
                warm_returning_users(target.addr, o, &user_prefix)?;
                vec![mode, user_prefix.clone(), "0".into(), RETURNING_USERS.to_string()]
            } else {
                let warm = vec![mode.clone(), format!("{user_prefix}-warm")];
                wrk(target.addr, o.warmup_s, o.connections, &warm)?;
                vec![mode, user_prefix.clone()]
            };
            let before = if s.store == "memory" || shape == "floor" { None } else { redis_calls(redis_url).ok() };
            let hot_key = format!("{user_prefix}-hot-user");
            let mut result = wrk(target.addr, o.duration_s, o.connections, &measured)?;
            if let (Some(before), Ok(after)) = (before, redis_calls(redis_url)) {
                let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
                let evalsha = |m: &BTreeMap<String, u64>| m.get("evalsha").copied().unwrap_or(0);
                let requests = result["requests"].as_f64().unwrap_or(1.0).max(1.0);
                result["redis_calls_per_request"] = json!((total(&after) - total(&before)) as f64 / requests);
                result["evalsha_per_request"] = json!((evalsha(&after) - evalsha(&before)) as f64 / requests);
            }
            // The hot user's row: its version counts the writes PostgreSQL received for it, which must equal the
            // allowed requests (denied ones must not reach PostgreSQL in the tiered store).
            if shape == "hot" && s.store == "tiered" {
                // Write-behind may still hold the last batch; give it its flush interval and a margin.
                std::thread::sleep(Duration::from_millis(500));
                let sql = format!(
                    "SELECT COALESCE(MAX(version), -1) FROM \"{schema}\".rate_limits WHERE user_id = '{hot_key}'"
                );
                result["pg_row_version"] = json!(psql(database_url, &sql)?.parse::<i64>().unwrap_or(-1));
            }
            println!(
                "  {shape:<10} {:>9.0} req/s  p50 {:>6} µs  p99 {:>6} µs  p99.9 {:>6} µs  non-2xx {}  (load {})",
                result["rps"].as_f64().unwrap_or(0.0),
                result["p50_us"],
                result["p99_us"],
                result["p999_us"],
                result["non_2xx"],
                result["load"].as_str().unwrap_or("?")
            );
            shapes.insert(shape.to_string(), result);
        }
        drop(api);
        if s.store != "memory" {
            // Each run's schema is private; dropping it keeps the shared database small.
            let _ = psql(database_url, &format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
        }
        stores.push(json!({ "store": s.label, "shapes": shapes }));
    }
    Ok(json!({
        "command": format!("wrk -t1 -c{} -d{}s --latency -s loadtest/bench_http.lua (after a {} s warm-up)",
            o.connections, o.duration_s, o.warmup_s),
        "stores": stores
    }))
}

/// The `returning` shape's warm-up: every one of its users is sent one request, in order (the `many` shape over a
/// pool of [`RETURNING_USERS`]), so that the measured run meets only users the store already holds: Redis hits in
/// the redis and tiered stores, whose keys live for the time to refill from empty (10 s under the bench policy) and
/// are renewed by each allowed request. Bounded: a server too slow to see them all in 30 s is reported, not waited
/// for.
fn warm_returning_users(addr: SocketAddr, o: &Args, user_prefix: &str) -> Result<()> {
    let mut sent = 0u64;
    for _ in 0..(30 / o.warmup_s.max(1)).max(1) {
        let args = ["many".into(), user_prefix.to_string(), sent.to_string(), RETURNING_USERS.to_string()];
        sent += wrk(addr, o.warmup_s, o.connections, &args)?["requests"].as_u64().unwrap_or(0);
        if sent >= RETURNING_USERS || interrupt::requested() {
            return Ok(());
        }
    }
    println!("  (returning users: only {sent} of {RETURNING_USERS} warmed; some measured requests are new users)");
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// memory

fn vm_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for pid {pid}"))
}

/// The live bucket count the memory store reports in `/readyz` ("N buckets").
fn live_buckets(addr: SocketAddr) -> Result<u64> {
    let (_, body) = http_get(addr, "/readyz")?;
    let at = body.find(" buckets").ok_or_else(|| anyhow!("no bucket count in /readyz: {body}"))?;
    let digits: String = body[..at].chars().rev().take_while(char::is_ascii_digit).collect();
    digits.chars().rev().collect::<String>().parse().with_context(|| format!("bucket count in {body}"))
}

pub(super) fn run_memory(o: &Args) -> Result<Value> {
    const KEYS: u64 = 1_000_000;
    println!("== memory: API RSS with {KEYS} live keys");
    // One token per 60 s: a key spent once stays live for a minute, long enough to fill the map, then refills.
    let mut env = vec![
        ("BUCKET_STORE", "memory".to_string()),
        ("BUCKET_REFILL_PER_SEC", format!("{}", 1.0 / 60.0)),
        ("BUCKET_EVICT_INTERVAL_MS", "1000".to_string()),
    ];
    env.extend(o.workers_env());
    let api = Api::start("api-memory-rss", &env)?;
    let pid = api.pid();
    // Warm the server's own buffers first so the baseline is not its cold start.
    wrk(api.addr, 1, o.connections, &["floor".into(), "rss-warm".into()])?;
    let baseline = vm_rss_kib(pid)?;
    let mut sent = 0u64;
    for _ in 0..40 {
        if live_buckets(api.addr)? >= KEYS || interrupt::requested() {
            break;
        }
        let r = wrk(api.addr, 3, 64, &["many".into(), "rss".into(), sent.to_string(), KEYS.to_string()])?;
        sent += r["requests"].as_u64().unwrap_or(0);
    }
    let live = live_buckets(api.addr)?;
    let full = vm_rss_kib(pid)?;
    println!("  {live} live buckets; VmRSS {baseline} KiB -> {full} KiB");
    // Keys are `rss-` + 10 digits.
    let key_bytes = 14u64;
    let per_key = (full.saturating_sub(baseline) * 1024) as f64 / live.max(1) as f64;
    let drained =
        process::wait_until(Duration::from_secs(150), || live_buckets(api.addr).map(|n| n == 0).unwrap_or(false));
    let evicted = vm_rss_kib(pid)?;
    println!("  evicted: {drained}; VmRSS {evicted} KiB");
    Ok(json!({
        "keys": live, "key_bytes": key_bytes, "rss_baseline_kib": baseline, "rss_full_kib": full,
        "rss_evicted_kib": evicted, "all_evicted": drained, "bytes_per_key": per_key,
        "overhead_per_key": per_key - key_bytes as f64, "load": load_average(),
    }))
}
