//! The YAML shape of an envoyproxy/ratelimit limits file, exactly as written, before any validation.
//!
//! Every struct refuses unknown keys, so a misspelled `ratelimit:` or `requestsperunit:` is an error with its line
//! and column instead of a silently ignored rule. Fields upstream treats as optional are optional here; whether a
//! combination makes sense is decided in `build.rs`, which knows where in the file it is.

use serde::Deserialize;

/// One file: a domain and its descriptor tree.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileYaml {
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub descriptors: Option<Vec<DescriptorYaml>>,
}

/// One entry of a `descriptors` list, possibly nesting more.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DescriptorYaml {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitYaml>,
    #[serde(default)]
    pub descriptors: Option<Vec<DescriptorYaml>>,
    #[serde(default)]
    pub shadow_mode: bool,
    #[serde(default)]
    pub detailed_metric: bool,
    #[serde(default)]
    pub value_to_metric: bool,
    #[serde(default)]
    pub share_threshold: bool,
    /// Parsed only to refuse it with a clear message: bucket has no quota mode.
    #[serde(default)]
    pub quota_mode: bool,
}

/// A `rate_limit` block.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimitYaml {
    #[serde(default)]
    pub requests_per_unit: Option<u32>,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub unlimited: bool,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub replaces: Option<Vec<ReplacesYaml>>,
    /// bucket's extension: the bucket's capacity when it differs from `requests_per_unit`.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// One entry of `replaces`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplacesYaml {
    #[serde(default)]
    pub name: Option<String>,
}

/// Parses one file's text; an empty file (or one holding only comments) is an empty [`FileYaml`], which then fails
/// validation for its missing domain, as upstream's does.
pub(crate) fn parse(text: &str) -> Result<FileYaml, serde_saphyr::Error> {
    let parsed: Option<FileYaml> = serde_saphyr::from_str(text)?;
    Ok(parsed.unwrap_or_default())
}
