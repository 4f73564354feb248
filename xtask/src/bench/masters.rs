//! `cargo xtask bench --only masters`: decisions per second of the Redis store with 1 and 3 Redis Cluster masters
//! on this machine, beside one standalone Redis (issue 13, item 6), by the `cluster_masters` bench of bucket-store,
//! which starts the servers itself and reports the CPU each process used. Its table goes into docs/scaling.md.
//! Not part of the default run: it sizes a deployment, and on a shared machine its figures say more about the
//! other processes than the default parts' ratios do.

use std::fmt::Write as _;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::docs::replace_marked;
use super::tagged_json;
use crate::{paths, process};

/// How the figures are produced, as the docs quote it.
const COMMAND: &str = "cargo bench -p bucket-store --bench cluster_masters";

/// Builds and runs the bench; returns its `MASTERS` JSON.
pub(super) fn run() -> Result<Value> {
    println!("== masters: {COMMAND}");
    let bench = ["bench", "-p", "bucket-store", "--bench", "cluster_masters"];
    // Built in the foreground first, so that a long build shows its progress; the run's output is parsed.
    let status =
        process::run_foreground(process::cargo().current_dir(paths::workspace_root()).args(bench).arg("--no-run"))?;
    if !status.success() {
        bail!("building the cluster_masters bench failed ({status})");
    }
    let output = process::run_checked(process::cargo().current_dir(paths::workspace_root()).args(bench))?;
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    let masters = tagged_json(&String::from_utf8_lossy(&output.stdout), "MASTERS ")?;
    for row in masters["rows"].as_array().into_iter().flatten() {
        println!(
            "  {:<20} {:>8.0} decisions/s; cores: client {:.2}, redis {:.2}, others {:.2}; limited by {}",
            row["setup"].as_str().unwrap_or("?"),
            f(&row["decisions_per_s"]),
            f(&row["bench_cores"]),
            f(&row["redis_cores"]),
            f(&row["other_cores"]),
            row["limit"].as_str().unwrap_or("?")
        );
    }
    Ok(masters)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// The table between the `masters` markers of docs/scaling.md.
fn table(m: &Value) -> String {
    let mut t = String::from(
        "| setup | decisions/s (each round) | × standalone | errors | bench client cores | redis-server cores (each) \
         | client CPU µs/decision | Redis CPU µs/decision | decisions per socket read | other processes' cores \
         | what limited it |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    let rows = m["rows"].as_array().cloned().unwrap_or_default();
    let baseline = rows.iter().find(|r| r["setup"] == "standalone").map(|r| f(&r["decisions_per_s"]));
    for r in &rows {
        let rounds: Vec<String> =
            r["rounds_per_s"].as_array().into_iter().flatten().map(|v| format!("{:.0}", f(v))).collect();
        let each: Vec<String> =
            r["servers"].as_array().into_iter().flatten().map(|s| format!("{:.2}", f(&s["cores"]))).collect();
        let _ = writeln!(
            t,
            "| {} | {:.0} ({}) | {:.2}× | {} | {:.2} | {:.2} ({}) | {:.1} | {:.1} | {:.1} | {:.2} | {} |",
            r["setup"].as_str().unwrap_or(""),
            f(&r["decisions_per_s"]),
            rounds.join(", "),
            f(&r["decisions_per_s"]) / baseline.unwrap_or(f64::NAN),
            r["errors"],
            f(&r["bench_cores"]),
            f(&r["redis_cores"]),
            each.join(" + "),
            f(&r["bench_us_per_decision"]),
            f(&r["redis_us_per_decision"]),
            f(&r["decisions_per_read"]),
            f(&r["other_cores"]),
            r["limit"].as_str().unwrap_or("")
        );
    }
    let _ = writeln!(
        t,
        "\nCommand: `cargo xtask bench --only masters` (runs `{COMMAND}`, bench profile): {} tasks checking random \
         users out of {} million, each setup {} s measured after {} s of warm-up, {} rounds with the setups in turn, the \
         store's default pool of {} connections, no replicas. {} CPUs; load average {} before, {} after. Cores are \
         CPU seconds per second of the measured windows (`/proc/<pid>/stat`; the machine's from `/proc/stat`); the \
         time a task waited for a CPU is `/proc/pressure/cpu`'s `some` share; decisions per socket read (the \
         servers' `total_reads_processed` in `INFO stats`) is the batching the client's multiplexed connections \
         achieved.",
        m["tasks"],
        f(&m["users"]) / 1e6,
        m["seconds"],
        m["warmup_s"],
        m["rounds"],
        m["pool_size"],
        m["cpus"],
        m["load_before"].as_str().unwrap_or("?"),
        m["load_after"].as_str().unwrap_or("?")
    );
    t
}

/// Rewrites the `masters` table of docs/scaling.md from a run's `masters` results.
pub(super) fn write_doc(masters: &Value) -> Result<()> {
    let path = paths::in_workspace("docs/scaling.md");
    let doc = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    std::fs::write(&path, replace_marked(&doc, "masters", &table(masters))?)?;
    println!("== rewrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_compares_each_setup_with_standalone_and_names_its_limit() {
        let row = |setup: &str, rate: f64, limit: &str| {
            json!({ "setup": setup, "decisions_per_s": rate, "rounds_per_s": [rate], "errors": 0,
                "bench_cores": 1.2, "redis_cores": 0.6, "servers": [{ "cores": 0.6 }], "bench_us_per_decision": 60.0,
                "redis_us_per_decision": 30.0, "decisions_per_read": 4.0, "other_cores": 0.1, "limit": limit })
        };
        let m = json!({ "tasks": 64, "users": 1_000_000, "seconds": 5.0, "warmup_s": 2.0, "rounds": 1, "pool_size": 2,
            "cpus": 2, "load_before": "1.0", "load_after": "2.0",
            "rows": [row("standalone", 20000.0, "the CPUs"), row("cluster, 3 masters", 15000.0, "the client")] });
        let t = table(&m);
        assert!(t.contains("| standalone | 20000 (20000) | 1.00× |"), "{t}");
        assert!(t.contains("| 60.0 | 30.0 | 4.0 |"), "{t}");
        assert!(t.contains("| cluster, 3 masters | 15000 (15000) | 0.75× |"), "{t}");
        assert!(t.contains("| the client |"), "{t}");
        assert!(t.contains("load average 1.0 before, 2.0 after"), "{t}");
        assert!(t.contains("random users out of 1 million, each"), "{t}");
    }
}
