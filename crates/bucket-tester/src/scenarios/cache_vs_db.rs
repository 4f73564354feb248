//! Cache vs database: on a tiered server a fresh user's first request creates the row (`new-user`) and the second
//! is served by the cache (`redis`). A memory-store server has neither, which is reported honestly as a SKIP.

use super::{Ctx, Outcome, ScenarioName};

const MEMORY_SKIP: &str = "server uses the memory store: no cache or database to compare";

/// Runs the cache-vs-db scenario.
pub async fn run(ctx: &Ctx<'_>) -> Result<Outcome, String> {
    let user = ctx.user(ScenarioName::CacheVsDb, None);
    let first = ctx.hit(ScenarioName::CacheVsDb, 1, &user).await?;
    let second = ctx.hit(ScenarioName::CacheVsDb, 2, &user).await?;
    if !first.allowed() || !second.allowed() {
        return Ok(Outcome::fail(format!("a fresh user was refused (HTTP {} then {})", first.status, second.status)));
    }
    let seen = |s: &Option<String>| s.clone().unwrap_or_else(|| "no X-Data-Source".to_string());
    match (first.source.as_deref(), second.source.as_deref()) {
        (Some("new-user"), Some("redis")) => {
            Ok(Outcome::pass("new-user then redis: the row was created, then the cache answered"))
        }
        (Some("memory"), Some("memory")) if ctx.opts.require_tiered => {
            Ok(Outcome::fail(format!("{MEMORY_SKIP}, and --require-tiered was given")))
        }
        (Some("memory"), Some("memory")) => Ok(Outcome::skip(MEMORY_SKIP)),
        _ => Ok(Outcome::fail(format!(
            "expected new-user then redis, saw {} then {}",
            seen(&first.source),
            seen(&second.source)
        ))),
    }
}
