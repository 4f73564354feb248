//! The tiered store's own counters exported as Prometheus metrics, read from the store at each scrape.
//!
//! The store counts in atomics and knows nothing of Prometheus. A collector reads them when the registry is
//! gathered and reports them as they are, so the exported value is always exactly the store's total: there is no
//! second counter to keep in step (copying by difference let two concurrent scrapes add the same difference twice,
//! and the copy overshot for good).

use std::sync::Arc;

use bucket_store::tiered::TieredStats;
use bucket_store::NodeHealth;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

/// Where the collector reads the totals: the tiered store's stats, `None` for a store without them.
pub type StatsSource = Arc<dyn Fn() -> Option<TieredStats> + Send + Sync>;

/// Where the collector reads the Redis nodes as last probed (cluster, sentinel; empty otherwise).
pub type NodesSource = Arc<dyn Fn() -> Vec<NodeHealth> + Send + Sync>;

const DEPENDENCY_UP: &str = "bucket_dependency_up";
const DEPENDENCY_UP_HELP: &str =
    "0 while the tiered store has marked a dependency down, else 1; with node and role: whether that Redis node answered";

/// Collects the tiered store's counters and gauges at scrape time.
pub struct StoreCollector {
    source: StatsSource,
    nodes: Option<NodesSource>,
    descs: Vec<Desc>,
}

/// The series this collector exports, built fresh for each scrape from one reading of the stats.
struct Series {
    fallbacks: IntCounterVec,
    write_queue_dropped: IntCounter,
    redis_invalidations: IntCounter,
    stale_redis_buckets: IntCounter,
    redis_misses: IntCounter,
    postgres_statements: IntCounterVec,
    write_queue_depth: IntGauge,
    dependency_up: IntGaugeVec,
}

impl Series {
    fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            fallbacks: IntCounterVec::new(
                Opts::new("bucket_fallbacks_total", "Decisions served by a fallback backend"),
                &["from", "to"],
            )?,
            write_queue_dropped: IntCounter::new(
                "bucket_write_queue_dropped_total",
                "Writes for PostgreSQL dropped because the tiered store's queue was full",
            )?,
            redis_invalidations: IntCounter::new(
                "bucket_redis_invalidations_total",
                "Keys deleted from Redis after an outage because PostgreSQL changed them meanwhile",
            )?,
            stale_redis_buckets: IntCounter::new(
                "bucket_redis_stale_buckets_total",
                "Redis buckets found older than PostgreSQL's row (a failover): dropped, the request decided again",
            )?,
            redis_misses: IntCounter::new(
                "bucket_redis_misses_total",
                "Tiered checks that asked Redis first and found no bucket there, then loaded PostgreSQL's row",
            )?,
            postgres_statements: IntCounterVec::new(
                Opts::new(
                    "bucket_postgres_statements_total",
                    "Statements the tiered store sent PostgreSQL for Redis's decisions (write) and misses (load); \
                     with group commit one per batch",
                ),
                &["kind"],
            )?,
            write_queue_depth: IntGauge::new(
                "bucket_write_queue_depth",
                "Writes queued for PostgreSQL by the tiered store",
            )?,
            dependency_up: IntGaugeVec::new(Opts::new(DEPENDENCY_UP, DEPENDENCY_UP_HELP), &["dependency"])?,
        })
    }

    /// Sets every series from `stats`. The series exist for every store (a labelled family without series is not
    /// exported at all, so alerts would read "no data" until the first outage); a store without stats reads as
    /// zero counts and both dependencies up, so a memory-store service never fires "Redis down".
    fn fill(&self, stats: Option<TieredStats>) {
        let s = stats.unwrap_or(TieredStats { redis_up: true, postgres_up: true, ..TieredStats::default() });
        self.fallbacks.with_label_values(&["redis", "postgres"]).inc_by(s.fallbacks_to_postgres);
        self.fallbacks.with_label_values(&["postgres", "queue"]).inc_by(s.writes_queued_while_postgres_down);
        self.write_queue_dropped.inc_by(s.writes_dropped);
        self.redis_invalidations.inc_by(s.keys_invalidated);
        self.stale_redis_buckets.inc_by(s.stale_redis_buckets);
        self.redis_misses.inc_by(s.redis_misses);
        self.postgres_statements.with_label_values(&["write"]).inc_by(s.postgres_write_statements);
        self.postgres_statements.with_label_values(&["load"]).inc_by(s.postgres_load_statements);
        self.write_queue_depth.set(i64::try_from(s.queue_depth).unwrap_or(i64::MAX));
        self.dependency_up.with_label_values(&["redis"]).set(i64::from(s.redis_up));
        self.dependency_up.with_label_values(&["postgres"]).set(i64::from(s.postgres_up));
    }

    fn collectors(&self) -> [&dyn Collector; 8] {
        [
            &self.fallbacks,
            &self.write_queue_dropped,
            &self.redis_invalidations,
            &self.stale_redis_buckets,
            &self.redis_misses,
            &self.postgres_statements,
            &self.write_queue_depth,
            &self.dependency_up,
        ]
    }
}

impl StoreCollector {
    /// A collector reading `source` at every scrape; fails only if a metric name were invalid.
    pub fn new(source: StatsSource) -> Result<Self, prometheus::Error> {
        let series = Series::new()?;
        let descs = series.collectors().iter().flat_map(|c| c.desc().into_iter().cloned()).collect();
        Ok(Self { source, nodes: None, descs })
    }

    /// Also exports one `bucket_dependency_up{dependency="redis", node, role}` series per node `nodes` lists,
    /// beside the aggregate series (which keep their one label, so queries on them are unchanged).
    pub fn with_nodes(mut self, nodes: NodesSource) -> Self {
        self.nodes = Some(nodes);
        self
    }

    /// The per-node series, merged into the aggregate family: one metric name, two label sets (the registry
    /// refuses a second collector of the name with other labels, so they are built here).
    fn add_nodes(&self, families: &mut [MetricFamily]) {
        let nodes = self.nodes.as_ref().map(|source| source()).unwrap_or_default();
        if nodes.is_empty() {
            return;
        }
        let Ok(per_node) =
            IntGaugeVec::new(Opts::new(DEPENDENCY_UP, DEPENDENCY_UP_HELP), &["dependency", "node", "role"])
        else {
            return;
        };
        for node in &nodes {
            per_node.with_label_values(&["redis", &node.addr, node.role.as_str()]).set(i64::from(node.up));
        }
        if let Some(family) = families.iter_mut().find(|family| family.name() == DEPENDENCY_UP) {
            for mut built in per_node.collect() {
                family.mut_metric().extend(built.take_metric());
            }
        }
    }
}

impl Collector for StoreCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // Names and labels were validated in `new`, so building them again cannot fail; if it somehow did, the
        // scrape goes on without these series rather than failing.
        let Ok(series) = Series::new() else { return Vec::new() };
        series.fill((self.source)());
        let mut families: Vec<MetricFamily> = series.collectors().iter().flat_map(|c| c.collect()).collect();
        self.add_nodes(&mut families);
        families
    }
}

/// Where [`PrunedCollector`] reads the PostgreSQL pruner's total; `None` for a store without PostgreSQL.
pub type PrunedSource = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

/// Exports `bucket_pruned_rows_total` (rows of refilled buckets the PostgreSQL pruner deleted), read at scrape.
pub struct PrunedCollector {
    source: PrunedSource,
    descs: Vec<Desc>,
}

impl PrunedCollector {
    /// A collector reading `source` at every scrape; fails only if the metric name were invalid.
    pub fn new(source: PrunedSource) -> Result<Self, prometheus::Error> {
        let descs = Self::counter()?.desc().into_iter().cloned().collect();
        Ok(Self { source, descs })
    }

    fn counter() -> Result<IntCounter, prometheus::Error> {
        IntCounter::new("bucket_pruned_rows_total", "Rows of refilled buckets deleted from PostgreSQL by this instance")
    }
}

impl Collector for PrunedCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(counter) = Self::counter() else { return Vec::new() };
        counter.inc_by((self.source)().unwrap_or(0));
        counter.collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::metrics::Metrics;
    use bucket_store::NodeRole;

    fn exported(text: &str, series: &str) -> u64 {
        let line = text.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("{series} missing"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn concurrent_scrapes_under_load_always_export_the_stores_totals() {
        let total = Arc::new(AtomicU64::new(0));
        let source: StatsSource = {
            let total = total.clone();
            Arc::new(move || {
                let n = total.load(Ordering::SeqCst);
                Some(TieredStats { fallbacks_to_postgres: n, keys_invalidated: n, ..TieredStats::default() })
            })
        };
        let metrics = Metrics::new().unwrap();
        metrics.register(Box::new(StoreCollector::new(source).unwrap())).unwrap();
        let scrapers_left = AtomicU64::new(4);
        std::thread::scope(|s| {
            s.spawn(|| {
                while scrapers_left.load(Ordering::SeqCst) > 0 {
                    total.fetch_add(1, Ordering::SeqCst);
                }
            });
            for _ in 0..4 {
                s.spawn(|| {
                    let mut last = 0;
                    for _ in 0..300 {
                        let before = total.load(Ordering::SeqCst);
                        let text = metrics.render().unwrap();
                        let after = total.load(Ordering::SeqCst);
                        let value = exported(&text, r#"bucket_fallbacks_total{from="redis",to="postgres"}"#);
                        assert!(before <= value && value <= after, "{value} outside [{before}, {after}]");
                        assert!(value >= last, "a counter went backwards");
                        last = value;
                    }
                    scrapers_left.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        let text = metrics.render().unwrap();
        let end = total.load(Ordering::SeqCst);
        assert!(end > 0);
        assert_eq!(exported(&text, r#"bucket_fallbacks_total{from="redis",to="postgres"}"#), end);
        assert_eq!(exported(&text, "bucket_redis_invalidations_total"), end);
    }

    #[test]
    fn stale_buckets_and_statements_by_kind_are_the_stores_totals() {
        let stats = TieredStats {
            stale_redis_buckets: 3,
            redis_misses: 11,
            postgres_write_statements: 7,
            postgres_load_statements: 5,
            ..TieredStats::default()
        };
        let metrics = Metrics::new().unwrap();
        metrics.register(Box::new(StoreCollector::new(Arc::new(move || Some(stats))).unwrap())).unwrap();
        let text = metrics.render().unwrap();
        assert_eq!(exported(&text, "bucket_redis_stale_buckets_total"), 3);
        assert_eq!(exported(&text, "bucket_redis_misses_total"), 11);
        assert_eq!(exported(&text, r#"bucket_postgres_statements_total{kind="write"}"#), 7);
        assert_eq!(exported(&text, r#"bucket_postgres_statements_total{kind="load"}"#), 5);
    }

    #[test]
    fn pruned_rows_are_the_stores_total_and_zero_without_postgres() {
        let metrics = Metrics::new().unwrap();
        metrics.register(Box::new(PrunedCollector::new(Arc::new(|| Some(1234))).unwrap())).unwrap();
        assert_eq!(exported(&metrics.render().unwrap(), "bucket_pruned_rows_total"), 1234);
        let metrics = Metrics::new().unwrap();
        metrics.register(Box::new(PrunedCollector::new(Arc::new(|| None)).unwrap())).unwrap();
        assert_eq!(exported(&metrics.render().unwrap(), "bucket_pruned_rows_total"), 0);
    }

    #[test]
    fn redis_nodes_get_series_of_their_own_beside_the_aggregate() {
        let metrics = Metrics::new().unwrap();
        let nodes: NodesSource = Arc::new(|| {
            let node = |addr: &str, role, up| NodeHealth { addr: addr.into(), role, up, detail: String::new() };
            vec![node("10.0.0.1:7000", NodeRole::Master, true), node("10.0.0.2:7001", NodeRole::Replica, false)]
        });
        metrics.register(Box::new(StoreCollector::new(Arc::new(|| None)).unwrap().with_nodes(nodes))).unwrap();
        let text = metrics.render().unwrap();
        assert_eq!(exported(&text, r#"bucket_dependency_up{dependency="redis"}"#), 1, "the aggregate comes first");
        assert_eq!(
            exported(&text, r#"bucket_dependency_up{dependency="redis",node="10.0.0.1:7000",role="master"}"#),
            1
        );
        assert_eq!(
            exported(&text, r#"bucket_dependency_up{dependency="redis",node="10.0.0.2:7001",role="replica"}"#),
            0
        );
        assert_eq!(text.matches("# TYPE bucket_dependency_up").count(), 1, "one family");
    }

    #[test]
    fn a_store_without_stats_exports_zeros_and_both_dependencies_up() {
        let metrics = Metrics::new().unwrap();
        metrics.register(Box::new(StoreCollector::new(Arc::new(|| None)).unwrap())).unwrap();
        let text = metrics.render().unwrap();
        assert_eq!(exported(&text, r#"bucket_fallbacks_total{from="postgres",to="queue"}"#), 0);
        assert_eq!(exported(&text, r#"bucket_dependency_up{dependency="redis"}"#), 1);
        assert_eq!(exported(&text, "bucket_write_queue_depth"), 0);
    }
}
