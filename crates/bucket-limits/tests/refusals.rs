//! Files envoyproxy/ratelimit refuses are refused here too (plus the few bucket refuses on top, marked), each error
//! naming the file, the place in it, and the problem.

use bucket_limits::{Limits, LimitsError};

fn refused(text: &str) -> LimitsError {
    Limits::from_yaml("limits.yaml", text).expect_err("the file must be refused")
}

fn message(text: &str) -> String {
    refused(text).to_string()
}

#[test]
fn an_empty_or_missing_domain_is_refused() {
    for text in ["", "# only a comment\n", "descriptors: []\n", "domain: ''\n"] {
        assert_eq!(message(text), "limits.yaml: domain: config file cannot have empty domain", "{text:?}");
    }
}

#[test]
fn a_domain_in_two_files_is_refused() {
    let files = [
        ("a.yaml".to_owned(), "domain: shared\n".to_owned()),
        ("b.yaml".to_owned(), "domain: other\n".to_owned()),
        ("c.yaml".to_owned(), "domain: shared\n".to_owned()),
    ];
    let err = Limits::from_files(&files).expect_err("duplicate domain");
    assert_eq!(err.to_string(), "c.yaml: duplicate domain 'shared': already configured by a.yaml");
}

#[test]
fn a_descriptor_without_key_is_refused_with_its_parent_path() {
    assert_eq!(message("domain: d\ndescriptors:\n  - value: v\n"), "limits.yaml: d: descriptor has empty key");
    assert_eq!(
        message("domain: d\ndescriptors:\n  - key: a\n    descriptors:\n      - key: ''\n"),
        "limits.yaml: d.a: descriptor has empty key"
    );
}

#[test]
fn the_same_key_and_value_twice_at_one_level_is_refused() {
    let twice = |entry: &str| format!("domain: d\ndescriptors:\n  - key: p\n    descriptors:\n{entry}{entry}");
    assert_eq!(
        message(&twice("      - key: k\n        value: v\n")),
        "limits.yaml: d.p.k_v: duplicate descriptor composite key"
    );
    assert_eq!(message(&twice("      - key: k\n")), "limits.yaml: d.p.k: duplicate descriptor composite key");
    assert_eq!(
        message(&twice("      - key: k\n        value: v*\n")),
        "limits.yaml: d.p.k_v*: duplicate descriptor composite key"
    );
    // The same entry at different levels, or the key alone next to key + value, is fine.
    Limits::from_yaml("ok.yaml", "domain: d\ndescriptors:\n  - key: k\n  - key: k\n    value: v\n    descriptors:\n      - key: k\n        value: v\n")
        .expect("no duplicates");
}

#[test]
fn a_bad_or_missing_unit_is_refused() {
    let rule = |body: &str| format!("domain: d\ndescriptors:\n  - key: a\n    rate_limit: {{ {body} }}\n");
    assert_eq!(message(&rule("unit: foo, requests_per_unit: 1")), "limits.yaml: d.a: invalid rate limit unit 'foo'");
    assert_eq!(message(&rule("requests_per_unit: 1")), "limits.yaml: d.a: invalid rate limit unit ''");
    assert_eq!(
        message(&rule("unit: unknown, requests_per_unit: 1")),
        "limits.yaml: d.a: invalid rate limit unit 'unknown'"
    );
}

#[test]
fn unlimited_with_a_unit_is_refused() {
    let text = "domain: d\ndescriptors:\n  - key: a\n    rate_limit: { unlimited: true, unit: second }\n";
    assert_eq!(message(text), "limits.yaml: d.a: should not specify rate limit unit when unlimited");
}

#[test]
fn a_missing_requests_per_unit_is_refused_by_bucket() {
    let text = "domain: d\ndescriptors:\n  - key: a\n    rate_limit: { unit: second }\n";
    assert_eq!(
        message(text),
        "limits.yaml: d.a: requests_per_unit is required (0 refuses every request; or set unlimited: true)"
    );
}

#[test]
fn a_rate_that_cannot_be_a_bucket_is_refused() {
    let rule = |body: &str| format!("domain: d\ndescriptors:\n  - key: a\n    rate_limit: {{ {body} }}\n");
    assert_eq!(
        message(&rule("unit: second, requests_per_unit: 1, burst: 0")),
        "limits.yaml: d.a: 1 per SECOND with burst 0 cannot be a bucket: capacity must be at least 1"
    );
    assert!(message(&rule("unit: day, requests_per_unit: 4294967295")).contains("capacity must be at most"));
    assert!(message(&rule("unit: second, requests_per_unit: 0, burst: 5"))
        .contains("burst needs requests_per_unit above 0"));
    assert!(message(&rule("unlimited: true, burst: 5")).contains("should not specify burst when unlimited"));
    assert!(message(&rule("unit: second, requests_per_unit: -1")).starts_with("limits.yaml:4:"));
}

#[test]
fn replaces_naming_itself_or_nothing_is_refused() {
    let rule = |body: &str| {
        format!("domain: d\ndescriptors:\n  - key: a\n    rate_limit:\n      unit: second\n      requests_per_unit: 1\n{body}")
    };
    assert_eq!(
        message(&rule("      name: me\n      replaces:\n        - name: me\n")),
        "limits.yaml: d.a: replaces should not contain name of same descriptor"
    );
    assert_eq!(
        message(&rule("      replaces:\n        - name: ''\n")),
        "limits.yaml: d.a: should not have an empty replaces entry"
    );
    assert_eq!(
        message(&rule("      replaces:\n        - {}\n")),
        "limits.yaml: d.a: should not have an empty replaces entry"
    );
}

#[test]
fn replaces_naming_an_unknown_rule_loads_with_a_warning() {
    let text = "domain: d\ndescriptors:\n  - key: a\n    rate_limit:\n      unit: second\n      requests_per_unit: 1\n      replaces:\n        - name: nobody\n";
    let limits = Limits::from_yaml("limits.yaml", text).expect("upstream accepts it");
    assert_eq!(limits.warnings(), ["limits.yaml: d.a: replaces 'nobody', which no rate_limit of domain 'd' is named"]);
}

#[test]
fn misspelled_and_unknown_keys_are_refused_with_line_and_column() {
    let err = refused("domain: d\ndescriptors:\n  - key: a\n    ratelimit:\n      unit: second\n");
    assert!(matches!(&err, LimitsError::Syntax { line: 4, column: 5, .. }), "{err:?}");
    assert!(err.to_string().starts_with("limits.yaml:4:5: unknown field `ratelimit`"), "{err}");
    let err =
        refused("domain: d\ndescriptors:\n  - key: a\n    rate_limit:\n      unit: second\n      requestsperunit: 5\n");
    assert!(err.to_string().starts_with("limits.yaml:6:7: unknown field `requestsperunit`"), "{err}");
    let err = refused("domain: d\nfoo: bar\n");
    assert!(err.to_string().starts_with("limits.yaml:2:1: unknown field `foo`"), "{err}");
    // Stricter than upstream, which accepts any known key anywhere: a key in the wrong block is refused.
    let err = refused("domain: d\ndescriptors:\n  - key: a\n    unit: second\n");
    assert!(err.to_string().contains("unknown field `unit`"), "{err}");
}

#[test]
fn non_string_keys_lists_of_scalars_and_non_yaml_are_refused() {
    assert!(message("domain: d\ndescriptors:\n  - key: a\n    0.25: x\n").contains("unknown field `0.25`"));
    assert!(message("domain: d\ndescriptors:\n  - a\n").starts_with("limits.yaml:3:5: "));
    assert!(message("domain: d\ndescriptors: [\n").starts_with("limits.yaml:2:"));
    assert!(message("- just\n- a list\n").starts_with("limits.yaml:1:1: "));
    assert!(message("{ this is: [not, yaml\n").starts_with("limits.yaml:"));
}

#[test]
fn share_threshold_without_a_wildcard_is_refused() {
    let text = "domain: d\ndescriptors:\n  - key: a\n    value: plain\n    share_threshold: true\n    rate_limit: { unit: second, requests_per_unit: 1 }\n";
    assert_eq!(
        message(text),
        "limits.yaml: d.a_plain: share_threshold can only be used with a wildcard value (containing '*')"
    );
}

#[test]
fn quota_mode_is_refused_as_unsupported() {
    let text = "domain: d\ndescriptors:\n  - key: a\n    quota_mode: true\n    rate_limit: { unit: second, requests_per_unit: 1 }\n";
    assert_eq!(message(text), "limits.yaml: d.a: quota_mode is not supported by bucket");
}

#[test]
fn upstream_shapes_that_are_valid_load() {
    let text = r#"
domain: internal
descriptors:
  - key: ldap
    rate_limit:
      unlimited: true
  - key: azure
    rate_limit:
      unit: minute
      requests_per_unit: 100
  - key: remote_address
    value: 50.0.0.5
    rate_limit:
      unit: second
      requests_per_unit: 0
  - key: unlimited_with_count
    rate_limit: { unlimited: true, requests_per_unit: 5 }
  - key: placeholder
"#;
    let limits = Limits::from_yaml("internal.yaml", text).expect("valid");
    assert_eq!((limits.domain_count(), limits.rule_count()), (1, 4));
    assert!(limits.warnings().is_empty());
}

#[test]
fn a_key_written_twice_in_one_block_is_refused() {
    assert!(message("domain: d\ndomain: e\n").starts_with("limits.yaml:2:1: duplicate mapping key: domain"));
    assert!(message("domain: d\ndescriptors:\n  - key: a\n    key: b\n").starts_with("limits.yaml:4:5: "));
}

#[test]
fn anchors_aliases_and_merge_keys_work_as_in_yaml() {
    let text = "domain: d\ndescriptors:\n  - key: a\n    rate_limit: &r { unit: second, requests_per_unit: 1 }\n  - key: b\n    rate_limit: *r\n  - key: c\n    rate_limit:\n      <<: *r\n      requests_per_unit: 2\n";
    let limits = Limits::from_yaml("limits.yaml", text).expect("valid");
    let c = limits.find("d", &bucket_limits::Descriptor::new([("c", "x")])).expect("c");
    assert_eq!((limits.rule_count(), c.rule.requests_per_unit), (3, 2));
}
