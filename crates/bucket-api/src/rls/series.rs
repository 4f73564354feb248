//! `bucket_limit_decisions_total`'s series for the live limits' rules, resolved once per rule and outcome. Looked
//! up by label, every descriptor of every gateway call hashed three labels and took the metric's lock; a rule's
//! series now sit in a vector at the rule's index ([`bucket_limits::Rule::index`]), rebuilt when the limits are
//! reloaded. Labels that carry a request's values (`detailed_metric`, `value_to_metric`) are still looked up.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use bucket_limits::{Limits, Matched};
use prometheus::{IntCounter, IntCounterVec};

/// The `outcome` label of a descriptor's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Taken from its bucket (or had room while another limit refused).
    Allowed,
    /// Refused by its own bucket, or by a `requests_per_unit: 0` rule.
    Refused,
    /// A shadow rule that would have refused.
    ShadowRefused,
    /// An `unlimited` rule.
    Unlimited,
    /// Let through because the store failed under `fail_open`.
    FailOpen,
}

impl Outcome {
    const ALL: [Outcome; 5] =
        [Outcome::Allowed, Outcome::Refused, Outcome::ShadowRefused, Outcome::Unlimited, Outcome::FailOpen];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Refused => "refused",
            Outcome::ShadowRefused => "shadow_refused",
            Outcome::Unlimited => "unlimited",
            Outcome::FailOpen => "fail_open",
        }
    }
}

/// The counters of one limits snapshot, by rule index and outcome, each resolved on its first use.
struct Resolved {
    /// Held, so no later snapshot can be allocated where this one is while it is compared against.
    limits: Arc<Limits>,
    rules: Vec<[OnceLock<IntCounter>; Outcome::ALL.len()]>,
}

/// `bucket_limit_decisions_total` with its per-rule series cached for the current limits.
pub struct LimitSeries {
    vec: IntCounterVec,
    resolved: ArcSwapOption<Resolved>,
}

impl LimitSeries {
    /// Caches series of `vec`, labelled `domain`, `rule`, `outcome`.
    pub fn new(vec: IntCounterVec) -> Self {
        Self { vec, resolved: ArcSwapOption::empty() }
    }

    /// Counts one descriptor decided under `matched` of `limits`.
    pub fn count(&self, limits: &Arc<Limits>, domain: &str, matched: &Matched<'_>, outcome: Outcome) {
        let Cow::Borrowed(rule) = matched.metric_rule else {
            self.vec.with_label_values(&[domain, &matched.metric_rule, outcome.label()]).inc();
            return;
        };
        let guard = self.resolved.load();
        let fresh;
        let resolved = match &*guard {
            Some(resolved) if Arc::ptr_eq(&resolved.limits, limits) => resolved,
            // First call on these limits (at start, or after a reload): a new table; a concurrent call may build
            // its own, and whichever is stored last serves the next calls. Both resolve the same series.
            _ => {
                let rules = (0..limits.rule_count()).map(|_| Default::default()).collect();
                fresh = Arc::new(Resolved { limits: Arc::clone(limits), rules });
                self.resolved.store(Some(Arc::clone(&fresh)));
                &fresh
            }
        };
        let slot = resolved.rules.get(matched.rule.index).and_then(|series| series.get(outcome as usize));
        match slot {
            Some(slot) => slot.get_or_init(|| self.vec.with_label_values(&[domain, rule, outcome.label()])).inc(),
            None => self.vec.with_label_values(&[domain, rule, outcome.label()]).inc(),
        }
    }

    /// Counts a descriptor no rule matched (`rule` is empty, `outcome` is `no_rule`).
    pub fn count_unmatched(&self, domain: &str) {
        self.vec.with_label_values(&[domain, "", "no_rule"]).inc();
    }
}

#[cfg(test)]
mod tests {
    use bucket_limits::Descriptor;
    use prometheus::Opts;

    use super::*;

    const FILE: &str =
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: second, requests_per_unit: 1 }\n  \
                        - key: named\n    rate_limit: { unit: second, requests_per_unit: 1, name: n }\n";

    fn vec() -> IntCounterVec {
        IntCounterVec::new(Opts::new("t", "t"), &["domain", "rule", "outcome"]).unwrap()
    }

    fn value(vec: &IntCounterVec, rule: &str, outcome: &str) -> u64 {
        vec.with_label_values(&["d", rule, outcome]).get()
    }

    /// The cached series are the labelled ones, per rule and outcome, and follow a reload that changes the rules.
    #[test]
    fn counts_land_on_the_labelled_series_across_reloads() {
        let vec = vec();
        let series = LimitSeries::new(vec.clone());
        let first = Arc::new(Limits::from_yaml("a.yaml", FILE).unwrap());
        let descriptor = |key: &str| Descriptor { entries: vec![(key.to_owned(), "v".to_owned())] };
        let (k, named) = (descriptor("k"), descriptor("named"));
        for _ in 0..3 {
            series.count(&first, "d", &first.find("d", &k).unwrap(), Outcome::Allowed);
        }
        series.count(&first, "d", &first.find("d", &k).unwrap(), Outcome::Refused);
        series.count(&first, "d", &first.find("d", &named).unwrap(), Outcome::Allowed);
        assert_eq!(value(&vec, "d.k", "allowed"), 3);
        assert_eq!(value(&vec, "d.k", "refused"), 1);
        assert_eq!(value(&vec, "n", "allowed"), 1);
        // The same index now belongs to a rule of another name: its counts go to that name.
        let renamed = FILE.replace("name: n", "name: m").replace("key: k\n", "key: j\n");
        let second = Arc::new(Limits::from_yaml("a.yaml", &renamed).unwrap());
        series.count(&second, "d", &second.find("d", &named).unwrap(), Outcome::Allowed);
        series.count(&second, "d", &second.find("d", &descriptor("j")).unwrap(), Outcome::FailOpen);
        assert_eq!(value(&vec, "m", "allowed"), 1);
        assert_eq!(value(&vec, "n", "allowed"), 1);
        assert_eq!(value(&vec, "d.j", "fail_open"), 1);
    }
}
