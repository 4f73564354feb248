-- The `full_at` a row stores is the instant its bucket is full rounded UP to the next whole 10 seconds, so that most
-- writes leave it unchanged and PostgreSQL can update the row in place (a HOT update: no new entry in either index).
--
-- Why: `full_at` is indexed for the pruner. PostgreSQL updates a row in place only when no indexed column changes;
-- with the exact instant every allowed decision moved `full_at`, so every write added an entry to the primary key
-- and to the `full_at` index (measured: no HOT update at all under load). Rounded, a key's `full_at` changes about
-- once per 10 s of its life, whatever its request rate (docs/perf.md §13).
--
-- Why it is safe: the rounded instant is never earlier than the exact one, so a row the pruner deletes
-- (`full_at <= now`) is still full when it is deleted; and rounding up preserves order, so "under one policy
-- full_at only grows with the version" (the argument against late writes, postgres/prune.rs) still holds. The
-- cost: a refilled row is forgotten up to 10 s later than before. Statements that need the exact instant (the
-- "already full" test of save_batch.sql) compute it and do not read the column.
CREATE FUNCTION bucket_prunable_at(full_at timestamptz) RETURNS timestamptz LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT TIMESTAMPTZ 'epoch' + ((bucket_us(full_at) + 9999999) / 10000000 * 10000000) * INTERVAL '1 microsecond'
$$;
