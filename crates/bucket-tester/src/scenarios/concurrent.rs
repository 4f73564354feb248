//! Concurrent: many requests at once on one fresh key, spread round-robin over `--instances` when given: exactly
//! capacity allowed (plus whatever refilled while they ran, measured), never more. Over-admission here is the
//! lost-update bug an atomic store step exists to prevent; across instances it also shows whether they share
//! one store.

use std::time::Instant;

use futures::future::join_all;

use super::{Ctx, Outcome, ScenarioName};

/// Runs the concurrent scenario.
pub async fn run(ctx: &Ctx<'_>) -> Result<Outcome, String> {
    let capacity = ctx.policy.capacity;
    for (url, policy) in ctx.instance_policies {
        if policy.capacity != capacity {
            return Ok(Outcome::fail(format!(
                "instance {url} has capacity {} but the target has {capacity}: they don't share one policy",
                policy.capacity
            )));
        }
    }
    let urls: Vec<&str> = ctx.opts.instances.iter().map(String::as_str).collect();
    // Four times capacity leaves room to over-admit; past 1000 sockets at once a client's file limit, not the
    // server, would decide the outcome.
    let total = ctx.opts.concurrency.unwrap_or((4 * capacity as usize).min(1000)).max(1);
    let user = ctx.user(ScenarioName::Concurrent, None);

    // All futures are created first and polled together, so every request is in flight before any is answered.
    let started = Instant::now();
    let results = if urls.is_empty() {
        join_all((0..total).map(|i| ctx.hit(ScenarioName::Concurrent, i + 1, &user))).await
    } else {
        join_all((0..total).map(|i| ctx.hit_at(ScenarioName::Concurrent, i + 1, urls[i % urls.len()], &user))).await
    };
    let elapsed = started.elapsed();

    let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    if let Some(first) = errors.first() {
        return Ok(Outcome::fail(format!("{} of {total} requests failed; first: {first}", errors.len())));
    }
    let allowed = results.iter().filter(|r| r.as_ref().is_ok_and(|r| r.allowed())).count() as u64;
    let refilled = ctx.policy.tokens_in(elapsed);
    let ceiling = (capacity + refilled).min(total as u64);
    let floor = capacity.min(total as u64);
    let spread = if urls.len() > 1 { format!(" over {} instances", urls.len()) } else { String::new() };
    let ms = elapsed.as_millis();

    if allowed > ceiling {
        let hint = if urls.len() > 1 { ": the instances may not share one store" } else { "" };
        return Ok(Outcome::fail(format!(
            "over-admitted: {allowed} of {total} allowed{spread}, capacity {capacity} + {refilled} refilled in {ms} ms{hint}"
        )));
    }
    if allowed < floor {
        return Ok(Outcome::fail(format!(
            "under-admitted: only {allowed} of {total} allowed{spread} on a full bucket of {capacity}"
        )));
    }
    Ok(Outcome::pass(format!(
        "{allowed} of {total} allowed at once{spread} (capacity {capacity}, {refilled} refilled in {ms} ms)"
    )))
}
