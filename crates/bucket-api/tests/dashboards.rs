//! Every Grafana panel and every Prometheus alert in deploy/ queries a metric the service really exports: a renamed
//! metric otherwise leaves an empty panel or an alert that can never fire, and nobody notices until an outage.
//!
//! The PromQL expressions of deploy/grafana/dashboards/*.json and deploy/prometheus/alerts.yml (read with
//! serde-saphyr) are parsed with promql-parser and reduced to the metric names their selectors name, and each name must be a sample name in the `/metrics` output of a real app after some
//! traffic (so histograms count by their `_bucket`/`_sum`/`_count` series, and the bare histogram name, which
//! Prometheus never stores, is refused). `up` is the one series Prometheus adds itself. `BUCKET_DEPLOY_DIR` points
//! the check at another copy of deploy/; `cargo xtask compose --check` runs this test that way.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use actix_web::test::{call_service, init_service, read_body, TestRequest};
use bucket_api::build_app;
use bucket_core::ManualClock;
use common::{config, state};
use promql_parser::parser::Expr;
use promql_parser::util::{walk_expr, ExprVisitor};
use serde::Deserialize;
use serde_json::{json, Value};

/// Series that Prometheus records for every target without the target exporting them.
const ADDED_BY_PROMETHEUS: [&str; 1] = ["up"];

/// Grafana's interval variables, which stand where PromQL wants a duration; they become `5m` before parsing. Other
/// variables (`$instance`) sit inside label values, which are strings to PromQL.
const GRAFANA_INTERVALS: [&str; 6] =
    ["${__rate_interval}", "$__rate_interval", "${__interval}", "$__interval", "${__range}", "$__range"];

/// The metric names `expr` selects, in order of appearance: the names of the vector and matrix selectors in its
/// syntax tree (promql-parser). An expression that is not PromQL is an error naming why.
fn metric_names(expr: &str) -> Result<Vec<String>, String> {
    struct Names(Vec<String>);
    impl ExprVisitor for Names {
        type Error = std::convert::Infallible;
        fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Self::Error> {
            let selector = match expr {
                Expr::VectorSelector(selector) => Some(selector),
                Expr::MatrixSelector(matrix) => Some(&matrix.vs),
                _ => None,
            };
            self.0.extend(selector.and_then(|selector| selector.name.clone()));
            Ok(true)
        }
    }
    let promql = GRAFANA_INTERVALS.iter().fold(expr.to_string(), |promql, variable| promql.replace(variable, "5m"));
    let tree = promql_parser::parser::parse(&promql).map_err(|error| format!("not PromQL ({error})"))?;
    let mut names = Names(Vec::new());
    let Ok(_) = walk_expr(&mut names, &tree);
    Ok(names.0)
}

/// Grafana's `label_values(query, label)` and `query_result(query)` wrap PromQL; `label_values(label)` and
/// `metrics(regex)` name no series to check.
fn grafana_variable_promql(query: &str) -> Option<String> {
    let query = query.trim();
    if let Some(inner) = query.strip_prefix("label_values(").and_then(|rest| rest.strip_suffix(')')) {
        let (promql, _label) = inner.rsplit_once(',')?;
        return Some(promql.to_string());
    }
    if let Some(inner) = query.strip_prefix("query_result(").and_then(|rest| rest.strip_suffix(')')) {
        return Some(inner.to_string());
    }
    None
}

/// Every PromQL expression of a dashboard: panel targets (rows nest panels) and query variables.
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    match (key.as_str(), child) {
                        ("expr", Value::String(expr)) if !expr.trim().is_empty() => out.push(expr.clone()),
                        _ => walk(child, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    walk(&dashboard["panels"], &mut exprs);
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let query = match &variable["query"] {
            Value::String(query) => Some(query.as_str()),
            other => other["query"].as_str(),
        };
        exprs.extend(query.and_then(grafana_variable_promql));
    }
    exprs
}

/// A Prometheus rule file, as far as the check reads it.
#[derive(Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
struct RuleGroup {
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    expr: String,
}

/// The `expr` of every rule of a Prometheus rule file.
fn alert_exprs(yaml: &str) -> Result<Vec<String>, serde_saphyr::Error> {
    let file: RuleFile = serde_saphyr::from_str(yaml)?;
    Ok(file.groups.into_iter().flat_map(|group| group.rules).map(|rule| rule.expr).collect())
}

/// Sample names of a Prometheus text exposition (histograms appear as `_bucket`, `_sum` and `_count`).
fn exported_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// `/metrics` of an app over a memory store after allowed, denied, bad and unmatched requests. The tiered store's
/// series are there because the service registers them at start.
async fn exposition_after_traffic() -> String {
    let clock = ManualClock::new(1);
    // With a limits file, so the gateway front's series exist too.
    let limits = std::env::temp_dir().join(format!("bucket-dashboards-{}.yaml", uuid::Uuid::new_v4()));
    let yaml = "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requests_per_unit: 1\n";
    std::fs::write(&limits, yaml).unwrap();
    let mut config = config();
    config.rls.limits = Some(limits.clone());
    let app = init_service(build_app(state(config, &clock))).await;
    let body = json!({"domain": "d", "descriptors": [{"entries": [{"key": "k", "value": "v"}]}]});
    call_service(&app, TestRequest::post().uri("/v1/ratelimit").set_json(body).to_request()).await;
    let _ = std::fs::remove_file(&limits);
    for _ in 0..12 {
        call_service(&app, TestRequest::get().uri("/").insert_header(("X-User-ID", "dash")).to_request()).await;
    }
    let check = TestRequest::post().uri("/v1/check").set_json(json!({"key": "board", "cost": 2}));
    call_service(&app, check.to_request()).await;
    call_service(&app, TestRequest::get().uri("/no/such/route").to_request()).await;
    let res = call_service(&app, TestRequest::get().uri("/metrics").to_request()).await;
    String::from_utf8(read_body(res).await.to_vec()).expect("the exposition is UTF-8")
}

/// The deploy/ directory to check: `BUCKET_DEPLOY_DIR`, else the repository's.
fn deploy_dir() -> PathBuf {
    match std::env::var_os("BUCKET_DEPLOY_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy"),
    }
}

/// `(file, expression, metric)` for every metric an expression names that `exported` lacks; an expression that
/// does not parse is listed with the parser's complaint in place of the metric.
fn unknown_metrics(sources: &[(String, Vec<String>)], exported: &BTreeSet<String>) -> Vec<(String, String, String)> {
    let mut unknown = Vec::new();
    for (file, exprs) in sources {
        for expr in exprs {
            let names = match metric_names(expr) {
                Ok(names) => names,
                Err(why) => {
                    unknown.push((file.clone(), expr.clone(), why));
                    continue;
                }
            };
            for name in names {
                if !exported.contains(&name) && !ADDED_BY_PROMETHEUS.contains(&name.as_str()) {
                    unknown.push((file.clone(), expr.clone(), name));
                }
            }
        }
    }
    unknown
}

#[actix_web::test]
async fn every_dashboard_and_alert_query_names_an_exported_metric() {
    let deploy = deploy_dir();
    let mut sources: Vec<(String, Vec<String>)> = Vec::new();
    let dashboards = deploy.join("grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dashboards)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dashboards.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboard JSON in {}", dashboards.display());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let dashboard: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", file.display()));
        sources.push((file.display().to_string(), dashboard_exprs(&dashboard)));
    }
    let alerts = deploy.join("prometheus/alerts.yml");
    let yaml = std::fs::read_to_string(&alerts).unwrap_or_else(|e| panic!("cannot read {}: {e}", alerts.display()));
    let exprs = alert_exprs(&yaml).unwrap_or_else(|e| panic!("{} is not a rule file: {e}", alerts.display()));
    sources.push((alerts.display().to_string(), exprs));
    for (file, exprs) in &sources {
        assert!(!exprs.is_empty(), "found no PromQL expression in {file}");
    }

    let exported = exported_names(&exposition_after_traffic().await);
    let unknown = unknown_metrics(&sources, &exported);
    let listing: Vec<String> =
        unknown.iter().map(|(file, expr, name)| format!("  `{name}` in {file}: {expr}")).collect();
    assert!(
        unknown.is_empty(),
        "queries name metrics that bucket-api does not export (or are not PromQL):\n{}\nexported: {exported:?}",
        listing.join("\n")
    );

    let queried: BTreeSet<String> = sources
        .iter()
        .flat_map(|(_, exprs)| exprs.iter().flat_map(|expr| metric_names(expr).unwrap_or_default()))
        .collect();
    let expressions: usize = sources.iter().map(|(_, exprs)| exprs.len()).sum();
    println!(
        "dashboard metrics: {expressions} expressions in {} files name {} metrics, all exported: {}",
        sources.len(),
        queried.len(),
        queried.into_iter().collect::<Vec<_>>().join(", ")
    );
}

#[actix_web::test]
async fn a_query_on_a_metric_that_does_not_exist_is_reported() {
    let exported = exported_names(&exposition_after_traffic().await);
    let dashboard = json!({"panels": [{"type": "row", "panels": [{"targets": [
        {"expr": "sum(rate(bucket_decisions_total[5m]))"},
        {"expr": "rate(bucket_no_such_metric_total[5m])"},
        {"expr": "histogram_quantile(0.99, rate(bucket_decision_duration_seconds[5m]))"},
    ]}]}]});
    let sources = vec![("dashboard.json".to_string(), dashboard_exprs(&dashboard))];
    let names: Vec<String> = unknown_metrics(&sources, &exported).into_iter().map(|(_, _, name)| name).collect();
    // The bare histogram name is not a series Prometheus stores: only its _bucket/_sum/_count are.
    assert_eq!(names, ["bucket_no_such_metric_total", "bucket_decision_duration_seconds"]);
}

#[actix_web::test]
async fn tiered_series_exist_before_any_outage() {
    let exported = exposition_after_traffic().await;
    for series in [
        r#"bucket_fallbacks_total{from="redis",to="postgres"} 0"#,
        r#"bucket_fallbacks_total{from="postgres",to="queue"} 0"#,
        r#"bucket_dependency_up{dependency="redis"} 1"#,
        r#"bucket_dependency_up{dependency="postgres"} 1"#,
        "bucket_write_queue_capacity 100000",
    ] {
        assert!(exported.lines().any(|line| line == series), "missing `{series}` in:\n{exported}");
    }
}

#[test]
fn metric_names_are_the_selectors_of_the_syntax_tree() {
    let expr = r#"histogram_quantile(0.99, sum by (store, le) (rate(x_bucket{a="}b", c=~"$instance"}[$__rate_interval])))
        / on(instance) group_left(store) y:recorded offset 5m > bool 1e3 and ignoring (le) z"#;
    assert_eq!(metric_names(expr).unwrap(), ["x_bucket", "y:recorded", "z"]);
    assert_eq!(metric_names(r#"up{job="bucket-api"} == 0"#).unwrap(), ["up"]);
    assert_eq!(metric_names("sum without(instance)(rate(a[5m])) or vector(0)").unwrap(), ["a"]);
    assert!(metric_names("rate(a[5m]").is_err());
}

#[test]
fn alert_exprs_read_inline_and_block_values() {
    let yaml = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        for: 1m\n\
                \x20     - alert: B\n        expr: |\n          rate(a[5m])\n          > 0\n        for: 2m\n\
                \x20     - alert: C\n        expr: \"b > 1\"\n";
    assert_eq!(alert_exprs(yaml).unwrap(), ["up == 0", "rate(a[5m])\n> 0\n", "b > 1"]);
    assert!(alert_exprs("groups:\n  - rules:\n      - alert: A\n        alert: B\n        expr: up\n").is_err());
}

#[test]
fn grafana_variables_unwrap_to_their_promql() {
    assert_eq!(grafana_variable_promql(r#"label_values(up{job="x"}, instance)"#).as_deref(), Some(r#"up{job="x"}"#));
    assert_eq!(grafana_variable_promql("label_values(instance)"), None);
}
