-- Sets the per-key policy of $1 (capacity $2, µs per token $3); the bucket's tokens are untouched.
INSERT INTO policies (key, capacity, interval_us, updated_at) VALUES ($1, $2, $3, clock_timestamp())
ON CONFLICT (key) DO UPDATE
SET capacity = EXCLUDED.capacity, interval_us = EXCLUDED.interval_us, updated_at = EXCLUDED.updated_at
