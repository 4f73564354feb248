ALTER TABLE rate_limits ALTER COLUMN last_refill_time DROP DEFAULT;
ALTER TABLE rate_limits
    ALTER COLUMN last_refill_time TYPE TIMESTAMP USING last_refill_time AT TIME ZONE 'UTC';
ALTER TABLE rate_limits ALTER COLUMN last_refill_time SET DEFAULT NOW();
