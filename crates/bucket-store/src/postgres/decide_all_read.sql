-- Several buckets decided together (postgres/all.rs), step 2 of 3: the locked rows and the instant to decide at.
--
-- Parameters: $1 keys (text[]), $2 now in µs (NULL: the server's clock_timestamp(), read once here).
-- Returns one row per key. The rows are already locked by step 1 in this transaction (FOR UPDATE only restates
-- it), so what this reads cannot change before the transaction ends.
--
-- Each key is looked up through the primary key, one probe per key (LATERAL ... LIMIT 1 keeps PostgreSQL from
-- turning the look-ups into a join): a prepared statement's cached plan is chosen once, often while the table is
-- still small, and a join or `= ANY` plan chosen then can become a scan of the whole table as it grows (seen:
-- every read_many.sql of a benchmark was a sequential scan, docs/perf.md §11).
SELECT b.user_id AS key,
       b.tokens::bigint AS tokens,
       bucket_us(b.last_refill_time) AS last_refill_us,
       b.version AS version,
       bucket_us(clock.at) AS now_us
FROM (SELECT bucket_clock($2::bigint) AS at) AS clock
CROSS JOIN unnest($1::text[]) AS k(user_id)
CROSS JOIN LATERAL (SELECT * FROM rate_limits AS r WHERE r.user_id = k.user_id LIMIT 1 FOR UPDATE) AS b
