-- Deletes up to $1 rows whose bucket is full (postgres/prune.rs explains why that is safe).
--
-- Parameters: $1 most rows to delete, $2 now in µs since the epoch (NULL in production: the server's
-- clock_timestamp(); a value only in tests).
-- Returns nothing; the affected-row count is the number of rows deleted.
--
-- `doomed` reads the clock once (an InitPlan, so the index on full_at bounds the scan) and locks its rows in
-- full_at order, skipping rows another session holds: a check deciding a row right now keeps it, and this batch
-- moves on. Under READ COMMITTED, FOR UPDATE re-evaluates `full_at <= …` on the newest committed version of each
-- row it locks, so a row a check refilled and spent after this statement's snapshot is skipped too. The DELETE
-- then checks fullness again on the row it holds, on the clock as it reads at that moment (later, never earlier):
-- no row that is not full is ever deleted.
--
-- The DELETE reaches the locked rows through the primary key (`= ANY` of the array of their keys), not through a
-- join with `doomed`. Unlike the decision path's statements, this one is planned on every run (prune.rs): planned
-- once on a table PostgreSQL believes empty, both forms scan the whole table ever after (tests/plans.rs).
WITH clock AS MATERIALIZED (
    SELECT bucket_clock($2::bigint) AS at
),
doomed AS (
    SELECT b.user_id
    FROM rate_limits AS b
    WHERE b.full_at <= (SELECT at FROM clock)
    ORDER BY b.full_at
    LIMIT $1
    FOR UPDATE OF b SKIP LOCKED
)
DELETE FROM rate_limits AS b
WHERE b.user_id = ANY (ARRAY(SELECT d.user_id FROM doomed AS d))
  AND b.full_at <= bucket_clock($2::bigint)
