-- A bucket as stored, and the instant it was read: for peek, load, and describing a refused check.
--
-- Parameters: $1 key, $2 now in µs since the epoch (NULL: the server's clock_timestamp(), the same clock the
-- decision uses). Always one row; the bucket's columns are NULL when the key has no row (a full bucket).
-- This statement decides nothing: a refused check was already decided, atomically, by decide.sql.
SELECT b.tokens::bigint AS tokens,
       bucket_us(b.last_refill_time) AS last_refill_us,
       b.version AS version,
       bucket_us(clock.at) AS now_us
FROM (SELECT bucket_clock($2::bigint) AS at) AS clock
LEFT JOIN rate_limits AS b ON b.user_id = $1
