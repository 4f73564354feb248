//! Every performance target the issues set, judged from one run's results: printed at the end of `cargo xtask
//! bench` and written into docs/perf.md between the `targets` markers, so a reader sees each ratio, the two numbers
//! it divides, and whether it is met, without recomputing anything. A target whose numbers this run did not
//! measure (a part left out with `--only`) says so instead of keeping an old verdict.

use std::fmt::Write as _;
use std::process::Command;

use anyhow::Result;
use serde_json::Value;

use super::target_dir;
use crate::process;

/// The parts a run may measure, as keys of results.json.
const PARTS: [&str; 7] = ["micro", "http", "pg_ceiling", "redis_ceiling", "memory", "grpc", "pg_table"];

/// Folds this run's parts into `<target>/bench/latest.json` (each part stamped with when it was measured) and
/// returns it: targets are judged from every part's last run, so `--only pg-table` adds its rows to a full run's
/// table instead of erasing the others. A ratio never mixes parts, so each still compares numbers of one run.
pub(super) fn merge_latest(results: &Value) -> Result<Value> {
    let path = target_dir().join("bench").join("latest.json");
    let mut latest: Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_else(|| Value::Object(Default::default()));
    let stamp = process::run_checked(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    for part in PARTS {
        if !results[part].is_null() {
            let mut value = results[part].clone();
            value["measured_at"] = Value::String(stamp.clone());
            latest[part] = value;
        }
    }
    std::fs::create_dir_all(target_dir().join("bench"))?;
    std::fs::write(&path, serde_json::to_string_pretty(&latest)?)?;
    Ok(latest)
}

/// Which way a ratio must go.
#[derive(Clone, Copy)]
enum Bound {
    AtLeast(f64),
    AtMost(f64),
}

/// One target and what this run measured for it.
pub(super) struct Verdict {
    what: String,
    bound: Bound,
    /// `(ratio, how it was computed)`, or `None` when the run lacks a number.
    measured: Option<(f64, String)>,
    /// When the part holding the numbers was measured.
    when: String,
}

impl Verdict {
    fn met(&self) -> Option<bool> {
        let (ratio, _) = self.measured.as_ref()?;
        Some(match self.bound {
            Bound::AtLeast(t) => *ratio >= t,
            Bound::AtMost(t) => *ratio <= t,
        })
    }

    fn bound_text(&self) -> String {
        match self.bound {
            Bound::AtLeast(t) => format!("≥ {t}×"),
            Bound::AtMost(t) => format!("≤ {t}×"),
        }
    }
}

fn store<'a>(results: &'a Value, label: &str) -> Option<&'a Value> {
    results["http"]["stores"].as_array()?.iter().find(|s| s["store"] == label)
}

fn rps(results: &Value, label: &str, shape: &str) -> Option<f64> {
    store(results, label)?["shapes"][shape]["rps"].as_f64()
}

/// `a / b` with both operands named, for the table.
fn over(a: Option<f64>, a_name: &str, b: Option<f64>, b_name: &str) -> Option<(f64, String)> {
    let (a, b) = (a?, b?);
    (b > 0.0).then(|| (a / b, format!("{a_name} {a:.0} ÷ {b_name} {b:.0}")))
}

fn at_least(what: &str, target: f64, measured: Option<(f64, String)>, part: &Value) -> Verdict {
    let when = part["measured_at"].as_str().unwrap_or("").to_string();
    Verdict { what: what.to_string(), bound: Bound::AtLeast(target), measured, when }
}

/// Issue 12's targets (and issue 11's gRPC one) against `results`.
pub(super) fn judge(results: &Value) -> Vec<Verdict> {
    let mut v = Vec::new();
    let http = &results["http"];
    let floor = |label| rps(results, label, "floor");
    for (route, shape, hot) in [("GET /", "many", "hot"), ("POST /v1/check", "check_many", "check_hot")] {
        v.push(at_least(
            &format!("memory store, {route}, many users ÷ own /healthz"),
            0.9,
            over(rps(results, "memory", shape), "req/s", floor("memory"), "/healthz"),
            http,
        ));
        v.push(at_least(
            &format!("memory store, {route}, one hot user ÷ own /healthz"),
            0.95,
            over(rps(results, "memory", hot), "req/s", floor("memory"), "/healthz"),
            http,
        ));
    }
    let redis_many = rps(results, "redis", "many");
    v.push(at_least(
        "redis store, GET / many users ÷ own /healthz",
        0.5,
        over(redis_many, "req/s", floor("redis"), "/healthz"),
        http,
    ));
    // The ceilings run right after the HTTP part, in the same invocation.
    v.push(at_least(
        "redis store, GET / many users ÷ redis-benchmark of the script, unpipelined",
        0.8,
        over(redis_many, "req/s", results["redis_ceiling"]["script"]["p1"]["rps"].as_f64(), "redis-benchmark"),
        http,
    ));
    v.push(at_least(
        "postgres store, GET / many users ÷ pgbench -M prepared on decide.sql",
        0.7,
        over(rps(results, "postgres", "many"), "req/s", results["pg_ceiling"]["tps"].as_f64(), "pgbench tps"),
        http,
    ));
    v.push(at_least(
        "tiered sync, GET / many users ÷ redis store",
        0.5,
        over(rps(results, "tiered sync", "many"), "req/s", redis_many, "redis"),
        http,
    ));
    v.push(at_least(
        "tiered write-behind, GET / returning users ÷ redis store",
        0.8,
        over(rps(results, "tiered write-behind", "returning"), "req/s", rps(results, "redis", "returning"), "redis"),
        http,
    ));
    let micro = &results["micro"];
    for row in micro["rows"].as_array().into_iter().flatten().filter(|r| r["group"] == "core") {
        let shape = row["shape"].as_str().unwrap_or("?");
        v.push(Verdict {
            what: format!("bucket-core decide ({shape}) ÷ governor's direct limiter, ns per decision"),
            bound: Bound::AtMost(1.2),
            measured: over(row["bucket_ns"].as_f64(), "bucket ns", row["governor_ns"].as_f64(), "governor ns"),
            when: micro["measured_at"].as_str().unwrap_or("").to_string(),
        });
    }
    let pg_table = &results["pg_table"];
    let large_table = |mode: &str| format!("decide.sql on 10,000,000 rows ÷ on an empty table ({mode})");
    let modes = pg_table["modes"].as_array().map_or(&[][..], Vec::as_slice);
    for mode in modes {
        let mean = |k: &str| {
            let xs: Vec<f64> = mode[k].as_array().into_iter().flatten().filter_map(Value::as_f64).collect();
            (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
        };
        v.push(at_least(
            &large_table(mode["mode"].as_str().unwrap_or("?")),
            0.8,
            over(mean("large_tps"), "tps", mean("empty_tps"), "empty tps"),
            pg_table,
        ));
    }
    if modes.is_empty() {
        // Only `--only pg-table` measures these; where it never ran, the table says so instead of leaving them out.
        for (mode, _) in super::pg_table::MODES {
            v.push(at_least(&large_table(mode), 0.8, None, pg_table));
        }
    }
    let grpc = &results["grpc"];
    for row in grpc["rows"].as_array().into_iter().flatten() {
        v.push(at_least(
            &format!("gRPC per decision ÷ POST /v1/check, server CPU ({})", row["label"].as_str().unwrap_or("?")),
            1.0,
            // Higher is better for the ratio, so it is HTTP's CPU per decision over gRPC's.
            over(row["check_cpu_us"].as_f64(), "HTTP µs", row["grpc_cpu_us"].as_f64(), "gRPC µs"),
            grpc,
        ));
    }
    v
}

/// The verdicts as a Markdown table.
pub(super) fn table(verdicts: &[Verdict]) -> String {
    let mut t = String::from("| target | bound | measured | from | run | verdict |\n|---|---|---:|---|---|---|\n");
    for v in verdicts {
        let (ratio, from) = match &v.measured {
            Some((r, from)) => (format!("{r:.2}×"), from.clone()),
            None => ("–".into(), "not measured in this run".into()),
        };
        let verdict = match v.met() {
            Some(true) => "met",
            Some(false) => "**not met**",
            None => "–",
        };
        let when = if v.when.is_empty() { "–" } else { &v.when };
        let _ = writeln!(t, "| {} | {} | {ratio} | {from} | {when} | {verdict} |", v.what, v.bound_text());
    }
    t
}

/// Prints one line per target to the terminal.
pub(super) fn print(verdicts: &[Verdict]) {
    println!("== targets");
    for v in verdicts {
        let measured = v.measured.as_ref().map_or("not measured".to_string(), |(r, from)| format!("{r:.2}× ({from})"));
        let verdict = match v.met() {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "-",
        };
        println!("  {:<7} {} {}: {measured}", verdict, v.what, v.bound_text());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ratios_come_from_the_same_run_and_missing_parts_say_so() {
        let results = json!({
            "http": { "measured_at": "2026-12-02 08:00 UTC", "stores": [
                { "store": "memory", "shapes": { "floor": { "rps": 100.0 }, "many": { "rps": 95.0 },
                  "hot": { "rps": 90.0 } } },
                { "store": "redis", "shapes": { "floor": { "rps": 100.0 }, "many": { "rps": 40.0 } } },
            ] },
            "redis_ceiling": { "script": { "p1": { "rps": 50.0 } } },
            "micro": { "rows": [ { "group": "core", "shape": "allowed", "bucket_ns": 6.0, "governor_ns": 5.0 } ] },
        });
        let verdicts = judge(&results);
        let find = |what: &str| verdicts.iter().find(|v| v.what.starts_with(what)).map(Verdict::met);
        assert_eq!(find("memory store, GET /, many users"), Some(Some(true)));
        assert_eq!(find("memory store, GET /, one hot user"), Some(Some(false)));
        assert_eq!(find("redis store, GET / many users ÷ own"), Some(Some(false)));
        assert_eq!(find("redis store, GET / many users ÷ redis-benchmark"), Some(Some(true)));
        assert_eq!(find("bucket-core decide (allowed)"), Some(Some(true)));
        assert_eq!(find("postgres store"), Some(None), "no pgbench number in this run");
        assert_eq!(find("decide.sql on 10,000,000 rows"), Some(None), "pg-table never ran: listed, not measured");
        let text = table(&verdicts);
        assert!(text.contains("| 0.95× | req/s 95 ÷ /healthz 100 | 2026-12-02 08:00 UTC | met |"), "{text}");
        assert!(text.contains("not measured in this run"), "{text}");
    }
}
