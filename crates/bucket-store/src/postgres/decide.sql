-- One check, decided atomically: refill, and take $4 tokens if they are there, in ONE statement.
--
-- Parameters: $1 key, $2 capacity, $3 interval_us (µs per token), $4 cost, $5 now in µs since the epoch
-- (NULL in production: the server's clock_timestamp(); a value only in the shared case-table test).
-- Returns one row (the state after an allowed check) or none (refused: nothing was written).
--
-- Why this is atomic. INSERT … ON CONFLICT DO UPDATE locks the conflicting row and, under READ COMMITTED, evaluates
-- the DO UPDATE's SET and WHERE against the newest committed version of that row, after waiting for any
-- concurrent writer to finish. Every bucket value below is read from the row itself (b.tokens, b.last_refill_time),
-- never from an earlier SELECT or CTE, whose snapshot would be stale: two concurrent checks therefore serialise
-- on the row lock and the second one re-decides on what the first one left. (A CTE that reads the bucket and an
-- UPDATE that writes it over-admits: it was measured granting 11 to 15 of a capacity of 10 under 30 parallel sessions.)
-- A key
-- that does not exist yet is created by the INSERT in the same statement, and the primary key makes two creators
-- of one key conflict, so the loser takes the DO UPDATE path against the winner's row.
--
-- The math is bucket_core's src/refill.rs, in integer µs (bigint; every value stays below 2^53, see
-- bucket_core::MAX_FILL_TIME_US, so the µs ⇄ timestamptz conversions are exact; they are the functions
-- bucket_us, bucket_clock and bucket_elapsed_us of the migration refill_functions, inlined by the planner):
--   elapsed  E = greatest(now - last_refill, 0)            -- a clock behind the row mints nothing
--   added      = E / interval                              -- integer division: whole tokens only
--   full       ⇔ tokens + added >= capacity               -- (also when tokens >= capacity: a lowered policy)
--   refilled   = full ? (capacity, last_refill + E)        -- last_refill + E = max(now, last_refill)
--                     : (tokens + added, last_refill + added * interval)   -- keeps the part-token
--   allowed    ⇔ refilled.tokens >= cost, and then the row becomes (refilled.tokens - cost, refilled.last_refill)
-- A refused check fails the WHERE, so the row is not written at all (its xmin does not change).
--   full_at    = refilled.last_refill + (capacity - refilled.tokens + cost) * interval, which is
--                full ? last_refill + E + cost * interval : last_refill + (capacity - tokens + cost) * interval
--                (the instant the pruner may delete the row: migration rate_limits_full_at, postgres/prune.rs),
--                stored rounded up to whole 10 s (bucket_prunable_at, migration full_at_granularity) so that most
--                writes leave the indexed column as it was and the row is updated in place (HOT).
--                Two interval terms, each below 2^53 µs, so the float8 factor PostgreSQL multiplies by is exact.
--
-- "now" is read once, in the `clock` CTE (clock_timestamp() is volatile: every call would differ), and reaches
-- the DO UPDATE as EXCLUDED.last_refill_time, the instant the proposed new row carries. The clock is read before
-- waiting for the row lock, so a check that waited sees slightly less refill than it could: late, never early.
-- The `clock` CTE reads no table, and the INSERT sits in a WITH only so that the statement can return that clock
-- reading too; the outer SELECT reads nothing but the INSERT's RETURNING rows.
WITH clock AS (
    SELECT bucket_clock($5::bigint) AS at
),
decided AS (
    INSERT INTO rate_limits AS b (user_id, tokens, last_refill_time, version, full_at)
    -- A new key is a full bucket minus this check's cost; a cost above capacity creates nothing.
    SELECT $1, $2::bigint - $4::bigint, clock.at, 1,
           bucket_prunable_at(clock.at + INTERVAL '1 microsecond' * ($4::bigint * $3::bigint))
    FROM clock
    WHERE $4::bigint <= $2::bigint
    ON CONFLICT (user_id) DO UPDATE
    -- E (elapsed µs) is the migrations' bucket_elapsed_us over this row's own columns, wherever it is used, rather
    -- than named in a sub-select, so that every reference is plainly to the locked row.
    SET tokens = least(
            $2::bigint,
            b.tokens + bucket_elapsed_us(b.last_refill_time, EXCLUDED.last_refill_time) / $3::bigint
        ) - $4::bigint,
        last_refill_time = b.last_refill_time + INTERVAL '1 microsecond' * CASE
            WHEN b.tokens + bucket_elapsed_us(b.last_refill_time, EXCLUDED.last_refill_time) / $3::bigint >= $2::bigint
            THEN bucket_elapsed_us(b.last_refill_time, EXCLUDED.last_refill_time)
            ELSE bucket_elapsed_us(b.last_refill_time, EXCLUDED.last_refill_time) / $3::bigint * $3::bigint
        END,
        version = b.version + 1,
        -- The new state's full_at (see the header): refilled's own, plus cost tokens' worth of time, rounded up.
        full_at = bucket_prunable_at(b.last_refill_time + INTERVAL '1 microsecond' * CASE
            WHEN b.tokens + bucket_elapsed_us(b.last_refill_time, EXCLUDED.last_refill_time) / $3::bigint >= $2::bigint
            THEN bucket_elapsed_us(b.last_refill_time, EXCLUDED.last_refill_time)
            ELSE ($2::bigint - b.tokens) * $3::bigint
        END + INTERVAL '1 microsecond' * ($4::bigint * $3::bigint))
    WHERE least(
            $2::bigint,
            b.tokens + bucket_elapsed_us(b.last_refill_time, EXCLUDED.last_refill_time) / $3::bigint
        ) >= $4::bigint
    RETURNING
        b.tokens::bigint AS tokens,
        bucket_us(b.last_refill_time) AS last_refill_us,
        b.version AS version,
        (b.xmax = 0) AS created
)
SELECT decided.tokens, decided.last_refill_us, decided.version, decided.created,
       bucket_us(clock.at) AS now_us
FROM decided, clock
