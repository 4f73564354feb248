//! Which rule applies to each descriptor of a request, which bucket it draws from, and under which metric label:
//! upstream's `GetLimit` for each descriptor, then its `replaces` pass over the whole request.

use std::borrow::Cow;

use crate::key::{bucket_key, Part};
use crate::tree::{Level, Node, Via};
use crate::{Limits, Rule};

/// One descriptor of a request: its `(key, value)` entries in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// The entries, outermost first, as the proxy sent them.
    pub entries: Vec<(String, String)>,
}

impl Descriptor {
    /// A descriptor from `(key, value)` pairs.
    pub fn new<K: Into<String>, V: Into<String>>(entries: impl IntoIterator<Item = (K, V)>) -> Self {
        Self { entries: entries.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }
}

impl Descriptor {
    /// The bucket key of this descriptor taken literally (every value its own bucket, no pattern), for a request
    /// that carries its own limit (the protocol's per-descriptor `limit` override, which upstream applies without
    /// consulting the file once the domain is known). Same encoding as [`Matched::key`].
    pub fn literal_key(&self, domain: &str) -> String {
        bucket_key(domain, self.entries.iter().map(|(k, v)| (k.as_str(), Part::Value(v.as_str()))))
    }
}

/// A descriptor that matched a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Matched<'a> {
    /// The rule; see [`Rule::action`] for what to do.
    pub rule: &'a Rule,
    /// The bucket key (see `key.rs` for the encoding): a valid store key, 1–255 bytes, no control characters.
    pub key: String,
    /// The metric label: the rule's name, else its path, borrowed from the rule; the request's values only where
    /// the file asks for them (`detailed_metric`, `value_to_metric`), the only case that builds a string.
    pub metric_rule: Cow<'a, str>,
}

impl Limits {
    /// Resolves every descriptor of one request: one entry per descriptor, `None` where no rule matched (that
    /// descriptor is OK) or where the rule was switched off by another matched rule's `replaces`.
    ///
    /// `replaces` works as upstream's: the names listed by every matched rule (unlimited ones included) are
    /// collected, then every matched rule carrying one of those names is dropped, unless it is unlimited.
    pub fn resolve(&self, domain: &str, descriptors: &[Descriptor]) -> Vec<Option<Matched<'_>>> {
        let Some(tree) = self.domains.get(domain) else {
            return vec![None; descriptors.len()];
        };
        let mut out: Vec<Option<Matched<'_>>> = descriptors.iter().map(|d| match_one(domain, &tree.root, d)).collect();
        apply_replaces(&mut out);
        out
    }

    /// The rule one descriptor matches on its own, before `replaces` (which needs the whole request).
    pub fn find(&self, domain: &str, descriptor: &Descriptor) -> Option<Matched<'_>> {
        match_one(domain, &self.domains.get(domain)?.root, descriptor)
    }
}

/// Walks the tree one entry per level. The rule counts only when the descriptor ends exactly at its entry: a
/// shorter or longer descriptor does not match it (upstream's "same depth" rule). There is no backtracking: the
/// most specific entry at a level is taken even if the rest of the descriptor then fails under it.
fn match_one<'a>(domain: &str, root: &'a Level, descriptor: &Descriptor) -> Option<Matched<'a>> {
    let last = descriptor.entries.len().checked_sub(1)?;
    let mut level = root;
    let mut path: Vec<(Via<'a>, bool)> = Vec::with_capacity(descriptor.entries.len());
    for (i, (key, value)) in descriptor.entries.iter().enumerate() {
        let (node, via): (&'a Node, Via<'a>) = level.find(key, value)?;
        path.push((via, node.value_to_metric));
        if i == last {
            let rule = node.rule.as_ref()?;
            let key = bucket_key(
                domain,
                descriptor.entries.iter().zip(&path).map(|((k, v), (via, _))| (k.as_str(), part(*via, v))),
            );
            let metric_rule = metric_label(domain, rule, descriptor, &path);
            return Some(Matched { rule, key, metric_rule });
        }
        level = &node.children;
    }
    None
}

fn part<'a>(via: Via<'a>, value: &'a str) -> Part<'a> {
    match via {
        Via::Wildcard { pattern, share: true } => Part::Shared(pattern),
        _ => Part::Value(value),
    }
}

/// The label for this decision. With `detailed_metric` on the rule: every entry with its request value (a shared
/// wildcard keeps its pattern). Else with `value_to_metric` somewhere on the path: upstream's enhanced key, the
/// request's value at the levels that ask for it. Else the rule's name or path: bounded by the file.
fn metric_label<'a>(domain: &str, rule: &'a Rule, descriptor: &Descriptor, path: &[(Via<'_>, bool)]) -> Cow<'a, str> {
    let entries = descriptor.entries.iter().zip(path);
    if rule.detailed_metric {
        let mut label = domain.to_owned();
        for ((key, value), (via, _)) in entries {
            let shown = match via {
                Via::Wildcard { pattern, share: true } => pattern,
                _ => value.as_str(),
            };
            push_entry(&mut label, key, shown);
        }
        return Cow::Owned(label);
    }
    if path.iter().any(|(_, to_metric)| *to_metric) {
        let mut label = domain.to_owned();
        for ((key, value), (via, to_metric)) in entries {
            let shown = match via {
                Via::Wildcard { pattern, share: true } => pattern,
                Via::Wildcard { pattern, .. } if !to_metric => pattern,
                Via::Default if !to_metric => "",
                _ => value.as_str(),
            };
            push_entry(&mut label, key, shown);
        }
        return Cow::Owned(label);
    }
    Cow::Borrowed(rule.name.as_deref().unwrap_or(&rule.path))
}

fn push_entry(label: &mut String, key: &str, value: &str) {
    label.push('.');
    label.push_str(key);
    if !value.is_empty() {
        label.push('_');
        label.push_str(value);
    }
}

fn apply_replaces<'a>(out: &mut [Option<Matched<'a>>]) {
    let replaced: Vec<&'a str> = out
        .iter()
        .flatten()
        .flat_map(|m| {
            let rule: &'a Rule = m.rule;
            rule.replaces.iter().map(String::as_str)
        })
        .collect();
    if replaced.is_empty() {
        return;
    }
    for slot in out.iter_mut() {
        let drop = slot
            .as_ref()
            .is_some_and(|m| !m.rule.unlimited && m.rule.name.as_ref().is_some_and(|n| replaced.contains(&n.as_str())));
        if drop {
            *slot = None;
        }
    }
}
