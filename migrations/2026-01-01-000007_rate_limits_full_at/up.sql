-- When each bucket is full again, so that rows of refilled buckets can be deleted (a missing row is a full bucket,
-- DESIGN §1) without a scan of the whole table: the pruner (crates/bucket-store/src/postgres/prune.rs) deletes rows
-- whose `full_at` has passed, through the index below. `full_at = last_refill_time + (capacity - tokens) * interval`
-- (bucket_core's gcra.rs); every statement of the store that writes a row sets it in the same statement, from the
-- policy it decided with.
--
-- The default 'infinity' means "never full": a row written by hand, or by an instance of an earlier version still
-- running during a rolling upgrade (it does not know the column), is never pruned for it. An earlier instance
-- that UPDATEs a row leaves its `full_at` as it was, which may then be too early: keep the pruner off
-- (BUCKET_PG_PRUNE_INTERVAL_MS=0) until every instance runs this version.
--
-- Existing rows: a row does not record its policy. Where the key has a per-key policy, `full_at` is exact. The
-- others keep 'infinity' until their next write sets it: guessing a bound here would delete the not-yet-full rows
-- of any policy slower than the guess, which over-admits. An operator who knows the slowest policy the table has
-- seen can let the pruner have the untouched old rows at once (docs/reliability.md, "Known limits of pruning"):
--   UPDATE rate_limits SET full_at = last_refill_time + INTERVAL '<slowest fill time>' WHERE full_at = 'infinity';
ALTER TABLE rate_limits ADD COLUMN full_at TIMESTAMPTZ NOT NULL DEFAULT 'infinity';

UPDATE rate_limits AS b
SET full_at = b.last_refill_time + INTERVAL '1 microsecond' * (greatest(p.capacity - b.tokens, 0) * p.interval_us)
FROM policies AS p
WHERE p.key = b.user_id;

CREATE INDEX rate_limits_full_at ON rate_limits (full_at);
