//! What a run tells people and machines: per-request lines as they happen, then a summary table or JSON.
//!
//! Per-request lines and the banner go to stdout for humans; `--json` silences them so stdout carries exactly one
//! JSON document, and `--quiet` keeps only the banner and the summary.

use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::client::Reply;
use crate::policy::Policy;
use crate::scenarios::ScenarioName;

/// How a scenario ended; only `Fail` makes the run fail (a `Skip` says the server couldn't be tested that way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The server behaved as the contract says.
    Pass,
    /// It didn't; the reason says what was seen.
    Fail,
    /// The scenario doesn't apply to this server (e.g. no cache to compare), which is not the server's fault.
    Skip,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        }
    }
}

/// One scenario's outcome, for the table and the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// Which scenario.
    pub name: ScenarioName,
    /// PASS, FAIL or SKIP.
    pub verdict: Verdict,
    /// What was seen, in one line.
    pub reason: String,
    /// Wall time, waits included.
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Duration,
    /// Requests sent by this scenario.
    pub requests: usize,
}

fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis().try_into().unwrap_or(u64::MAX))
}

/// Everything a run found; `--json` prints it as is.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The server every scenario but `concurrent` talked to.
    pub target: String,
    /// The instances `concurrent` spread its requests over (empty: just the target).
    pub instances: Vec<String>,
    /// The UUID in this run's user ids, to find them in the server's logs.
    pub run_id: String,
    /// The policy learned from the server, if it could be.
    pub policy: Option<Policy>,
    /// One entry per scenario run, in run order.
    pub scenarios: Vec<ScenarioResult>,
}

impl Report {
    /// The result for one scenario, if it ran.
    pub fn get(&self, name: ScenarioName) -> Option<&ScenarioResult> {
        self.scenarios.iter().find(|s| s.name == name)
    }

    fn count(&self, verdict: Verdict) -> usize {
        self.scenarios.iter().filter(|s| s.verdict == verdict).count()
    }

    /// The process exit code: 1 when any scenario failed, else 0 (SKIP is not a failure).
    pub fn exit_code(&self) -> i32 {
        if self.count(Verdict::Fail) > 0 {
            1
        } else {
            0
        }
    }

    /// The report with its totals first, as pretty JSON, for `--json`.
    pub fn to_json(&self) -> String {
        let totals = Totals {
            ok: self.exit_code() == 0,
            passed: self.count(Verdict::Pass),
            failed: self.count(Verdict::Fail),
            skipped: self.count(Verdict::Skip),
            report: self,
        };
        // Serializing plain structs, strings and numbers cannot fail; the fallback only keeps this panic-free.
        serde_json::to_string_pretty(&totals).unwrap_or_else(|e| format!("{{\"ok\": false, \"error\": \"{e}\"}}"))
    }

    /// The human summary: one row per scenario with verdict, time, requests and reason, then totals.
    pub fn summary_table(&self) -> String {
        let name_width = self.scenarios.iter().map(|s| s.name.as_str().len()).max().unwrap_or(8).max(8);
        let mut out = format!("\n{:<name_width$}  RESULT  {:>7}  {:>8}  DETAIL\n", "SCENARIO", "TIME", "REQUESTS");
        for s in &self.scenarios {
            out.push_str(&format!(
                "{:<name_width$}  {:<6}  {:>6.2}s  {:>8}  {}\n",
                s.name.as_str(),
                s.verdict.label(),
                s.duration.as_secs_f64(),
                s.requests,
                s.reason
            ));
        }
        out.push_str(&format!(
            "\n{} passed, {} failed, {} skipped\n",
            self.count(Verdict::Pass),
            self.count(Verdict::Fail),
            self.count(Verdict::Skip)
        ));
        out
    }
}

/// The `--json` document: verdict counts, then the report's own fields.
#[derive(Serialize)]
struct Totals<'a> {
    ok: bool,
    passed: usize,
    failed: usize,
    skipped: usize,
    #[serde(flatten)]
    report: &'a Report,
}

/// Live output while scenarios run.
#[derive(Debug, Clone, Copy)]
pub struct Lines {
    requests: bool,
    banner: bool,
}

impl Lines {
    /// `json` silences everything; `quiet` only the per-request lines.
    pub fn new(json: bool, quiet: bool) -> Self {
        Lines { requests: !json && !quiet, banner: !json }
    }

    /// The run's context, once, before any scenario.
    pub fn banner(&self, target: &str, run_id: &str, policy: Option<&Policy>) {
        if !self.banner {
            return;
        }
        match policy {
            Some(p) => println!(
                "bucket-tester: testing {target}: policy {:?}, capacity {} (from {}), {} token/s (from the {}), \
                 run {run_id}",
                p.name, p.capacity, p.capacity_from, p.refill_per_sec, p.rate_from
            ),
            None => println!("bucket-tester: testing {target}: policy unknown, run {run_id}"),
        }
    }

    /// One line per request: `[burst] #3 user=… 200 remaining=7 source=memory`.
    pub fn request(
        &self,
        scenario: ScenarioName,
        n: usize,
        user: &str,
        via: Option<&str>,
        reply: &Result<Reply, String>,
    ) {
        if self.requests {
            println!("{}", request_line(scenario, n, user, via, reply));
        }
    }
}

fn request_line(
    scenario: ScenarioName,
    n: usize,
    user: &str,
    via: Option<&str>,
    reply: &Result<Reply, String>,
) -> String {
    let mut line = format!("[{scenario}] #{n} user={user}");
    match reply {
        Ok(r) => {
            let shown = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
            line.push_str(&format!(" {} remaining={}", r.code(), shown(r.remaining)));
            if r.denied() {
                line.push_str(&format!(" retry-after={}s", shown(r.retry_after)));
            }
            // A gRPC answer names no store.
            if r.grpc.is_none() {
                line.push_str(&format!(" source={}", r.source.as_deref().unwrap_or("?")));
            }
        }
        Err(e) => line.push_str(&format!(" error: {e}")),
    }
    if let Some(via) = via {
        line.push_str(&format!(" via={via}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: ScenarioName, verdict: Verdict) -> ScenarioResult {
        ScenarioResult { name, verdict, reason: "why".into(), duration: Duration::from_millis(1500), requests: 3 }
    }

    fn report(results: Vec<ScenarioResult>) -> Report {
        Report { target: "http://t".into(), instances: vec![], run_id: "r".into(), policy: None, scenarios: results }
    }

    #[test]
    fn skip_does_not_fail_the_run_but_fail_does() {
        let ok =
            report(vec![result(ScenarioName::Burst, Verdict::Pass), result(ScenarioName::CacheVsDb, Verdict::Skip)]);
        assert_eq!(ok.exit_code(), 0);
        let bad = report(vec![result(ScenarioName::Burst, Verdict::Fail), result(ScenarioName::Drip, Verdict::Pass)]);
        assert_eq!(bad.exit_code(), 1);
    }

    #[test]
    fn json_has_verdicts_durations_and_totals() {
        let text = report(vec![result(ScenarioName::MultiUser, Verdict::Skip)]).to_json();
        let j: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(j["scenarios"][0]["name"], "multi-user");
        assert_eq!(j["scenarios"][0]["verdict"], "skip");
        assert_eq!(j["scenarios"][0]["duration_ms"], 1500);
        assert_eq!((j["passed"].as_u64(), j["skipped"].as_u64(), j["ok"].as_bool()), (Some(0), Some(1), Some(true)));
    }

    #[test]
    fn request_lines_show_status_remaining_and_source() {
        let reply = Reply {
            status: 429,
            source: Some("memory".into()),
            limit: Some(10),
            remaining: Some(0),
            reset: None,
            retry_after: Some(1),
            ratelimit: None,
            policy: None,
            body: None,
            grpc: None,
        };
        let line = request_line(ScenarioName::Burst, 11, "u", Some("127.0.0.1:1"), &Ok(reply));
        assert_eq!(line, "[burst] #11 user=u 429 remaining=0 retry-after=1s source=memory via=127.0.0.1:1");
        let line = request_line(ScenarioName::Drip, 2, "u", None, &Err("timed out".into()));
        assert_eq!(line, "[drip] #2 user=u error: timed out");
    }
}
