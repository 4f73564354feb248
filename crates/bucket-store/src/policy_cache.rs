//! Per-key policies kept in the process, so a check costs no store round trip to learn its key's policy.
//!
//! Per-key policies are operator-set and rare, and most keys have none, so the cache holds a **snapshot** of all of
//! them: at most once per `ttl` one look-up reads the store's policy version (one cheap read: a counter) and, only
//! if it changed, reloads every policy. Every other look-up is a map read, with no I/O, for keys with and without a
//! policy alike; a stream of new keys costs nothing. When the store holds more than `max_entries` policies (or the
//! full load fails with a non-transient error, or no snapshot has loaded yet) the cache works **per key** instead,
//! as it did before snapshots: each key's policy, or its absence, is cached for `ttl`.
//!
//! A change made through this process is seen at once; a change made through another instance as soon as its
//! invalidation arrives ([`CachedPolicies::expire`], from the store's listener: `invalidation.rs`), and within
//! `ttl` even if it is lost (it bumps the version). Policies never reset tokens, so a stale answer only delays when new limits apply. When the
//! store cannot answer (a transient error: PostgreSQL down while Redis keeps deciding), the last snapshot is kept,
//! however old, and in per-key mode the last known policy of a key, while a key never looked up gets none (the
//! default applies): an outage of the policy table must not turn into an outage of rate limiting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use bucket_core::{Clock, MonotonicClock, Policy};
use dashmap::DashMap;

use crate::{PolicyStore, StoreError};

/// A store whose policy look-ups are answered from an in-process snapshot refreshed at most once per TTL.
#[derive(Clone)]
pub struct CachedPolicies<S> {
    store: S,
    cache: Arc<Cache>,
}

pub(crate) struct Cache {
    ttl_us: u64,
    max_entries: usize,
    clock: Arc<dyn Clock>,
    /// When the next look-up checks the version (µs on `clock`). Claimed by compare-and-swap, so one look-up per
    /// TTL does that I/O and the others answer from what is there.
    next_check_us: AtomicU64,
    state: RwLock<State>,
    /// Per-key mode: each key's policy or its absence, and when it was read (µs on `clock`).
    entries: DashMap<Box<str>, (Option<Policy>, u64)>,
}

impl Cache {
    pub(crate) fn expire(&self, key: &str) {
        self.entries.remove(key);
        self.next_check_us.store(0, Ordering::Release);
    }

    pub(crate) fn expire_all(&self) {
        self.entries.clear();
        self.next_check_us.store(0, Ordering::Release);
    }
}

/// What the last successful refresh found. Only ever locked for map operations, never across an await.
struct State {
    /// The store's policy version `snapshot` (or per-key mode) was chosen at; `None` before the first read.
    version: Option<u64>,
    /// Every policy; `None` in per-key mode.
    snapshot: Option<HashMap<Box<str>, Policy>>,
}

impl<S> CachedPolicies<S> {
    /// Wraps `store`, refreshing its snapshot of all policies at most every `ttl`; with more than `max_entries`
    /// policies, caches per key instead, at most `max_entries` keys.
    pub fn new(store: S, ttl: Duration, max_entries: usize) -> Self {
        Self::with_clock(store, ttl, max_entries, Arc::new(MonotonicClock::new()))
    }

    /// As [`CachedPolicies::new`] on a given clock (a `ManualClock` in tests).
    pub fn with_clock(store: S, ttl: Duration, max_entries: usize, clock: Arc<dyn Clock>) -> Self {
        let cache = Cache {
            ttl_us: u64::try_from(ttl.as_micros()).unwrap_or(u64::MAX),
            max_entries,
            clock,
            next_check_us: AtomicU64::new(0),
            state: RwLock::new(State { version: None, snapshot: None }),
            entries: DashMap::new(),
        };
        Self { store, cache: Arc::new(cache) }
    }

    /// The wrapped store, for what the cache does not cover (stats, flush).
    pub fn inner(&self) -> &S {
        &self.store
    }

    /// Has the next look-up check the version, and forgets `key`'s per-key entry: a policy changed elsewhere.
    pub fn expire(&self, key: &str) {
        self.cache.expire(key);
    }

    /// A handle for a listener that must not keep the cache alive.
    pub(crate) fn downgrade(&self) -> Weak<Cache> {
        Arc::downgrade(&self.cache)
    }

    /// What [`PolicyStore::policy`] answers when no refresh is due and the snapshot or a fresh per-key entry knows
    /// `key`; `None` when that call must be awaited. Lets a caller skip creating (and boxing) its future: most
    /// look-ups do no I/O (`AnyStore`, docs/perf.md §9).
    pub(crate) fn answer_now(&self, key: &str) -> Option<Option<Policy>> {
        if self.cache.clock.now_us() >= self.cache.next_check_us.load(Ordering::Acquire) {
            return None;
        }
        self.snapshot_answer(key).or_else(|| self.cached(key))
    }

    /// The snapshot's answer for `key`, or `None` in per-key mode.
    fn snapshot_answer(&self, key: &str) -> Option<Option<Policy>> {
        let state = self.cache.state.read().unwrap_or_else(PoisonError::into_inner);
        state.snapshot.as_ref().map(|all| all.get(key).copied())
    }

    fn cached(&self, key: &str) -> Option<Option<Policy>> {
        let entry = self.cache.entries.get(key)?;
        let (policy, at) = *entry;
        (self.cache.clock.now_us().saturating_sub(at) < self.cache.ttl_us).then_some(policy)
    }

    fn last_known(&self, key: &str) -> Option<Policy> {
        self.cache.entries.get(key).and_then(|entry| entry.0)
    }

    fn remember(&self, key: &str, policy: Option<Policy>) {
        let now = self.cache.clock.now_us();
        if self.cache.entries.len() >= self.cache.max_entries {
            let ttl = self.cache.ttl_us;
            self.cache.entries.retain(|_, (_, at)| now.saturating_sub(*at) < ttl);
            if self.cache.entries.len() >= self.cache.max_entries {
                self.cache.entries.clear();
            }
        }
        self.cache.entries.insert(Box::from(key), (policy, now));
    }

    /// Applies a write made through this process at once, and has the next look-up check the version (a refresh
    /// that started before the write may otherwise install a snapshot without it until the next TTL).
    fn written(&self, key: &str, policy: Option<Policy>) {
        {
            let mut state = self.cache.state.write().unwrap_or_else(PoisonError::into_inner);
            if let Some(all) = state.snapshot.as_mut() {
                match policy {
                    Some(policy) => all.insert(Box::from(key), policy),
                    None => all.remove(key),
                };
            }
        }
        self.remember(key, policy);
        self.cache.next_check_us.store(0, Ordering::Release);
    }
}

impl<S: PolicyStore> CachedPolicies<S> {
    /// Refreshes if the TTL has run out and no other look-up has claimed this refresh.
    async fn refresh_if_due(&self) {
        let now = self.cache.clock.now_us();
        let due = self.cache.next_check_us.load(Ordering::Acquire);
        if now < due {
            return;
        }
        let next = now.saturating_add(self.cache.ttl_us);
        if self.cache.next_check_us.compare_exchange(due, next, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.refresh().await;
        }
    }

    /// Reads the version and, if it changed, every policy. Transient errors keep the current state (retried after
    /// the next TTL); other errors fall back to per-key mode, where they reach only the keys they concern.
    async fn refresh(&self) {
        let version = match self.store.policy_version().await {
            Ok(version) => version,
            Err(e) if e.is_transient() => return,
            Err(_) => return self.install(None, None),
        };
        let current = self.cache.state.read().unwrap_or_else(PoisonError::into_inner).version;
        if current == Some(version) {
            return;
        }
        let snapshot = match self.store.all_policies().await {
            Ok(all) if all.len() <= self.cache.max_entries => {
                Some(all.into_iter().map(|(key, policy)| (key.into_boxed_str(), policy)).collect())
            }
            Ok(_) => None,
            Err(e) if e.is_transient() => return,
            Err(_) => None,
        };
        self.install(Some(version), snapshot);
    }

    fn install(&self, version: Option<u64>, snapshot: Option<HashMap<Box<str>, Policy>>) {
        let snapshot_mode = snapshot.is_some();
        *self.cache.state.write().unwrap_or_else(PoisonError::into_inner) = State { version, snapshot };
        if snapshot_mode {
            // Per-key entries are not consulted in snapshot mode; if it ends they would be stale anyway.
            self.cache.entries.clear();
        }
    }
}

impl<S: PolicyStore> PolicyStore for CachedPolicies<S> {
    async fn policy(&self, key: &str) -> Result<Option<Policy>, StoreError> {
        self.refresh_if_due().await;
        if let Some(policy) = self.snapshot_answer(key) {
            return Ok(policy);
        }
        if let Some(policy) = self.cached(key) {
            return Ok(policy);
        }
        match self.store.policy(key).await {
            Ok(policy) => {
                self.remember(key, policy);
                Ok(policy)
            }
            Err(e) if e.is_transient() => Ok(self.last_known(key)),
            Err(e) => Err(e),
        }
    }

    async fn set_policy(&self, key: &str, policy: &Policy) -> Result<(), StoreError> {
        self.store.set_policy(key, policy).await?;
        self.written(key, Some(*policy));
        Ok(())
    }

    async fn delete_policy(&self, key: &str) -> Result<bool, StoreError> {
        let existed = self.store.delete_policy(key).await?;
        self.written(key, None);
        Ok(existed)
    }

    async fn policy_version(&self) -> Result<u64, StoreError> {
        self.store.policy_version().await
    }

    async fn all_policies(&self) -> Result<Vec<(String, Policy)>, StoreError> {
        self.store.all_policies().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use bucket_core::ManualClock;

    use super::*;
    use crate::MemoryStore;

    /// A memory store whose policy reads are counted and can be made to fail like an unreachable database.
    #[derive(Clone, Default)]
    struct Fake {
        store: MemoryStore,
        down: Arc<AtomicBool>,
        per_key_reads: Arc<AtomicU64>,
        version_reads: Arc<AtomicU64>,
        full_loads: Arc<AtomicU64>,
    }

    impl Fake {
        fn unreachable(&self) -> Result<(), StoreError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable { backend: "postgres", detail: "down".into() });
            }
            Ok(())
        }

        fn counts(&self) -> (u64, u64, u64) {
            let load = |c: &AtomicU64| c.load(Ordering::SeqCst);
            (load(&self.version_reads), load(&self.full_loads), load(&self.per_key_reads))
        }
    }

    impl PolicyStore for Fake {
        async fn policy(&self, key: &str) -> Result<Option<Policy>, StoreError> {
            self.per_key_reads.fetch_add(1, Ordering::SeqCst);
            self.unreachable()?;
            self.store.policy(key).await
        }
        async fn set_policy(&self, key: &str, policy: &Policy) -> Result<(), StoreError> {
            self.store.set_policy(key, policy).await
        }
        async fn delete_policy(&self, key: &str) -> Result<bool, StoreError> {
            self.store.delete_policy(key).await
        }
        async fn policy_version(&self) -> Result<u64, StoreError> {
            self.version_reads.fetch_add(1, Ordering::SeqCst);
            self.unreachable()?;
            self.store.policy_version().await
        }
        async fn all_policies(&self) -> Result<Vec<(String, Policy)>, StoreError> {
            self.full_loads.fetch_add(1, Ordering::SeqCst);
            self.unreachable()?;
            self.store.all_policies().await
        }
    }

    const TTL_US: u64 = 1_000_000;
    const TTL: Duration = Duration::from_micros(TTL_US);

    fn manual(fake: &Fake, max_entries: usize) -> (ManualClock, CachedPolicies<Fake>) {
        let clock = ManualClock::new(1_000_000);
        let cached = CachedPolicies::with_clock(fake.clone(), TTL, max_entries, Arc::new(clock.clone()));
        (clock, cached)
    }

    #[tokio::test]
    async fn an_outage_keeps_the_last_known_policy_and_unknown_keys_get_none() {
        let flaky = Fake::default();
        let premium = Policy::per_minute(1000).unwrap();
        flaky.store.set_policy("premium", &premium).await.unwrap();
        // A zero TTL: every look-up goes to the store, so only the outage path can answer from memory.
        let cached = CachedPolicies::new(flaky.clone(), Duration::ZERO, 10);
        assert_eq!(cached.policy("premium").await.unwrap(), Some(premium));

        flaky.down.store(true, Ordering::SeqCst);
        assert_eq!(cached.policy("premium").await.unwrap(), Some(premium), "last known policy kept");
        assert_eq!(cached.policy("stranger").await.unwrap(), None, "never seen: the default applies");

        flaky.down.store(false, Ordering::SeqCst);
        flaky.store.delete_policy("premium").await.unwrap();
        assert_eq!(cached.policy("premium").await.unwrap(), None, "back to the store once it answers");
    }

    #[tokio::test]
    async fn an_outage_before_the_first_snapshot_keeps_per_key_answers() {
        let flaky = Fake::default();
        let premium = Policy::per_minute(1000).unwrap();
        flaky.store.set_policy("premium", &premium).await.unwrap();
        let (_clock, cached) = manual(&flaky, 10);
        flaky.down.store(true, Ordering::SeqCst);
        assert_eq!(cached.policy("premium").await.unwrap(), None, "nothing known yet: the default applies");
    }

    #[tokio::test]
    async fn new_keys_cost_one_version_read_per_ttl_and_no_per_key_read() {
        let fake = Fake::default();
        let premium = Policy::per_minute(1000).unwrap();
        fake.store.set_policy("premium", &premium).await.unwrap();
        let (clock, cached) = manual(&fake, 10);

        for i in 0..1_000 {
            assert_eq!(cached.policy(&format!("new-{i}")).await.unwrap(), None);
        }
        assert_eq!(cached.policy("premium").await.unwrap(), Some(premium));
        assert_eq!(fake.counts(), (1, 1, 0), "(version reads, full loads, per-key reads) in the first TTL");

        clock.advance_us(TTL_US);
        for i in 0..1_000 {
            assert_eq!(cached.policy(&format!("newer-{i}")).await.unwrap(), None);
        }
        assert_eq!(fake.counts(), (2, 1, 0), "an unchanged version is not reloaded");
    }

    #[tokio::test]
    async fn a_policy_set_through_another_instance_is_seen_after_the_ttl() {
        let fake = Fake::default();
        let (clock, here) = manual(&fake, 10);
        let (_, there) = manual(&fake, 10);
        let premium = Policy::per_minute(1000).unwrap();
        assert_eq!(here.policy("alice").await.unwrap(), None);

        there.set_policy("alice", &premium).await.unwrap();
        assert_eq!(there.policy("alice").await.unwrap(), Some(premium), "the writing instance sees it at once");
        clock.advance_us(TTL_US - 1);
        assert_eq!(here.policy("alice").await.unwrap(), None, "within the TTL the old snapshot answers");
        clock.advance_us(1);
        assert_eq!(here.policy("alice").await.unwrap(), Some(premium), "seen once the TTL has passed");

        there.delete_policy("alice").await.unwrap();
        clock.advance_us(TTL_US);
        assert_eq!(here.policy("alice").await.unwrap(), None, "a deletion too");
        assert_eq!(fake.counts().2, 0, "all from snapshots");
    }

    #[tokio::test]
    async fn more_policies_than_max_entries_fall_back_to_per_key_caching() {
        let fake = Fake::default();
        let premium = Policy::per_minute(1000).unwrap();
        for key in ["a", "b", "c"] {
            fake.store.set_policy(key, &premium).await.unwrap();
        }
        let (clock, cached) = manual(&fake, 2);

        assert_eq!(cached.policy("a").await.unwrap(), Some(premium));
        assert_eq!(cached.policy("a").await.unwrap(), Some(premium));
        assert_eq!(cached.policy("stranger").await.unwrap(), None);
        assert_eq!(fake.counts(), (1, 1, 2), "one read per key per TTL, the version once");

        clock.advance_us(TTL_US);
        assert_eq!(cached.policy("a").await.unwrap(), Some(premium));
        assert_eq!(fake.counts(), (2, 1, 3), "same version: no reload, the key's entry expired");

        // Back under the limit: the next version change brings the snapshot back.
        fake.store.delete_policy("c").await.unwrap();
        clock.advance_us(TTL_US);
        assert_eq!(cached.policy("b").await.unwrap(), Some(premium));
        assert_eq!(cached.policy("c").await.unwrap(), None);
        assert_eq!(fake.counts(), (3, 2, 3), "snapshot mode again: no per-key reads");
    }

    #[tokio::test]
    async fn a_write_through_this_instance_is_seen_at_once() {
        let fake = Fake::default();
        let (_clock, cached) = manual(&fake, 10);
        let premium = Policy::per_minute(1000).unwrap();
        assert_eq!(cached.policy("alice").await.unwrap(), None);
        cached.set_policy("alice", &premium).await.unwrap();
        assert_eq!(cached.policy("alice").await.unwrap(), Some(premium));
        assert!(cached.delete_policy("alice").await.unwrap());
        assert_eq!(cached.policy("alice").await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_answer_without_io_only_while_no_refresh_is_due() {
        let fake = Fake::default();
        let premium = Policy::per_minute(1000).unwrap();
        fake.store.set_policy("premium", &premium).await.unwrap();
        let (clock, cached) = manual(&fake, 10);
        assert_eq!(cached.answer_now("premium"), None, "no snapshot yet: the look-up must load one");
        assert_eq!(cached.policy("premium").await.unwrap(), Some(premium));
        assert_eq!(cached.answer_now("premium"), Some(Some(premium)));
        assert_eq!(cached.answer_now("stranger"), Some(None), "the snapshot knows it has no policy");
        clock.advance_us(TTL_US);
        assert_eq!(cached.answer_now("premium"), None, "the version is due: the look-up must check it");
        let reads = fake.counts();
        cached.delete_policy("premium").await.unwrap();
        assert_eq!(cached.answer_now("premium"), None, "a write has the next look-up check the version");
        assert_eq!(cached.policy("premium").await.unwrap(), None);
        assert_eq!(cached.answer_now("premium"), Some(None));
        assert_eq!(fake.counts().0, reads.0 + 1, "answer_now itself never reads the store");
    }
}
