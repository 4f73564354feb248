//! What every store does first with several limits: one bucket per distinct key, costs of a key named twice added
//! up, keys in ascending order (the order the memory store takes its lock bits in), and the way back from one
//! decision per bucket to one per limit.

use bucket_core::{Decision, Policy};

use crate::{Limit, Outcomes, Source};

/// One distinct bucket of a multi-limit request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bucket<'a> {
    /// The key.
    pub key: &'a str,
    /// The policy of the first limit naming the key.
    pub policy: Policy,
    /// The sum of the costs of every limit naming the key (saturating: a sum beyond `u64` is beyond any capacity).
    pub cost: u64,
}

/// The limits of one request grouped by bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grouped<'a> {
    /// Distinct keys in ascending byte order.
    pub buckets: Vec<Bucket<'a>>,
    /// For each limit as given, the index of its bucket in `buckets`.
    index: Vec<usize>,
}

impl<'a> Grouped<'a> {
    /// Groups `limits` by key.
    pub fn new(limits: &[Limit<'a>]) -> Self {
        // One limit (most requests): one bucket, nothing to sort.
        if let [one] = limits {
            return Self { buckets: vec![Bucket { key: one.key, policy: one.policy, cost: one.cost }], index: vec![0] };
        }
        let mut order: Vec<usize> = (0..limits.len()).collect();
        // Stable: of the limits naming one key, the first given comes first and sets the policy.
        order.sort_by(|&a, &b| limits[a].key.cmp(limits[b].key));
        let mut buckets: Vec<Bucket<'a>> = Vec::with_capacity(limits.len());
        let mut index = vec![0; limits.len()];
        for i in order {
            let limit = &limits[i];
            match buckets.last_mut() {
                Some(last) if last.key == limit.key => last.cost = last.cost.saturating_add(limit.cost),
                _ => buckets.push(Bucket { key: limit.key, policy: limit.policy, cost: limit.cost }),
            }
            index[i] = buckets.len() - 1;
        }
        Self { buckets, index }
    }

    /// The keys, in bucket order.
    pub fn keys(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.buckets.iter().map(|b| b.key)
    }

    /// One decision per bucket (in bucket order) from one per limit, as [`Store::check_all`](crate::Store::check_all)
    /// answers (every limit of a bucket carries the bucket's decision).
    pub fn per_bucket(&self, per_limit: &[Decision]) -> Vec<Decision> {
        let mut out: Vec<Option<Decision>> = vec![None; self.buckets.len()];
        for (&bucket, decision) in self.index.iter().zip(per_limit) {
            out[bucket].get_or_insert(*decision);
        }
        out.into_iter().flatten().collect()
    }

    /// The answer of [`Store::check`](crate::Store::check) when the limits name one bucket only, so that one limit
    /// behaves exactly like `check` (and costs what it costs: one statement, one script run); `None` otherwise.
    pub async fn as_check<S: crate::Store>(&self, store: &S) -> Option<Result<Outcomes, crate::StoreError>> {
        let [one] = self.buckets.as_slice() else { return None };
        Some(
            store
                .check(one.key, &one.policy, one.cost)
                .await
                .map(|o| self.outcomes(o.decision.allowed, &[o.decision], o.source)),
        )
    }

    /// One outcome per limit from one decision per bucket (in bucket order; `decisions` holds one per bucket).
    pub fn outcomes(&self, allowed: bool, decisions: &[Decision], source: Source) -> Outcomes {
        Outcomes { allowed, decisions: self.index.iter().map(|&i| decisions[i]).collect(), source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sorted_and_a_key_named_twice_is_one_bucket_with_the_summed_cost() {
        let (p, q) = (Policy::per_second(5).unwrap(), Policy::per_second(9).unwrap());
        let limits = [
            Limit { key: "b", policy: p, cost: 1 },
            Limit { key: "a", policy: q, cost: 2 },
            Limit { key: "b", policy: q, cost: u64::MAX },
        ];
        let g = Grouped::new(&limits);
        assert_eq!(
            g.buckets,
            vec![Bucket { key: "a", policy: q, cost: 2 }, Bucket { key: "b", policy: p, cost: u64::MAX }]
        );
        assert_eq!(g.index, vec![1, 0, 1]);
        assert!(Grouped::new(&[]).buckets.is_empty());
    }
}
