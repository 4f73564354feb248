//! The Redis store's ceiling, measured in the same run as the HTTP numbers: the project's own script
//! (`token_bucket.lua`, by `EVALSHA`, with the key and arguments the redis store sends for the bench's default
//! policy) driven by `redis-benchmark` with as many connections as wrk uses, unpipelined (`-P 1`) and pipelined
//! (`-P 16`). Issue 12's targets compare the redis store's `GET /` many users with it and with its own `/healthz`:
//! at least 0.8× the unpipelined script and 0.5× `/healthz`.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};

use super::{load_average, CAPACITY, REFILL_PER_SEC};
use crate::{paths, process};

/// Requests per redis-benchmark run.
const REQUESTS: u32 = 200_000;
/// Distinct random keys (`-r`): most requests meet a new bucket, like the `many` shape's new users.
const KEYSPACE: u32 = 1_000_000;
/// Issue 12's targets for the redis store's `GET /` many users.
const TARGET_VS_SCRIPT: f64 = 0.8;
const TARGET_VS_HEALTHZ: f64 = 0.5;

/// Runs the script ceiling and compares the `http` part's redis store with it; `http` may be `None` (ratios then
/// omitted).
pub(super) fn run(redis_url: &str, connections: u32, http: Option<&Value>) -> Result<Value> {
    let run_id = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    println!("== redis ceiling: redis-benchmark EVALSHA token_bucket.lua");
    let source = std::fs::read_to_string(paths::in_workspace("crates/bucket-store/src/redis/token_bucket.lua"))?;
    let loaded = process::run_checked(Command::new("redis-cli").args(["-u", redis_url, "SCRIPT", "LOAD", &source]))?;
    let sha = String::from_utf8_lossy(&loaded.stdout).trim().to_string();
    if sha.len() != 40 {
        return Err(anyhow!("SCRIPT LOAD answered {sha:?}"));
    }
    // The redis store's own key layout and arguments: `<prefix>{<user>}`, capacity, µs per token, cost 1, Redis's
    // clock (''), full mode. The keys expire on their own after the refill time (10 s), like the bench's users.
    let interval_us = (1e6 / REFILL_PER_SEC.parse::<f64>()?).round() as u64;
    let key = format!("bench:{run_id}:ceiling:{{user-__rand_int__}}");
    let interval = interval_us.to_string();
    let mut rows = serde_json::Map::new();
    for pipeline in [1u32, 16] {
        let load = load_average();
        let output = process::run_checked(Command::new("redis-benchmark").args([
            "-u",
            redis_url,
            "-c",
            &connections.to_string(),
            "-n",
            &REQUESTS.to_string(),
            "-r",
            &KEYSPACE.to_string(),
            "-P",
            &pipeline.to_string(),
            "--csv",
            "EVALSHA",
            &sha,
            "1",
            &key,
            CAPACITY,
            &interval,
            "1",
            "",
            "full",
        ]))?;
        let rps = csv_rps(&String::from_utf8_lossy(&output.stdout))?;
        println!("  -P {pipeline:<2} {rps:>9.0} req/s  (load {load})");
        rows.insert(format!("p{pipeline}"), json!({ "rps": rps, "load": load }));
    }
    let mut result = json!({
        "command": format!("redis-benchmark -c {connections} -n {REQUESTS} -r {KEYSPACE} -P {{1,16}} --csv EVALSHA \
            <sha of token_bucket.lua> 1 {key} {CAPACITY} {interval_us} 1 '' full"),
        "script": rows,
    });
    if let Some((many, healthz)) = http.and_then(redis_store_rps) {
        let p1 = result["script"]["p1"]["rps"].as_f64().unwrap_or(f64::NAN);
        let p16 = result["script"]["p16"]["rps"].as_f64().unwrap_or(f64::NAN);
        let ratios = json!({
            "many_rps": many, "healthz_rps": healthz,
            "vs_script_p1": many / p1, "vs_script_p16": many / p16, "vs_healthz": many / healthz,
            "target_vs_script_p1": TARGET_VS_SCRIPT, "target_vs_healthz": TARGET_VS_HEALTHZ,
        });
        let verdict = |ratio: f64, target: f64| if ratio >= target { "met" } else { "NOT met" };
        println!(
            "  redis store GET / many users {many:.0} req/s: {:.2}x the unpipelined script (target {TARGET_VS_SCRIPT}, \
             {}), {:.2}x -P 16, {:.2}x own /healthz {healthz:.0} (target {TARGET_VS_HEALTHZ}, {})",
            many / p1,
            verdict(many / p1, TARGET_VS_SCRIPT),
            many / p16,
            many / healthz,
            verdict(many / healthz, TARGET_VS_HEALTHZ),
        );
        result["ratios"] = ratios;
    }
    Ok(result)
}

/// The redis store's `many` and `floor` (own `/healthz`) req/s from the `http` part's results.
fn redis_store_rps(http: &Value) -> Option<(f64, f64)> {
    let stores = http["stores"].as_array()?;
    let redis = stores.iter().find(|s| s["store"] == "redis")?;
    Some((redis["shapes"]["many"]["rps"].as_f64()?, redis["shapes"]["floor"]["rps"].as_f64()?))
}

/// The `rps` column of redis-benchmark's `--csv` output (one test: the header, then one row).
fn csv_rps(csv: &str) -> Result<f64> {
    let row = csv.lines().filter(|l| l.starts_with('"')).nth(1).ok_or_else(|| anyhow!("no CSV row in {csv:?}"))?;
    let field = row.split("\",\"").nth(1).ok_or_else(|| anyhow!("no rps field in {row:?}"))?;
    field.trim_matches('"').parse().with_context(|| format!("rps in {row:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_rps_column() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\"\n\"EVALSHA abc 1 k 10 1000000 1  full\",\"4716.98\",\"0.734\"\n";
        assert_eq!(csv_rps(csv).unwrap(), 4716.98);
        assert!(csv_rps("\"test\",\"rps\"\n").is_err());
    }
}
