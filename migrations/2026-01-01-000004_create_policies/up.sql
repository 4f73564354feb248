-- Per-key limits set by an operator. Kept apart from rate_limits so that changing a policy never touches a
-- bucket's tokens, and a policy exists for a key that has no bucket yet. The checks mirror bucket_core::Policy's
-- validation (capacity fits the seed's INT tokens column, capacity × interval stays below 2^53 µs) so a row
-- written by hand that the service would reject is refused here too.
CREATE TABLE policies (
    key VARCHAR(255) PRIMARY KEY,
    capacity BIGINT NOT NULL CHECK (capacity BETWEEN 1 AND 2147483647),
    interval_us BIGINT NOT NULL CHECK (interval_us >= 1),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CHECK (interval_us <= 9007199254740992 / NULLIF(capacity, 0))
);
