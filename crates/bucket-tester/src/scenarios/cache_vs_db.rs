//! Cache vs database: on a tiered server a fresh user's first request creates the row (`new-user`) and the second
//! is served by the cache (`redis`). Any other store has no cache in front of a database, which is reported as a
//! SKIP naming the store (a FAIL with `--require-tiered`).
//!
//! The store is read from `/readyz`, whose dependencies are the store's parts (`memory`, `redis`, `postgres`, or
//! `redis` and `postgres` for tiered); `X-Data-Source` alone cannot tell a redis store from a tiered one. Over gRPC
//! neither exists, so the scenario is skipped there.

use super::{Ctx, Outcome, ScenarioName};

const MEMORY_SKIP: &str = "server uses the memory store: no cache or database to compare";

/// Runs the cache-vs-db scenario.
pub async fn run(ctx: &Ctx<'_>) -> Result<Outcome, String> {
    if ctx.client.is_grpc() {
        return Ok(Outcome::skip("over gRPC no answer names the store that decided: run it over HTTP (--target)"));
    }
    let user = ctx.user(ScenarioName::CacheVsDb, None);
    let first = ctx.hit(ScenarioName::CacheVsDb, 1, &user).await?;
    let second = ctx.hit(ScenarioName::CacheVsDb, 2, &user).await?;
    if !first.allowed() || !second.allowed() {
        return Ok(Outcome::fail(format!("a fresh user was refused (HTTP {} then {})", first.status, second.status)));
    }
    let store = ctx.client.dependencies(&ctx.opts.target).await.and_then(|names| store_of(&names));
    if let Some(store) = store.filter(|store| *store != "tiered") {
        let reason = match store {
            "memory" => MEMORY_SKIP.to_string(),
            other => format!("server uses the {other} store, not tiered: no cache in front of a database"),
        };
        return Ok(skip_unless_required(ctx, reason));
    }
    let seen = |s: &Option<String>| s.clone().unwrap_or_else(|| "no X-Data-Source".to_string());
    match (first.source.as_deref(), second.source.as_deref()) {
        (Some("new-user"), Some("redis")) => {
            Ok(Outcome::pass("new-user then redis: the row was created, then the cache answered"))
        }
        // A server without /readyz that decides in memory.
        (Some("memory"), Some("memory")) if store.is_none() => Ok(skip_unless_required(ctx, MEMORY_SKIP.into())),
        _ => Ok(Outcome::fail(format!(
            "expected new-user then redis, saw {} then {}",
            seen(&first.source),
            seen(&second.source)
        ))),
    }
}

/// The store whose dependencies `/readyz` listed, if they are a known set.
fn store_of(names: &[String]) -> Option<&'static str> {
    let has = |name: &str| names.iter().any(|n| n == name);
    match (names.len(), has("memory"), has("redis"), has("postgres")) {
        (1, true, _, _) => Some("memory"),
        (1, _, true, _) => Some("redis"),
        (1, _, _, true) => Some("postgres"),
        (2, _, true, true) => Some("tiered"),
        _ => None,
    }
}

fn skip_unless_required(ctx: &Ctx<'_>, reason: String) -> Outcome {
    if ctx.opts.require_tiered {
        Outcome::fail(format!("{reason}, and --require-tiered was given"))
    } else {
        Outcome::skip(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::store_of;

    #[test]
    fn readyz_dependencies_name_the_store() {
        let store = |names: &[&str]| store_of(&names.iter().map(|n| n.to_string()).collect::<Vec<_>>());
        assert_eq!(store(&["memory"]), Some("memory"));
        assert_eq!(store(&["redis"]), Some("redis"));
        assert_eq!(store(&["postgres"]), Some("postgres"));
        assert_eq!(store(&["redis", "postgres"]), Some("tiered"));
        assert_eq!(store(&["postgres", "redis"]), Some("tiered"));
        assert_eq!(store(&[]), None);
        assert_eq!(store(&["etcd"]), None);
    }
}
