//! Group commit in the tiered store's synchronous mode, against real Redis and PostgreSQL: concurrent requests
//! share write (and load) statements, each answer still comes after the commit holding its write, one key stays
//! exact across instances, and a failed batch falls back for exactly its own requests without losing a write.

mod tiered_rig;

use std::sync::Arc;
use std::time::Duration;

use bucket_core::Policy;
use bucket_store::postgres::PostgresStore;
use bucket_store::{Source, Store};
use diesel::sql_types::Integer;
use diesel::QueryableByName;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use tiered_rig::{eventually, per_hour, row_state, sync_window, Rig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sync_checks_share_statements_and_each_row_is_committed_before_its_answer() {
    const N: usize = 200;
    // The default window (1 ms) batches as well under load; a wider one keeps the count robust on a busy machine.
    let rig = Arc::new(Rig::new(sync_window(Duration::from_millis(10))).await);
    // Reads PostgreSQL on connections of its own, the moment each check returns.
    let reader = Arc::new(rig.schema.store().await);
    let policy = per_hour(5);
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let (rig, reader) = (Arc::clone(&rig), Arc::clone(&reader));
            tokio::spawn(async move {
                let key = format!("many-{i}");
                let outcome = rig.store.check(&key, &policy, 1).await.unwrap();
                let row = PostgresStore::load(&reader, &key).await.unwrap();
                (key, outcome, row)
            })
        })
        .collect();
    for task in tasks {
        let (key, outcome, row) = task.await.unwrap();
        assert!(outcome.decision.allowed, "{key}");
        assert_eq!(outcome.source, Source::NewUser, "{key}");
        let row = row.unwrap_or_else(|| panic!("{key}: answered before its row was committed"));
        assert_eq!((row.state.tokens, row.version), (4, 1), "{key}");
    }
    let stats = rig.stats();
    println!(
        "group commit: {N} concurrent new users → {} write statements, {} load statements",
        stats.postgres_write_statements, stats.postgres_load_statements
    );
    assert!(stats.postgres_write_statements <= (N / 4) as u64, "{stats:?}");
    assert!(stats.postgres_load_statements <= (N / 4) as u64, "{stats:?}");
    assert_eq!((stats.queue_depth, stats.writes_queued_while_postgres_down), (0, 0), "{stats:?}");

    // Returning users: Redis hits now, every one written before its answer again.
    let before = rig.stats().postgres_write_statements;
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let (rig, reader) = (Arc::clone(&rig), Arc::clone(&reader));
            tokio::spawn(async move {
                let key = format!("many-{i}");
                let outcome = rig.store.check(&key, &policy, 1).await.unwrap();
                (outcome, PostgresStore::load(&reader, &key).await.unwrap())
            })
        })
        .collect();
    for task in tasks {
        let (outcome, row) = task.await.unwrap();
        assert_eq!((outcome.decision.allowed, outcome.source, outcome.decision.remaining), (true, Source::Redis, 3));
        assert_eq!(row.map(|r| (r.state.tokens, r.version)), Some((3, 2)));
    }
    let statements = rig.stats().postgres_write_statements - before;
    println!("group commit: {N} concurrent returning users → {statements} write statements");
    assert!(statements <= (N / 4) as u64, "{statements}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_window_each_write_is_its_own_statement() {
    let rig = Rig::new(sync_window(Duration::ZERO)).await;
    let policy = per_hour(5);
    for i in 0..3 {
        assert!(rig.check(&format!("alone-{i}"), &policy).await.0);
    }
    let stats = rig.stats();
    assert_eq!((stats.postgres_write_statements, stats.postgres_load_statements), (3, 3), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_key_grant_exactly_capacity() {
    let rig = Rig::new(sync_window(Duration::from_millis(1))).await;
    let other = rig.another_instance(sync_window(Duration::from_millis(1))).await;
    let policy = per_hour(50);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = if i % 2 == 0 { rig.store.clone() } else { other.clone() };
        tasks.push(tokio::spawn(async move { store.check("hot", &policy, 1).await.unwrap().decision.allowed }));
    }
    let mut granted = 0;
    for task in tasks {
        granted += usize::from(task.await.unwrap());
    }
    assert_eq!(granted, 50);
    let row = rig.schema.row("hot").await.unwrap();
    assert_eq!((row.tokens, row.version), (0, 50));
    assert_eq!(rig.redis_state("hot").await, Some(row_state(&row)));
    // Writes of one bucket from two instances reach PostgreSQL out of order; none of that is a stale bucket.
    assert_eq!((rig.stats().stale_redis_buckets, other.stats().stale_redis_buckets), (0, 0));
}

/// The backend of the session holding a row lock, for finding the statements waiting for it.
#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

#[derive(QueryableByName)]
struct Waiting {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// One check per key, each on a task of its own, so that they reach the batcher together.
fn spawn_checks(rig: &Arc<Rig>, keys: &[String], policy: Policy) -> Vec<tokio::task::JoinHandle<(bool, Source, u64)>> {
    keys.iter()
        .map(|key| {
            let (rig, key) = (Arc::clone(rig), key.clone());
            tokio::spawn(async move { rig.check(&key, &policy).await })
        })
        .collect()
}

/// A batch whose statement fails (here: it waits for a row lock past the statement timeout) falls back, for
/// exactly the requests it holds: they are answered from Redis and their writes queued, while a batch committed
/// meanwhile is untouched. When PostgreSQL can take them, the queued writes land; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_falls_back_for_exactly_its_own_requests_and_loses_nothing() {
    // Wide enough that no batch closes by its window while the locked one holds a statement slot.
    let window = Duration::from_millis(200);
    let rig = Arc::new(Rig::with_statement_timeout(sync_window(window), Duration::from_secs(2)).await);
    let policy = per_hour(5);
    let failing: Vec<String> = ["k-locked", "a-1", "a-2", "a-3"].map(str::to_owned).into();
    let passing: Vec<String> = ["b-1", "b-2", "b-3"].map(str::to_owned).into();
    for key in failing.iter().chain(&passing) {
        assert_eq!(rig.check(key, &policy).await, (true, Source::NewUser, 4), "{key}");
    }

    // Another session locks one row of the first batch, so that batch's statement waits and then times out.
    let mut locker = rig.schema.sql().await;
    locker.batch_execute("BEGIN; SELECT 1 FROM rate_limits WHERE user_id = 'k-locked' FOR UPDATE").await.unwrap();
    let locker_pid = diesel::sql_query("SELECT pg_backend_pid() AS pid").get_result::<Pid>(&mut locker).await;
    let locker_pid = locker_pid.unwrap().pid;
    let first = spawn_checks(&rig, &failing, policy);
    // The first batch is on its way once its statement waits for the lock.
    let mut probe = rig.schema.sql().await;
    let blocked = format!("SELECT count(*) AS n FROM pg_stat_activity WHERE {locker_pid} = ANY(pg_blocking_pids(pid))");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while diesel::sql_query(&blocked).get_result::<Waiting>(&mut probe).await.unwrap().n == 0 {
        assert!(std::time::Instant::now() < deadline, "the first batch never reached the locked row");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // A second batch, gathered while the first waits, commits and answers normally.
    let second = spawn_checks(&rig, &passing, policy);
    for (key, task) in passing.iter().zip(second) {
        assert_eq!(task.await.unwrap(), (true, Source::Redis, 3), "{key}");
        let row = rig.schema.row(key).await.unwrap();
        assert_eq!((row.tokens, row.version), (3, 2), "{key}: committed before its answer");
    }
    assert_eq!(rig.stats().writes_queued_while_postgres_down, 0, "the second batch fell back");

    // The first batch times out: its requests are still answered (Redis decided), their writes queued.
    for (key, task) in failing.iter().zip(first) {
        assert_eq!(task.await.unwrap(), (true, Source::Redis, 3), "{key}");
    }
    // A batch closes as soon as a statement slot is free, so the failing keys may have gone in one batch or in
    // several: exactly the batch holding the locked row failed, and exactly its writes were queued.
    let stats = rig.stats();
    let mut unwritten = Vec::new();
    for key in &failing {
        let version = rig.schema.row(key).await.unwrap().version;
        assert!(version == 1 || version == 2, "{key}: version {version}");
        if version == 1 {
            unwritten.push(key.clone());
        }
    }
    assert!(unwritten.contains(&"k-locked".to_owned()), "the locked row's batch wrote nothing: {unwritten:?}");
    assert_eq!(stats.writes_queued_while_postgres_down, unwritten.len() as u64, "{stats:?} {unwritten:?}");

    locker.batch_execute("ROLLBACK").await.unwrap();
    eventually(Duration::from_secs(10), "the queued writes reached PostgreSQL", || rig.stats().queue_depth == 0).await;
    for key in failing.iter().chain(&passing) {
        let row = rig.schema.row(key).await.unwrap();
        assert_eq!((row.tokens, row.version), (3, 2), "{key}");
        assert_eq!(rig.redis_state(key).await, Some(row_state(&row)), "{key}");
    }
}
