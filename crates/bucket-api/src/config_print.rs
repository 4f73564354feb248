//! The configuration as the start-up log prints it: every setting, in the order of the README's table, with URL
//! passwords and the admin token hidden.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::Config;

/// [`Config`] with the admin token and URL passwords hidden, for logs; `Display` prints one `key = value` per line.
pub struct Redacted<'a>(pub(crate) &'a Config);

impl Redacted<'_> {
    /// Every setting as (name, printable value), in the order of the configuration table.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let c = self.0;
        let url = |u: &Option<String>| u.as_deref().map_or_else(|| "none".to_string(), redact_url);
        let ms = |d: Duration| d.as_millis().to_string();
        let ca_file =
            |p: &Option<PathBuf>| p.as_ref().map_or_else(|| "(system roots)".into(), |p| p.display().to_string());
        let policies = if c.policies.is_empty() {
            "none".to_string()
        } else {
            c.policies
                .iter()
                .map(|(name, p)| format!("{name}: capacity {} refill_per_sec {}", p.capacity, p.refill_per_sec))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let trusted_proxies = if c.trusted_proxies.is_empty() {
            "none (forwarding headers ignored)".to_string()
        } else {
            c.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        };
        let (pg, redis, tiered) = (&c.postgres, &c.redis, &c.tiered);
        vec![
            ("listen", c.listen.clone()),
            ("store", c.store.as_str().into()),
            ("database_url", url(&c.database_url)),
            ("redis_url", url(&c.redis_url)),
            ("capacity", c.capacity.to_string()),
            ("refill_per_sec", c.refill_per_sec.to_string()),
            ("admin_token", if c.admin_token.is_some() { "<redacted>" } else { "none (admin routes off)" }.into()),
            ("failure_mode", c.failure_mode.as_str().into()),
            ("log_level", c.log_level.clone()),
            ("log_format", c.log_format.as_str().into()),
            ("user_header", c.user_header.clone()),
            ("peer_fallback", c.peer_fallback.to_string()),
            ("trusted_proxies", trusted_proxies),
            ("ipv6_prefix", c.ipv6_prefix.to_string()),
            ("max_body_bytes", c.max_body_bytes.to_string()),
            ("workers", c.workers.to_string()),
            ("evict_interval_ms", c.evict_interval_ms.to_string()),
            ("policies", policies),
            ("postgres.pool_size", pg.pool_size.to_string()),
            ("postgres.connect_timeout_ms", ms(pg.connect_timeout)),
            ("postgres.statement_timeout_ms", ms(pg.statement_timeout)),
            ("postgres.schema", pg.schema.clone().unwrap_or_else(|| "(from the URL)".into())),
            ("postgres.tls_ca_file", ca_file(&pg.tls_ca_file)),
            ("postgres.prune_interval_ms", ms(pg.prune_interval)),
            ("postgres.prune_batch_size", pg.prune_batch_size.to_string()),
            ("redis.pool_size", redis.pool_size.to_string()),
            ("redis.command_timeout_ms", ms(redis.command_timeout)),
            ("redis.connect_timeout_ms", ms(redis.connect_timeout)),
            ("redis.key_prefix", redis.key_prefix.clone()),
            ("redis.tls_ca_file", ca_file(&redis.tls_ca_file)),
            ("redis.mode", redis.mode.as_str().into()),
            ("redis.sentinel_master", redis.sentinel_master.clone().unwrap_or_else(|| "none".into())),
            ("redis.wait_replicas", redis.wait_replicas.to_string()),
            ("tiered.write_mode", tiered.write_mode.as_str().into()),
            ("tiered.flush_interval_ms", ms(tiered.flush_interval)),
            ("tiered.retry_interval_ms", ms(tiered.retry_interval)),
            ("tiered.queue_capacity", tiered.queue_capacity.to_string()),
            ("tiered.commit_window_us", tiered.commit_window.as_micros().to_string()),
            ("tiered.policy_cache_ttl_ms", ms(tiered.policy_cache_ttl)),
            ("tiered.refusal_cache_ttl_ms", ms(tiered.refusal_cache_ttl)),
            (
                "rls.limits",
                c.rls.limits.as_ref().map_or_else(|| "none (gateway front off)".into(), |p| p.display().to_string()),
            ),
            ("rls.grpc_listen", c.rls.grpc_listen.clone()),
            ("rls.shadow_mode", c.rls.shadow_mode.to_string()),
            ("rls.response_headers", c.rls.response_headers.as_str().into()),
        ]
    }
}

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, value) in self.entries() {
            writeln!(f, "{name} = {value}")?;
        }
        Ok(())
    }
}

impl slog::KV for Redacted<'_> {
    fn serialize(&self, _record: &slog::Record<'_>, serializer: &mut dyn slog::Serializer) -> slog::Result {
        for (name, value) in self.entries() {
            serializer.emit_str(name, &value)?;
        }
        Ok(())
    }
}

/// Hides every password in a connection string (see [`bucket_store::redact::redact_url`], the one implementation
/// the stores' own log lines use too).
pub fn redact_url(url: &str) -> String {
    bucket_store::redact::redact_url(url)
}
