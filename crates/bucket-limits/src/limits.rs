//! One validated configuration set (every file at once): what a request's descriptors are matched against.

use std::collections::HashMap;
use std::path::Path;

use crate::build::build_file;
use crate::tree::Level;
use crate::{load, schema, LimitsError};

/// Every domain of every limits file, validated. Immutable; share it behind an `Arc` (see [`crate::LiveLimits`]).
#[derive(Debug, Default)]
pub struct Limits {
    pub(crate) domains: HashMap<String, DomainTree>,
    rules: usize,
    warnings: Vec<String>,
}

/// One domain's tree and the file it came from.
#[derive(Debug)]
pub(crate) struct DomainTree {
    pub root: Level,
}

impl Limits {
    /// Loads one YAML file, or every `*.yaml` / `*.yml` file under a directory (recursively, in name order,
    /// skipping entries whose name starts with `.` such as a ConfigMap's `..data` and `..2024_…` directories).
    pub fn load(path: &Path) -> Result<Limits, LimitsError> {
        Limits::from_files(&load::read_files(path)?)
    }

    /// One file's text; `name` appears in errors.
    pub fn from_yaml(name: &str, text: &str) -> Result<Limits, LimitsError> {
        Limits::from_files(&[(name.to_owned(), text.to_owned())])
    }

    /// Several files' `(name, text)` at once; two files configuring one domain are an error, as upstream.
    pub fn from_files(files: &[(String, String)]) -> Result<Limits, LimitsError> {
        let mut limits = Limits::default();
        let mut owner: HashMap<String, String> = HashMap::new();
        for (name, text) in files {
            let yaml = schema::parse(text).map_err(|e| LimitsError::syntax(name, &e))?;
            let built = build_file(name, yaml, limits.rules)?;
            if let Some(first) = owner.get(&built.domain) {
                return Err(LimitsError::DuplicateDomain {
                    file: name.clone(),
                    domain: built.domain,
                    first: first.clone(),
                });
            }
            for (path, replaced) in &built.replaces {
                if !built.names.contains(replaced) {
                    limits.warnings.push(format!(
                        "{name}: {path}: replaces '{replaced}', which no rate_limit of domain '{}' is named",
                        built.domain
                    ));
                }
            }
            owner.insert(built.domain.clone(), name.clone());
            limits.rules += built.rules;
            limits.domains.insert(built.domain, DomainTree { root: built.root });
        }
        Ok(limits)
    }

    /// Number of rules (`rate_limit` blocks), for logs and metrics.
    pub fn rule_count(&self) -> usize {
        self.rules
    }

    /// Number of domains.
    pub fn domain_count(&self) -> usize {
        self.domains.len()
    }

    /// Whether `domain` is configured (upstream counts requests for unknown domains separately).
    pub fn has_domain(&self, domain: &str) -> bool {
        self.domains.contains_key(domain)
    }

    /// Things upstream accepts but that are probably mistakes (a `replaces` naming no rule of its domain), for the
    /// caller to log once per load.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}
