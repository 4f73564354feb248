//! The example files under `deploy/limits/` load together and do what their comments say.

use std::path::Path;

use bucket_limits::{Action, Descriptor, Limits, Matched};

fn examples() -> Limits {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/limits");
    Limits::load(&dir).expect("deploy/limits is valid")
}

fn resolve<'a>(limits: &'a Limits, domain: &str, descriptors: &[&[(&str, &str)]]) -> Vec<Option<Matched<'a>>> {
    let descriptors: Vec<Descriptor> = descriptors.iter().map(|d| Descriptor::new(d.iter().copied())).collect();
    limits.resolve(domain, &descriptors)
}

fn per_unit(m: &Option<Matched<'_>>) -> Option<u32> {
    m.as_ref().map(|m| m.rule.requests_per_unit)
}

#[test]
fn the_examples_load_without_warnings() {
    let limits = examples();
    assert_eq!(limits.domain_count(), 3);
    assert!(limits.warnings().is_empty(), "{:?}", limits.warnings());
}

#[test]
fn edge_example() {
    let limits = examples();
    let m = resolve(&limits, "edge", &[&[("remote_address", "203.0.113.7")], &[("remote_address", "198.51.100.23")]]);
    let policy = m[0].as_ref().and_then(|m| m.rule.policy).expect("a bucket");
    assert_eq!((policy.capacity(), policy.interval_us()), (100, 20_000));
    assert_eq!(m[1].as_ref().map(|m| m.rule.action()), Some(Action::Deny));
    let orders = resolve(
        &limits,
        "edge",
        &[&[("path", "/api/v1/orders/42"), ("method", "POST")], &[("path", "/api/v1/orders/7"), ("method", "POST")]],
    );
    assert_eq!(per_unit(&orders[0]), Some(300));
    assert_eq!(orders[0].as_ref().map(|m| &m.key), orders[1].as_ref().map(|m| &m.key), "one shared bucket");
    assert_eq!(orders[0].as_ref().map(|m| m.metric_rule.as_ref()), Some("order_writes"));
    let batch = resolve(&limits, "edge", &[&[("api_key", "internal-batch-1")]]);
    assert_eq!(batch[0].as_ref().map(|m| m.rule.action()), Some(Action::Unlimited));
}

#[test]
fn messaging_example() {
    let limits = examples();
    let number = [("to_number", "2061111111")];
    let marketing = [("message_type", "marketing"), ("to_number", "2061111111")];
    let otp = [("message_type", "otp"), ("to_number", "2061111111")];
    let m = resolve(&limits, "messaging", &[&marketing, &number]);
    assert_eq!(m.iter().map(per_unit).collect::<Vec<_>>(), [Some(5), Some(100)]);
    let m = resolve(&limits, "messaging", &[&otp, &number]);
    assert_eq!(m.iter().map(per_unit).collect::<Vec<_>>(), [Some(10), None], "otp replaces per_number");
}

#[test]
fn services_example() {
    let limits = examples();
    let m = resolve(
        &limits,
        "services",
        &[
            &[("to_cluster", "payments"), ("from_cluster", "checkout")],
            &[("to_cluster", "payments"), ("from_cluster", "reporting")],
            &[("to_cluster", "search"), ("user", "u-123")],
        ],
    );
    assert_eq!(m.iter().map(per_unit).collect::<Vec<_>>(), [Some(1000), Some(50), Some(20)]);
    assert_eq!(
        m.iter().map(|m| m.as_ref().is_some_and(|m| m.rule.shadow_mode)).collect::<Vec<_>>(),
        [false, true, false]
    );
    assert_eq!(m[2].as_ref().map(|m| m.metric_rule.as_ref()), Some("services.to_cluster_search.user_u-123"));
}
