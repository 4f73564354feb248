//! Slots move between masters while two store instances decide on them: `redis-cli --cluster reshard` moves 3,000
//! slots (more than half of one master's) under load, its keys migrating with `MIGRATE` while the clients are sent
//! `MOVED`, `ASK` and, for a script over several keys of a half-moved slot, `TRYAGAIN`. No call may fail, and no
//! bucket may grant more than its capacity plus what refilled meanwhile. This binary owns its cluster.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bucket_core::Policy;
use bucket_store::redis::{RedisConfig, RedisMode, RedisStore};
use bucket_store::{Limit, Store};
use bucket_testkit::redis_server::config;
use bucket_testkit::RedisCluster;
use deadpool_redis::redis;

/// Slots moved from one master (of 5,461) to another.
const SLOTS: usize = 3_000;
/// Every bucket: 20 tokens, one more every 100 ms, so grants keep flowing (and keys keep existing) all along.
const CAPACITY: u64 = 20;
const INTERVAL_US: u64 = 100_000;
/// Concurrent tasks per store instance.
const TASKS: usize = 6;

/// What the load saw: grants per named key, decisions, and every error with the call that got it.
#[derive(Default)]
struct Tally {
    granted: Mutex<HashMap<String, u64>>,
    decisions: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn grant(&self, keys: &[&str]) {
        let mut granted = self.granted.lock().unwrap();
        for key in keys {
            *granted.entry((*key).to_owned()).or_default() += 1;
        }
    }
}

/// The keys the load uses: single buckets, pairs of them in two slots, and groups sharing one slot by a hash tag.
#[derive(Clone)]
struct Keys {
    singles: Vec<String>,
    /// `{team-j}a` and `{team-j}b`: one slot per team (the bucket key `<prefix>{{team-j}a}` hashes `{team-j`).
    teams: Vec<[String; 2]>,
}

impl Keys {
    /// 24 users and 24 teams on the master `from`, 12 users and 4 teams elsewhere.
    fn pick(cluster: &RedisCluster, store: &RedisStore, from: u16) -> Self {
        let on_from = |key: &str| cluster.master_port_of(&store.bucket_key(key)) == from;
        let users: Vec<String> = (0..).map(|i| format!("user-{i}")).take(400).collect();
        let mut singles: Vec<String> = users.iter().filter(|k| on_from(k)).take(24).cloned().collect();
        singles.extend(users.iter().filter(|k| !on_from(k)).take(12).cloned());
        let team = |j: usize| [format!("{{team-{j}}}a"), format!("{{team-{j}}}b")];
        let mut teams: Vec<[String; 2]> = (0..400).map(team).filter(|t| on_from(&t[0])).take(24).collect();
        teams.extend((0..400).map(team).filter(|t| !on_from(&t[0])).take(4));
        assert_eq!((singles.len(), teams.len()), (36, 28));
        Self { singles, teams }
    }

    fn all(&self) -> Vec<String> {
        self.singles.iter().chain(self.teams.iter().flatten()).cloned().collect()
    }
}

/// One load task: single checks, a team's two buckets plus a brand-new one in their slot (one script, and a slot
/// caught half-migrated answers it `TRYAGAIN`), and two users in different slots (debit then refund on refusal).
async fn load(store: RedisStore, keys: Keys, task: usize, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let policy = Policy::from_interval_us(CAPACITY, INTERVAL_US).unwrap();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        // Every kind of call (n % 4) visits every key (i).
        let i = n / 4 + task * 5;
        let user = &keys.singles[i % keys.singles.len()];
        let (what, result) = match n % 4 {
            0 | 1 => {
                let out = store.check(user, &policy, 1).await;
                (format!("check {user}"), out.map(|o| o.decision.allowed.then(|| vec![user])))
            }
            2 => {
                let team = &keys.teams[i % keys.teams.len()];
                let fresh = format!("{}new-{task}-{n}", &team[0][..team[0].len() - 1]);
                let limits = [&team[0], &team[1], &fresh].map(|key| Limit { key, policy, cost: 1 });
                let out = store.check_all(&limits).await;
                (format!("check_all {fresh} in one slot"), out.map(|o| o.allowed.then(|| vec![&team[0], &team[1]])))
            }
            _ => {
                let other = &keys.singles[(i * 7 + 3) % keys.singles.len()];
                let limits = [Limit { key: user, policy, cost: 1 }, Limit { key: other, policy, cost: 1 }];
                let out = store.check_all(&limits).await;
                (
                    format!("check_all {user} {other}"),
                    out.map(|o| (o.allowed && user != other).then(|| vec![user, other])),
                )
            }
        };
        tally.decisions.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(Some(granted)) => tally.grant(&granted.iter().map(|k| k.as_str()).collect::<Vec<_>>()),
            Ok(None) => {}
            Err(e) => tally.errors.lock().unwrap().push(format!("{what}: {e}")),
        }
    }
}

/// Which master serves each key, by port.
fn masters_of(cluster: &RedisCluster, store: &RedisStore, keys: &[String]) -> HashMap<String, u16> {
    keys.iter().map(|k| (k.clone(), cluster.master_port_of(&store.bucket_key(k)))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_under_load_costs_no_error_and_never_over_admits() {
    let cluster = Arc::new(tokio::task::spawn_blocking(RedisCluster::start).await.unwrap());
    let mut config: RedisConfig = config(&cluster.url());
    config.mode = RedisMode::Cluster;
    // Generous for a shared 2-core machine, and shorter than redis-rs's default back-off after `TRYAGAIN` (1.28 s).
    config.command_timeout = Duration::from_millis(500);
    let stores = [RedisStore::connect(config.clone()).unwrap(), RedisStore::connect(config).unwrap()];
    let masters = cluster.master_ports();
    let (from, to) = (masters[0], masters[1]);
    let keys = Keys::pick(&cluster, &stores[0], from);
    let before_slots = (cluster.node_at(from).slots, cluster.node_at(to).slots);
    let before = masters_of(&cluster, &stores[0], &keys.all());

    let (tally, stop) = (Arc::new(Tally::default()), Arc::new(AtomicBool::new(false)));
    let started = Instant::now();
    let tasks: Vec<_> = (0..2 * TASKS)
        .map(|t| {
            let store = stores[t % 2].clone();
            tokio::spawn(load(store, keys.clone(), t, Arc::clone(&tally), Arc::clone(&stop)))
        })
        .collect();
    while tally.decisions.load(Ordering::Relaxed) < 500 {
        assert!(started.elapsed() < Duration::from_secs(20), "the load did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let decided_before = tally.decisions.load(Ordering::Relaxed);
    let c = Arc::clone(&cluster);
    let took = tokio::task::spawn_blocking(move || c.reshard(from, to, SLOTS)).await.unwrap();
    let during = tally.decisions.load(Ordering::Relaxed) - decided_before;
    // Where the keys are now, read while the load still keeps them alive (a full bucket expires).
    let (c, store, all) = (Arc::clone(&cluster), stores[0].clone(), keys.all());
    let (after, on_target) = tokio::task::spawn_blocking(move || {
        let after = masters_of(&c, &store, &all);
        let on_target: HashMap<String, i64> = after
            .iter()
            .filter(|(_, &port)| port == to)
            .map(|(k, _)| (k.clone(), c.query(to, redis::cmd("EXISTS").arg(store.bucket_key(k))).unwrap()))
            .collect();
        (after, on_target)
    })
    .await
    .unwrap();
    // A little more load on the settled cluster, then stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let replies = cluster.error_replies();
    let count = |kind: &str| replies.get(kind).copied().unwrap_or(0);

    let errors = tally.errors.lock().unwrap().clone();
    let granted = tally.granted.lock().unwrap().clone();
    let total = tally.decisions.load(Ordering::Relaxed);
    println!(
        "reshard of {SLOTS} slots took {took:?}; {during} decisions ran during it ({total} in {elapsed:?} in all), \
         {} errors",
        errors.len()
    );
    println!(
        "redirections and retries the nodes sent: {} MOVED, {} ASK, {} TRYAGAIN",
        count("MOVED"),
        count("ASK"),
        count("TRYAGAIN")
    );
    assert!(
        errors.is_empty(),
        "{} calls failed during the reshard, first ones: {:?}",
        errors.len(),
        &errors[..5.min(errors.len())]
    );
    assert!(during > 0, "no decision ran during the reshard");
    assert!(count("MOVED") > 0, "no client was redirected: did the load reach the moved slots? {replies:?}");

    // The slots moved: 3,000 fewer on `from`, 3,000 more on `to`, and every slot `from` lost is `to`'s.
    let (from_after, to_after) = (cluster.node_at(from).slots, cluster.node_at(to).slots);
    assert_eq!(from_after.len(), before_slots.0.len() - SLOTS);
    assert_eq!(to_after.len(), before_slots.1.len() + SLOTS);
    let moved: HashSet<u16> = before_slots.0.iter().filter(|s| !from_after.contains(s)).copied().collect();
    assert!(moved.iter().all(|s| to_after.contains(s)), "a slot left {from} but did not reach {to}");

    // So did the keys in them: each key of a moved slot is on `to` now, and `to` holds its bucket.
    let moved_keys: Vec<&String> =
        before.iter().filter(|(k, &port)| port == from && after[*k] == to).map(|(k, _)| k).collect();
    for key in keys.all() {
        let slot = cluster.slot_of(&stores[0].bucket_key(&key));
        assert_eq!(moved.contains(&slot), moved_keys.contains(&&key), "{key} (slot {slot}) moved wrongly");
    }
    assert!(moved_keys.len() >= 5, "only {} keys were in the moved slots: pick more", moved_keys.len());
    for key in &moved_keys {
        assert_eq!(on_target.get(*key), Some(&1), "{key}'s bucket is not on the new master");
    }
    println!("{} of {} keys moved with their slots", moved_keys.len(), before.len());

    // Never more than capacity plus refill over the whole run, and every bucket granted something.
    let bound = CAPACITY + elapsed.as_micros() as u64 / INTERVAL_US;
    for key in keys.all() {
        let got = granted.get(&key).copied().unwrap_or(0);
        assert!(got > 0, "{key} was never granted");
        assert!(got <= bound, "{key} granted {got}, more than {bound} (capacity {CAPACITY} + refill over {elapsed:?})");
    }
}

/// One slot caught half-way through its move, step by step: a single check on a key already moved follows `ASK`; a
/// script over two keys of the slot, one moved and one not, gets `TRYAGAIN` until the slot settles and is then
/// answered, well within its timeout (redis-rs's default back-off, at least 1.28 s, outlasted it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_over_a_half_moved_slot_is_retried_until_the_slot_settles() {
    let cluster = Arc::new(tokio::task::spawn_blocking(RedisCluster::start).await.unwrap());
    let mut config: RedisConfig = config(&cluster.url());
    config.mode = RedisMode::Cluster;
    config.command_timeout = Duration::from_millis(500);
    let store = RedisStore::connect(config).unwrap();
    let policy = Policy::from_interval_us(5, 3_600_000_000).unwrap();
    let (a, b) = ("{half}a", "{half}b");
    let (key_a, key_b) = (store.bucket_key(a), store.bucket_key(b));
    let slot = cluster.slot_of(&key_a);
    assert_eq!(slot, cluster.slot_of(&key_b));
    let from = cluster.master_port_of(&key_a);
    let to = cluster.master_ports().into_iter().find(|&port| port != from).unwrap();
    for key in [a, b] {
        assert!(store.check(key, &policy, 1).await.unwrap().decision.allowed);
    }

    let c = Arc::clone(&cluster);
    let asked = tokio::task::spawn_blocking(move || {
        c.open_slot_move(slot, from, to);
        c.migrate_key(from, to, &key_a);
        c.error_replies().get("ASK").copied().unwrap_or(0)
    })
    .await
    .unwrap();
    assert_eq!(store.check(a, &policy, 1).await.unwrap().decision.remaining, 3, "a, on the new master, via ASK");
    assert!(cluster.error_replies().get("ASK").copied().unwrap_or(0) > asked, "no ASK was followed");

    let started = Instant::now();
    let both = {
        let store = store.clone();
        tokio::spawn(async move {
            let limits = [a, b].map(|key| Limit { key, policy, cost: 1 });
            store.check_all(&limits).await
        })
    };
    let c = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        while c.error_replies().get("TRYAGAIN").copied().unwrap_or(0) == 0 {
            assert!(Instant::now() < deadline, "the script over a and b was never told TRYAGAIN");
            std::thread::sleep(Duration::from_millis(2));
        }
        c.migrate_key(from, to, &store.bucket_key(b));
        c.close_slot_move(slot, to);
    })
    .await
    .unwrap();
    let out = both.await.unwrap().expect("answered once the slot settled");
    let took = started.elapsed();
    println!("the script over a half-moved slot was answered {took:?} after it was sent");
    assert!(out.allowed);
    assert_eq!(out.decisions.iter().map(|d| d.remaining).collect::<Vec<_>>(), vec![2, 3]);
    assert!(took < Duration::from_millis(500), "{took:?}");
}
