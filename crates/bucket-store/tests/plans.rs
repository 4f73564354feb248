//! Every statement that reads or writes `rate_limits` by key reaches its rows through the primary key in the plan
//! a session caches for it, even a plan chosen while the table was empty and run when it has grown.
//!
//! The store prepares each statement once per pooled session, and PostgreSQL may then reuse one generic plan for the
//! session's life. A plan that joins the keys to the table (a hash join over a sequential scan) costs nothing on an
//! empty table and a scan of every row once it has grown: that happened to `read_many.sql` and
//! `decide_all_write.sql` (docs/perf.md §11). Here each statement's text, as the store prepares it, is prepared
//! with generic plans forced, planned on an empty table, and explained again after 20,000 rows arrive (the pruner's
//! DELETE, which is planned on each run, with a plan made then).

use bucket_store::postgres::PostgresStore;
use bucket_testkit::TestSchema;
use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

/// Each statement of the store that touches `rate_limits` by key, with arguments for one run. The pool's sessions
/// force generic plans (postgres/session.rs), so these are the plans every check runs.
const STATEMENTS: [(&str, &str, &str); 9] = [
    ("decide", include_str!("../src/postgres/decide.sql"), "('k1', 10, 1000, 1, NULL)"),
    ("read", include_str!("../src/postgres/read.sql"), "('k1', NULL)"),
    ("read_many", include_str!("../src/postgres/read_many.sql"), "(ARRAY['k1','k2','k3'])"),
    (
        "save_batch",
        include_str!("../src/postgres/save_batch.sql"),
        "(ARRAY['k1','k2'], ARRAY[1,2], ARRAY[1,2], ARRAY[5,5], ARRAY[4000000000000000,4000000000000000])",
    ),
    (
        "save_answered",
        include_str!("../src/postgres/save_answered.sql"),
        "(ARRAY['k1','k2'], ARRAY[1,2], ARRAY[1,2], ARRAY[5,5], ARRAY[4000000000000000,4000000000000000])",
    ),
    ("decide_all_lock", include_str!("../src/postgres/decide_all_lock.sql"), "(ARRAY['k1','k2'], ARRAY[10,10], NULL)"),
    ("decide_all_read", include_str!("../src/postgres/decide_all_read.sql"), "(ARRAY['k1','k2'], NULL)"),
    (
        "decide_all_write",
        include_str!("../src/postgres/decide_all_write.sql"),
        "(ARRAY['k1','k2'], ARRAY[1,2], ARRAY[1,2], ARRAY[5,5])",
    ),
    // The pruner: its doomed rows come from the full_at index, and the DELETE must find them by key, not by a
    // join that scans the table.
    ("prune", include_str!("../src/postgres/prune.sql"), "(100, NULL)"),
];

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text)]
    #[diesel(column_name = "QUERY PLAN")]
    line: String,
}

async fn plan(conn: &mut AsyncPgConnection, name: &str, args: &str) -> String {
    let lines: Vec<PlanLine> =
        diesel::sql_query(format!("EXPLAIN EXECUTE {name}{args}")).load(conn).await.expect("explain");
    lines.into_iter().map(|l| l.line).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn cached_plans_reach_rows_by_key_after_the_table_grows() {
    let schema = TestSchema::new();
    let _store: PostgresStore = schema.store().await; // applies the migrations
    let mut conn = schema.sql().await;
    conn.batch_execute("SET plan_cache_mode = force_generic_plan").await.unwrap();
    for (name, sql, args) in STATEMENTS {
        conn.batch_execute(&format!("PREPARE {name} AS {sql}")).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        // Planned (and cached) while the table is empty.
        plan(&mut conn, name, args).await;
    }
    conn.batch_execute(
        "INSERT INTO rate_limits (user_id, tokens, last_refill_time, version, full_at) \
         SELECT 'u' || g, 1, now(), 1, now() + INTERVAL '1 hour' FROM generate_series(1, 20000) AS g",
    )
    .await
    .unwrap();
    for (name, _, args) in STATEMENTS {
        // The pruner plans its statement on each run (postgres/prune.rs), for the table as it is then: planned on
        // the empty table, its DELETE can be a sequential scan whichever way it names the rows. Every other
        // statement runs the generic plan made while the table was empty.
        let mode = if name == "prune" { "force_custom_plan" } else { "force_generic_plan" };
        conn.batch_execute(&format!("SET plan_cache_mode = {mode}")).await.unwrap();
        let plan = plan(&mut conn, name, args).await;
        assert!(!plan.contains("Seq Scan on rate_limits"), "{name} scans the whole table:\n{plan}");
    }
}

#[derive(QueryableByName)]
struct Updates {
    #[diesel(sql_type = BigInt)]
    upd: i64,
    #[diesel(sql_type = BigInt)]
    hot: i64,
}

/// A key's repeated writes update its row in place (HOT: no new index entries, nothing for VACUUM to clean from
/// the indexes), because the `full_at` a row stores moves only once per 10 s (migration `full_at_granularity`).
/// With the exact instant stored, every write changed an indexed column, and none was in place.
#[tokio::test]
async fn repeated_writes_of_a_key_update_its_row_in_place() {
    let schema = TestSchema::new();
    let _store: PostgresStore = schema.store().await; // applies the migrations
    let mut conn = schema.sql().await;
    let decide = include_str!("../src/postgres/decide.sql");
    let save = include_str!("../src/postgres/save_batch.sql");
    conn.batch_execute(&format!("PREPARE decide AS {decide}; PREPARE save AS {save}")).await.unwrap();
    // Counters of this transaction only (pg_stat_xact_user_tables), so other tests and the stats delay do not
    // matter. 40 checks 100 ms apart from a whole 10 s (1.8e9 s): each finds the bucket (capacity 1000, one
    // token per ms) full again, and is full 1 ms after it, all within one 10 s step.
    conn.batch_execute("BEGIN").await.unwrap();
    for step in 0..40u64 {
        let now = 1_800_000_000_000_000 + step * 100_000;
        conn.batch_execute(&format!("EXECUTE decide('hot', 1000, 1000, 1, {now})")).await.unwrap();
    }
    // The tiered store's writes of the same key, versions counting up from the row's (40), full within the same
    // 10 s step (at 1.8e9 s + 4.005 s), which is still ahead of the server's real clock, so they are written.
    for version in 41..=60u64 {
        let args = format!("(ARRAY['hot'], ARRAY[1], ARRAY[1800000004000000], ARRAY[{version}], ARRAY[5000])");
        conn.batch_execute(&format!("EXECUTE save{args}")).await.unwrap();
    }
    let counts: Updates = diesel::sql_query(
        "SELECT n_tup_upd AS upd, n_tup_hot_upd AS hot FROM pg_stat_xact_user_tables \
         WHERE schemaname = current_schema() AND relname = 'rate_limits'",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    conn.batch_execute("COMMIT").await.unwrap();
    assert_eq!(counts.upd, 39 + 20, "every write after the first updated the row");
    assert_eq!(counts.hot, counts.upd, "every update was in place");
}

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    value: String,
}

async fn synchronous_commit(conn: &mut AsyncPgConnection) -> String {
    let row: Setting =
        diesel::sql_query("SELECT current_setting('synchronous_commit') AS value").get_result(conn).await.unwrap();
    row.value
}

/// `save_answered.sql` (write-behind's flushes, replays) turns `synchronous_commit` off for its own transaction,
/// and `save_batch.sql` (the synchronous mode's group commit) leaves the server's setting: read back inside an
/// explicit transaction, where the statement's local setting lasts until the end, and gone after it.
#[tokio::test]
async fn answered_writes_commit_without_waiting_for_the_wal_and_others_keep_the_servers_setting() {
    let schema = TestSchema::new();
    let _store: PostgresStore = schema.store().await; // applies the migrations
    let mut conn = schema.sql().await;
    let answered = include_str!("../src/postgres/save_answered.sql");
    let batch = include_str!("../src/postgres/save_batch.sql");
    conn.batch_execute(&format!("PREPARE answered AS {answered}; PREPARE batch AS {batch}")).await.unwrap();
    let server = synchronous_commit(&mut conn).await;
    assert_ne!(server, "off", "the test needs a server that waits for the WAL");
    for (statement, expected) in [("answered", "off"), ("batch", server.as_str())] {
        conn.batch_execute("BEGIN").await.unwrap();
        let args = "(ARRAY['w'], ARRAY[1], ARRAY[4000000000000000], ARRAY[1], ARRAY[5000])";
        conn.batch_execute(&format!("EXECUTE {statement}{args}")).await.unwrap();
        assert_eq!(synchronous_commit(&mut conn).await, expected, "{statement}");
        conn.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(synchronous_commit(&mut conn).await, server, "local to the transaction");
    }
}
