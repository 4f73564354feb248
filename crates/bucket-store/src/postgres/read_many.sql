-- Several buckets as stored, in one statement: the Redis misses of concurrent requests, gathered by the tiered
-- store (tiered/group_commit.rs). read.sql for many keys, without the clock, which loading does not need.
--
-- Parameters: $1 the keys. One row per key that has a row; a key without one is a full bucket and is not returned.
-- This statement decides nothing.
SELECT b.user_id AS key,
       b.tokens::bigint AS tokens,
       bucket_us(b.last_refill_time) AS last_refill_us,
       b.version AS version
FROM rate_limits AS b
WHERE b.user_id = ANY($1::text[])
