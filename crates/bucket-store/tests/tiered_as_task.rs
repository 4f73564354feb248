//! `AnyStore::check_as_task`, which the HTTP decision routes call: the tiered store's synchronous checks run as a
//! task of their own (docs/perf.md §15). Exact across instances as `check` is, refusals remembered in the process
//! still answered in place, and a caller that goes away does not take the decision's write with it.

mod tiered_rig;

use std::time::{Duration, Instant};

use bucket_store::{AnyStore, CacheSettings, Source};
use tiered_rig::{per_hour, sync, Rig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_as_tasks_grant_exactly_capacity_across_two_instances() {
    let rig = Rig::new(sync()).await;
    let other = rig.another_instance(sync()).await;
    let a = AnyStore::tiered(rig.store.clone(), CacheSettings::default());
    let b = AnyStore::tiered(other, CacheSettings::default());
    let policy = per_hour(20);
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { store.check_as_task("hot", &policy, 1).await.unwrap() })
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        granted += usize::from(task.await.unwrap().decision.allowed);
    }
    assert_eq!(granted, 20);
    let row = rig.schema.row("hot").await.unwrap();
    assert_eq!((row.tokens, row.version), (0, 20), "every grant committed before its answer");
    // `a` remembered its refusals: the next one is answered in place, from the refusal cache.
    let refused = a.check_as_task("hot", &policy, 1).await.unwrap();
    assert_eq!((refused.decision.allowed, refused.source), (false, Source::RefusalCache));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_goes_away_leaves_its_check_to_finish() {
    let rig = Rig::new(sync()).await;
    let store = AnyStore::tiered(rig.store.clone(), CacheSettings::default());
    let policy = per_hour(5);
    // Polled once, then dropped, as actix drops a handler whose client disconnected: the task is on its way.
    let dropped = tokio::time::timeout(Duration::ZERO, store.check_as_task("gone", &policy, 1)).await;
    assert!(dropped.is_err(), "a new user's check cannot be answered without a round trip");
    // Without the task, nothing would ever reach PostgreSQL: the dropped future was the whole check.
    let deadline = Instant::now() + Duration::from_secs(5);
    let row = loop {
        if let Some(row) = rig.schema.row("gone").await {
            break row;
        }
        assert!(Instant::now() < deadline, "the dropped caller's check never committed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!((row.tokens, row.version), (4, 1));
    assert_eq!(rig.redis_state("gone").await.map(|(tokens, _, version)| (tokens, version)), Some((4, 1)));
}
