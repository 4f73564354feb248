//! Load for the failover tests: workers spend a few buckets through one or more stores while the test kills a
//! master, and the tokens granted per bucket are counted against what the bucket could give (capacity plus what
//! refilled while the load ran), with every failed check and when it failed.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bucket_core::Policy;
use bucket_store::redis::RedisStore;
use bucket_store::Store;
use tokio::task::JoinHandle;

/// No grant for this long after the kill is the outage (under load, grants come every few milliseconds; a
/// failover takes a second or more).
const OUTAGE_SILENCE: Duration = Duration::from_millis(100);

/// What a load across a failover granted and cost.
#[derive(Debug)]
pub struct Run {
    /// Grants beyond capacity + refill, summed over the keys.
    pub over: u64,
    /// Tokens granted in all.
    pub granted: u64,
    /// What each bucket could give while the load ran: capacity plus the tokens refilled meanwhile.
    pub allowance: u64,
    /// Checks that failed (the failover window, or too few replicas).
    pub failed: u64,
    /// From the kill to the first grant after the outage's silence (`Duration::MAX` when none).
    pub recovered: Duration,
    /// From the kill to the last failed check (zero when none failed after it).
    pub last_failure: Duration,
    /// Failures that were not a transient store error after the kill: a wrong answer, not an outage.
    pub unexpected: Vec<String>,
}

#[derive(Default)]
struct Tally {
    granted: HashMap<String, u64>,
    failed: u64,
    killed_at: Option<Instant>,
    first_grant_after: Option<Instant>,
    last_grant: Option<Instant>,
    last_failure: Option<Instant>,
    unexpected: Vec<String>,
}

/// Workers checking `keys` in turn through `stores` until [`Load::finish`].
pub struct Load {
    tally: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    keys: Vec<String>,
    policy: Policy,
    started: Instant,
}

impl Load {
    /// Starts `workers` tasks, worker `w` on `stores[w % stores.len()]`, each one token a check.
    pub fn start(stores: &[RedisStore], keys: Vec<String>, policy: Policy, workers: usize) -> Self {
        let (tally, stop): (Arc<Mutex<Tally>>, Arc<AtomicBool>) = Default::default();
        let workers = (0..workers)
            .map(|w| {
                let (store, keys, tally, stop) =
                    (stores[w % stores.len()].clone(), keys.clone(), Arc::clone(&tally), Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut i = w;
                    while !stop.load(Ordering::Relaxed) {
                        let key = &keys[i % keys.len()];
                        i += 1;
                        match store.check(key, &policy, 1).await {
                            Ok(o) if o.decision.allowed => {
                                let mut t = tally.lock().unwrap();
                                *t.granted.entry(key.clone()).or_default() += 1;
                                // Replies in flight when the master died come right after the last grants: the
                                // outage ends with the first grant after a silence.
                                let now = Instant::now();
                                let after_silence = t.last_grant.is_none_or(|g| now - g >= OUTAGE_SILENCE);
                                if t.killed_at.is_some() && after_silence {
                                    t.first_grant_after.get_or_insert(now);
                                }
                                t.last_grant = Some(now);
                            }
                            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                            Err(e) => {
                                {
                                    let mut t = tally.lock().unwrap();
                                    t.failed += 1;
                                    t.last_failure = Some(Instant::now());
                                    if t.killed_at.is_none() || !e.is_transient() {
                                        t.unexpected.push(e.to_string());
                                    }
                                }
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Self { tally, stop, workers, keys, policy, started: Instant::now() }
    }

    /// Returns once `n` tokens were granted in all.
    pub async fn until_granted(&self, n: u64) {
        while self.tally.lock().unwrap().granted.values().sum::<u64>() < n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Marks the kill: failures from now on are the failover's, and the next grant ends the outage.
    pub fn killed(&self) -> Instant {
        let now = Instant::now();
        self.tally.lock().unwrap().killed_at = Some(now);
        now
    }

    /// Returns once `store` peeks every bucket empty (a promoted replica that lost grants has more left), or after
    /// `timeout`.
    pub async fn until_spent(&self, store: &RedisStore, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let peeks = futures::future::join_all(self.keys.iter().map(|k| store.peek(k, &self.policy))).await;
            if peeks.iter().all(|p| p.as_ref().is_ok_and(|o| o.decision.remaining == 0)) || Instant::now() > deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the workers and counts.
    pub async fn finish(self) -> Run {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.unwrap();
        }
        // At most one token per interval arrives in a bucket, counted over the whole run (an upper bound).
        let refilled = self.started.elapsed().as_micros() as u64 / self.policy.interval_us();
        let allowance = self.policy.capacity() + refilled;
        let t = self.tally.lock().unwrap();
        let killed = t.killed_at.expect("the test marks the kill");
        Run {
            over: t.granted.values().map(|g| g.saturating_sub(allowance)).sum(),
            granted: t.granted.values().sum(),
            allowance,
            failed: t.failed,
            recovered: t.first_grant_after.map_or(Duration::MAX, |at| at - killed),
            last_failure: t.last_failure.map_or(Duration::ZERO, |at| at.saturating_duration_since(killed)),
            unexpected: t.unexpected.clone(),
        }
    }
}
