-- Several buckets as stored, in one statement: the Redis misses of concurrent requests, gathered by the tiered
-- store (tiered/group_commit.rs). read.sql for many keys, without the clock, which loading does not need.
--
-- Parameters: $1 the keys. One row per key that has a row; a key without one is a full bucket and is not returned.
-- This statement decides nothing.
--
-- Each key is looked up through the primary key, one probe per key (LATERAL ... LIMIT 1 keeps PostgreSQL from
-- turning the look-ups into a join): a prepared statement's cached plan is chosen once, often while the table is
-- still small, and a join or `= ANY` plan chosen then can become a scan of the whole table as it grows (seen:
-- every read_many.sql of a benchmark was a sequential scan, docs/perf.md §11).
SELECT b.user_id AS key,
       b.tokens::bigint AS tokens,
       bucket_us(b.last_refill_time) AS last_refill_us,
       b.version AS version
FROM unnest($1::text[]) AS k(user_id)
CROSS JOIN LATERAL (SELECT * FROM rate_limits AS r WHERE r.user_id = k.user_id LIMIT 1) AS b
