-- token_bucket.lua: refill, consume and expire one bucket in a single atomic step.
--
-- Why it is atomic: Redis runs a script to completion before it serves any other command, from any client, so
-- the read (HMGET), the decision and the write (HSET + PEXPIRE) below see and leave one consistent state however
-- many API processes check the same key at once. No WATCH/MULTI retry loop is needed, and no lock is held between
-- round trips. The script touches only KEYS[1], so it stays within one hash slot (Redis Cluster safe).
--
-- The math is bucket-core's src/refill.rs, rule for rule; tests/cases_redis.rs runs the shared case table through
-- this script, and the Rust side re-derives the answer from the returned state with bucket-core and rejects any
-- disagreement. Every number here is a whole number below 2^53 (Policy guarantees capacity * interval <= 2^53 and
-- µs timestamps stay below it until the year 2255), so Lua's doubles hold them exactly.
--
-- KEYS[1]   the bucket hash: t = whole tokens, l = last_refill (µs), v = version (bumped by each allowed check)
-- ARGV[1]   capacity
-- ARGV[2]   interval_us: µs per token
-- ARGV[3]   cost
-- ARGV[4]   now in µs, or '' to read the server's own clock (TIME), the one clock all API processes share
-- ARGV[5]   mode:
--             'full'   a missing key is a full bucket (version 0): the plain redis store
--             'report' a missing key is reported (code -1) and nothing is written: the caller loads it elsewhere
--             'seed'   a missing key is taken to hold ARGV[6..8]; an existing key wins over the seed
--             'peek'   decide with cost 0 against the current state and write nothing
-- ARGV[6-8] seed mode only: tokens, last_refill_us, version of the seed state
--
-- Returns one string of eight decimal integers separated by single spaces, "code seeded now before_t before_l
-- after_t after_l version" (one bulk string costs the client a fraction of parsing an array of eight integers:
-- docs/perf.md §9):
--   code      1 allowed, 0 refused, -1 missing key in 'report' mode (the other fields are then meaningless)
--   seeded    1 when the key was missing and the seed state was decided against
--   now       the instant decided at, already raised to before_l (a clock behind the stored state mints nothing)
--   before_*  the state decided against (stored, seeded, or a full bucket)
--   after_*   the state left behind: equal to before_* when refused, refilled when peeking
--   version   the version left behind

-- Integers go to Redis as plain decimal strings: tostring() would print a µs timestamp as 1.7672256e+15 and
-- Redis would store exactly that text. '%d' converts to a C long (64 bits on every platform Redis builds for) and
-- prints it as an integer, exact for our whole numbers below 2^53; '%.0f' printed the same digits through the
-- floating-point formatter at three times the cost, a fifth of all the work Redis did per call (docs/perf.md §19).
local function int(x)
  return string.format('%d', x)
end

-- The reply described above, from its eight numbers in order.
local function reply(...)
  return string.format('%d %d %d %d %d %d %d %d', ...)
end

-- floor(a / b) for whole numbers 0 <= a, 0 < b below 2^53. The quotient of two doubles is correctly rounded, which
-- keeps its floor exact in this range; the correction makes that independent of the argument.
local function idiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

local capacity = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local mode = ARGV[5]

local now
if ARGV[4] == '' then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
else
  now = tonumber(ARGV[4])
end

local stored = redis.call('HMGET', KEYS[1], 't', 'l', 'v')
local tokens, last, version
local seeded = 0
if stored[1] and stored[2] then
  tokens = tonumber(stored[1])
  last = tonumber(stored[2])
  version = tonumber(stored[3] or '0')
  if not (tokens and last and version) then
    return redis.error_reply('ERR bucket ' .. KEYS[1] .. ' holds a non-numeric field')
  end
elseif stored[1] or stored[2] then
  return redis.error_reply('ERR bucket ' .. KEYS[1] .. ' lacks its t or l field')
elseif mode == 'report' then
  return reply(-1, 0, now, 0, 0, 0, 0, 0)
elseif mode == 'seed' then
  tokens = tonumber(ARGV[6])
  last = tonumber(ARGV[7])
  version = tonumber(ARGV[8])
  seeded = 1
else
  -- A key expires only after its bucket has had the time to refill from empty, so missing means full.
  tokens = capacity
  last = now
  version = 0
end

-- Refill (refill.rs): whole tokens only, and `last` moves by exactly the time they took, keeping the part-token.
if now < last then
  now = last
end
local t, l
if tokens >= capacity or now - last >= (capacity - tokens) * interval then
  -- Same as refill.rs's `added >= capacity - tokens`, without dividing: a full bucket's clock restarts at now.
  t = capacity
  l = now
else
  local added = idiv(now - last, interval)
  t = tokens + added
  l = last + added * interval
end

if mode == 'peek' then
  return reply(1, seeded, now, tokens, last, t, l, version)
end

-- The TTL is the time to refill from empty, rounded up to whole ms: at least the time any state needs to become
-- full, so the key never expires before its bucket is full and a missing key can always be read as full.
local fill = capacity * interval
local ttl = idiv(fill, 1000)
if ttl * 1000 < fill then
  ttl = ttl + 1
end

if cost > t then
  -- Refused: the bucket's state is not changed, so nothing is written, not even a refill, and the TTL is left
  -- as it was. The one exception is a seed: the state loaded from PostgreSQL is cached as it is (same tokens,
  -- same time, same version), so that the throttled caller's next refusals are Redis hits instead of one
  -- PostgreSQL read each.
  if seeded == 1 then
    redis.call('HSET', KEYS[1], 't', int(tokens), 'l', int(last), 'v', int(version))
    redis.call('PEXPIRE', KEYS[1], int(ttl))
  end
  return reply(0, seeded, now, tokens, last, tokens, last, version)
end

t = t - cost
version = version + 1
redis.call('HSET', KEYS[1], 't', int(t), 'l', int(l), 'v', int(version))
redis.call('PEXPIRE', KEYS[1], int(ttl))
return reply(1, seeded, now, tokens, last, t, l, version)
