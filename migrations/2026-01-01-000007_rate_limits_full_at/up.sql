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
-- Existing rows: a row does not record its policy. Where the key has a per-key policy, `full_at` is exact. For
-- the others it is seven days after the row's last refill, which is at or after the true instant for every policy
-- that refills from empty within seven days (the stored tokens are never below zero). A deployment that ran a
-- policy slower than that should raise the bound below before migrating.
ALTER TABLE rate_limits ADD COLUMN full_at TIMESTAMPTZ NOT NULL DEFAULT 'infinity';

UPDATE rate_limits AS b
SET full_at = coalesce(
    (SELECT b.last_refill_time + INTERVAL '1 microsecond' * (greatest(p.capacity - b.tokens, 0) * p.interval_us)
     FROM policies AS p
     WHERE p.key = b.user_id),
    b.last_refill_time + INTERVAL '7 days'
);

CREATE INDEX rate_limits_full_at ON rate_limits (full_at);
