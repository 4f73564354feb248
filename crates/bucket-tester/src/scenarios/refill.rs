//! Refill: exhaust a fresh bucket, wait for about 2.5 tokens, count what came back (±1); then check that
//! waiting the 429's `Retry-After` is enough to be allowed again (over gRPC without gateway headers: one token
//! interval).

use std::time::{Duration, Instant};

use super::{drain, Ctx, Outcome, ScenarioName};

/// Longest wait for tokens: slower policies are skipped rather than stalling the run.
const MAX_WAIT: Duration = Duration::from_secs(5);
/// Longest `Retry-After` the scenario honours; beyond it that part is reported as not checked.
const MAX_RETRY_AFTER: u64 = 10;
/// Waiting a token count that sits halfway between integers keeps timing jitter from flipping the floor.
const TOKENS_TO_WAIT_FOR: f64 = 2.5;

/// Runs the refill scenario.
pub async fn run(ctx: &Ctx<'_>) -> Result<Outcome, String> {
    let policy = ctx.policy;
    // Stay below capacity: a bucket that refilled to the brim would hide how many tokens the rate produced.
    let tokens = TOKENS_TO_WAIT_FOR.min(policy.capacity as f64 - 0.5);
    let wait = policy.interval().mul_f64(tokens);
    if wait > MAX_WAIT {
        return Ok(Outcome::skip(format!(
            "one token takes {:.1}s: waiting for {tokens} would exceed {}s",
            policy.interval().as_secs_f64(),
            MAX_WAIT.as_secs()
        )));
    }
    let user = ctx.user(ScenarioName::Refill, None);
    let started = Instant::now();
    let (drained, _) = drain(ctx, ScenarioName::Refill, &user).await?;
    let drain_done = Instant::now();
    ctx.progress.wait("refill: waiting for tokens", wait).await;

    let counting = Instant::now();
    let mut got = 0u64;
    let mut refusal = None;
    let mut n = drained as usize + 1;
    for _ in 0..=policy.capacity + 1 {
        n += 1;
        let reply = ctx.hit(ScenarioName::Refill, n, &user).await?;
        if reply.denied() {
            refusal = Some(reply);
            break;
        }
        got += 1;
    }
    let counted_by = started.elapsed();
    // Tokens keep arriving while we count, and on a slow machine the count itself takes a while, so the honest
    // expectation is a range: at least what refilled between the end of the drain and the start of the count, at
    // most what refilled between the start of the drain and the end of the count (less the refills the drain
    // already spent). A server outside it, with ±1 for the boundaries, refills at the wrong rate.
    let least = policy.tokens_in(counting - drain_done).min(policy.capacity);
    let most =
        policy.tokens_in(counted_by).saturating_sub(drained.saturating_sub(policy.capacity)).min(policy.capacity);
    let elapsed = counting - started;
    let Some(refusal) = refusal else {
        return Ok(Outcome::fail(format!(
            "after {:.2}s the bucket allowed {got} requests without refusing",
            elapsed.as_secs_f64()
        )));
    };
    if got + 1 < least || got > most + 1 {
        return Ok(Outcome::fail(format!(
            "{got} tokens after {:.2}s at {}/s; expected {least} to {most} (±1)",
            elapsed.as_secs_f64(),
            policy.refill_per_sec
        )));
    }
    let due = if least == most { format!("{least}") } else { format!("{least} to {most}") };
    let counted = format!("{got} tokens back after {:.2}s (expected {due}, ±1)", elapsed.as_secs_f64());

    // A gateway front may be set to add no headers (then there is no Retry-After to honour): one token interval,
    // the longest a refusal of cost 1 can need, must be enough then.
    let headerless = refusal.grpc.is_some() && refusal.ratelimit.is_none() && refusal.retry_after.is_none();
    if headerless {
        let wait = policy.interval() + Duration::from_millis(5);
        if wait > Duration::from_secs(MAX_RETRY_AFTER) {
            return Ok(Outcome::pass(format!("{counted}; no Retry-After sent, one token interval not waited")));
        }
        ctx.progress.wait("refill: waiting one token interval", wait).await;
        let again = ctx.hit(ScenarioName::Refill, n + 1, &user).await?;
        if !again.allowed() {
            return Ok(Outcome::fail(format!("{counted}, but still refused one token interval after the refusal")));
        }
        return Ok(Outcome::pass(format!("{counted}; no Retry-After sent, allowed again one token interval later")));
    }
    let Some(retry_after) = refusal.retry_after.filter(|s| *s >= 1) else {
        return Ok(Outcome::fail(format!("{counted}, but the 429 had no Retry-After of at least 1s")));
    };
    if retry_after > MAX_RETRY_AFTER {
        return Ok(Outcome::pass(format!(
            "{counted}; Retry-After {retry_after}s not waited (over {MAX_RETRY_AFTER}s)"
        )));
    }
    ctx.progress.wait("refill: honouring Retry-After", Duration::from_secs(retry_after)).await;
    let again = ctx.hit(ScenarioName::Refill, n + 1, &user).await?;
    if !again.allowed() {
        return Ok(Outcome::fail(format!("{counted}, but still refused after waiting Retry-After {retry_after}s")));
    }
    Ok(Outcome::pass(format!("{counted}; allowed again after Retry-After {retry_after}s")))
}
