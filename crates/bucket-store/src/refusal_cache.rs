//! Refusals remembered in the process until the refused bucket's next token is due, so a caller hammering a shared
//! store while over its limit costs no round trip to Redis or PostgreSQL.
//!
//! Exact, not an approximation: a refusal that left `remaining == 0` means no check of any cost can be allowed
//! before `next_token_after` has passed, because tokens only arrive by refill and no request can speed refill up.
//! Only a reset or a different policy can change that, and both bypass the entry: a reset through this process
//! removes it, and an entry answers only checks under the policy it was refused with. A reset or a policy change
//! through another instance arrives as an invalidation ([`RefusalCache::forget`], sent by the store's listener:
//! `invalidation.rs`); should one be lost (the listener was disconnected), no entry lives longer than `max_age`,
//! whatever its refusal said, so the error is bounded: a refusal that could have been an allowance, for at most
//! `max_age`, never an allowance too many. A refusal with tokens left (a cost above them) is not remembered: a
//! smaller cost could still pass.
//!
//! The answer is the stored refusal aged by the time since: `next_token_after`, `reset_after` and `retry_after`
//! shrink by exactly the elapsed time, which is what the store itself would have said. Its source is
//! [`Source::RefusalCache`]: no store was asked.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bucket_core::{Clock, Decision, MonotonicClock, Policy, Wait};
use dashmap::DashMap;

use crate::limits::Grouped;
use crate::{DependencyHealth, Limit, Outcome, Outcomes, Source, Store, StoreError};

/// A store whose refusals are answered locally until they can change.
#[derive(Clone)]
pub struct RefusalCache<S> {
    store: S,
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    entries: DashMap<Box<str>, Refusal>,
    max_entries: usize,
    /// The longest any entry answers (µs): the safety net for an invalidation that never arrived.
    max_age_us: u64,
    clock: Arc<dyn Clock>,
}

impl Inner {
    pub(crate) fn forget(&self, key: &str) {
        self.entries.remove(key);
    }

    pub(crate) fn forget_all(&self) {
        self.entries.clear();
    }
}

#[derive(Clone, Copy)]
struct Refusal {
    policy: Policy,
    decision: Decision,
    at_us: u64,
    until_us: u64,
}

impl<S> RefusalCache<S> {
    /// Wraps `store`, remembering at most `max_entries` refused keys at once, each for at most `max_age`, on the
    /// process's monotonic clock.
    pub fn new(store: S, max_entries: usize, max_age: Duration) -> Self {
        Self::with_clock(store, max_entries, max_age, Arc::new(MonotonicClock::new()))
    }

    /// As [`RefusalCache::new`] on a given clock (a `ManualClock` in tests).
    pub fn with_clock(store: S, max_entries: usize, max_age: Duration, clock: Arc<dyn Clock>) -> Self {
        let max_age_us = u64::try_from(max_age.as_micros()).unwrap_or(u64::MAX);
        Self { store, inner: Arc::new(Inner { entries: DashMap::new(), max_entries, max_age_us, clock }) }
    }

    /// The wrapped store, for what the cache does not cover (stats).
    pub fn inner(&self) -> &S {
        &self.store
    }

    /// Drops the refusal remembered for `key`: its bucket was reset or its policy changed, maybe elsewhere.
    pub fn forget(&self, key: &str) {
        self.inner.forget(key);
    }

    /// Drops every refusal: invalidations may have been lost (the listener reconnected).
    pub fn forget_all(&self) {
        self.inner.forget_all();
    }

    /// A handle for a listener that must not keep the cache alive.
    pub(crate) fn downgrade(&self) -> Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    /// Keys with a refusal remembered (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.inner.entries.len()
    }

    /// Whether no refusal is remembered.
    pub fn is_empty(&self) -> bool {
        self.inner.entries.is_empty()
    }

    /// `check`'s first half: the remembered refusal it answers now, or (`Err`) the instant it read, for
    /// [`RefusalCache::ask`] when the store must decide. Split so a caller can run the second half elsewhere (a
    /// task of its own, `AnyStore::check_as_task`) without looking the key up twice.
    pub(crate) fn lookup(&self, key: &str, policy: &Policy, cost: u64) -> Result<Outcome, u64> {
        let now_us = self.inner.clock.now_us();
        self.cached(key, policy, cost, now_us).ok_or(now_us)
    }

    fn cached(&self, key: &str, policy: &Policy, cost: u64, now_us: u64) -> Option<Outcome> {
        if cost == 0 {
            // Nothing asked: the store allows it even from an empty bucket.
            return None;
        }
        let entry = self.inner.entries.get(key)?;
        let r = *entry;
        drop(entry);
        if r.policy != *policy || now_us >= r.until_us {
            return None;
        }
        let elapsed = now_us - r.at_us;
        let d = r.decision;
        let next_token_after_us = d.next_token_after_us.saturating_sub(elapsed);
        let retry_after = if cost > policy.capacity() {
            Wait::Never
        } else {
            Wait::After(next_token_after_us + (cost - 1) * policy.interval_us())
        };
        let decision = Decision {
            next_token_after_us,
            reset_after_us: d.reset_after_us.saturating_sub(elapsed),
            retry_after: Some(retry_after),
            ..d
        };
        Some(Outcome { decision, source: Source::RefusalCache })
    }

    fn remember(&self, key: &str, policy: &Policy, outcome: Outcome, now_us: u64) {
        let d = &outcome.decision;
        let wait = d.next_token_after_us;
        if d.allowed || d.remaining != 0 || wait == 0 {
            return;
        }
        if self.inner.entries.len() >= self.inner.max_entries {
            self.inner.entries.retain(|_, r| r.until_us > now_us);
            if self.inner.entries.len() >= self.inner.max_entries {
                return;
            }
        }
        let until_us = now_us.saturating_add(wait.min(self.inner.max_age_us));
        let refusal = Refusal { policy: *policy, decision: outcome.decision, at_us: now_us, until_us };
        self.inner.entries.insert(Box::from(key), refusal);
    }
}

impl<S: Store> RefusalCache<S> {
    /// `check`'s second half, after [`RefusalCache::lookup`] found nothing at `now_us`: the store decides, and a
    /// refusal is remembered.
    pub(crate) async fn ask(&self, key: &str, policy: &Policy, cost: u64, now_us: u64) -> Result<Outcome, StoreError> {
        let outcome = self.store.check(key, policy, cost).await?;
        // The clock is read before the store is asked, so the entry expires no later than the store's own answer.
        self.remember(key, policy, outcome, now_us);
        Ok(outcome)
    }
}

impl<S: Store> Store for RefusalCache<S> {
    async fn check(&self, key: &str, policy: &Policy, cost: u64) -> Result<Outcome, StoreError> {
        match self.lookup(key, policy, cost) {
            Ok(refused) => Ok(refused),
            Err(now_us) => self.ask(key, policy, cost, now_us).await,
        }
    }

    /// A request any of whose buckets has a live remembered refusal (for its policy, and a cost above zero) is
    /// refused here, nothing debited and no store asked: the refused buckets answer as `check` would, and the
    /// others, which were not looked at, are described as full (allowed, `remaining` = capacity). Otherwise the
    /// store decides, and each bucket it refused empty is remembered as `check` remembers it.
    async fn check_all(&self, limits: &[Limit<'_>]) -> Result<Outcomes, StoreError> {
        let now_us = self.inner.clock.now_us();
        let grouped = Grouped::new(limits);
        let cached: Vec<Option<Outcome>> =
            grouped.buckets.iter().map(|b| self.cached(b.key, &b.policy, b.cost, now_us)).collect();
        if cached.iter().any(Option::is_some) {
            let decisions: Vec<Decision> = grouped
                .buckets
                .iter()
                .zip(&cached)
                .map(|(b, c)| c.map_or_else(|| not_looked_at(&b.policy), |o| o.decision))
                .collect();
            return Ok(grouped.outcomes(false, &decisions, Source::RefusalCache));
        }
        let outcomes = self.store.check_all(limits).await?;
        for (b, decision) in grouped.buckets.iter().zip(grouped.per_bucket(&outcomes.decisions)) {
            self.remember(b.key, &b.policy, Outcome { decision, source: outcomes.source }, now_us);
        }
        Ok(outcomes)
    }

    async fn peek(&self, key: &str, policy: &Policy) -> Result<Outcome, StoreError> {
        self.store.peek(key, policy).await
    }

    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        self.inner.entries.remove(key);
        self.store.reset(key).await
    }

    async fn health(&self) -> Vec<DependencyHealth> {
        self.store.health().await
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        self.store.shutdown().await
    }
}

/// A bucket of a request refused from the cache because of another bucket: not looked at, described as full.
fn not_looked_at(policy: &Policy) -> Decision {
    let capacity = policy.capacity();
    Decision {
        allowed: true,
        limit: capacity,
        remaining: capacity,
        reset_after_us: 0,
        next_token_after_us: 0,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use bucket_core::ManualClock;

    use super::*;
    use crate::{MemoryStore, Source};

    /// A memory store that counts the checks reaching it, standing in for a remote store.
    #[derive(Clone)]
    struct Counting {
        store: MemoryStore,
        checks: Arc<AtomicU64>,
    }

    impl Store for Counting {
        async fn check(&self, key: &str, policy: &Policy, cost: u64) -> Result<Outcome, StoreError> {
            self.checks.fetch_add(1, Ordering::SeqCst);
            self.store.check(key, policy, cost).await
        }
        async fn check_all(&self, limits: &[Limit<'_>]) -> Result<Outcomes, StoreError> {
            self.checks.fetch_add(1, Ordering::SeqCst);
            self.store.check_all(limits).await
        }
        async fn peek(&self, key: &str, policy: &Policy) -> Result<Outcome, StoreError> {
            self.store.peek(key, policy).await
        }
        async fn reset(&self, key: &str) -> Result<(), StoreError> {
            self.store.reset(key).await
        }
        async fn health(&self) -> Vec<DependencyHealth> {
            self.store.health().await
        }
    }

    fn setup() -> (ManualClock, RefusalCache<Counting>, Counting, Policy) {
        let clock = ManualClock::new(1_000_000);
        let inner = Counting { store: MemoryStore::with_clock(Arc::new(clock.clone())), checks: Arc::default() };
        let cache = RefusalCache::with_clock(inner.clone(), 1_000, Duration::from_secs(3600), Arc::new(clock.clone()));
        (clock, cache, inner, Policy::from_rate(3, 1.0).unwrap())
    }

    fn check(cache: &RefusalCache<Counting>, key: &str, policy: &Policy, cost: u64) -> Outcome {
        futures::executor::block_on(cache.check(key, policy, cost)).unwrap()
    }

    #[test]
    fn a_refused_key_is_answered_locally_until_its_next_token_and_the_answer_matches_the_store() {
        let (clock, cache, inner, policy) = setup();
        for _ in 0..3 {
            assert!(check(&cache, "k", &policy, 1).decision.allowed);
        }
        assert!(!check(&cache, "k", &policy, 1).decision.allowed);
        let reached = inner.checks.load(Ordering::SeqCst);
        assert_eq!(reached, 4);
        for step in [1u64, 250_000, 400_000, 349_998] {
            clock.advance_us(step);
            for cost in [1, 2, 3] {
                let local = check(&cache, "k", &policy, cost);
                let truth = futures::executor::block_on(inner.store.check("k", &policy, cost)).unwrap();
                assert_eq!(local.decision, truth.decision, "cost {cost} after {step} µs");
                assert_eq!(local.source, Source::RefusalCache, "no store was asked, and the header says so");
            }
        }
        assert_eq!(inner.checks.load(Ordering::SeqCst), reached, "refusals reached the store");
        // The next token is due now: the store is asked again and allows.
        clock.advance_us(1);
        assert!(check(&cache, "k", &policy, 1).decision.allowed);
        assert_eq!(inner.checks.load(Ordering::SeqCst), reached + 1);
    }

    #[test]
    fn reset_and_another_policy_bypass_the_remembered_refusal() {
        let (_clock, cache, _inner, policy) = setup();
        for _ in 0..4 {
            check(&cache, "k", &policy, 1);
        }
        assert_eq!(cache.len(), 1);
        let bigger = Policy::from_rate(10, 1.0).unwrap();
        assert!(check(&cache, "k", &bigger, 1).decision.allowed, "a larger policy must not see the old refusal");
        futures::executor::block_on(cache.reset("k")).unwrap();
        assert!(cache.is_empty());
        assert!(check(&cache, "k", &policy, 1).decision.allowed);
    }

    #[test]
    fn a_refusal_with_tokens_left_is_not_remembered() {
        let (_clock, cache, inner, policy) = setup();
        let d = check(&cache, "k", &policy, 1).decision;
        assert!(d.allowed);
        // Two tokens left, cost 3 refused: a cost of 1 must still reach the store and pass.
        assert!(!check(&cache, "k", &policy, 3).decision.allowed);
        assert!(cache.is_empty());
        assert!(check(&cache, "k", &policy, 1).decision.allowed);
        assert_eq!(inner.checks.load(Ordering::SeqCst), 3);
        assert_eq!(check(&cache, "k", &policy, 1).source, Source::Memory);
    }

    #[test]
    fn no_refusal_answers_longer_than_max_age_or_after_it_is_forgotten() {
        let clock = ManualClock::new(1_000_000);
        let inner = Counting { store: MemoryStore::with_clock(Arc::new(clock.clone())), checks: Arc::default() };
        let max_age = Duration::from_millis(500);
        let cache = RefusalCache::with_clock(inner.clone(), 1_000, max_age, Arc::new(clock.clone()));
        let hourly = Policy::from_rate(1, 1.0 / 3600.0).unwrap();
        assert!(check(&cache, "k", &hourly, 1).decision.allowed);
        assert!(!check(&cache, "k", &hourly, 1).decision.allowed);
        clock.advance_us(499_999);
        assert_eq!(check(&cache, "k", &hourly, 1).source, Source::RefusalCache, "within max_age");
        clock.advance_us(1);
        assert_eq!(check(&cache, "k", &hourly, 1).source, Source::Memory, "max_age reached: the store is asked");
        assert_eq!(check(&cache, "k", &hourly, 1).source, Source::RefusalCache, "and remembered again");
        cache.forget("k");
        assert_eq!(check(&cache, "k", &hourly, 1).source, Source::Memory, "forgotten: the store is asked");
        cache.forget_all();
        assert!(cache.is_empty());
    }

    #[test]
    fn a_remembered_refusal_refuses_a_multi_limit_request_without_the_store_and_debits_nothing() {
        let (_clock, cache, inner, policy) = setup();
        let all = |limits: &[Limit<'_>]| futures::executor::block_on(cache.check_all(limits)).unwrap();
        let both = [Limit { key: "a", policy, cost: 1 }, Limit { key: "b", policy, cost: 1 }];
        // Empty "a" through a multi-limit request: refused by the store, and "a" is remembered as `check` would.
        assert!(all(&[Limit { key: "a", policy, cost: 3 }]).allowed);
        let refused = all(&both);
        assert!(!refused.allowed);
        assert_eq!(refused.source, Source::Memory);
        assert!(!refused.decisions[0].allowed && refused.decisions[1].allowed);
        assert_eq!(cache.len(), 1);
        let reached = inner.checks.load(Ordering::SeqCst);
        let cached = all(&both);
        assert_eq!(cached.source, Source::RefusalCache);
        assert!(!cached.allowed);
        assert_eq!(cached.decisions[0], refused.decisions[0], "the clock did not move: the same refusal");
        assert!(cached.decisions[1].allowed);
        assert_eq!(inner.checks.load(Ordering::SeqCst), reached, "the store was asked");
        assert_eq!(check(&cache, "b", &policy, 3).decision.remaining, 0, "b was debited by a refused request");
        // A cost of zero is never refused by the store, so never from the cache either.
        assert!(all(&[Limit { key: "a", policy, cost: 0 }]).allowed);
    }
}
