//! Which rule a descriptor matches, behaviour ported in spirit from envoyproxy/ratelimit's config tests: most
//! specific entry first, same depth only, wildcards anywhere in a value, `replaces`, unlimited and metric labels.

use bucket_limits::{Action, Descriptor, Limits, Matched, Unit};

const BASIC: &str = r#"
domain: test-domain
descriptors:
  - key: key1
    value: value1
    descriptors:
      - key: subkey1
        rate_limit: { unit: second, requests_per_unit: 5 }
      - key: subkey1
        value: subvalue1
        rate_limit: { unit: SECOND, requests_per_unit: 10 }
  - key: key2
    rate_limit: { unit: minute, requests_per_unit: 20 }
  - key: key2
    value: value2
    rate_limit: { unit: Minute, requests_per_unit: 30 }
  - key: key3
    rate_limit: { unit: hour, requests_per_unit: 1 }
  - key: key4
    rate_limit: { unit: day, requests_per_unit: 1, name: key4_rate_limit }
  - key: key5
    value: value5
    descriptors:
      - key: subkey5
  - key: key6
    rate_limit: { unlimited: true }
  - key: key7
    detailed_metric: true
    rate_limit: { unit: minute, requests_per_unit: 70 }
"#;

fn limits(text: &str) -> Limits {
    Limits::from_yaml("test.yaml", text).expect("valid limits")
}

fn d(entries: &[(&str, &str)]) -> Descriptor {
    Descriptor::new(entries.iter().copied())
}

fn one<'a>(l: &'a Limits, domain: &str, entries: &[(&str, &str)]) -> Option<Matched<'a>> {
    let mut all = l.resolve(domain, &[d(entries)]);
    assert_eq!(all.len(), 1);
    all.pop().flatten()
}

fn rate(m: &Option<Matched<'_>>) -> Option<(u32, Unit)> {
    m.as_ref().map(|m| (m.rule.requests_per_unit, m.rule.unit))
}

#[test]
fn unknown_domains_and_empty_descriptors_match_nothing() {
    let l = limits(BASIC);
    assert_eq!(l.rule_count(), 8);
    assert!(one(&l, "foo_domain", &[("key2", "x")]).is_none());
    assert!(one(&l, "test-domain", &[]).is_none());
    assert_eq!(l.resolve("foo_domain", &[d(&[("a", "b")]), d(&[])]), vec![None, None]);
}

#[test]
fn a_descriptor_matches_only_a_rule_at_its_own_depth() {
    let l = limits(BASIC);
    assert!(one(&l, "test-domain", &[("key1", "something")]).is_none(), "key1 has no default entry");
    assert!(one(&l, "test-domain", &[("key1", "value1")]).is_none(), "key1_value1 is only a placeholder");
    assert!(one(&l, "test-domain", &[("key2", "value2"), ("subkey", "subvalue")]).is_none(), "deeper than the file");
    assert!(one(&l, "test-domain", &[("key5", "value5"), ("subkey5", "subvalue")]).is_none(), "entry without a rule");
    let m = one(&l, "test-domain", &[("key1", "value1"), ("subkey1", "something")]);
    assert_eq!(rate(&m), Some((5, Unit::Second)));
    assert_eq!(m.as_ref().map(|m| m.metric_rule.as_ref()), Some("test-domain.key1_value1.subkey1"));
}

#[test]
fn key_and_value_win_over_the_key_alone() {
    let l = limits(BASIC);
    assert_eq!(
        rate(&one(&l, "test-domain", &[("key1", "value1"), ("subkey1", "subvalue1")])),
        Some((10, Unit::Second))
    );
    let default = one(&l, "test-domain", &[("key2", "something")]);
    assert_eq!(rate(&default), Some((20, Unit::Minute)));
    assert_eq!(default.as_ref().map(|m| m.rule.path.as_str()), Some("test-domain.key2"));
    let exact = one(&l, "test-domain", &[("key2", "value2")]);
    assert_eq!(rate(&exact), Some((30, Unit::Minute)));
    assert_eq!(exact.as_ref().map(|m| m.rule.path.as_str()), Some("test-domain.key2_value2"));
}

#[test]
fn descriptor_values_are_case_sensitive() {
    let l = limits(BASIC);
    assert_eq!(rate(&one(&l, "test-domain", &[("key2", "VALUE2")])), Some((20, Unit::Minute)));
    assert!(one(&l, "test-domain", &[("KEY2", "value2")]).is_none());
}

#[test]
fn the_metric_label_is_the_name_else_the_path_else_detailed_values() {
    let l = limits(BASIC);
    let m = one(&l, "test-domain", &[("key3", "foo")]).expect("key3");
    assert_eq!((m.rule.name.as_deref(), m.metric_rule.as_ref()), (None, "test-domain.key3"));
    assert_eq!((m.rule.requests_per_unit, m.rule.unit), (1, Unit::Hour));
    let m = one(&l, "test-domain", &[("key4", "foo")]).expect("key4");
    assert_eq!((m.rule.name.as_deref(), m.metric_rule.as_ref()), (Some("key4_rate_limit"), "key4_rate_limit"));
    for value in ["unspecified_value", "another_value"] {
        let m = one(&l, "test-domain", &[("key7", value)]).expect("key7");
        assert_eq!(m.metric_rule, format!("test-domain.key7_{value}"));
        assert_eq!(m.rule.path, "test-domain.key7");
    }
}

#[test]
fn unlimited_rules_match_but_hold_no_bucket() {
    let l = limits(BASIC);
    let m = one(&l, "test-domain", &[("key6", "foo")]).expect("key6");
    assert!(m.rule.unlimited);
    assert_eq!(m.rule.policy, None);
    assert_eq!(m.rule.action(), Action::Unlimited);
}

#[test]
fn a_rule_is_a_bucket_of_its_rate_or_its_burst() {
    let l = limits(
        "domain: d\ndescriptors:\n  - key: a\n    rate_limit: { unit: minute, requests_per_unit: 100 }\n  - key: b\n    rate_limit: { unit: second, requests_per_unit: 10, burst: 50 }\n  - key: c\n    rate_limit: { unit: second, requests_per_unit: 0 }\n  - key: m\n    rate_limit: { unit: month, requests_per_unit: 30 }\n",
    );
    let a = one(&l, "d", &[("a", "x")]).expect("a").rule.policy.expect("a bucket");
    assert_eq!((a.capacity(), a.interval_us()), (100, 600_000));
    let b = one(&l, "d", &[("b", "x")]).expect("b");
    assert_eq!(b.rule.burst, Some(50));
    let bp = b.rule.policy.expect("a bucket");
    assert_eq!((bp.capacity(), bp.interval_us()), (50, 100_000));
    let c = one(&l, "d", &[("c", "x")]).expect("c");
    assert_eq!(c.rule.action(), Action::Deny, "0 per unit refuses everything, as upstream's blocklist example");
    let m = one(&l, "d", &[("m", "x")]).expect("m").rule.policy.expect("a bucket");
    assert_eq!(m.interval_us(), 86_400_000_000, "a month is 30 days: 30 per month is one a day");
}

#[test]
fn one_bucket_per_value_and_one_per_domain() {
    let l = limits(BASIC);
    let key = |domain: &str, v: &str| one(&l, domain, &[("key2", v)]).map(|m| m.key);
    assert_ne!(key("test-domain", "a"), key("test-domain", "b"));
    assert_eq!(key("test-domain", "a"), key("test-domain", "a"));
    assert_eq!(key("test-domain", "a").as_deref(), Some("rl:11:test-domain/4:key2=1:a"));
}

const WILDCARD: &str = r#"
domain: test-domain
descriptors:
  - key: wild
    value: foo*
    rate_limit: { unit: minute, requests_per_unit: 20 }
  - key: noWild
    value: foo
    rate_limit: { unit: minute, requests_per_unit: 20 }
  - key: noVal
    rate_limit: { unit: minute, requests_per_unit: 20 }
  - key: midWild
    value: bar*b
    rate_limit: { unit: minute, requests_per_unit: 20 }
  - key: multiWild
    value: foo*bar*baz
    rate_limit: { unit: minute, requests_per_unit: 20 }
  - key: nestedWild
    value: val1
    descriptors:
      - key: wild
        value: goo*
        rate_limit: { unit: minute, requests_per_unit: 20 }
  - key: order
    value: a*
    rate_limit: { unit: second, requests_per_unit: 1 }
  - key: order
    value: ab*
    rate_limit: { unit: second, requests_per_unit: 2 }
  - key: order
    value: abc
    rate_limit: { unit: second, requests_per_unit: 3 }
  - key: order
    rate_limit: { unit: second, requests_per_unit: 4 }
"#;

#[test]
fn wildcards_match_anywhere_in_the_value_and_label_with_the_pattern() {
    let l = limits(WILDCARD);
    let path = |entries: &[(&str, &str)]| one(&l, "test-domain", entries).map(|m| m.metric_rule);
    assert_eq!(path(&[("wild", "foo1")]).as_deref(), Some("test-domain.wild_foo*"));
    assert_eq!(path(&[("wild", "foo")]).as_deref(), Some("test-domain.wild_foo*"));
    assert_eq!(path(&[("wild", "bar")]), None);
    assert_eq!(path(&[("noWild", "foo1")]), None, "a plain value is not a prefix");
    assert_eq!(
        path(&[("nestedWild", "val1"), ("wild", "goo2")]).as_deref(),
        Some("test-domain.nestedWild_val1.wild_goo*")
    );
    for v in ["barab", "bar123b", "barb"] {
        assert_eq!(path(&[("midWild", v)]).as_deref(), Some("test-domain.midWild_bar*b"), "{v}");
    }
    for v in ["bara", "xbarb"] {
        assert_eq!(path(&[("midWild", v)]), None, "{v}");
    }
    for v in ["foo123bar456baz", "foobarbaz"] {
        assert_eq!(path(&[("multiWild", v)]).as_deref(), Some("test-domain.multiWild_foo*bar*baz"), "{v}");
    }
    for v in ["foo123baz", "bar456baz"] {
        assert_eq!(path(&[("multiWild", v)]), None, "{v}");
    }
}

#[test]
fn wildcard_values_get_one_bucket_each_without_share_threshold() {
    let l = limits(WILDCARD);
    let a = one(&l, "test-domain", &[("wild", "foo1")]).expect("match");
    let b = one(&l, "test-domain", &[("wild", "foo2")]).expect("match");
    assert!(std::ptr::eq(a.rule, b.rule), "the same rule");
    assert_ne!(a.key, b.key, "but one bucket per value, as upstream's cache key");
}

#[test]
fn exact_beats_wildcards_which_go_in_file_order_and_beat_the_key_alone() {
    let l = limits(WILDCARD);
    let n = |v: &str| one(&l, "test-domain", &[("order", v)]).map(|m| m.rule.requests_per_unit);
    assert_eq!(n("abc"), Some(3), "exact value first");
    assert_eq!(n("abd"), Some(1), "first matching pattern in file order, though ab* is more specific");
    assert_eq!(n("zzz"), Some(4), "the key alone last");
}

const SHARED: &str = r#"
domain: test-domain
descriptors:
  - key: files
    value: files/*
    share_threshold: true
    rate_limit: { unit: minute, requests_per_unit: 100 }
  - key: user
    value: user/*
    share_threshold: true
    descriptors:
      - key: action
        rate_limit: { unit: minute, requests_per_unit: 150 }
  - key: file
    value: test1
    rate_limit: { unit: minute, requests_per_unit: 50 }
  - key: file
    value: test*
    share_threshold: true
    rate_limit: { unit: minute, requests_per_unit: 100 }
  - key: svc
    value: svc/*
    share_threshold: true
    descriptors:
      - key: endpoint
        detailed_metric: true
        rate_limit: { unit: minute, requests_per_unit: 80 }
"#;

#[test]
fn share_threshold_puts_every_matching_value_in_one_bucket() {
    let l = limits(SHARED);
    let key = |entries: &[(&str, &str)]| one(&l, "test-domain", entries).map(|m| m.key);
    assert_eq!(key(&[("files", "files/a.txt")]), key(&[("files", "files/b.txt")]));
    assert_eq!(key(&[("files", "files/a.txt")]).as_deref(), Some("rl:11:test-domain/5:files*7:files/*"));
    assert_eq!(key(&[("user", "user/1"), ("action", "get")]), key(&[("user", "user/2"), ("action", "get")]));
    assert_ne!(key(&[("user", "user/1"), ("action", "get")]), key(&[("user", "user/1"), ("action", "put")]));
    assert_ne!(key(&[("file", "test1")]), key(&[("file", "test2")]), "the exact entry keeps its own bucket");
    assert_eq!(key(&[("file", "test2")]), key(&[("file", "test3")]));
    let detailed = one(&l, "test-domain", &[("svc", "svc/a"), ("endpoint", "/x")]).expect("match");
    assert_eq!(detailed.metric_rule, "test-domain.svc_svc/*.endpoint_/x", "detailed metrics keep the shared pattern");
}

#[test]
fn value_to_metric_shows_request_values_at_its_levels_only() {
    let l = limits(
        "domain: d\ndescriptors:\n  - key: route\n    value_to_metric: true\n    descriptors:\n      - key: method\n        rate_limit: { unit: second, requests_per_unit: 1 }\n",
    );
    let m = one(&l, "d", &[("route", "/api"), ("method", "GET")]).expect("match");
    assert_eq!(m.metric_rule, "d.route_/api.method");
    assert_eq!(m.rule.path, "d.route.method");
}

const REPLACES: &str = r#"
domain: example7
descriptors:
  - key: key_1
    value: value_1
    descriptors:
      - key: user
        value: bkthomps
        rate_limit: { name: specific_limit, requests_per_unit: 5, unit: second }
  - key: key_2
    value: value_2
    descriptors:
      - key: user
        value: bkthomps
        rate_limit:
          replaces: [{ name: specific_limit }]
          requests_per_unit: 10
          unit: second
  - key: free
    rate_limit:
      unlimited: true
      replaces: [{ name: specific_limit }]
  - key: unlimited_named
    rate_limit: { unlimited: true, name: specific_limit }
"#;

#[test]
fn replaces_switches_off_the_named_rule_when_both_match_one_request() {
    let l = limits(REPLACES);
    let n = |all: Vec<Option<Matched<'_>>>| {
        all.iter().map(|m| m.as_ref().map(|m| m.rule.requests_per_unit)).collect::<Vec<_>>()
    };
    let first = d(&[("key_1", "value_1"), ("user", "bkthomps")]);
    let second = d(&[("key_2", "value_2"), ("user", "bkthomps")]);
    assert_eq!(n(l.resolve("example7", std::slice::from_ref(&first))), [Some(5)]);
    assert_eq!(n(l.resolve("example7", std::slice::from_ref(&second))), [Some(10)]);
    assert_eq!(n(l.resolve("example7", &[first.clone(), second.clone()])), [None, Some(10)]);
    assert_eq!(n(l.resolve("example7", &[second, first.clone()])), [Some(10), None], "order does not matter");
    assert_eq!(
        n(l.resolve("example7", &[first.clone(), d(&[("free", "x")])])),
        [None, Some(0)],
        "an unlimited rule replaces too"
    );
    let kept = l.resolve("example7", &[d(&[("unlimited_named", "x")]), d(&[("free", "x")])]);
    assert!(kept[0].as_ref().is_some_and(|m| m.rule.unlimited), "an unlimited rule is never replaced");
    assert!(l.find("example7", &first).is_some(), "find ignores replaces");
}

#[test]
fn shadow_mode_is_carried_per_rule() {
    let l = limits(
        "domain: d\ndescriptors:\n  - key: a\n    shadow_mode: true\n    rate_limit: { unit: second, requests_per_unit: 1 }\n  - key: b\n    rate_limit: { unit: second, requests_per_unit: 1 }\n",
    );
    assert!(one(&l, "d", &[("a", "x")]).expect("a").rule.shadow_mode);
    assert!(!one(&l, "d", &[("b", "x")]).expect("b").rule.shadow_mode);
}

#[test]
fn keys_with_underscores_are_not_confused_with_key_value_pairs() {
    // Upstream joins key and value with `_` into one map key, so these two entries would collide there.
    let l = limits(
        "domain: d\ndescriptors:\n  - key: a\n    value: b_c\n    rate_limit: { unit: second, requests_per_unit: 1 }\n  - key: a_b\n    value: c\n    rate_limit: { unit: second, requests_per_unit: 2 }\n",
    );
    assert_eq!(one(&l, "d", &[("a", "b_c")]).map(|m| m.rule.requests_per_unit), Some(1));
    assert_eq!(one(&l, "d", &[("a_b", "c")]).map(|m| m.rule.requests_per_unit), Some(2));
}

#[test]
fn hostile_values_still_give_valid_store_keys() {
    let l = limits(BASIC);
    for value in ["", "a\0b", "line\nbreak", &"x".repeat(1000), "é/=:*"] {
        let m = one(&l, "test-domain", &[("key2", value)]).expect("key2 matches any value");
        assert!(!m.key.is_empty() && m.key.len() <= bucket_limits::MAX_KEY_BYTES, "{value:?}: {}", m.key);
        assert!(!m.key.chars().any(char::is_control), "{value:?}");
    }
}

#[test]
fn a_literal_key_equals_the_matched_key_of_a_per_value_rule() {
    let l = limits(BASIC);
    let desc = d(&[("key1", "value1"), ("subkey1", "x")]);
    let matched = l.find("test-domain", &desc).expect("match");
    assert_eq!(desc.literal_key("test-domain"), matched.key);
    assert_ne!(desc.literal_key("other"), matched.key);
}

/// Every rule of every file has its own index below `rule_count()`, so a front can keep per-rule state in a vector.
#[test]
fn rule_indexes_are_distinct_across_files() {
    let other = "domain: other\ndescriptors:\n  - key: a\n    rate_limit: { unit: second, requests_per_unit: 1 }\n  \
                 - key: b\n    rate_limit: { unit: second, requests_per_unit: 2 }\n";
    let files = [("basic.yaml".to_owned(), BASIC.to_owned()), ("other.yaml".to_owned(), other.to_owned())];
    let l = Limits::from_files(&files).expect("valid limits");
    let found: &[(&str, &[(&str, &str)])] = &[
        ("test-domain", &[("key1", "value1"), ("subkey1", "x")]),
        ("test-domain", &[("key1", "value1"), ("subkey1", "subvalue1")]),
        ("test-domain", &[("key2", "x")]),
        ("test-domain", &[("key2", "value2")]),
        ("test-domain", &[("key3", "x")]),
        ("test-domain", &[("key4", "x")]),
        ("test-domain", &[("key6", "x")]),
        ("test-domain", &[("key7", "x")]),
        ("other", &[("a", "x")]),
        ("other", &[("b", "x")]),
    ];
    let mut indexes: Vec<usize> =
        found.iter().map(|(domain, entries)| one(&l, domain, entries).expect("a rule").rule.index).collect();
    assert!(indexes.iter().all(|&i| i < l.rule_count()), "{indexes:?} within {}", l.rule_count());
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), found.len(), "one index per rule");
    // A label made of the configuration alone borrows it; one carrying request values is built.
    assert!(matches!(one(&l, "test-domain", &[("key4", "x")]).unwrap().metric_rule, std::borrow::Cow::Borrowed(_)));
    assert!(matches!(one(&l, "test-domain", &[("key7", "x")]).unwrap().metric_rule, std::borrow::Cow::Owned(_)));
}
