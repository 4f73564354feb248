//! Drip: drain a fresh bucket, then send one request per refill interval (plus a small margin): none may be
//! refused. Draining first makes this strict: with a full bucket as a cushion, a server refilling at half the
//! advertised rate would pass a short drip; from empty, every request needs the token that just arrived.

use std::time::Duration;

use tokio::time::Instant;

use super::{drain, Ctx, Outcome, ScenarioName};

/// The drip's whole run is kept under this; a slower policy sends fewer requests, or is skipped.
const BUDGET: Duration = Duration::from_secs(60);
/// Fewer paced requests than this wouldn't show a rate.
const MIN_REQUESTS: u64 = 3;

/// Runs the drip scenario.
pub async fn run(ctx: &Ctx<'_>) -> Result<Outcome, String> {
    let interval = ctx.policy.interval();
    // The margin absorbs a first request that reached the server later than the next ones (a fresh connection),
    // and it grows with each request, so lateness never accumulates into a refusal.
    let period = interval + Duration::from_millis(5) + interval / 50;
    let wanted = ctx.opts.drip_requests.unwrap_or(ctx.policy.capacity + 3);
    let fitting = (BUDGET.as_secs_f64() / period.as_secs_f64()).floor() as u64;
    let count = wanted.min(fitting);
    if count < MIN_REQUESTS.min(wanted) || count == 0 {
        return Ok(Outcome::skip(format!(
            "one token every {:.1}s: fewer than {MIN_REQUESTS} paced requests fit in {}s",
            period.as_secs_f64(),
            BUDGET.as_secs()
        )));
    }
    let user = ctx.user(ScenarioName::Drip, None);
    let (drained, _) = drain(ctx, ScenarioName::Drip, &user).await?;
    let start = Instant::now();
    for k in 1..=count {
        ctx.progress.wait_until(&format!("drip: request {k} of {count}"), start + period * k as u32).await;
        let n = (drained + 1 + k) as usize;
        let reply = ctx.hit(ScenarioName::Drip, n, &user).await?;
        if !reply.allowed() {
            return Ok(Outcome::fail(format!(
                "paced request {k} of {count} refused {:.2}s after draining, at one per {:.0} ms \
                 (refill {}/s): the bucket refills slower than advertised",
                start.elapsed().as_secs_f64(),
                period.as_secs_f64() * 1000.0,
                ctx.policy.refill_per_sec
            )));
        }
    }
    let capped =
        if count < wanted { format!(" (capped from {wanted} to fit {}s)", BUDGET.as_secs()) } else { String::new() };
    Ok(Outcome::pass(format!(
        "{count} requests at one per {:.0} ms after draining: none refused{capped}",
        period.as_secs_f64() * 1000.0
    )))
}
