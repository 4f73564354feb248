-- Orders the writes of one bucket across tiers: every allowed decision increments it, and a write carrying a
-- version not above the stored one is discarded, so an older state never overwrites a newer one. Rows the seed
-- created start at 0, below any version a decision produces.
ALTER TABLE rate_limits ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
