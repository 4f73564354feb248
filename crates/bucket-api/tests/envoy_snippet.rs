//! `deploy/envoy/envoy.yaml`, the Envoy configuration the README shows, checked against what bucket serves (Envoy
//! is not installable here): the rate limit filter names a domain of `deploy/limits/edge.yaml`, every descriptor its
//! route actions produce matches a rule there, and the cluster reaches the gRPC port over HTTP/2.

use std::path::PathBuf;

use bucket_api::Config;
use bucket_limits::{Descriptor, Limits};
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

fn envoy() -> Value {
    let text = std::fs::read_to_string(repo("deploy/envoy/envoy.yaml")).expect("deploy/envoy/envoy.yaml");
    serde_saphyr::from_str(&text).expect("valid YAML")
}

/// Every object in `value` (depth first) that has the field `name`.
fn find<'a>(value: &'a Value, name: &str, out: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            if let Some(found) = map.get(name) {
                out.push(found);
            }
            map.values().for_each(|v| find(v, name, out));
        }
        Value::Array(items) => items.iter().for_each(|v| find(v, name, out)),
        _ => {}
    }
}

#[test]
fn the_filter_domain_and_every_route_descriptor_match_the_example_limits() {
    let envoy = envoy();
    let limits = Limits::load(&repo("deploy/limits/edge.yaml")).expect("the example limits load");
    let mut domains = Vec::new();
    find(&envoy, "domain", &mut domains);
    assert_eq!(domains.len(), 1, "one rate limit filter");
    let domain = domains[0].as_str().unwrap();
    assert!(limits.has_domain(domain), "{domain} is configured");

    let mut actions = Vec::new();
    find(&envoy, "actions", &mut actions);
    assert!(!actions.is_empty(), "the route has rate_limits actions");
    for list in actions {
        let entries: Vec<(String, String)> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|action| {
                // The descriptor key each action produces, as Envoy names it.
                let key = if let Some(headers) = action.get("request_headers") {
                    headers["descriptor_key"].as_str().unwrap().to_owned()
                } else if action.get("remote_address").is_some() {
                    "remote_address".to_owned()
                } else {
                    panic!("an action this test does not know: {action}")
                };
                // A value each key's rule in edge.yaml is written for.
                let value = match key.as_str() {
                    "remote_address" => "203.0.113.7",
                    "path" => "/api/v1/orders/42",
                    "method" => "POST",
                    other => panic!("no sample value for descriptor key {other}"),
                };
                (key, value.to_owned())
            })
            .collect();
        let matched = limits.resolve(domain, &[Descriptor { entries: entries.clone() }]);
        assert!(matched[0].is_some(), "{entries:?} matches a rule of {domain}");
    }
}

#[test]
fn the_cluster_reaches_the_grpc_port_over_http2() {
    let envoy = envoy();
    let clusters = envoy["static_resources"]["clusters"].as_array().unwrap();
    let bucket = clusters.iter().find(|c| c["name"] == "bucket").expect("a cluster named bucket");
    let mut http2 = Vec::new();
    find(bucket, "http2_protocol_options", &mut http2);
    assert_eq!(http2.len(), 1, "gRPC needs HTTP/2");
    let mut ports = Vec::new();
    find(bucket, "port_value", &mut ports);
    let default_port = Config::default().rls.grpc_listen.rsplit(':').next().unwrap().parse::<u64>().unwrap();
    assert_eq!(ports[0].as_u64(), Some(default_port));
    let mut services = Vec::new();
    find(&envoy, "envoy_grpc", &mut services);
    assert_eq!(services[0]["cluster_name"], "bucket");
}
