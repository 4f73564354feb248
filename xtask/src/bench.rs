//! `cargo xtask bench`: every performance number the project publishes, from one command, in one run.
//!
//! Three parts, each comparing against a reference measured in the same run so the ratios hold on any machine:
//! - `micro`: criterion, bucket's core and memory store next to governor (crates/bucket-store/benches/decide.rs),
//!   plus the memory store's resident bytes per key in-process (benches/memory_rss.rs).
//! - `http`: the release API started here once per store, loaded by wrk with loadtest/bench_http.lua; `GET /healthz`
//!   on the same server is the floor every decision route is compared with.
//! - `memory`: the API's VmRSS after 1,000,000 distinct keys and again after they refilled and were evicted.
//!
//! The results rewrite the marked tables in docs/perf.md and the `## Measured on this machine` section of
//! loadtest/README.md, and `docs/http-bench.svg` is drawn by the `http-chart` binary (xtask's `chart` feature, so
//! the drawing crate stays out of CI's build).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

use crate::{apt, interrupt, paths, process, services};

/// The shapes every store is measured under, in table order.
const SHAPES: [(&str, &str); 3] = [("floor", "GET /healthz"), ("many", "many users"), ("hot", "one hot user")];

/// The default policy the HTTP runs use, so "hot user" means the same refusal rate for every store.
const CAPACITY: &str = "10";
const REFILL_PER_SEC: &str = "1";

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
#[command(after_help = "Parts: micro (criterion: core and memory store vs governor; in-process memory per key),
       http (wrk against the release API for each store, GET /healthz as the floor),
       memory (the API's resident memory after 1,000,000 keys and after their eviction).
Defaults: all three, 5 s measured after a 2 s warm-up, 32 connections on one wrk thread.")]
pub struct Args {
    /// Run only these parts.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "PARTS")]
    only: Vec<Part>,
    /// Seconds each wrk run is measured.
    #[arg(long = "duration", value_name = "SECS", default_value_t = 5)]
    duration_s: u64,
    /// Seconds of warm-up before each measured wrk run.
    #[arg(long = "warmup", value_name = "SECS", default_value_t = 2)]
    warmup_s: u64,
    /// wrk connections.
    #[arg(long, value_name = "N", default_value_t = 32)]
    connections: u32,
    /// Measure only; leave the documents as they are.
    #[arg(long)]
    no_docs: bool,
    /// Rewrite the tables and the chart from the last run's results.json, measuring nothing.
    #[arg(long)]
    docs_only: bool,
}

/// A part of the benchmark.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Micro,
    Http,
    Memory,
}

impl Args {
    fn runs(&self, part: Part) -> bool {
        self.only.is_empty() || self.only.contains(&part)
    }
}

/// Runs the parts asked for and rewrites the documents from their results.
pub fn run(options: &Args) -> Result<()> {
    let results_path = target_dir().join("bench").join("results.json");
    if options.docs_only {
        let text = std::fs::read_to_string(&results_path)
            .with_context(|| format!("reading {} (run `cargo xtask bench` first)", results_path.display()))?;
        let results: Value = serde_json::from_str(&text)?;
        write_docs(&results)?;
        if !results["http"].is_null() {
            draw_chart(&results_path)?;
        }
        return Ok(());
    }
    interrupt::install()?;
    let started_load = load_average();
    let mut env_lines = vec![format!("started with load average {started_load}"), machine_line()];

    let micro = if options.runs(Part::Micro) { Some(run_micro()?) } else { None };
    let mut http = None;
    let mut memory = None;
    if options.runs(Part::Http) || options.runs(Part::Memory) {
        if which::which("wrk").is_err() {
            apt::install("wrk", &["wrk"])?;
        }
        build_release()?;
    }
    if options.runs(Part::Http) {
        let services = services::ensure()?;
        http = Some(run_http(options, &services.database_url, &services.redis_url)?);
    }
    if options.runs(Part::Memory) {
        memory = Some(run_memory(options)?);
    }
    env_lines.push(format!("finished with load average {}", load_average()));

    let results = json!({ "env": env_lines, "micro": micro, "http": http, "memory": memory });
    std::fs::create_dir_all(target_dir().join("bench"))?;
    std::fs::write(&results_path, serde_json::to_string_pretty(&results)?)?;
    println!("== results in {}", results_path.display());

    if !options.no_docs {
        write_docs(&results)?;
        if http.is_some() {
            draw_chart(&results_path)?;
        }
    }
    Ok(())
}

fn target_dir() -> PathBuf {
    // state_dir() is `<target>/xtask` and already resolves CARGO_TARGET_DIR.
    paths::state_dir().parent().map(Path::to_path_buf).unwrap_or_else(|| paths::in_workspace("target"))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

fn machine_line() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} CPUs ({model})")
}

// ---------------------------------------------------------------------------------------------------------------
// micro

/// Criterion groups in table order, with what each measures.
const GROUPS: [(&str, &str); 5] = [
    ("core", "pure decision (bucket-core `decide`) vs governor direct limiter"),
    ("hot_key", "memory store, one key, one thread"),
    ("keys_10k", "memory store, 10,000 keys round-robin, one thread"),
    ("keys_1m", "memory store, 1,000,000 keys round-robin, one thread"),
    ("hot_key_2threads", "memory store, one key, two threads (wall time per decision)"),
];

fn run_micro() -> Result<Value> {
    println!("== micro: cargo bench -p bucket-store --bench decide");
    let status = process::run_foreground(process::cargo().current_dir(paths::workspace_root()).args([
        "bench",
        "-p",
        "bucket-store",
        "--bench",
        "decide",
    ]))?;
    if !status.success() {
        bail!("cargo bench failed ({status})");
    }
    let criterion = target_dir().join("criterion");
    let mut rows = Vec::new();
    for (group, what) in GROUPS {
        for shape in ["allowed", "denied"] {
            let name = format!("{group}_{shape}");
            let ns = |f: &str| -> Result<f64> {
                let path = criterion.join(&name).join(f).join("new/estimates.json");
                let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                let v: Value = serde_json::from_str(&text)?;
                v["median"]["point_estimate"].as_f64().ok_or_else(|| anyhow!("no median in {}", path.display()))
            };
            let (bucket, governor) = (ns("bucket")?, ns("governor")?);
            rows.push(json!({ "group": group, "what": what, "shape": shape, "bucket_ns": bucket,
                "governor_ns": governor, "ratio": bucket / governor }));
        }
    }
    println!("== micro: cargo bench -p bucket-store --bench memory_rss");
    let output = process::run_checked(process::cargo().current_dir(paths::workspace_root()).args([
        "bench",
        "-p",
        "bucket-store",
        "--bench",
        "memory_rss",
    ]))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let memory: Value = tagged_json(&stdout, "MEMORY ")?;
    Ok(json!({ "load": load_average(), "rows": rows, "in_process_memory": memory }))
}

/// The JSON after `tag` on the first line that starts with it.
fn tagged_json(text: &str, tag: &str) -> Result<Value> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(tag))
        .ok_or_else(|| anyhow!("no `{tag}` line in the output:\n{text}"))?;
    serde_json::from_str(line).with_context(|| format!("parsing `{line}`"))
}

// ---------------------------------------------------------------------------------------------------------------
// http

fn build_release() -> Result<()> {
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
struct Api {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Api {
    fn start(name: &str, env: &[(&str, String)]) -> Result<Self> {
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
fn wrk(addr: SocketAddr, seconds: u64, connections: u32, script_args: &[String]) -> Result<Value> {
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

fn run_http(o: &Args, database_url: &str, redis_url: &str) -> Result<Value> {
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
        let api = Api::start(&format!("api-{}", s.slug), &env)?;
        let mut shapes = serde_json::Map::new();
        for (shape, _) in SHAPES {
            let user_prefix = format!("{run_id}-{}-{shape}", s.slug);
            let warm = vec![shape.to_string(), format!("{user_prefix}-warm")];
            wrk(api.addr, o.warmup_s, o.connections, &warm)?;
            let before = if s.store == "memory" || shape == "floor" { None } else { redis_calls(redis_url).ok() };
            let hot_key = format!("{user_prefix}-hot-user");
            let mut result = wrk(api.addr, o.duration_s, o.connections, &[shape.to_string(), user_prefix])?;
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
                "  {shape:<5} {:>9.0} req/s  p50 {:>6} µs  p99 {:>6} µs  p99.9 {:>6} µs  non-2xx {}  (load {})",
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

fn run_memory(o: &Args) -> Result<Value> {
    const KEYS: u64 = 1_000_000;
    println!("== memory: API RSS with {KEYS} live keys");
    // One token per 60 s: a key spent once stays live for a minute, long enough to fill the map, then refills.
    let env = [
        ("BUCKET_STORE", "memory".to_string()),
        ("BUCKET_REFILL_PER_SEC", format!("{}", 1.0 / 60.0)),
        ("BUCKET_EVICT_INTERVAL_MS", "1000".to_string()),
    ];
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

// ---------------------------------------------------------------------------------------------------------------
// documents

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn micro_table(micro: &Value) -> String {
    let mut t = String::from(
        "| benchmark | quota | bucket ns/decision | governor ns/decision | bucket ÷ governor |\n|---|---|---:|---:|---:|\n",
    );
    for r in micro["rows"].as_array().into_iter().flatten() {
        let _ = writeln!(
            t,
            "| {} (`{}`) | {} | {:.1} | {:.1} | {:.2}× |",
            r["what"].as_str().unwrap_or(""),
            r["group"].as_str().unwrap_or(""),
            r["shape"].as_str().unwrap_or(""),
            f(&r["bucket_ns"]),
            f(&r["governor_ns"]),
            f(&r["ratio"])
        );
    }
    let m = &micro["in_process_memory"];
    let _ = writeln!(
        t,
        "\nIn-process memory (`cargo bench -p bucket-store --bench memory_rss`): {} live keys of {} bytes took \
         {:.0} bytes of RSS each ({:.0} beyond the key); VmRSS {} KiB before, {} KiB full, {} KiB after all were \
         evicted ({} left). Load average during the micro run: {}.",
        m["keys"],
        m["key_bytes"],
        f(&m["bytes_per_key"]),
        f(&m["overhead_per_key"]),
        m["rss_before_kib"],
        m["rss_full_kib"],
        m["rss_evicted_kib"],
        m["left"],
        micro["load"].as_str().unwrap_or("?")
    );
    t
}

fn http_table(http: &Value) -> String {
    let mut t = String::from(
        "| store | load shape | req/s | × /healthz req/s | p50 ms | p99 ms | p99.9 ms | p99 × /healthz | non-2xx | \
         Redis commands/req (EVALSHA/req) | load avg |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for s in http["stores"].as_array().into_iter().flatten() {
        let floor = &s["shapes"]["floor"];
        for (shape, label) in SHAPES {
            let r = &s["shapes"][shape];
            let calls = match (r["redis_calls_per_request"].as_f64(), r["evalsha_per_request"].as_f64()) {
                (Some(c), Some(e)) => format!("{c:.2} ({e:.2})"),
                _ => "–".into(),
            };
            let _ = writeln!(
                t,
                "| {} | {label} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1}% | {calls} | {} |",
                s["store"].as_str().unwrap_or(""),
                f(&r["rps"]),
                f(&r["rps"]) / f(&floor["rps"]),
                f(&r["p50_us"]) / 1000.0,
                f(&r["p99_us"]) / 1000.0,
                f(&r["p999_us"]) / 1000.0,
                f(&r["p99_us"]) / f(&floor["p99_us"]),
                100.0 * f(&r["non_2xx"]) / f(&r["requests"]).max(1.0),
                r["load"].as_str().unwrap_or("?")
            );
        }
    }
    let _ = writeln!(t, "\nEach row: `{}`.", http["command"].as_str().unwrap_or(""));
    for s in http["stores"].as_array().into_iter().flatten() {
        if let Some(v) = s["shapes"]["hot"]["pg_row_version"].as_i64() {
            let allowed = f(&s["shapes"]["hot"]["requests"]) - f(&s["shapes"]["hot"]["non_2xx"]);
            let _ = writeln!(
                t,
                "{}: the hot user's PostgreSQL row version after its run is {v} for {allowed:.0} allowed and {} \
                 denied requests (each write bumps the version; a denied request writes nothing).",
                s["store"].as_str().unwrap_or(""),
                s["shapes"]["hot"]["non_2xx"]
            );
        }
    }
    t
}

fn memory_table(m: &Value) -> String {
    format!(
        "| live keys | key bytes | VmRSS before | VmRSS with the keys | RSS bytes per key | beyond the key | VmRSS after \
         eviction | all evicted |\n|---:|---:|---:|---:|---:|---:|---:|---|\n| {} | {} | {} KiB | {} KiB | {:.0} | {:.0} | \
         {} KiB | {} |\n\nLoad average at the end: {}.\n",
        m["keys"],
        m["key_bytes"],
        m["rss_baseline_kib"],
        m["rss_full_kib"],
        f(&m["bytes_per_key"]),
        f(&m["overhead_per_key"]),
        m["rss_evicted_kib"],
        m["all_evicted"],
        m["load"].as_str().unwrap_or("?")
    )
}

/// Replaces the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`, keeping the markers.
fn replace_marked(doc: &str, name: &str, body: &str) -> Result<String> {
    let (open, close) = (format!("<!-- bench:{name} -->"), format!("<!-- /bench:{name} -->"));
    let start = doc.find(&open).ok_or_else(|| anyhow!("marker {open} missing"))? + open.len();
    let end = doc[start..].find(&close).ok_or_else(|| anyhow!("marker {close} missing"))? + start;
    Ok(format!("{}\n{}\n{}", &doc[..start], body.trim_end(), &doc[end..]))
}

fn write_docs(results: &Value) -> Result<()> {
    let env: Vec<String> =
        results["env"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect();
    let env_text = format!("Command: `cargo xtask bench`. Machine: {}.", env.join("; "));
    let perf_path = paths::in_workspace("docs/perf.md");
    let mut perf = std::fs::read_to_string(&perf_path).with_context(|| format!("reading {}", perf_path.display()))?;
    perf = replace_marked(&perf, "env", &env_text)?;
    let mut readme_body = format!("{env_text}\n");
    if !results["micro"].is_null() {
        perf = replace_marked(&perf, "micro", &micro_table(&results["micro"]))?;
    }
    if !results["http"].is_null() {
        let table = http_table(&results["http"]);
        perf = replace_marked(&perf, "http", &table)?;
        let _ = write!(readme_body, "\n{table}\n![HTTP throughput and latency per store](../docs/http-bench.svg)\n");
    }
    if !results["memory"].is_null() {
        let table = memory_table(&results["memory"]);
        perf = replace_marked(&perf, "memory", &table)?;
        let _ = write!(readme_body, "\nAPI memory (memory store) after 1,000,000 distinct keys:\n\n{table}");
    }
    std::fs::write(&perf_path, perf)?;
    let readme_path = paths::in_workspace("loadtest/README.md");
    let readme = std::fs::read_to_string(&readme_path)?;
    std::fs::write(&readme_path, replace_section(&readme, "## Measured on this machine", &readme_body))?;
    println!("== rewrote {} and {}", perf_path.display(), readme_path.display());
    Ok(())
}

/// Replaces the body of the `heading` section (up to the next `## ` heading), appending the section if missing.
fn replace_section(doc: &str, heading: &str, body: &str) -> String {
    let intro = "Written by `cargo xtask bench` (the numbers section of docs/perf.md explains each target); rerun it \
                 to refresh. Ratios compare rows of the same run.\n\n";
    let section = format!("{heading}\n\n{intro}{}\n", body.trim_end());
    match doc.find(heading) {
        Some(start) => {
            let after = start + heading.len();
            let end = doc[after..].find("\n## ").map(|i| after + i + 1).unwrap_or(doc.len());
            let rest = &doc[end..];
            format!("{}{section}{}{rest}", &doc[..start], if rest.is_empty() { "" } else { "\n" })
        }
        None => format!("{}\n\n{section}", doc.trim_end()),
    }
}

fn draw_chart(results: &Path) -> Result<()> {
    let out = paths::in_workspace("docs/http-bench.svg");
    println!("== drawing {}", out.display());
    let status = process::run_foreground(
        process::cargo()
            .current_dir(paths::workspace_root())
            .args(["run", "--quiet", "-p", "xtask", "--features", "chart", "--bin", "http-chart", "--"])
            .arg(results)
            .arg(&out),
    )?;
    if !status.success() {
        bail!("drawing the chart failed ({status})");
    }
    Ok(())
}
