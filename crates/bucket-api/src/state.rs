//! What every request shares, built once at start: configuration, resolved policies, the store, metrics, logger.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::header::HeaderName;
use bucket_core::Policy;
use bucket_limits::LiveLimits;
use bucket_store::{AnyStore, PolicyStore};
use slog::Logger;

use crate::config::Config;
use crate::error::ApiError;
use crate::headers::AppliedPolicy;
use crate::identity::{caller_key, IdentitySettings};
use crate::log_throttle::{LogThrottle, LOG_EVERY};
use crate::metrics::Metrics;
use crate::rls::reload::watch_limits;
use crate::rls::series::LimitSeries;
use crate::server::StartError;
use crate::store_metrics::{PrunedCollector, StoreCollector};

/// The application state behind `web::Data`; cloning the store or metrics shares them.
pub struct AppState {
    /// The validated configuration.
    pub config: Config,
    /// The policy for keys and requests that name no other.
    pub default_policy: Policy,
    /// `[policies.*]`, by name.
    pub named_policies: HashMap<String, Policy>,
    /// Where buckets live.
    pub store: AnyStore,
    /// The service's metrics.
    pub metrics: Metrics,
    /// The root logger.
    pub log: Logger,
    /// The gateway front's limits, live-reloaded; `None` when no limits file is configured.
    pub limits: Option<LiveLimits>,
    /// `bucket_limit_decisions_total`'s series for those limits' rules, resolved once each.
    pub limit_series: LimitSeries,
    /// `config.user_header`, parsed once.
    user_header: HeaderName,
    /// Gate of the "store failed" warning, which an outage would otherwise write once per request.
    pub store_failure_log: LogThrottle,
    /// Gate of the gateway front's "store failed on shadow limits" warning, for the same reason.
    pub shadow_failure_log: LogThrottle,
    /// Gate of "shadow mode: would have refused", written for every refusal a shadow rule would make; the
    /// per-rule counts are in the metrics.
    pub shadow_refusal_log: LogThrottle,
}

impl AppState {
    /// Validates `config` and wraps `store`; tests pass a `MemoryStore` on a `ManualClock` here.
    pub fn new(config: Config, store: AnyStore, log: Logger) -> Result<Self, StartError> {
        config.validate()?;
        let default_policy = config.default_policy()?;
        let user_header = config.user_header_name()?;
        let named_policies = config.named_policies()?;
        let metrics = Metrics::new()?;
        let source = store.clone();
        let nodes = store.clone();
        let collector = StoreCollector::new(Arc::new(move || source.tiered_stats()))?
            .with_nodes(Arc::new(move || nodes.last_redis_nodes()));
        metrics.register(Box::new(collector))?;
        let source = store.clone();
        metrics.register(Box::new(PrunedCollector::new(Arc::new(move || source.pruned_rows()))?))?;
        // Series that exist from the start read as 0 instead of "no data", so alerts on them work before the first
        // outage.
        metrics.store_errors.with_label_values(&[config.store.as_str()]);
        metrics.failure_mode.with_label_values(&[config.failure_mode.as_str()]);
        metrics.write_queue_capacity.set(i64::try_from(config.tiered.queue_capacity).unwrap_or(i64::MAX));
        let limits = match &config.rls.limits {
            Some(path) => Some(watch_limits(path, &metrics, &log)?),
            None => None,
        };
        Ok(Self {
            config,
            default_policy,
            named_policies,
            store,
            log,
            limits,
            limit_series: LimitSeries::new(metrics.limit_decisions.clone()),
            user_header,
            metrics,
            store_failure_log: LogThrottle::new(LOG_EVERY),
            shadow_failure_log: LogThrottle::new(LOG_EVERY),
            shadow_refusal_log: LogThrottle::new(LOG_EVERY),
        })
    }

    /// Who a request without an explicit key is for (`GET /`, `/v1/auth`), by the configured identity rules, so
    /// every route that keys by caller keys alike.
    pub fn caller<'r>(&self, req: &'r actix_web::HttpRequest) -> Result<Cow<'r, str>, ApiError> {
        let config = &self.config;
        let settings = IdentitySettings {
            user_header: &config.user_header,
            user_header_name: &self.user_header,
            peer_fallback: config.peer_fallback,
            trusted_proxies: &config.trusted_proxies,
            ipv6_prefix: config.ipv6_prefix,
        };
        caller_key(req, settings, &self.log)
    }

    /// The `store` metric label.
    pub fn store_label(&self) -> &'static str {
        self.config.store.as_str()
    }

    /// Counts a check the store could not answer, which the failure mode then answers; `Some(suppressed)` when
    /// this one is to be logged (`log_throttle.rs`), so an outage is visible without a line per request.
    pub fn count_store_failure(&self) -> Option<u64> {
        self.metrics.store_errors.with_label_values(&[self.store_label()]).inc();
        self.metrics.failure_mode.with_label_values(&[self.config.failure_mode.as_str()]).inc();
        self.store_failure_log.admit()
    }

    /// The policy a request named, or the default; an unknown name is the caller's error even when the key has a
    /// policy of its own, so a typo never goes unnoticed.
    pub fn requested_policy(&self, name: Option<&str>) -> Result<AppliedPolicy, ApiError> {
        match name {
            None | Some("default") => Ok(AppliedPolicy { name: Cow::Borrowed("default"), policy: self.default_policy }),
            Some(name) => self
                .named_policies
                .get(name)
                .map(|policy| AppliedPolicy { name: Cow::Owned(name.to_string()), policy: *policy })
                .ok_or_else(|| ApiError::UnknownPolicy(name.to_string())),
        }
    }

    /// The policy that governs `key`: its per-key override if an operator set one, else `requested`.
    pub async fn effective_policy(
        &self,
        key: &str,
        requested: AppliedPolicy,
    ) -> Result<AppliedPolicy, bucket_store::StoreError> {
        Ok(match self.store.policy(key).await? {
            Some(policy) => AppliedPolicy { name: Cow::Borrowed("user"), policy },
            None => requested,
        })
    }
}
