-- Several buckets decided together (postgres/all.rs), step 3 of 3, only when every bucket had its cost: store the
-- states bucket_core::decide_all computed, bumping each version, in one statement.
--
-- Parameters: four arrays of equal length: $1 keys, $2 tokens, $3 last_refill_us, $4 µs from last_refill until
-- the bucket is full (bucket_core::full_at minus last_refill_us, below 2^53, so the conversion is exact): `full_at`.
-- Returns each key with the version it now holds.
UPDATE rate_limits AS b
SET tokens = i.tokens,
    last_refill_time = TIMESTAMPTZ 'epoch' + i.last_refill_us * INTERVAL '1 microsecond',
    version = b.version + 1,
    full_at = TIMESTAMPTZ 'epoch' + i.last_refill_us * INTERVAL '1 microsecond' + i.fill_us * INTERVAL '1 microsecond'
FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[]) AS i(user_id, tokens, last_refill_us, fill_us)
WHERE b.user_id = i.user_id
RETURNING b.user_id AS key, b.version AS version
