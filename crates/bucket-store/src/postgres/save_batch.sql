-- Writes states decided elsewhere (by Redis, in the tiered store), guarded so an older state never overwrites a
-- newer one. One statement for the whole batch.
--
-- Parameters: five arrays of equal length, one entry per write: $1 keys, $2 tokens, $3 last_refill_us,
-- $4 versions, $5 µs from last_refill until the bucket is full (bucket_core::full_at minus last_refill_us, below
-- 2^53): the row's `full_at`, which the pruner reads (postgres/prune.rs), stored rounded up to whole 10 s
-- (bucket_prunable_at, so that most writes update the row in place); the "already full" test below uses the exact one.
-- Returns one row per write whose state was not full (see below), by its 1-based position `n` in the arrays:
-- `written` when its key's row now holds the batch's state, false when the row already held that version or a
-- newer one (the guard refused it). A key's lower versions in the same batch share its newest write's answer. A
-- write that is not returned was full, and skipped. The tiered store reads a refusal as "Redis's bucket may be older than
-- PostgreSQL's row" (tiered/stale.rs).
--
-- The commit waits for the WAL as the server's `synchronous_commit` says: the synchronous mode's group commit
-- answers only after its write is durable. Writes of decisions already answered go through save_answered.sql.
--
-- The guard is in the DO UPDATE's WHERE, which PostgreSQL evaluates on the locked, newest version of the row:
-- a concurrent decision (decide.sql, which bumps the version) and this write serialise on the row lock, and the
-- lower version loses whatever the order. RETURNING lists only the rows inserted or updated, after that
-- evaluation, so `written` is exact even under concurrency (a row read outside the INSERT would be read from the
-- statement's snapshot, which may predate the row that refused it). A key that appears twice in a batch would
-- make ON CONFLICT touch one row twice, which PostgreSQL refuses, so DISTINCT ON keeps only the highest version of
-- each key. The rows are then written in key order, the same order in every batch, so two concurrent batches
-- cannot deadlock.
--
-- A state that is already full when this statement runs is not written at all: a full bucket is the same as no
-- row, and the pruner would only delete it again. This matters for a late write from before the row was pruned
-- and created again with versions counting from 0 (postgres/prune.rs explains why such a write is always full):
-- written, its higher version would make the new row's next writes lose to a full bucket. Within one run of
-- versions, under one policy, full_at only grows with the version, so a state that is full here replaces only a
-- row that is full too: leaving that row as it is changes no decision. The test is evaluated once per write, in
-- `input`, so that the INSERT and the answer agree on which writes were full.
WITH input AS MATERIALIZED (
    SELECT i.n, i.user_id, i.tokens, i.version,
           TIMESTAMPTZ 'epoch' + i.last_refill_us * INTERVAL '1 microsecond' AS last_refill_time,
           TIMESTAMPTZ 'epoch' + i.last_refill_us * INTERVAL '1 microsecond' + i.fill_us * INTERVAL '1 microsecond'
               AS full_at
    FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[], $5::bigint[]) WITH ORDINALITY
         AS i(user_id, tokens, last_refill_us, version, fill_us, n)
),
open AS MATERIALIZED (
    SELECT * FROM input WHERE full_at > clock_timestamp()
),
newest AS MATERIALIZED (
    SELECT DISTINCT ON (o.user_id) o.* FROM open AS o ORDER BY o.user_id, o.version DESC
),
written AS (
    INSERT INTO rate_limits AS b (user_id, tokens, last_refill_time, version, full_at)
    SELECT w.user_id, w.tokens, w.last_refill_time, w.version, bucket_prunable_at(w.full_at)
    FROM newest AS w ORDER BY w.user_id
    ON CONFLICT (user_id) DO UPDATE
    SET tokens = EXCLUDED.tokens, last_refill_time = EXCLUDED.last_refill_time, version = EXCLUDED.version,
        full_at = EXCLUDED.full_at
    WHERE b.version < EXCLUDED.version
    RETURNING b.user_id
)
SELECT o.n AS n, w.user_id IS NOT NULL AS written
FROM open AS o
JOIN newest AS c ON c.user_id = o.user_id
LEFT JOIN written AS w ON w.user_id = o.user_id
