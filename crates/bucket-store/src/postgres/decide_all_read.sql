-- Several buckets decided together (postgres/all.rs), step 2 of 3: the locked rows and the instant to decide at.
--
-- Parameters: $1 keys (text[]), $2 now in µs (NULL: the server's clock_timestamp(), read once here).
-- Returns one row per key. The rows are already locked by step 1 in this transaction (FOR UPDATE only restates
-- it), so what this reads cannot change before the transaction ends.
SELECT b.user_id AS key,
       b.tokens::bigint AS tokens,
       bucket_us(b.last_refill_time) AS last_refill_us,
       b.version AS version,
       bucket_us(clock.at) AS now_us
FROM (SELECT bucket_clock($2::bigint) AS at) AS clock
JOIN rate_limits AS b ON b.user_id = ANY($1::text[])
FOR UPDATE OF b
