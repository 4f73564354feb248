//! One rate-limit request decided, whichever front it came through: descriptors matched to configured rules,
//! every enforced limit decided together (all or nothing) in one store call, shadow rules decided apart so they
//! never refuse, unlimited and unmatched descriptors answered without the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bucket_core::{Decision, Wait};
use bucket_limits::{Action, Limits, Matched, Rule, Unit};
use bucket_store::{Limit, Outcomes, Source, Store, StoreError};
use slog::{debug, info, warn};

use crate::config::FailureMode;
use crate::headers::{ceil_secs, HeaderNumbers};
use crate::rls::config::ResponseHeaders;
use crate::rls::request::RlsRequest;
use crate::rls::series::Outcome;
use crate::state::AppState;

/// The limit a descriptor was decided under, as the response reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentLimit {
    /// The rule's `name`, else its descriptor path.
    pub name: String,
    /// Requests per unit.
    pub requests_per_unit: u32,
    /// The unit.
    pub unit: Unit,
}

/// One descriptor's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorAnswer {
    /// This descriptor's own bucket refused (only for enforced rules).
    pub over_limit: bool,
    /// The rule that applied; `None` for a descriptor no rule matched, or an unlimited one.
    pub limit: Option<CurrentLimit>,
    /// Whole tokens left (`u32::MAX` for unlimited, as envoyproxy/ratelimit reports it).
    pub remaining: u32,
    /// Time until the bucket is full again.
    pub until_reset: Option<Duration>,
}

/// The whole answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RlsAnswer {
    /// At least one enforced limit refused; nothing was taken from any bucket then.
    pub over_limit: bool,
    /// One per descriptor, in request order.
    pub statuses: Vec<DescriptorAnswer>,
    /// Headers for the gateway to add to its response (`RateLimit`, `RateLimit-Policy`, `Retry-After`).
    pub headers: Vec<(&'static str, String)>,
}

/// Why a request got no answer: the caller's mistake, or the store's outage under `fail_closed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RlsError {
    /// gRPC `INVALID_ARGUMENT`, HTTP 400.
    #[error("{0}")]
    Invalid(String),
    /// gRPC `UNAVAILABLE`, HTTP 503: Envoy's `failure_mode_deny` decides what happens next.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// A matched, store-backed limit waiting for its decision.
struct Pending<'a> {
    index: usize,
    matched: &'a Matched<'a>,
    limit: Limit<'a>,
}

/// Decides `request` against `limits` (see the module comment).
pub async fn should_rate_limit(
    state: &AppState,
    limits: &Arc<Limits>,
    request: &RlsRequest,
) -> Result<RlsAnswer, RlsError> {
    request.validate().map_err(RlsError::Invalid)?;
    let matches = limits.resolve(&request.domain, &request.descriptors);
    let domain = &request.domain;
    let count = |matched: &Matched<'_>, outcome: Outcome| state.limit_series.count(limits, domain, matched, outcome);
    let shadow_everything = state.config.rls.shadow_mode;
    let mut statuses = vec![DescriptorAnswer::unmatched(); request.descriptors.len()];
    let (mut enforced, mut shadow) = (Vec::new(), Vec::new());
    let mut denied = false;
    for (index, found) in matches.iter().enumerate() {
        let Some(matched) = found else {
            // Unknown domains are counted under one label: the domain comes from the caller, the label set must not.
            let label = if limits.has_domain(domain) { domain.as_str() } else { "" };
            state.limit_series.count_unmatched(label);
            continue;
        };
        let policy = match matched.rule.action() {
            Action::Bucket(policy) => policy,
            Action::Unlimited => {
                statuses[index] = DescriptorAnswer::unlimited();
                count(matched, Outcome::Unlimited);
                continue;
            }
            // `requests_per_unit: 0`, upstream's way to block a value: over the limit without asking a store.
            Action::Deny => {
                let shadowed = shadow_everything || matched.rule.shadow_mode;
                statuses[index] = DescriptorAnswer::denied(matched.rule, !shadowed);
                count(matched, if shadowed { Outcome::ShadowRefused } else { Outcome::Refused });
                denied |= !shadowed;
                continue;
            }
        };
        let cost = request.cost(index);
        let pending = Pending { index, matched, limit: Limit { key: &matched.key, policy, cost } };
        if shadow_everything || matched.rule.shadow_mode {
            shadow.push(pending);
        } else {
            enforced.push(pending);
        }
    }

    // A blocked descriptor refuses the request before any store is asked, so nothing is debited anywhere.
    let mut over_limit = denied;
    let mut decided = Vec::with_capacity(enforced.len());
    if denied {
        // Not asked, so not known: the limit is reported, the tokens as none (as a fail-open answer does).
        for pending in &enforced {
            statuses[pending.index] = DescriptorAnswer::not_asked(pending.matched.rule);
        }
    } else if !enforced.is_empty() {
        match decide_all(state, &enforced).await {
            Ok(outcomes) => {
                over_limit = !outcomes.allowed;
                // A refusal remembered by the process answered without the store: the other buckets were not
                // looked at, so their numbers are not reported as if they had been.
                let remembered = outcomes.source == Source::RefusalCache;
                for (pending, decision) in enforced.iter().zip(&outcomes.decisions) {
                    let refused = over_limit && !decision.allowed;
                    statuses[pending.index] = if remembered && decision.allowed {
                        DescriptorAnswer::not_asked(pending.matched.rule)
                    } else {
                        DescriptorAnswer::decided(pending.matched.rule, decision, refused)
                    };
                    let label = match (over_limit, refused) {
                        (false, _) => Outcome::Allowed,
                        (true, true) => Outcome::Refused,
                        // Had room, but another limit refused the request: not debited, and not a refusal of its own.
                        (true, false) => Outcome::Allowed,
                    };
                    count(pending.matched, label);
                    if !(remembered && decision.allowed) {
                        decided.push((pending, *decision));
                    }
                }
                debug!(state.log, "rate limit decision";
                    "domain" => domain, "descriptors" => request.descriptors.len(),
                    "over_limit" => over_limit, "source" => outcomes.source.as_str());
            }
            Err(error) => {
                let mode = state.config.failure_mode;
                if let Some(suppressed) = state.count_store_failure() {
                    warn!(state.log, "store failed; answering with the failure mode";
                        "domain" => domain, "mode" => mode.as_str(), "error" => %error, "suppressed" => suppressed);
                }
                if mode == FailureMode::FailClosed {
                    return Err(RlsError::Unavailable(error.to_string()));
                }
                for pending in &enforced {
                    statuses[pending.index] = DescriptorAnswer::not_asked(pending.matched.rule);
                    count(pending.matched, Outcome::FailOpen);
                }
            }
        }
    }
    // Shadow rules are decided only for requests the enforced ones let through: a refused request would not have
    // been served, so it takes nothing from them either.
    if !shadow.is_empty() && !over_limit {
        decide_shadow(state, domain, &shadow, &mut statuses, &count).await;
    }
    let headers = response_headers(state.config.rls.response_headers, &decided, over_limit);
    Ok(RlsAnswer { over_limit, statuses, headers })
}

/// One store call for every limit in `pending`, timed and counted like any decision.
async fn decide_all(state: &AppState, pending: &[Pending<'_>]) -> Result<Outcomes, StoreError> {
    let limits: Vec<Limit<'_>> = pending.iter().map(|p| p.limit).collect();
    let started = Instant::now();
    let result = state.store.check_all(&limits).await;
    if let Ok(outcomes) = &result {
        let cost = limits.iter().map(|l| l.cost).sum();
        state.metrics.record_decision(outcomes.allowed, outcomes.source, cost, state.store_label(), started.elapsed());
    }
    result
}

/// Shadow limits: decided and debited as if enforced (together), a would-be refusal counted and logged, never
/// answered as one; a store failure here only costs the shadow accounting.
async fn decide_shadow(
    state: &AppState,
    domain: &str,
    shadow: &[Pending<'_>],
    statuses: &mut [DescriptorAnswer],
    count: &impl Fn(&Matched<'_>, Outcome),
) {
    match decide_all(state, shadow).await {
        Ok(outcomes) => {
            for (pending, decision) in shadow.iter().zip(&outcomes.decisions) {
                statuses[pending.index] = DescriptorAnswer::decided(pending.matched.rule, decision, false);
                if decision.allowed {
                    count(pending.matched, Outcome::Allowed);
                } else {
                    count(pending.matched, Outcome::ShadowRefused);
                    if let Some(suppressed) = state.shadow_refusal_log.admit() {
                        info!(state.log, "shadow mode: would have refused";
                            "domain" => domain, "rule" => &pending.matched.metric_rule,
                            "remaining" => decision.remaining, "suppressed" => suppressed);
                    }
                }
            }
        }
        Err(error) => {
            state.metrics.store_errors.with_label_values(&[state.store_label()]).inc();
            if let Some(suppressed) = state.shadow_failure_log.admit() {
                warn!(state.log, "store failed on shadow limits; answered OK";
                    "domain" => domain, "error" => %error, "suppressed" => suppressed);
            }
            for pending in shadow {
                statuses[pending.index] = DescriptorAnswer::not_asked(pending.matched.rule);
            }
        }
    }
}

impl DescriptorAnswer {
    fn unmatched() -> Self {
        Self { over_limit: false, limit: None, remaining: 0, until_reset: None }
    }

    fn unlimited() -> Self {
        Self { over_limit: false, limit: None, remaining: u32::MAX, until_reset: None }
    }

    fn denied(rule: &Rule, over_limit: bool) -> Self {
        Self { over_limit, limit: Some(current_limit(rule)), remaining: 0, until_reset: None }
    }

    fn decided(rule: &Rule, decision: &Decision, over_limit: bool) -> Self {
        Self {
            over_limit,
            limit: Some(current_limit(rule)),
            remaining: u32::try_from(decision.remaining).unwrap_or(u32::MAX),
            until_reset: Some(decision.reset_after()),
        }
    }

    /// The limit without its tokens (store down, or not asked): as the HTTP fail-open answer, nothing is said to
    /// remain, so well-behaved clients slow down.
    fn not_asked(rule: &Rule) -> Self {
        Self { over_limit: false, limit: Some(current_limit(rule)), remaining: 0, until_reset: None }
    }
}

/// The name a rule is reported under: its `name`, else its descriptor path.
fn rule_name(rule: &Rule) -> &str {
    rule.name.as_deref().unwrap_or(&rule.path)
}

fn current_limit(rule: &Rule) -> CurrentLimit {
    CurrentLimit { name: rule_name(rule).to_owned(), requests_per_unit: rule.requests_per_unit, unit: rule.unit }
}

/// `RateLimit` / `RateLimit-Policy` for the chosen limits, and `Retry-After` when refused: the longest wait among
/// the refusing limits, since every one of them must have room again. Each value is written once into its own
/// string: this runs on every call of the gateway front.
fn response_headers(
    mode: ResponseHeaders,
    decided: &[(&Pending<'_>, Decision)],
    over_limit: bool,
) -> Vec<(&'static str, String)> {
    if mode == ResponseHeaders::None || decided.is_empty() {
        return Vec::new();
    }
    let chosen = match mode {
        ResponseHeaders::All => decided,
        // Closest to refusing: a refusing limit first, then the fewest tokens left.
        _ => decided.iter().min_by_key(|(_, d)| (d.allowed, d.remaining)).map(std::slice::from_ref).unwrap_or_default(),
    };
    // Sized for one limit's values (about 40 bytes each) so the usual answer allocates each string once.
    let (mut policy, mut ratelimit) = (String::with_capacity(64), String::with_capacity(64));
    for (pending, d) in chosen {
        let Some(n) = HeaderNumbers::new(d, &pending.limit.policy) else { continue };
        if !policy.is_empty() {
            policy.push_str(", ");
            ratelimit.push_str(", ");
        }
        let name = rule_name(pending.matched.rule);
        let mut int = itoa::Buffer::new();
        push_structured_string(&mut policy, name);
        for (field, value) in [(";q=", n.quota), (";w=", n.window)] {
            policy.push_str(field);
            policy.push_str(int.format(value));
        }
        push_structured_string(&mut ratelimit, name);
        for (field, value) in [(";r=", n.remaining), (";t=", n.t)] {
            ratelimit.push_str(field);
            ratelimit.push_str(int.format(value));
        }
    }
    let mut headers = Vec::with_capacity(3);
    if !policy.is_empty() {
        headers.push(("ratelimit-policy", policy));
        headers.push(("ratelimit", ratelimit));
    }
    if over_limit {
        let wait = decided
            .iter()
            .filter_map(|(_, d)| match d.retry_after {
                Some(Wait::After(wait)) if !d.allowed => Some(ceil_secs(wait).max(1)),
                _ => None,
            })
            .max();
        if let Some(wait) = wait {
            headers.push(("retry-after", itoa::Buffer::new().format(wait).to_owned()));
        }
    }
    headers
}

/// A name as a structured-field string, quotes included: printable ASCII, `"` and `\` escaped, anything else `?`.
fn push_structured_string(out: &mut String, name: &str) {
    out.reserve(name.len() + 2);
    out.push('"');
    // The usual name needs no escape: copied whole, not pushed a character at a time.
    if name.bytes().all(|b| matches!(b, b' '..=b'~') && b != b'"' && b != b'\\') {
        out.push_str(name);
        out.push('"');
        return;
    }
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::push_structured_string;

    fn structured_string(name: &str) -> String {
        let mut out = String::new();
        push_structured_string(&mut out, name);
        out
    }

    #[test]
    fn names_become_valid_structured_field_strings() {
        assert_eq!(structured_string("per-user"), "\"per-user\"");
        assert_eq!(structured_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(structured_string("é\n"), "\"??\"");
    }
}
