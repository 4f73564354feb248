//! Prometheus metrics in a registry of the service's own, so embedding the library twice (tests) never collides.

use std::time::Duration;

use bucket_store::AnyStore;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Decision latencies span a memory lookup (µs) to a slow database round trip (up to the store timeouts).
const LATENCY_BUCKETS: [f64; 16] =
    [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Label for HTTP requests that matched no route, so scanners cannot blow up the label set with raw paths.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Every metric the service exports; cloning shares them.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Decisions by `outcome` (allowed, denied) and `source` (the `X-Data-Source` value).
    pub decisions: IntCounterVec,
    /// Tokens taken by allowed decisions.
    pub tokens_consumed: IntCounter,
    /// Denied decisions (the seed's counter, kept for its dashboards).
    pub requests_denied: IntCounter,
    /// Time to decide, by `store`.
    pub decision_duration: HistogramVec,
    /// Store calls that failed, by `store`.
    pub store_errors: IntCounterVec,
    /// Decisions served by a fallback backend (`from`, `to`); the tiered store increments it.
    pub fallbacks: IntCounterVec,
    /// Requests answered by the failure mode, by `mode`.
    pub failure_mode: IntCounterVec,
    /// Writes waiting for PostgreSQL in the tiered store's write-behind queue.
    pub write_queue_depth: IntGauge,
    /// Most writes that queue holds (`[tiered] queue_capacity`), so alerts compare depth with it, not a constant.
    pub write_queue_capacity: IntGauge,
    /// Writes the tiered store dropped because its queue was full.
    pub write_queue_dropped: IntCounter,
    /// Keys deleted from Redis after an outage because PostgreSQL changed them meanwhile.
    pub redis_invalidations: IntCounter,
    /// 0 while the tiered store has marked a `dependency` down, else 1 (also for stores that never use it).
    pub dependency_up: IntGaugeVec,
    /// HTTP requests by matched `route` pattern, `method` and `status`.
    pub http_requests: IntCounterVec,
    /// HTTP latency by matched `route` pattern.
    pub http_duration: HistogramVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let decisions = IntCounterVec::new(
            Opts::new("bucket_decisions_total", "Rate-limit decisions by outcome and data source"),
            &["outcome", "source"],
        )?;
        let tokens_consumed = IntCounter::new("bucket_tokens_consumed_total", "Tokens taken by allowed requests")?;
        let requests_denied = IntCounter::new("bucket_requests_denied_total", "Requests refused by the limiter")?;
        let decision_duration = HistogramVec::new(
            HistogramOpts::new("bucket_decision_duration_seconds", "Time to decide one check, by store")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["store"],
        )?;
        let store_errors =
            IntCounterVec::new(Opts::new("bucket_store_errors_total", "Failed store calls, by store"), &["store"])?;
        let fallbacks = IntCounterVec::new(
            Opts::new("bucket_fallbacks_total", "Decisions served by a fallback backend"),
            &["from", "to"],
        )?;
        let failure_mode = IntCounterVec::new(
            Opts::new("bucket_failure_mode_total", "Requests answered by the configured failure mode"),
            &["mode"],
        )?;
        let write_queue_depth =
            IntGauge::new("bucket_write_queue_depth", "Writes queued for PostgreSQL by the tiered store")?;
        let write_queue_capacity =
            IntGauge::new("bucket_write_queue_capacity", "Most writes the tiered store's queue holds before dropping")?;
        let write_queue_dropped = IntCounter::new(
            "bucket_write_queue_dropped_total",
            "Writes for PostgreSQL dropped because the tiered store's queue was full",
        )?;
        let redis_invalidations = IntCounter::new(
            "bucket_redis_invalidations_total",
            "Keys deleted from Redis after an outage because PostgreSQL changed them meanwhile",
        )?;
        let dependency_up = IntGaugeVec::new(
            Opts::new("bucket_dependency_up", "0 while the tiered store has marked a dependency down, else 1"),
            &["dependency"],
        )?;
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route pattern, method and status"),
            &["route", "method", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency by route pattern")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(tokens_consumed.clone()))?;
        registry.register(Box::new(requests_denied.clone()))?;
        registry.register(Box::new(decision_duration.clone()))?;
        registry.register(Box::new(store_errors.clone()))?;
        registry.register(Box::new(fallbacks.clone()))?;
        registry.register(Box::new(failure_mode.clone()))?;
        registry.register(Box::new(write_queue_depth.clone()))?;
        registry.register(Box::new(write_queue_capacity.clone()))?;
        registry.register(Box::new(write_queue_dropped.clone()))?;
        registry.register(Box::new(redis_invalidations.clone()))?;
        registry.register(Box::new(dependency_up.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        // The tiered store's series exist from the start, for every store: a labelled family with no series is not
        // exported at all, so alerts and panels on it would read "no data" (indistinguishable from a broken scrape)
        // until the first outage. A dependency starts as up: only the tiered store ever marks one down, and a
        // memory-store service must not fire "Redis down".
        fallbacks.with_label_values(&["redis", "postgres"]);
        fallbacks.with_label_values(&["postgres", "queue"]);
        dependency_up.with_label_values(&["redis"]).set(1);
        dependency_up.with_label_values(&["postgres"]).set(1);
        Ok(Self {
            registry,
            decisions,
            tokens_consumed,
            requests_denied,
            decision_duration,
            store_errors,
            fallbacks,
            failure_mode,
            write_queue_depth,
            write_queue_capacity,
            write_queue_dropped,
            redis_invalidations,
            dependency_up,
            http_requests,
            http_duration,
        })
    }

    /// Counts one decision: its outcome, source, the tokens it took and how long the store took.
    pub fn record_decision(&self, allowed: bool, source: &str, cost: u64, store: &str, elapsed: Duration) {
        let outcome = if allowed { "allowed" } else { "denied" };
        self.decisions.with_label_values(&[outcome, source]).inc();
        if allowed {
            self.tokens_consumed.inc_by(cost);
        } else {
            self.requests_denied.inc();
        }
        self.decision_duration.with_label_values(&[store]).observe(elapsed.as_secs_f64());
    }

    /// Counts one HTTP request under its route pattern (never the raw path).
    pub fn record_http(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.http_requests.with_label_values(&[route, method, &status.to_string()]).inc();
        self.http_duration.with_label_values(&[route]).observe(elapsed.as_secs_f64());
    }

    /// Copies the tiered store's own counters into the registry, at scrape time (the store knows nothing of
    /// Prometheus; counters advance by the difference, so `rate()` works).
    pub fn observe_store(&self, store: &AnyStore) {
        let Some(stats) = store.tiered_stats() else { return };
        let advance = |counter: &IntCounter, total: u64| counter.inc_by(total.saturating_sub(counter.get()));
        advance(&self.fallbacks.with_label_values(&["redis", "postgres"]), stats.fallbacks_to_postgres);
        advance(&self.fallbacks.with_label_values(&["postgres", "queue"]), stats.writes_queued_while_postgres_down);
        advance(&self.write_queue_dropped, stats.writes_dropped);
        advance(&self.redis_invalidations, stats.keys_invalidated);
        self.write_queue_depth.set(stats.queue_depth as i64);
        self.dependency_up.with_label_values(&["redis"]).set(i64::from(stats.redis_up));
        self.dependency_up.with_label_values(&["postgres"]).set(i64::from(stats.postgres_up));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}
