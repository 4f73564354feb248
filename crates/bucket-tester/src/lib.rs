//! bucket-tester: checks any running bucket server end to end over HTTP, as a client would see it, or over gRPC
//! (Envoy's `ShouldRateLimit`), as a gateway would.
//!
//! [`run`] learns the server's policy from one probe, then runs the chosen scenarios one after another (they
//! measure time and concurrency, so they must not disturb each other), each on user ids fresh to this run, and
//! returns a [`Report`]. The binary in `main.rs` only parses flags, prints the report and picks the exit code;
//! tests call `run` in-process.

mod client;
mod consistency;
mod descriptors;
mod grpc;
mod options;
mod policy;
mod progress;
mod report;
mod scenarios;
mod transport;

use std::time::Instant;

pub use descriptors::Descriptors;
pub use grpc::GrpcTarget;
pub use options::Options;
pub use policy::Policy;
pub use report::{Report, ScenarioResult, Verdict};
pub use scenarios::ScenarioName;

use client::Client;
use grpc::GrpcClient;
use policy::{discover, DiscoverError};
use report::Lines;
use scenarios::Ctx;
use transport::Transport;

/// Why a run could not start at all (exit code 2), as opposed to a server that misbehaves (a FAIL, exit code 1).
#[derive(Debug)]
pub enum RunError {
    /// A flag value that can't work, e.g. an invalid header name.
    Usage(String),
    /// No connection to the target or an instance.
    Unreachable {
        /// The URL that couldn't be reached.
        url: String,
        /// What the connection attempt said.
        cause: String,
    },
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Usage(msg) => f.write_str(msg),
            RunError::Unreachable { url, cause } => write!(
                f,
                "cannot reach {url}: is bucket-api running? start it with `cargo run -p bucket-api` ({cause})"
            ),
        }
    }
}

impl std::error::Error for RunError {}

/// Runs the selected scenarios against `opts.target` and reports each one's verdict.
pub async fn run(opts: &Options) -> Result<Report, RunError> {
    let client = match &opts.grpc {
        None => {
            Transport::Http(Client::new(&opts.user_header, opts.timeout).map_err(|e| RunError::Usage(e.to_string()))?)
        }
        Some(target) => {
            let urls: Vec<&str> = std::iter::once(&opts.target).chain(&opts.instances).map(String::as_str).collect();
            let connected = GrpcClient::connect(&urls, target.clone(), opts.timeout).await;
            Transport::Grpc(connected.map_err(|(url, cause)| RunError::Unreachable { url, cause })?)
        }
    };
    let run_id = uuid::Uuid::new_v4().to_string();
    let probe_user = format!("tester-probe-{run_id}");
    let lines = Lines::new(opts.json, opts.quiet);
    let mut report = Report {
        target: opts.target.clone(),
        instances: opts.instances.clone(),
        run_id: run_id.clone(),
        policy: None,
        scenarios: Vec::new(),
    };

    let learned = match discover(&client, &opts.target, &probe_user).await {
        Ok(policy) => Ok(policy),
        Err(DiscoverError::Unreachable(cause)) => {
            return Err(RunError::Unreachable { url: opts.target.clone(), cause })
        }
        Err(DiscoverError::Unusable(why)) => Err(why),
    };
    // Each instance is probed too: an unreachable one is a usage problem, a different policy is the concurrent
    // scenario's to report.
    let mut instance_policies = Vec::new();
    for (i, url) in opts.instances.iter().enumerate() {
        // A probe user of its own: on a shared store the target's probe already spent a token of `probe_user`,
        // and a capacity read from a fresh bucket's `limit_remaining` (gRPC) needs a fresh bucket.
        match discover(&client, url, &format!("tester-probe{i}-{run_id}")).await {
            Ok(policy) => instance_policies.push((url.clone(), policy)),
            Err(DiscoverError::Unreachable(cause)) => return Err(RunError::Unreachable { url: url.clone(), cause }),
            // Keep going: the concurrent scenario will meet the same problem on real requests and say so.
            Err(DiscoverError::Unusable(_)) => {}
        }
    }
    let shown_target = match &opts.grpc {
        Some(g) => format!("{} (gRPC, domain {:?}, descriptors {})", opts.target, g.domain, g.descriptors.describe()),
        None => opts.target.clone(),
    };
    lines.banner(&shown_target, &run_id, learned.as_ref().ok());

    let policy = match learned {
        Ok(policy) => policy,
        Err(why) => {
            // Without a policy no scenario can judge anything: each fails with the same reason.
            for name in opts.selected() {
                report.scenarios.push(ScenarioResult {
                    name,
                    verdict: Verdict::Fail,
                    reason: format!("could not learn the policy: {why}"),
                    duration: Default::default(),
                    requests: 0,
                });
            }
            return Ok(report);
        }
    };
    let ctx = Ctx::new(&client, opts, &policy, &instance_policies, &run_id);
    for name in opts.selected() {
        let started = Instant::now();
        let outcome = scenarios::run(name, &ctx).await;
        report.scenarios.push(ScenarioResult {
            name,
            verdict: outcome.verdict,
            reason: outcome.reason,
            duration: started.elapsed(),
            requests: ctx.take_requests(),
        });
    }
    report.policy = Some(policy);
    Ok(report)
}
