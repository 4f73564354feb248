//! The validated descriptor tree of one domain, shaped for lookup: at each level, a request's key leads to the
//! configured entries for that key, tried in upstream's order (exact value, then wildcard patterns in file order,
//! then the key alone).

use std::collections::HashMap;

use crate::wildcard::Pattern;
use crate::Rule;

/// One level of a descriptor tree: the configured entries under one parent, by descriptor key.
#[derive(Debug, Default)]
pub(crate) struct Level {
    pub by_key: HashMap<String, KeyChoices>,
}

/// Every configured entry for one key at one level.
#[derive(Debug, Default)]
pub(crate) struct KeyChoices {
    /// `key` + a plain `value`.
    pub exact: HashMap<String, Node>,
    /// `key` + a `value` holding `*`, in file order: the first that matches wins.
    pub wildcards: Vec<(Pattern, Node)>,
    /// `key` with no value: any value.
    pub default: Option<Box<Node>>,
}

/// One configured descriptor entry.
#[derive(Debug, Default)]
pub(crate) struct Node {
    /// The rule when the request's descriptor ends here.
    pub rule: Option<Rule>,
    /// The entries that may follow this one.
    pub children: Level,
    /// `share_threshold: true` on a wildcard entry: every value it matches shares one bucket.
    pub share_threshold: bool,
    /// `value_to_metric: true`: the metric label carries the request's value at this level.
    pub value_to_metric: bool,
}

/// How one entry of a request was matched, for its bucket key and metric label.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Via<'a> {
    /// The configured value equals the request's.
    Exact,
    /// A configured pattern matched the request's value.
    Wildcard { pattern: &'a str, share: bool },
    /// The key alone matched.
    Default,
}

impl Level {
    /// The entry a request's `(key, value)` leads to at this level, and how it matched.
    pub(crate) fn find<'a>(&'a self, key: &str, value: &str) -> Option<(&'a Node, Via<'a>)> {
        let choices = self.by_key.get(key)?;
        if let Some(node) = choices.exact.get(value) {
            return Some((node, Via::Exact));
        }
        if let Some((pattern, node)) = choices.wildcards.iter().find(|(p, _)| p.matches(value)) {
            return Some((node, Via::Wildcard { pattern: pattern.as_str(), share: node.share_threshold }));
        }
        choices.default.as_deref().map(|node| (node, Via::Default))
    }
}
