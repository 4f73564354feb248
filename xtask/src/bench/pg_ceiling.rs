//! The PostgreSQL ceiling of `cargo xtask bench`: pgbench running the project's own `decide.sql` as a prepared
//! statement, with the parameters a "many users" check binds, in the same run as the HTTP measurement, and bucket's
//! postgres store compared with it (issue 12's target: at least 0.7×).
//!
//! pgbench gets the statement from a script generated from the file the store compiles in: `$1` … `$4` become pgbench
//! variables (a random key per transaction, so nearly every check is a new user, as in wrk's `many` shape, and the
//! bench's default policy), and `$5`, the test-only clock, becomes NULL, which is what the store binds in production.
//! The tables and functions come from the project's migrations, applied by psql to a schema of the run's own.

use std::path::PathBuf;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};

use super::{load_average, target_dir, Args, CAPACITY, REFILL_PER_SEC};
use crate::{apt, paths, process};

/// Issue 12's target for the postgres store's many-users rate over pgbench's prepared rate.
const TARGET: f64 = 0.7;
/// pgbench's clients and threads: as many connections as wrk holds, on the machine's two cores.
const CLIENTS: u32 = 32;
const THREADS: u32 = 2;

/// Runs pgbench (after a warm-up of its own) and returns its rate, the command that produced it, and the ratio of
/// `http`'s postgres many-users rate to it.
pub(super) fn run(o: &Args, database_url: &str, http: &Value) -> Result<Value> {
    let run_id = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    if which::which("pgbench").is_err() {
        apt::install("pgbench", &["postgresql-client"])?;
    }
    println!("== pg ceiling: pgbench -M prepared on decide.sql");
    let schema = format!("bench_pgbench_{run_id}");
    migrate(database_url, &schema)?;
    let script = write_script()?;
    let result = (|| {
        pgbench(database_url, &schema, &script, o.warmup_s)?;
        let load = load_average();
        let tps = pgbench(database_url, &schema, &script, o.duration_s)?;
        println!("  pgbench {tps:>9.0} tps  (load {load})");
        let mut ceiling = json!({
            "command": format!("pgbench -n -M prepared -c {CLIENTS} -j {THREADS} -T {} -f {} (after a {} s warm-up)",
                o.duration_s, script.display(), o.warmup_s),
            "tps": tps,
            "load": load,
        });
        ceiling["ratio"] = ratio(http, &ceiling).unwrap_or(Value::Null);
        Ok(ceiling)
    })();
    // Each run's schema is private; dropping it keeps the shared database small.
    let _ = psql(database_url, None, &["-c", &format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")]);
    result
}

/// bucket's postgres many-users rate over pgbench's, printed against the target; `None` without both numbers.
fn ratio(http: &Value, ceiling: &Value) -> Option<Value> {
    let postgres = http["stores"].as_array()?.iter().find(|s| s["store"] == "postgres")?;
    let rps = postgres["shapes"]["many"]["rps"].as_f64()?;
    let tps = ceiling["tps"].as_f64()?;
    let ratio = rps / tps;
    let verdict = if ratio >= TARGET { "meets" } else { "below" };
    println!("== postgres store many users {rps:.0} req/s / pgbench prepared {tps:.0} tps = {ratio:.2}× ({verdict} the {TARGET}× target)");
    Some(json!({ "postgres_many_rps": rps, "pgbench_tps": tps, "ratio": ratio, "target": TARGET }))
}

/// Creates `schema` and applies every migration's `up.sql` to it, in order, as the store would.
pub(super) fn migrate(database_url: &str, schema: &str) -> Result<()> {
    psql(database_url, None, &["-c", &format!("CREATE SCHEMA \"{schema}\"")])?;
    let mut ups: Vec<PathBuf> = std::fs::read_dir(paths::in_workspace("migrations"))?
        .map(|entry| entry.map(|e| e.path().join("up.sql")))
        .collect::<Result<_, _>>()?;
    ups.sort();
    let mut args = vec!["-v".to_string(), "ON_ERROR_STOP=1".into()];
    for up in &ups {
        args.extend(["-f".into(), up.display().to_string()]);
    }
    psql(database_url, Some(schema), &args.iter().map(String::as_str).collect::<Vec<_>>())?;
    Ok(())
}

/// The pgbench script: decide.sql with pgbench variables for its parameters.
pub(super) fn write_script() -> Result<PathBuf> {
    let path = paths::in_workspace("crates/bucket-store/src/postgres/decide.sql");
    let sql = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let interval_us = (1e6 / REFILL_PER_SEC.parse::<f64>()?).round() as u64;
    let script = format!(
        "\\set key random(1, 1000000000000)\n\\set capacity {CAPACITY}\n\\set interval {interval_us}\n\\set cost 1\n{};\n",
        statement(&sql)
    );
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("pgbench_decide.sql");
    std::fs::write(&out, script)?;
    Ok(out)
}

/// The statement without its comments (pgbench reads `:name` inside them too), parameters as pgbench variables.
fn statement(sql: &str) -> String {
    let code: Vec<&str> = sql
        .lines()
        .map(|line| line.split_once("--").map_or(line, |(code, _)| code).trim_end())
        .filter(|line| !line.is_empty())
        .collect();
    // decide.sql has exactly five parameters; $5 (the test-only clock) is NULL in production.
    [("$5", "NULL"), ("$4", ":cost"), ("$3", ":interval"), ("$2", ":capacity"), ("$1", ":key")]
        .iter()
        .fold(code.join("\n"), |text, (param, variable)| text.replace(param, variable))
}

/// One pgbench run of `seconds` with this ceiling's clients; its transactions per second.
fn pgbench(database_url: &str, schema: &str, script: &PathBuf, seconds: u64) -> Result<f64> {
    pgbench_with(database_url, schema, script, seconds, CLIENTS, THREADS, "")
}

/// One pgbench run of `seconds` with `clients` connections on `threads` threads; its transactions per second.
pub(super) fn pgbench_with(
    database_url: &str,
    schema: &str,
    script: &PathBuf,
    seconds: u64,
    clients: u32,
    threads: u32,
    session_options: &str,
) -> Result<f64> {
    let mut command = Command::new("pgbench");
    command
        .args(["-n", "-M", "prepared", "-c", &clients.to_string(), "-j", &threads.to_string()])
        .args(["-T", &seconds.max(1).to_string(), "-f"])
        .arg(script)
        .arg(database_url)
        // The store's own session settings (postgres/session.rs): each prepared statement planned once.
        .env("PGOPTIONS", format!("-c search_path={schema} -c plan_cache_mode=force_generic_plan {session_options}"));
    let output = process::run_checked(&mut command)?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("no `tps = ` line in pgbench's output:\n{text}"))
}

pub(super) fn psql(database_url: &str, schema: Option<&str>, args: &[&str]) -> Result<String> {
    let mut command = Command::new("psql");
    command.args([database_url, "-XAtq"]).args(args);
    if let Some(schema) = schema {
        command.env("PGOPTIONS", format!("-c search_path={schema}"));
    }
    let output = process::run_checked(&mut command)?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_is_the_statement_with_variables_and_no_comments() {
        let sql = "-- $1 is the key\nSELECT $1, $2::bigint -- $3\n  / $3, $4, bucket_clock($5::bigint)\n";
        assert_eq!(statement(sql), "SELECT :key, :capacity::bigint\n  / :interval, :cost, bucket_clock(NULL::bigint)");
    }
}
