DROP INDEX rate_limits_full_at;
ALTER TABLE rate_limits DROP COLUMN full_at;
