//! The documents `cargo xtask bench` rewrites from its results: the marked tables in docs/perf.md, the measured
//! section of loadtest/README.md, and the chart.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use super::SHAPES;
use crate::{paths, process};

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

fn grpc_table(g: &Value, env: &str) -> String {
    let mut t = String::from(
        "| key shape | POST /v1/check decisions/s | p99 ms | server CPU µs/decision | ShouldRateLimit decisions/s \
         | p99 ms | server CPU µs/decision | refused (HTTP / gRPC) | gRPC errors | gRPC ÷ HTTP throughput \
         | gRPC ÷ HTTP per decision (CPU; target ≥ 1.0) | load avg |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in g["rows"].as_array().into_iter().flatten() {
        let (c, q) = (&r["check"], &r["grpc"]);
        let share = |refused: &Value, all: &Value| 100.0 * f(refused) / f(all).max(1.0);
        let _ = writeln!(
            t,
            "| {} | {:.0} | {:.2} | {:.1} | {:.0} | {:.2} | {:.1} | {:.1}% / {:.1}% | {} | {:.2}× | {:.2}× | {} |",
            r["label"].as_str().unwrap_or(""),
            f(&c["rps"]),
            f(&c["p99_us"]) / 1000.0,
            f(&r["check_cpu_us"]),
            f(&q["rps"]),
            f(&q["p99_us"]) / 1000.0,
            f(&r["grpc_cpu_us"]),
            share(&c["non_2xx"], &c["requests"]),
            share(&q["over_limit"], &q["requests"]),
            q["errors"],
            f(&r["ratio"]),
            f(&r["cpu_ratio"]),
            q["load"].as_str().unwrap_or("?")
        );
    }
    let _ = writeln!(t, "\nEach row: {}. {env}", g["command"].as_str().unwrap_or(""));
    t
}

/// Replaces the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`, keeping the markers.
pub(super) fn replace_marked(doc: &str, name: &str, body: &str) -> Result<String> {
    let (open, close) = (format!("<!-- bench:{name} -->"), format!("<!-- /bench:{name} -->"));
    let start = doc.find(&open).ok_or_else(|| anyhow!("marker {open} missing"))? + open.len();
    let end = doc[start..].find(&close).ok_or_else(|| anyhow!("marker {close} missing"))? + start;
    Ok(format!("{}\n{}\n{}", &doc[..start], body.trim_end(), &doc[end..]))
}

/// Rewrites the documents from this run's `results`; the targets table from `latest` (every part's last run).
pub(super) fn write_docs(results: &Value, latest: &Value) -> Result<()> {
    let env: Vec<String> =
        results["env"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect();
    let env_text = format!("Command: `cargo xtask bench`. Machine: {}.", env.join("; "));
    let perf_path = paths::in_workspace("docs/perf.md");
    let mut perf = std::fs::read_to_string(&perf_path).with_context(|| format!("reading {}", perf_path.display()))?;
    if !results["masters"].is_null() {
        super::masters::write_doc(&results["masters"])?;
    }
    perf = replace_marked(&perf, "targets", &super::targets::table(&super::targets::judge(latest)))?;
    if !results["grpc"].is_null() {
        perf = replace_marked(&perf, "grpc", &grpc_table(&results["grpc"], &format!("Machine: {}.", env.join("; "))))?;
    }
    // A gRPC-only run (`--only grpc`) carries its machine line in its own section and leaves the others alone.
    if results["micro"].is_null() && results["http"].is_null() && results["memory"].is_null() {
        std::fs::write(&perf_path, perf)?;
        println!("== rewrote {}", perf_path.display());
        return Ok(());
    }
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

pub(super) fn draw_chart(results: &Path) -> Result<()> {
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
