//! `cargo xtask bench --only pg-table`: the decide statement on a table of 10,000,000 rows against an empty one
//! (issue 12, item 5: within 20 %), both measured by pgbench in the same run, alternated so that a change of the
//! machine's load hits both alike.
//!
//! Both schemas get the project's migrations (so the `full_at` index the pruner reads is maintained on every write,
//! as in production); one is filled with rows that are not full (a service whose history is large at any moment).
//! The script is the PostgreSQL ceiling's (`pg_ceiling.rs`): decide.sql with a random key per transaction, so
//! nearly every check is a new key, the statement's most expensive path (an insert into both indexes). Not part of
//! the default run: filling the table takes minutes on a small machine.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use serde_json::{json, Value};

use super::load_average;
use super::pg_ceiling::{migrate, pgbench_with, psql, write_script};
use crate::apt;

/// Rows in the large table.
const ROWS: u64 = 10_000_000;
/// The bound: the large table at least this fraction of the empty one's rate.
const TARGET: f64 = 0.8;
const CLIENTS: u32 = 8;
const THREADS: u32 = 2;
/// Each table is measured as production commits (waiting for the WAL flush, which on a small machine's disk can
/// be most of a check's time) and with the session's `synchronous_commit` off, which leaves the statement's own
/// work: the part a larger table could slow down.
pub(super) const MODES: [(&str, &str); 2] =
    [("commit flushed", ""), ("synchronous_commit off", "-c synchronous_commit=off")];
/// Measured rounds of each table, alternated, and their length.
const ROUNDS: usize = 2;
const SECONDS: u64 = 10;

/// Fills, measures and drops two private schemas; returns both rates, their ratio and the commands.
pub(super) fn run(database_url: &str) -> Result<Value> {
    if which::which("pgbench").is_err() {
        apt::install("pgbench", &["postgresql-client"])?;
    }
    let run_id = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (empty, large) = (format!("bench_table_empty_{run_id}"), format!("bench_table_large_{run_id}"));
    let result = (|| {
        migrate(database_url, &empty)?;
        migrate(database_url, &large)?;
        println!("== pg table size: filling {ROWS} rows");
        let started = Instant::now();
        psql(database_url, Some(&large), &["-v", "ON_ERROR_STOP=1", "-c", &fill_sql(ROWS)])?;
        let fill_s = started.elapsed().as_secs_f64();
        println!("  filled in {fill_s:.0} s");
        for schema in [&empty, &large] {
            psql(database_url, Some(schema), &["-c", "VACUUM ANALYZE rate_limits"])?;
        }
        let script = write_script()?;
        for schema in [&empty, &large] {
            pgbench_with(database_url, schema, &script, 3, CLIENTS, THREADS, "")?;
        }
        let load = load_average();
        let mut modes = Vec::new();
        for (mode, options) in MODES {
            let (mut empty_tps, mut large_tps) = (Vec::new(), Vec::new());
            for round in 0..ROUNDS {
                let e = pgbench_with(database_url, &empty, &script, SECONDS, CLIENTS, THREADS, options)?;
                let l = pgbench_with(database_url, &large, &script, SECONDS, CLIENTS, THREADS, options)?;
                println!(
                    "  {mode}, round {}: empty {e:>8.0} tps  {ROWS} rows {l:>8.0} tps  ({:.2}×)",
                    round + 1,
                    l / e
                );
                empty_tps.push(e);
                large_tps.push(l);
            }
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            let ratio = mean(&large_tps) / mean(&empty_tps);
            let verdict = if ratio >= TARGET { "meets" } else { "below" };
            println!(
                "== {mode}: decide on {ROWS} rows / on an empty table = {ratio:.2}× ({verdict} the {TARGET}× target)"
            );
            modes.push(json!({
                "mode": mode, "pgoptions": options, "empty_tps": empty_tps, "large_tps": large_tps, "ratio": ratio,
            }));
        }
        Ok(json!({
            "command": format!(
                "pgbench -n -M prepared -c {CLIENTS} -j {THREADS} -T {SECONDS} -f {} per table, {ROUNDS} rounds alternated",
                script.display()
            ),
            "rows": ROWS, "fill_s": fill_s, "modes": modes, "target": TARGET, "load_before": load,
            "load_after": load_average(),
        }))
    })();
    for schema in [&empty, &large] {
        let _ = psql(database_url, None, &["-c", &format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")]);
    }
    result
}

/// `rows` buckets that are not full (an hour to go), keyed as the script's keys are (decimal numbers).
fn fill_sql(rows: u64) -> String {
    format!(
        "INSERT INTO rate_limits (user_id, tokens, last_refill_time, version, full_at) \
         SELECT g::text, 5, now(), 1, now() + INTERVAL '1 hour' FROM generate_series(1, {rows}) AS g"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fill_names_every_column_the_store_writes() {
        let sql = fill_sql(3);
        assert!(sql.contains("(user_id, tokens, last_refill_time, version, full_at)"), "{sql}");
        assert!(sql.contains("generate_series(1, 3)"), "{sql}");
    }
}
