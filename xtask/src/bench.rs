//! `cargo xtask bench`: every performance number the project publishes, from one command, in one run.
//!
//! Three parts, each comparing against a reference measured in the same run so the ratios hold on any machine:
//! - `micro`: criterion, bucket's core and memory store next to governor (crates/bucket-store/benches/decide.rs),
//!   plus the memory store's resident bytes per key in-process (benches/memory_rss.rs).
//! - `http`: the release API started here once per store, loaded by wrk with loadtest/bench_http.lua; `GET /healthz`
//!   on the same server is the floor every decision route is compared with.
//! - `memory`: the API's VmRSS after 1,000,000 distinct keys and again after they refilled and were evicted.
//! - `grpc`: the gateway front's `ShouldRateLimit` (loaded by `bucket-grpc-load`) beside `POST /v1/check` (wrk) on
//!   one memory-store API, the ratio per decision.
//!
//! The results rewrite the marked tables in docs/perf.md and the `## Measured on this machine` section of
//! loadtest/README.md, and `docs/http-bench.svg` is drawn by the `http-chart` binary (xtask's `chart` feature, so
//! the drawing crate stays out of CI's build).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::{apt, interrupt, paths, process, services};

mod docs;
mod grpc;
mod http;
mod masters;
mod pg_ceiling;
mod pg_table;
mod redis_ceiling;
mod targets;

use docs::{draw_chart, write_docs};
use grpc::{build_load_generator, run_grpc};
use http::{build_release, run_http, run_memory};

/// The shapes every store is measured under, in table order.
const SHAPES: [(&str, &str); 4] =
    [("floor", "GET /healthz"), ("many", "many users"), ("returning", "returning users"), ("hot", "one hot user")];

/// How many users the `returning` shape cycles through: each is seen once before the measured run, so every
/// measured request is a returning user (a Redis hit for the redis and tiered stores), not a new one.
const RETURNING_USERS: u64 = 10_000;

/// The `returning` shape's capacity (refill stays `REFILL_PER_SEC`): large enough that none of its users is ever
/// refused during a run, so the stores are compared on decisions that all write, as most production traffic does.
const RETURNING_CAPACITY: u64 = 1_000_000;

/// The default policy the HTTP runs use, so "hot user" means the same refusal rate for every store.
const CAPACITY: &str = "10";
const REFILL_PER_SEC: &str = "1";

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
#[command(after_help = "Parts: micro (criterion: core and memory store vs governor; in-process memory per key),
       http (wrk against the release API for each store, GET /healthz as the floor),
       memory (the API's resident memory after 1,000,000 keys and after their eviction),
       grpc (ShouldRateLimit via bucket-grpc-load beside POST /v1/check via wrk, memory store, same run),
       pg-table (only when named: pgbench on decide.sql, a 10,000,000-row table vs an empty one),
       masters (only when named: the redis store's decisions/s with 1 and 3 cluster masters and standalone).
Defaults: the first four, 5 s measured after a 2 s warm-up, 32 connections on one wrk thread.")]
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
    /// Server workers of every API the run starts (default: the API's own, one per core). On a small machine the
    /// load generator shares the API's cores, and fewer workers can measure the decision more than the scheduler
    /// (docs/perf.md §17); the run's documents say how many were used.
    #[arg(long, value_name = "N")]
    workers: Option<u32>,
}

/// A part of the benchmark.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Micro,
    Http,
    Memory,
    Grpc,
    /// Only when asked for: the decide statement on 10,000,000 rows against an empty table.
    PgTable,
    /// Only when asked for: decisions per second with 1 and 3 Redis Cluster masters (docs/scaling.md).
    Masters,
}

impl Args {
    fn runs(&self, part: Part) -> bool {
        (self.only.is_empty() && !matches!(part, Part::PgTable | Part::Masters)) || self.only.contains(&part)
    }

    /// `BUCKET_WORKERS` for the APIs this run starts, when `--workers` was given.
    fn workers_env(&self) -> Option<(&'static str, String)> {
        self.workers.map(|n| ("BUCKET_WORKERS", n.to_string()))
    }
}

/// Runs the parts asked for and rewrites the documents from their results.
pub fn run(options: &Args) -> Result<()> {
    let results_path = target_dir().join("bench").join("results.json");
    if options.docs_only {
        let text = std::fs::read_to_string(&results_path)
            .with_context(|| format!("reading {} (run `cargo xtask bench` first)", results_path.display()))?;
        let results: Value = serde_json::from_str(&text)?;
        write_all_docs(&results, &targets::merge_latest(&results)?)?;
        if !results["http"].is_null() {
            draw_chart(&results_path)?;
        }
        return Ok(());
    }
    interrupt::install()?;
    let started_load = load_average();
    let mut env_lines = vec![format!("started with load average {started_load}"), machine_line()];
    if let Some(n) = options.workers {
        env_lines.push(format!("every API with {n} worker(s) (`--workers {n}`)"));
    }

    let micro = if options.runs(Part::Micro) { Some(run_micro()?) } else { None };
    let mut http = None;
    let mut pg_ceiling = None;
    let mut memory = None;
    let mut grpc = None;
    let mut redis_ceiling = None;
    if options.runs(Part::Http) || options.runs(Part::Memory) || options.runs(Part::Grpc) {
        if which::which("wrk").is_err() {
            apt::install("wrk", &["wrk"])?;
        }
        build_release()?;
    }
    if options.runs(Part::Grpc) {
        build_load_generator()?;
    }
    if options.runs(Part::Http) {
        let services = services::ensure()?;
        let measured = run_http(options, &services.database_url, &services.redis_url)?;
        pg_ceiling = Some(pg_ceiling::run(options, &services.database_url, &measured)?);
        redis_ceiling = Some(redis_ceiling::run(&services.redis_url, options.connections, Some(&measured))?);
        http = Some(measured);
    }
    if options.runs(Part::Memory) {
        memory = Some(run_memory(options)?);
    }
    if options.runs(Part::Grpc) {
        grpc = Some(run_grpc(options)?);
    }
    let pg_table = if options.runs(Part::PgTable) {
        let services = services::ensure()?;
        Some(pg_table::run(&services.database_url)?)
    } else {
        None
    };
    let masters = if options.runs(Part::Masters) { Some(masters::run()?) } else { None };
    env_lines.push(format!("finished with load average {}", load_average()));

    let results = json!({
        "env": env_lines, "micro": micro, "http": http, "pg_ceiling": pg_ceiling, "redis_ceiling": redis_ceiling,
        "memory": memory, "grpc": grpc, "pg_table": pg_table, "masters": masters
    });
    std::fs::create_dir_all(target_dir().join("bench"))?;
    std::fs::write(&results_path, serde_json::to_string_pretty(&results)?)?;
    println!("== results in {}", results_path.display());
    let latest = targets::merge_latest(&results)?;
    targets::print(&targets::judge(&latest));

    if !options.no_docs {
        write_all_docs(&results, &latest)?;
        if http.is_some() {
            draw_chart(&results_path)?;
        }
    }
    Ok(())
}

/// Rewrites the documents this run's parts feed: docs/scaling.md for `masters`, docs/perf.md and the others for
/// the rest (left alone by a `--only masters` run, which measured nothing they show).
fn write_all_docs(results: &Value, latest: &Value) -> Result<()> {
    if !results["masters"].is_null() {
        masters::write_doc(&results["masters"])?;
    }
    if ["micro", "http", "memory", "grpc", "pg_table"].iter().any(|part| !results[*part].is_null()) {
        write_docs(results, latest)?;
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
