//! From a file's parsed YAML to a validated descriptor tree: every check envoyproxy/ratelimit makes at load (and a
//! few more, listed in the crate docs), each failure naming the file and the descriptor path it is about.

use std::collections::hash_map::Entry;

use bucket_core::Policy;

use crate::schema::{DescriptorYaml, FileYaml, RateLimitYaml};
use crate::tree::{Level, Node};
use crate::wildcard::Pattern;
use crate::{LimitsError, Rule, Unit};

/// One file's domain, validated.
#[derive(Debug)]
pub(crate) struct BuiltDomain {
    pub domain: String,
    pub root: Level,
    pub rules: usize,
    /// Every `rate_limit.name` in the domain.
    pub names: Vec<String>,
    /// Every `replaces` entry: (descriptor path, name replaced).
    pub replaces: Vec<(String, String)>,
}

/// Validates one parsed file; its rules are numbered from `first_rule` on (see [`Rule::index`]).
pub(crate) fn build_file(file: &str, yaml: FileYaml, first_rule: usize) -> Result<BuiltDomain, LimitsError> {
    let domain = yaml.domain.unwrap_or_default();
    if domain.is_empty() {
        return Err(LimitsError::invalid(file, "domain", "config file cannot have empty domain"));
    }
    let mut builder = Builder { file, first_rule, rules: 0, names: Vec::new(), replaces: Vec::new() };
    let root = builder.level(&domain, yaml.descriptors.unwrap_or_default())?;
    Ok(BuiltDomain { domain, root, rules: builder.rules, names: builder.names, replaces: builder.replaces })
}

struct Builder<'f> {
    file: &'f str,
    first_rule: usize,
    rules: usize,
    names: Vec<String>,
    replaces: Vec<(String, String)>,
}

impl Builder<'_> {
    fn level(&mut self, parent: &str, descriptors: Vec<DescriptorYaml>) -> Result<Level, LimitsError> {
        let mut level = Level::default();
        for d in descriptors {
            let key = d.key.clone().unwrap_or_default();
            if key.is_empty() {
                return Err(self.invalid(parent, "descriptor has empty key"));
            }
            let value = d.value.clone().filter(|v| !v.is_empty());
            let path = match &value {
                Some(v) => format!("{parent}.{key}_{v}"),
                None => format!("{parent}.{key}"),
            };
            let node = self.node(&path, value.as_deref(), d)?;
            let choices = level.by_key.entry(key).or_default();
            let duplicate = || LimitsError::invalid(self.file, &path, "duplicate descriptor composite key");
            match value {
                None if choices.default.is_some() => return Err(duplicate()),
                None => choices.default = Some(Box::new(node)),
                Some(v) => match Pattern::new(&v) {
                    Some(p) if choices.wildcards.iter().any(|(q, _)| *q == p) => return Err(duplicate()),
                    Some(p) => choices.wildcards.push((p, node)),
                    None => match choices.exact.entry(v) {
                        Entry::Occupied(_) => return Err(duplicate()),
                        Entry::Vacant(slot) => {
                            slot.insert(node);
                        }
                    },
                },
            }
        }
        Ok(level)
    }

    fn node(&mut self, path: &str, value: Option<&str>, d: DescriptorYaml) -> Result<Node, LimitsError> {
        if d.quota_mode {
            return Err(self.invalid(path, "quota_mode is not supported by bucket"));
        }
        if d.share_threshold && !value.is_some_and(|v| v.contains('*')) {
            return Err(self.invalid(path, "share_threshold can only be used with a wildcard value (containing '*')"));
        }
        let rule = match d.rate_limit {
            Some(rl) => Some(self.rule(path, rl, d.shadow_mode, d.detailed_metric)?),
            None => None,
        };
        let children = self.level(path, d.descriptors.unwrap_or_default())?;
        Ok(Node { rule, children, share_threshold: d.share_threshold, value_to_metric: d.value_to_metric })
    }

    fn rule(&mut self, path: &str, rl: RateLimitYaml, shadow_mode: bool, detailed: bool) -> Result<Rule, LimitsError> {
        let unit_text = rl.unit.as_deref().unwrap_or("");
        let name = rl.name.filter(|n| !n.is_empty());
        let (unit, requests_per_unit, policy) = if rl.unlimited {
            if !unit_text.is_empty() {
                return Err(self.invalid(path, "should not specify rate limit unit when unlimited"));
            }
            if rl.burst.is_some() {
                return Err(self.invalid(path, "should not specify burst when unlimited"));
            }
            (Unit::Second, 0, None)
        } else {
            let unit = Unit::parse(unit_text)
                .ok_or_else(|| self.invalid(path, format!("invalid rate limit unit '{unit_text}'")))?;
            let n = rl.requests_per_unit.ok_or_else(|| {
                self.invalid(path, "requests_per_unit is required (0 refuses every request; or set unlimited: true)")
            })?;
            (unit, n, self.policy(path, unit, n, rl.burst)?)
        };
        let mut replaces = Vec::new();
        for r in rl.replaces.unwrap_or_default() {
            let replaced = r.name.unwrap_or_default();
            if replaced.is_empty() {
                return Err(self.invalid(path, "should not have an empty replaces entry"));
            }
            if name.as_deref() == Some(replaced.as_str()) {
                return Err(self.invalid(path, "replaces should not contain name of same descriptor"));
            }
            self.replaces.push((path.to_owned(), replaced.clone()));
            replaces.push(replaced);
        }
        if let Some(n) = &name {
            self.names.push(n.clone());
        }
        let index = self.first_rule + self.rules;
        self.rules += 1;
        Ok(Rule {
            name,
            unit,
            requests_per_unit,
            burst: rl.burst,
            unlimited: rl.unlimited,
            shadow_mode,
            detailed_metric: detailed,
            policy,
            path: path.to_owned(),
            replaces,
            file: self.file.to_owned(),
            index,
        })
    }

    /// The bucket for `n` per `unit` with an optional burst; `None` for 0 per unit, which refuses everything.
    fn policy(&self, path: &str, unit: Unit, n: u32, burst: Option<u32>) -> Result<Option<Policy>, LimitsError> {
        if n == 0 {
            return match burst {
                Some(_) => Err(self.invalid(path, "burst needs requests_per_unit above 0 (0 refuses every request)")),
                None => Ok(None),
            };
        }
        let capacity = u64::from(burst.unwrap_or(n));
        Policy::per_period(capacity, u64::from(n), unit.as_duration()).map(Some).map_err(|e| {
            let burst = burst.map(|b| format!(" with burst {b}")).unwrap_or_default();
            self.invalid(path, format!("{n} per {unit}{burst} cannot be a bucket: {e}"))
        })
    }

    fn invalid(&self, place: &str, problem: impl Into<String>) -> LimitsError {
        LimitsError::invalid(self.file, place, problem)
    }
}
