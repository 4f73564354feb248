//! Multi-user: several fresh users, their requests interleaved round-robin, each gets its own full capacity and
//! then a refusal. If they shared one bucket (say the server ignored the user header) the later users would be
//! refused early.

use std::time::Instant;

use super::{Ctx, Outcome, ScenarioName};

const USERS: usize = 3;

/// Runs the multi-user scenario.
pub async fn run(ctx: &Ctx<'_>) -> Result<Outcome, String> {
    let capacity = ctx.policy.capacity;
    let users: Vec<String> = (1..=USERS).map(|i| ctx.user(ScenarioName::MultiUser, Some(&format!("u{i}")))).collect();
    let mut allowed = [0u64; USERS];
    let mut first_refusal: [Option<u64>; USERS] = [None; USERS];
    let started = Instant::now();
    let mut n = 0;
    for round in 1..=capacity + 1 {
        for (u, user) in users.iter().enumerate() {
            n += 1;
            let reply = ctx.hit(ScenarioName::MultiUser, n, user).await?;
            if reply.allowed() {
                allowed[u] += 1;
            } else if first_refusal[u].is_none() {
                first_refusal[u] = Some(round);
            }
        }
    }
    let refilled = ctx.policy.tokens_in(started.elapsed());
    for (u, user) in users.iter().enumerate() {
        if let Some(round) = first_refusal[u].filter(|r| *r <= capacity) {
            return Ok(Outcome::fail(format!(
                "{user} was refused on its request {round} of a fresh bucket of {capacity}: users are not \
                 independent ({})",
                ctx.opts.user_hint()
            )));
        }
        if allowed[u] > capacity + refilled {
            return Ok(Outcome::fail(format!(
                "{user} was allowed {} times, capacity {capacity} (+{refilled} refilled meanwhile)",
                allowed[u]
            )));
        }
    }
    Ok(Outcome::pass(format!("{USERS} interleaved users each got their own {capacity} tokens, then were refused")))
}
