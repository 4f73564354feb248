//! The scenarios, one file each, and what they share: the server, its policy, fresh user ids and the output.
//!
//! A scenario returns `Ok(outcome)` when it reached a verdict and `Err(reason)` for a failure it could not get
//! past (no reply, an unexpected status): both end as a row in the report, neither ends the run.

mod burst;
mod cache_vs_db;
mod concurrent;
mod drip;
mod multi_user;
mod refill;

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use crate::client::Reply;
use crate::options::Options;
use crate::policy::Policy;
use crate::progress::Progress;
use crate::report::{Lines, Verdict};
use crate::transport::Transport;

/// Largest capacity the scenarios exhaust; every scenario but cache-vs-db sends about capacity requests or more
/// (concurrent four times that, at once), which stops being a quick check beyond this.
const MAX_CAPACITY: u64 = 500;

/// A scenario's name, as given to `--scenario` and shown in lines and the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioName {
    /// capacity + 5 instant requests: exactly capacity allowed, consistent headers.
    Burst,
    /// Exhaust, wait, count what came back; then honour Retry-After.
    Refill,
    /// Many requests at once on one key (over several instances if given): never more than capacity.
    Concurrent,
    /// Interleaved users each get their own full bucket.
    MultiUser,
    /// After draining, requests at the refill rate are never refused.
    Drip,
    /// A tiered server answers `new-user` then `redis`.
    CacheVsDb,
}

impl ScenarioName {
    /// Every scenario, in run order.
    pub const ALL: [ScenarioName; 6] = [
        ScenarioName::Burst,
        ScenarioName::Refill,
        ScenarioName::Concurrent,
        ScenarioName::MultiUser,
        ScenarioName::Drip,
        ScenarioName::CacheVsDb,
    ];

    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioName::Burst => "burst",
            ScenarioName::Refill => "refill",
            ScenarioName::Concurrent => "concurrent",
            ScenarioName::MultiUser => "multi-user",
            ScenarioName::Drip => "drip",
            ScenarioName::CacheVsDb => "cache-vs-db",
        }
    }
}

impl std::fmt::Display for ScenarioName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verdict and its one-line reason.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// PASS, FAIL or SKIP.
    pub verdict: Verdict,
    /// What was seen.
    pub reason: String,
}

impl Outcome {
    fn pass(reason: impl Into<String>) -> Self {
        Outcome { verdict: Verdict::Pass, reason: reason.into() }
    }

    fn fail(reason: impl Into<String>) -> Self {
        Outcome { verdict: Verdict::Fail, reason: reason.into() }
    }

    fn skip(reason: impl Into<String>) -> Self {
        Outcome { verdict: Verdict::Skip, reason: reason.into() }
    }
}

/// What every scenario works with.
pub struct Ctx<'a> {
    /// The shared client, HTTP or gRPC.
    pub client: &'a Transport,
    /// The run's options.
    pub opts: &'a Options,
    /// The policy learned from the target.
    pub policy: &'a Policy,
    /// Policies learned from each `--instances` URL (empty without instances).
    pub instance_policies: &'a [(String, Policy)],
    /// This run's UUID, part of every user id.
    pub run_id: &'a str,
    /// Per-request output.
    pub lines: Lines,
    /// Spinner for waits.
    pub progress: Progress,
    requests: AtomicUsize,
}

impl<'a> Ctx<'a> {
    /// Bundles what the scenarios share.
    pub fn new(
        client: &'a Transport,
        opts: &'a Options,
        policy: &'a Policy,
        instance_policies: &'a [(String, Policy)],
        run_id: &'a str,
    ) -> Self {
        Ctx {
            client,
            opts,
            policy,
            instance_policies,
            run_id,
            lines: Lines::new(opts.json, opts.quiet),
            progress: Progress::new(opts.progress && !opts.json),
            requests: AtomicUsize::new(0),
        }
    }

    /// A user id no other scenario, run or earlier run has used: `tester-<scenario>[-<suffix>]-<run uuid>`.
    fn user(&self, scenario: ScenarioName, suffix: Option<&str>) -> String {
        match suffix {
            Some(s) => format!("tester-{scenario}-{s}-{}", self.run_id),
            None => format!("tester-{scenario}-{}", self.run_id),
        }
    }

    /// Sends request `#n` of `scenario` to the target as `user`; see [`Ctx::hit_at`].
    async fn hit(&self, scenario: ScenarioName, n: usize, user: &str) -> Result<Reply, String> {
        self.send(scenario, n, &self.opts.target, None, user).await
    }

    /// Like [`Ctx::hit`], to one of several instances, which the request's line names.
    async fn hit_at(&self, scenario: ScenarioName, n: usize, url: &str, user: &str) -> Result<Reply, String> {
        self.send(scenario, n, url, Some(url), user).await
    }

    /// Sends, prints the line, and turns anything but 200 or 429 into an error: a scenario only ever reasons
    /// about allowed and refused.
    async fn send(
        &self,
        scenario: ScenarioName,
        n: usize,
        url: &str,
        via: Option<&str>,
        user: &str,
    ) -> Result<Reply, String> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let reply = self.client.hit(url, user).await.map_err(|e| e.message);
        self.lines.request(scenario, n, user, via, &reply);
        let reply = reply.map_err(|e| format!("request #{n} got no reply: {e}"))?;
        if reply.allowed() || reply.denied() {
            return Ok(reply);
        }
        let why = reply.body_error().map(|e| format!(" ({e})")).unwrap_or_default();
        let expected = if reply.grpc.is_some() { "OK or OVER_LIMIT" } else { "200 or 429" };
        Err(format!("request #{n} answered {}{why}; expected {expected}", reply.unexpected()))
    }

    /// Requests sent since the last call: the report's per-scenario count.
    pub fn take_requests(&self) -> usize {
        self.requests.swap(0, Ordering::Relaxed)
    }
}

/// Runs one scenario to a verdict; nothing a server does makes this panic or return early for the whole run.
pub async fn run(name: ScenarioName, ctx: &Ctx<'_>) -> Outcome {
    if name != ScenarioName::CacheVsDb && ctx.policy.capacity > MAX_CAPACITY {
        return Outcome::skip(format!(
            "capacity {} is above {MAX_CAPACITY}: exhausting it would be a load test, not a check",
            ctx.policy.capacity
        ));
    }
    let result = match name {
        ScenarioName::Burst => burst::run(ctx).await,
        ScenarioName::Refill => refill::run(ctx).await,
        ScenarioName::Concurrent => concurrent::run(ctx).await,
        ScenarioName::MultiUser => multi_user::run(ctx).await,
        ScenarioName::Drip => drip::run(ctx).await,
        ScenarioName::CacheVsDb => cache_vs_db::run(ctx).await,
    };
    result.unwrap_or_else(Outcome::fail)
}

/// Sends requests as `user` until the first refusal (at most capacity + 5 + what refilled meanwhile, and never
/// more than 4 × capacity + 5): the shared "exhaust" step. Returns how many were allowed and the refusal, or an
/// error when the bucket never ran dry.
async fn drain(ctx: &Ctx<'_>, scenario: ScenarioName, user: &str) -> Result<(u64, Reply), String> {
    let capacity = ctx.policy.capacity;
    let started = std::time::Instant::now();
    let mut limit = capacity + 5;
    let mut n = 0;
    while n < limit {
        n += 1;
        let reply = ctx.hit(scenario, n as usize, user).await?;
        if reply.denied() {
            return Ok((n - 1, reply));
        }
        limit = (capacity + 5 + ctx.policy.tokens_in(started.elapsed())).min(4 * capacity + 5);
    }
    let refilled = limit - capacity - 5;
    Err(format!(
        "never refused while draining: {n} requests allowed on a bucket of capacity {capacity} \
         (+{refilled} refilled meanwhile)"
    ))
}
