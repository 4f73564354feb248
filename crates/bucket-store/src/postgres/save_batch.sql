-- Writes states decided elsewhere (by Redis, in the tiered store), guarded so an older state never overwrites a
-- newer one. One statement for the whole batch.
--
-- Parameters: four arrays of equal length, one entry per key: $1 keys, $2 tokens, $3 last_refill_us, $4 versions.
-- Returns nothing; the affected-row count is the number of rows written.
--
-- The guard is in the DO UPDATE's WHERE, which PostgreSQL evaluates on the locked, newest version of the row:
-- a concurrent decision (decide.sql, which bumps the version) and this write serialise on the row lock, and the
-- lower version loses whatever the order. A key that appears twice in a batch would make ON CONFLICT touch one
-- row twice, which PostgreSQL refuses, so DISTINCT ON keeps only the highest version of each key. The rows are
-- then written in key order, the same order in every batch, so two concurrent batches cannot deadlock.
INSERT INTO rate_limits AS b (user_id, tokens, last_refill_time, version)
SELECT DISTINCT ON (i.user_id)
       i.user_id, i.tokens, TIMESTAMPTZ 'epoch' + i.last_refill_us * INTERVAL '1 microsecond', i.version
FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[]) AS i(user_id, tokens, last_refill_us, version)
ORDER BY i.user_id, i.version DESC
ON CONFLICT (user_id) DO UPDATE
SET tokens = EXCLUDED.tokens, last_refill_time = EXCLUDED.last_refill_time, version = EXCLUDED.version
WHERE b.version < EXCLUDED.version
