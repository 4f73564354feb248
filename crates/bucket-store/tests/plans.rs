//! Every statement that reads or writes `rate_limits` by key reaches its rows through the primary key in the plan
//! a session caches for it, even a plan chosen while the table was empty and run when it has grown.
//!
//! The store prepares each statement once per pooled session, and PostgreSQL may then reuse one generic plan for the
//! session's life. A plan that joins the keys to the table (a hash join over a sequential scan) costs nothing on an
//! empty table and a scan of every row once it has grown: that happened to `read_many.sql` and
//! `decide_all_write.sql` (docs/perf.md §11). Here each statement's text, as the store prepares it, is prepared
//! with generic plans forced, planned on an empty table, and explained again after 20,000 rows arrive.

use bucket_store::postgres::PostgresStore;
use bucket_testkit::TestSchema;
use diesel::sql_types::Text;
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

/// Each statement of the store that touches `rate_limits` by key, with arguments for one run.
///
/// Not the pruner's `prune.sql`: it runs in the background every few seconds, its DELETE joins the rows it locked
/// through the full_at index back to the table, and on a table planned as empty that join is a scan; autovacuum's
/// first ANALYZE of the growing table invalidates the cached plan. It is off the decision path, so it stays as is.
const STATEMENTS: [(&str, &str, &str); 7] = [
    ("decide", include_str!("../src/postgres/decide.sql"), "('k1', 10, 1000, 1, NULL)"),
    ("read", include_str!("../src/postgres/read.sql"), "('k1', NULL)"),
    ("read_many", include_str!("../src/postgres/read_many.sql"), "(ARRAY['k1','k2','k3'])"),
    (
        "save_batch",
        include_str!("../src/postgres/save_batch.sql"),
        "(ARRAY['k1','k2'], ARRAY[1,2], ARRAY[1,2], ARRAY[5,5], ARRAY[4000000000000000,4000000000000000])",
    ),
    ("decide_all_lock", include_str!("../src/postgres/decide_all_lock.sql"), "(ARRAY['k1','k2'], ARRAY[10,10], NULL)"),
    ("decide_all_read", include_str!("../src/postgres/decide_all_read.sql"), "(ARRAY['k1','k2'], NULL)"),
    (
        "decide_all_write",
        include_str!("../src/postgres/decide_all_write.sql"),
        "(ARRAY['k1','k2'], ARRAY[1,2], ARRAY[1,2], ARRAY[5,5])",
    ),
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
        let plan = plan(&mut conn, name, args).await;
        assert!(!plan.contains("Seq Scan on rate_limits"), "{name} scans the whole table:\n{plan}");
    }
}
