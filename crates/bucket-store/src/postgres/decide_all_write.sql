-- Several buckets decided together (postgres/all.rs), step 3 of 3, only when every bucket had its cost: store the
-- states bucket_core::decide_all computed, bumping each version, in one statement.
--
-- Parameters: four arrays of equal length: $1 keys, $2 tokens, $3 last_refill_us, $4 µs from last_refill until
-- the bucket is full (bucket_core::full_at minus last_refill_us, below 2^53, so the conversion is exact): `full_at`,
-- stored rounded up to whole 10 s (bucket_prunable_at: most writes then update the row in place).
-- Returns each key with the version it now holds.
--
-- Written as an upsert although every row exists (step 1 created and locked it): ON CONFLICT finds each row
-- through the primary key whatever the plan, where `UPDATE ... FROM unnest(...)` let a cached plan chosen while
-- the table was small join by scanning the whole table (a hash join over a sequential scan, measured at 27 ms on
-- 100,000 rows). The keys are distinct (postgres/all.rs), so no row is touched twice; the INSERT branch never runs
-- in practice, and would write version 1, the version the UPDATE would have given a row of version 0.
INSERT INTO rate_limits AS b (user_id, tokens, last_refill_time, version, full_at)
SELECT i.user_id,
       i.tokens,
       TIMESTAMPTZ 'epoch' + i.last_refill_us * INTERVAL '1 microsecond',
       1,
       bucket_prunable_at(TIMESTAMPTZ 'epoch' + i.last_refill_us * INTERVAL '1 microsecond'
                          + i.fill_us * INTERVAL '1 microsecond')
FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[]) AS i(user_id, tokens, last_refill_us, fill_us)
ORDER BY i.user_id
ON CONFLICT (user_id) DO UPDATE
SET tokens = EXCLUDED.tokens,
    last_refill_time = EXCLUDED.last_refill_time,
    version = b.version + 1,
    full_at = EXCLUDED.full_at
RETURNING b.user_id AS key, b.version AS version
