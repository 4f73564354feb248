//! Burst: capacity + 5 requests (+ what refills meanwhile) back to back on a fresh bucket: exactly capacity allowed, the rest refused, and
//! every reply's headers consistent with the count (Remaining counting down, Retry-After on each 429).

use std::time::Instant;

use super::{Ctx, Outcome, ScenarioName};
use crate::consistency;

const EXTRA: u64 = 5;
/// At most this many times capacity (+ 5) requests, however fast the refill.
const MAX_FACTOR: u64 = 4;

/// Runs the burst scenario.
pub async fn run(ctx: &Ctx<'_>) -> Result<Outcome, String> {
    let capacity = ctx.policy.capacity;
    let user = ctx.user(ScenarioName::Burst, None);
    let started = Instant::now();
    let mut replies = Vec::new();
    // capacity + 5, plus whatever refilled meanwhile: at a fast rate (50/s over a slow link) five extra requests
    // would all be covered by refill and never show a refusal. Bounded, so a rate faster than requests still ends.
    let mut total = capacity + EXTRA;
    while (replies.len() as u64) < total {
        let n = replies.len() + 1;
        replies.push(ctx.hit(ScenarioName::Burst, n, &user).await?);
        total = (capacity + EXTRA + ctx.policy.tokens_in(started.elapsed())).min(MAX_FACTOR * capacity + EXTRA);
    }
    // Tokens that may have arrived while the burst ran: zero at ordinary rates, measured rather than assumed.
    let refilled = ctx.policy.tokens_in(started.elapsed());
    let allowed = replies.iter().filter(|r| r.allowed()).count() as u64;

    if let Some(i) = replies.iter().take(capacity as usize).position(|r| !r.allowed()) {
        return Ok(Outcome::fail(format!(
            "request #{} was refused after only {i} allowed: a fresh bucket holds {capacity}",
            i + 1
        )));
    }
    if allowed > capacity + refilled {
        return Ok(Outcome::fail(format!(
            "over-admitted: {allowed} of {total} allowed, capacity {capacity} (+{refilled} refilled meanwhile)"
        )));
    }
    if allowed == total {
        return Ok(Outcome::fail(format!("none of {total} requests was refused")));
    }

    let mut problems = Vec::new();
    for (i, reply) in replies.iter().enumerate() {
        let n = i + 1;
        problems.extend(consistency::problems(reply, ctx.policy).into_iter().map(|p| format!("#{n}: {p}")));
        // While the fresh bucket drains, remaining is exactly capacity - n, or more only by what refilled.
        if let (true, Some(remaining)) = (i < capacity as usize, reply.remaining) {
            let floor = capacity - n as u64;
            if remaining < floor || remaining > floor + refilled {
                problems.push(format!("#{n}: X-RateLimit-Remaining {remaining}, expected {floor}"));
            }
        }
    }
    if let Some(first) = problems.first() {
        let more = if problems.len() > 1 { format!(" (+{} more)", problems.len() - 1) } else { String::new() };
        return Ok(Outcome::fail(format!("headers inconsistent: {first}{more}")));
    }
    Ok(Outcome::pass(format!(
        "{allowed} allowed, {} refused of {total} (capacity {capacity}); headers consistent",
        total - allowed
    )))
}
