-- The seed service's table, exactly as it defined it. Later migrations extend it; this one is never edited.
CREATE TABLE rate_limits (
    user_id VARCHAR(255) PRIMARY KEY,
    tokens INT NOT NULL,
    last_refill_time TIMESTAMP NOT NULL DEFAULT NOW()
);
