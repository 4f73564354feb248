//! Prometheus metrics in a registry of the service's own, so embedding the library twice (tests) never collides.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::http::StatusCode;
use bucket_store::Source;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Decision latencies span a memory lookup (µs) to a slow database round trip (up to the store timeouts).
const LATENCY_BUCKETS: [f64; 16] =
    [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Label for HTTP requests that matched no route, so scanners cannot blow up the label set with raw paths.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// How many `bucket_store::Source`s there are: [`DecisionHandles`] keeps one series per source and outcome, indexed
/// by the enum's discriminant (a test fails to compile when a source is added without raising this).
const SOURCES: usize = 6;

/// The series every decision touches, each looked up once: `with_label_values` hashes the labels and takes the
/// family's lock on every call, which a per-request path should not pay. Series appear on first use, as before.
#[derive(Default)]
struct DecisionHandles {
    /// `bucket_decisions_total` by (allowed, denied) × source.
    counted: [[OnceLock<IntCounter>; SOURCES]; 2],
    /// `bucket_decision_duration_seconds` of the one store a process decides with, and its label.
    timed: OnceLock<(String, Histogram)>,
}

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
    /// Requests answered by the failure mode, by `mode`.
    pub failure_mode: IntCounterVec,
    /// Most writes that queue holds (`[tiered] queue_capacity`), so alerts compare depth with it, not a constant.
    pub write_queue_capacity: IntGauge,
    /// HTTP requests by matched `route` pattern, `method` and `status`.
    pub http_requests: IntCounterVec,
    /// HTTP latency by matched `route` pattern.
    pub http_duration: HistogramVec,
    /// Descriptor decisions of the gateway front by `domain`, `rule` (name or configured path) and `outcome`.
    pub limit_decisions: IntCounterVec,
    /// Limits file reloads by `result` (`loaded`, `rejected`).
    pub limits_reloads: IntCounterVec,
    /// gRPC calls by `method` and `code`.
    pub grpc_requests: IntCounterVec,
    /// gRPC latency by `method`.
    pub grpc_duration: HistogramVec,
    handles: Arc<DecisionHandles>,
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
        let failure_mode = IntCounterVec::new(
            Opts::new("bucket_failure_mode_total", "Requests answered by the configured failure mode"),
            &["mode"],
        )?;
        let write_queue_capacity =
            IntGauge::new("bucket_write_queue_capacity", "Most writes the tiered store's queue holds before dropping")?;
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route pattern, method and status"),
            &["route", "method", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency by route pattern")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let limit_decisions = IntCounterVec::new(
            Opts::new("bucket_limit_decisions_total", "Descriptor decisions by domain, rule and outcome"),
            &["domain", "rule", "outcome"],
        )?;
        let limits_reloads =
            IntCounterVec::new(Opts::new("bucket_limits_reload_total", "Limits file reloads by result"), &["result"])?;
        let grpc_requests =
            IntCounterVec::new(Opts::new("grpc_requests_total", "gRPC calls by method and code"), &["method", "code"])?;
        let grpc_duration = HistogramVec::new(
            HistogramOpts::new("grpc_request_duration_seconds", "gRPC latency by method")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["method"],
        )?;
        registry.register(Box::new(limit_decisions.clone()))?;
        registry.register(Box::new(limits_reloads.clone()))?;
        registry.register(Box::new(grpc_requests.clone()))?;
        registry.register(Box::new(grpc_duration.clone()))?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(tokens_consumed.clone()))?;
        registry.register(Box::new(requests_denied.clone()))?;
        registry.register(Box::new(decision_duration.clone()))?;
        registry.register(Box::new(store_errors.clone()))?;
        registry.register(Box::new(failure_mode.clone()))?;
        registry.register(Box::new(write_queue_capacity.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        Ok(Self {
            registry,
            decisions,
            tokens_consumed,
            requests_denied,
            decision_duration,
            store_errors,
            failure_mode,
            write_queue_capacity,
            http_requests,
            http_duration,
            limit_decisions,
            limits_reloads,
            grpc_requests,
            grpc_duration,
            handles: Arc::default(),
        })
    }

    /// Counts one decision: its outcome, source, the tokens it took and how long the store took.
    pub fn record_decision(&self, allowed: bool, source: Source, cost: u64, store: &str, elapsed: Duration) {
        let outcome = if allowed { "allowed" } else { "denied" };
        match self.handles.counted[usize::from(!allowed)].get(source as usize) {
            Some(series) => series.get_or_init(|| self.decisions.with_label_values(&[outcome, source.as_str()])).inc(),
            None => self.decisions.with_label_values(&[outcome, source.as_str()]).inc(),
        }
        if allowed {
            self.tokens_consumed.inc_by(cost);
        } else {
            self.requests_denied.inc();
        }
        let (label, timer) =
            self.handles.timed.get_or_init(|| (store.to_string(), self.decision_duration.with_label_values(&[store])));
        if label == store {
            timer.observe(elapsed.as_secs_f64());
        } else {
            self.decision_duration.with_label_values(&[store]).observe(elapsed.as_secs_f64());
        }
    }

    /// Counts one HTTP request under its route pattern (never the raw path).
    pub fn record_http(&self, route: &str, method: &str, status: StatusCode, elapsed: Duration) {
        self.http_requests.with_label_values(&[route, method, status.as_str()]).inc();
        self.http_duration.with_label_values(&[route]).observe(elapsed.as_secs_f64());
    }

    /// Counts one gRPC call under its method and outcome code.
    pub fn record_grpc(&self, method: &str, code: &str, elapsed: Duration) {
        self.grpc_requests.with_label_values(&[method, code]).inc();
        self.grpc_duration.with_label_values(&[method]).observe(elapsed.as_secs_f64());
    }

    /// Adds a collector read at every scrape (the store's own counters: `store_metrics.rs`).
    pub fn register(&self, collector: Box<dyn Collector>) -> Result<(), prometheus::Error> {
        self.registry.register(collector)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_has_a_cached_series() {
        let all =
            [Source::Memory, Source::Redis, Source::Postgres, Source::NewUser, Source::FailOpen, Source::RefusalCache];
        for source in all {
            // Exhaustive on purpose: a new source fails to compile here until it is listed above.
            match source {
                Source::Memory
                | Source::Redis
                | Source::Postgres
                | Source::NewUser
                | Source::FailOpen
                | Source::RefusalCache => {}
            }
            assert!((source as usize) < SOURCES, "{source:?}: raise SOURCES");
        }
        assert_eq!(all.len(), SOURCES);
    }

    #[test]
    fn cached_handles_count_the_same_series_as_the_families() {
        let metrics = Metrics::new().unwrap();
        for _ in 0..3 {
            metrics.record_decision(true, Source::Memory, 2, "memory", Duration::from_micros(5));
        }
        metrics.record_decision(false, Source::RefusalCache, 1, "memory", Duration::from_micros(5));
        metrics.record_decision(true, Source::FailOpen, 1, "other", Duration::from_micros(5));
        assert_eq!(metrics.decisions.with_label_values(&["allowed", "memory"]).get(), 3);
        assert_eq!(metrics.decisions.with_label_values(&["denied", "refusal-cache"]).get(), 1);
        assert_eq!(metrics.decisions.with_label_values(&["denied", "memory"]).get(), 0);
        assert_eq!(metrics.decisions.with_label_values(&["allowed", "fail-open"]).get(), 1);
        assert_eq!(metrics.decision_duration.with_label_values(&["memory"]).get_sample_count(), 4);
        assert_eq!(metrics.decision_duration.with_label_values(&["other"]).get_sample_count(), 1);
        assert_eq!(metrics.tokens_consumed.get(), 7);
        assert_eq!(metrics.requests_denied.get(), 1);
    }
}
