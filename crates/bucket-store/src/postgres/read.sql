-- A bucket as stored, and the instant it was read: for peek, load, and describing a refused check.
--
-- Parameters: $1 key, $2 now in µs since the epoch (NULL: the server's clock_timestamp(), the same clock the
-- decision uses). Always one row; the bucket's columns are NULL when the key has no row (a full bucket).
-- This statement decides nothing: a refused check was already decided, atomically, by decide.sql.
SELECT b.tokens::bigint AS tokens,
       floor(extract(epoch FROM b.last_refill_time) * 1000000)::bigint AS last_refill_us,
       b.version AS version,
       floor(extract(epoch FROM clock.at) * 1000000)::bigint AS now_us
FROM (SELECT coalesce(TIMESTAMPTZ 'epoch' + $2::bigint * INTERVAL '1 microsecond', clock_timestamp()) AS at) AS clock
LEFT JOIN rate_limits AS b ON b.user_id = $1
