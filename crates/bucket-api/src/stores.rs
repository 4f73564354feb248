//! Builds the configured store: memory, PostgreSQL, Redis, or Redis in front of PostgreSQL.

use std::time::Duration;

use bucket_store::postgres::{PostgresConfig, PostgresStore, PruneEvent, PruneEvents};
use bucket_store::redis::{RedisConfig, RedisStore};
use std::sync::Arc;

use bucket_store::tiered::{TieredEvent, TieredEvents, TieredStore};
use bucket_store::{AnyStore, CacheSettings, MemoryStore};
use slog::{debug, error, info, o, warn, Logger};

use crate::config::{Config, StoreKind};
use crate::server::StartError;

/// Most per-key policies (or their absence) cached in the process.
const POLICY_CACHE_ENTRIES: usize = 100_000;

/// First and longest wait between attempts to reach PostgreSQL at start.
const FIRST_RETRY: Duration = Duration::from_millis(250);
const LONGEST_RETRY: Duration = Duration::from_secs(10);

/// The store `config.store` names, connected and ready, with its background tasks (evictor, flusher, prober)
/// running on the current tokio runtime.
pub async fn build_store(config: &Config, log: &Logger) -> Result<AnyStore, StartError> {
    let caches = cache_settings(config.tiered.policy_cache_ttl, config.tiered.refusal_cache_ttl);
    let postgres = |url: &str| PostgresConfig { url: url.to_owned(), ..config.postgres.clone() };
    let redis = |url: &str| RedisConfig { url: url.to_owned(), ..config.redis.clone() };
    let store = match config.store {
        StoreKind::Memory => {
            let store = MemoryStore::new();
            // The evictor holds only a weak reference and ends by itself once the store is dropped.
            drop(store.spawn_evictor(Duration::from_millis(config.evict_interval_ms)));
            AnyStore::Memory(store)
        }
        StoreKind::Postgres => {
            let url = required(&config.database_url, "DATABASE_URL")?;
            let pg = connect_postgres(postgres(url), log).await?;
            // The pruner holds a clone of the pool and runs for the life of the process.
            drop(pg.spawn_pruner(log_prunes(log)));
            AnyStore::postgres(pg, caches)
        }
        StoreKind::Redis => {
            let url = required(&config.redis_url, "REDIS_URL")?;
            AnyStore::redis(connect_redis(&redis(url), log).await?, caches)
        }
        StoreKind::Tiered => {
            let pg = connect_postgres(postgres(required(&config.database_url, "DATABASE_URL")?), log).await?;
            drop(pg.spawn_pruner(log_prunes(log)));
            let redis = connect_redis(&redis(required(&config.redis_url, "REDIS_URL")?), log).await?;
            AnyStore::tiered(TieredStore::new(redis, pg, config.tiered.clone(), log_events(log)).await, caches)
        }
    };
    info!(log, "store ready"; "store" => store.kind());
    Ok(store)
}

/// Most refused keys remembered at once (see bucket_store::RefusalCache: exact, and it spares the shared store the
/// round trips of callers that keep sending while refused).
const REFUSAL_CACHE_ENTRIES: usize = 100_000;

/// The in-process caches of the shared stores. A remembered refusal answers for at most `refusal_ttl`
/// (the safety net when another instance's reset or policy change is not heard: see bucket_store::invalidation).
fn cache_settings(policy_ttl: Duration, refusal_ttl: Duration) -> CacheSettings {
    CacheSettings {
        policy_ttl,
        policy_entries: POLICY_CACHE_ENTRIES,
        refusal_max_age: refusal_ttl,
        refusal_entries: REFUSAL_CACHE_ENTRIES,
    }
}

/// The PostgreSQL pruner's batches as debug lines, its failures as warnings (it retries on its next turn).
fn log_prunes(log: &Logger) -> PruneEvents {
    let log = log.new(o!("task" => "prune"));
    Arc::new(move |event| match event {
        PruneEvent::Batch { rows, elapsed } => {
            debug!(log, "pruned rows of refilled buckets"; "rows" => rows, "elapsed_ms" => elapsed.as_millis() as u64)
        }
        PruneEvent::Busy => debug!(log, "another instance is pruning: skipped this turn"),
        PruneEvent::Failed { error } => warn!(log, "pruning failed: retrying on the next turn"; "error" => error),
    })
}

/// The tiered store's changes of state as log lines (one per change: connected, lost, recovered, queue full).
fn log_events(log: &Logger) -> TieredEvents {
    let log = log.new(o!("store" => "tiered"));
    Arc::new(move |event| match event {
        TieredEvent::RedisUnreachableAtStart { error } => {
            warn!(log, "redis unreachable at start: PostgreSQL decides until it answers"; "error" => error)
        }
        TieredEvent::RedisLost { error } => {
            warn!(log, "redis lost: postgres decides until it answers again"; "error" => error)
        }
        TieredEvent::RedisRecovered => info!(log, "redis recovered: it decides again"),
        TieredEvent::RedisInvalidationFailed { error } => {
            warn!(log, "redis answers but invalidation failed"; "error" => error)
        }
        TieredEvent::StaleKeysDeleted { keys } => {
            info!(log, "deleted keys from redis that postgres changed during the outage"; "keys" => keys)
        }
        TieredEvent::PostgresLost { error, queue_capacity } => {
            warn!(log, "postgres lost: redis decides, writes are queued";
                                                                     "error" => error, "queue_capacity" => queue_capacity)
        }
        TieredEvent::PostgresRecovered { queued } => info!(log, "postgres recovered"; "queued" => queued),
        TieredEvent::QueueFull { capacity } => {
            error!(log, "postgres write queue full: further writes are dropped until it drains"; "capacity" => capacity)
        }
        TieredEvent::Flushed { keys } => info!(log, "flushed queued writes to postgres"; "keys" => keys),
        TieredEvent::FlushFailed { keys, error } => {
            error!(log, "could not flush queued writes to postgres"; "keys" => keys, "error" => error)
        }
    })
}

fn required<'a>(url: &'a Option<String>, var: &'static str) -> Result<&'a str, StartError> {
    url.as_deref().ok_or(StartError::MissingUrl(var))
}

/// Connects and migrates, retrying with exponential backoff while PostgreSQL is unreachable: an orchestrator that
/// starts the database and the service together should not see the service crash-loop. Non-transient failures
/// (a failed migration, a bad setting) stop the start.
async fn connect_postgres(config: PostgresConfig, log: &Logger) -> Result<PostgresStore, StartError> {
    let mut wait = FIRST_RETRY;
    let mut attempt = 1u32;
    loop {
        match PostgresStore::connect(config.clone()).await {
            Ok(store) => {
                info!(log, "postgres connected, migrations applied"; "url" => config.redacted_url(), "attempt" => attempt);
                log_connection_limit(&store, config.pool_size, log).await;
                return Ok(store);
            }
            Err(e) if e.is_transient() => {
                warn!(log, "postgres unreachable at start, retrying";
                      "url" => config.redacted_url(), "attempt" => attempt, "retry_in_ms" => wait.as_millis() as u64,
                      "error" => %e);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(LONGEST_RETRY);
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Says at start how many instances of this pool size the server can hold, and warns when even this one's whole
/// pool would not fit now: past that, load turns into "too many clients" errors instead of waiting.
async fn log_connection_limit(store: &PostgresStore, pool_size: usize, log: &Logger) {
    match store.connection_limit().await {
        Ok(limit) if limit.pool_exceeds_headroom(pool_size) => {
            warn!(log, "postgres.pool_size exceeds the connections the server has left: lower it (BUCKET_PG_POOL_SIZE) or raise max_connections";
                  "pool_size" => pool_size, "server_usable" => limit.usable, "server_in_use" => limit.in_use)
        }
        Ok(limit) => info!(log, "postgres connection budget";
                           "pool_size" => pool_size, "server_usable" => limit.usable, "server_in_use" => limit.in_use,
                           "instances_that_fit" => limit.instances_that_fit(pool_size)),
        Err(e) => warn!(log, "could not read the server's connection limit"; "error" => %e),
    }
}

/// Builds the pool; an unreachable Redis is logged and tolerated (the tiered store falls back, the redis store
/// answers with the failure mode until Redis answers).
async fn connect_redis(config: &RedisConfig, log: &Logger) -> Result<RedisStore, StartError> {
    let redis = RedisStore::connect(config.clone())?;
    match redis.ping().await {
        Ok(()) => info!(log, "redis connected"; "url" => config.redacted_url()),
        Err(e) => warn!(log, "redis unreachable at start: running degraded until it answers";
                        "url" => config.redacted_url(), "error" => %e),
    }
    Ok(redis)
}
