-- Writes states decided elsewhere (by Redis, in the tiered store), guarded so an older state never overwrites a
-- newer one. One statement for the whole batch.
--
-- Parameters: five arrays of equal length, one entry per key: $1 keys, $2 tokens, $3 last_refill_us, $4 versions,
-- $5 µs from last_refill until the bucket is full (bucket_core::full_at minus last_refill_us, below 2^53): the
-- row's `full_at`, which the pruner reads (postgres/prune.rs).
-- Returns nothing; the affected-row count is the number of rows written.
--
-- The guard is in the DO UPDATE's WHERE, which PostgreSQL evaluates on the locked, newest version of the row:
-- a concurrent decision (decide.sql, which bumps the version) and this write serialise on the row lock, and the
-- lower version loses whatever the order. A key that appears twice in a batch would make ON CONFLICT touch one
-- row twice, which PostgreSQL refuses, so DISTINCT ON keeps only the highest version of each key. The rows are
-- then written in key order, the same order in every batch, so two concurrent batches cannot deadlock.
--
-- A state that is already full when this statement runs is not written at all: a full bucket is the same as no
-- row, and the pruner would only delete it again. This matters for a late write from before the row was pruned
-- and created again with versions counting from 0 (postgres/prune.rs explains why such a write is always full):
-- written, its higher version would make the new row's next writes lose to a full bucket. Within one run of
-- versions, under one policy, full_at only grows with the version, so a state that is full here replaces only a
-- row that is full too: leaving that row as it is changes no decision.
INSERT INTO rate_limits AS b (user_id, tokens, last_refill_time, version, full_at)
SELECT DISTINCT ON (i.user_id)
       i.user_id, i.tokens, TIMESTAMPTZ 'epoch' + i.last_refill_us * INTERVAL '1 microsecond', i.version,
       TIMESTAMPTZ 'epoch' + i.last_refill_us * INTERVAL '1 microsecond' + i.fill_us * INTERVAL '1 microsecond'
FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[], $5::bigint[])
     AS i(user_id, tokens, last_refill_us, version, fill_us)
WHERE TIMESTAMPTZ 'epoch' + i.last_refill_us * INTERVAL '1 microsecond' + i.fill_us * INTERVAL '1 microsecond'
      > clock_timestamp()
ORDER BY i.user_id, i.version DESC
ON CONFLICT (user_id) DO UPDATE
SET tokens = EXCLUDED.tokens, last_refill_time = EXCLUDED.last_refill_time, version = EXCLUDED.version,
    full_at = EXCLUDED.full_at
WHERE b.version < EXCLUDED.version
