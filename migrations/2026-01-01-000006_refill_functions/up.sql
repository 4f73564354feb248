-- The time arithmetic of decide.sql and read.sql, stated once. Timestamps are converted to whole µs since the epoch
-- (bigint): every value stays below 2^53 (bucket_core::MAX_FILL_TIME_US), so the conversions are exact.
--
-- Plain SQL functions of one expression, without SET clauses, so the planner inlines them: the statements run
-- exactly as if the expressions were written out. STABLE, not IMMUTABLE, because extract() on a timestamptz is
-- STABLE, and an IMMUTABLE function over a STABLE expression would not be inlined.

-- `t` in µs since the epoch.
CREATE FUNCTION bucket_us(t timestamptz) RETURNS bigint LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT floor(extract(epoch FROM t) * 1000000)::bigint
$$;

-- The instant `us` µs after the epoch, or the server's clock when `us` is NULL (production).
CREATE FUNCTION bucket_clock(us bigint) RETURNS timestamptz LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT coalesce(TIMESTAMPTZ 'epoch' + us * INTERVAL '1 microsecond', clock_timestamp())
$$;

-- µs from `since` to `now`, never negative: a clock behind the row mints nothing.
CREATE FUNCTION bucket_elapsed_us(since timestamptz, now timestamptz) RETURNS bigint LANGUAGE sql STABLE
PARALLEL SAFE AS $$
    SELECT greatest(bucket_us(now) - bucket_us(since), 0)
$$;
