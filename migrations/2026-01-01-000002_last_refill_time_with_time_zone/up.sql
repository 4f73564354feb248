-- A bucket's refill instant is an absolute point in time (PostgreSQL's clock_timestamp(), compared in µs since
-- the epoch), so it must not depend on the session's TimeZone. The seed wrote NOW() into a zone-less column; those
-- values are read as UTC. The default is dropped and restored because it cannot be converted in place.
ALTER TABLE rate_limits ALTER COLUMN last_refill_time DROP DEFAULT;
ALTER TABLE rate_limits
    ALTER COLUMN last_refill_time TYPE TIMESTAMPTZ USING last_refill_time AT TIME ZONE 'UTC';
ALTER TABLE rate_limits ALTER COLUMN last_refill_time SET DEFAULT NOW();
