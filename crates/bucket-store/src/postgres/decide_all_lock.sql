-- Several buckets decided together (postgres/all.rs), step 1 of 3: lock every row of the request, creating the
-- missing ones as full buckets, in key order.
--
-- Parameters: $1 keys (text[], distinct), $2 their capacities (bigint[]), $3 now in µs (NULL: the server's clock).
-- Returns the keys whose row this statement inserted (new users).
--
-- Inside the request's transaction. ON CONFLICT DO UPDATE locks the conflicting row even though its WHERE is false
-- (so nothing is updated), and an inserted row is this transaction's until it ends, so when the statement returns,
-- every row of the request exists and is held until COMMIT or ROLLBACK. The rows are taken in key order, as
-- save_batch.sql takes them, and decide.sql holds one row at a time: two requests sharing keys wait for each other
-- in one order and cannot deadlock. A created row is full (`full_at` = its refill instant) until step 3 writes it;
-- nobody else sees it before COMMIT, so the pruner cannot delete it in between. A refused request rolls back, so the rows created here vanish with it.
INSERT INTO rate_limits AS b (user_id, tokens, last_refill_time, version, full_at)
SELECT i.user_id, i.capacity::int, clock.at, 0, clock.at
FROM unnest($1::text[], $2::bigint[]) AS i(user_id, capacity), (SELECT bucket_clock($3::bigint) AS at) AS clock
ORDER BY i.user_id
ON CONFLICT (user_id) DO UPDATE SET version = b.version WHERE false
RETURNING b.user_id AS key
