-- token_buckets.lua: several buckets decided together, all or nothing, in a single atomic step.
--
-- Atomic for the same reason as token_bucket.lua: Redis runs a script to completion before serving anything else,
-- so every bucket below is read, decided and written with no other command in between, and nothing is written
-- unless every bucket has its cost. In Redis Cluster a script may only touch keys of one hash slot, so all the
-- keys of one call must then share a hash tag; a standalone Redis has no such limit.
--
-- Each bucket is decided by token_bucket.lua's rules (bucket-core's refill.rs and all.rs), with the same hash layout
-- (t, l, v) and the same TTL; the Rust side re-derives every answer from the returned states with
-- bucket_core::decide_all and rejects any disagreement.
--
-- KEYS[i]   the bucket hashes, each key once
-- ARGV[1]   now in µs, or '' to read the server's own clock (TIME)
-- then 7 values per key, for key i starting at ARGV[2 + 7 * (i - 1)]:
--           capacity, interval_us, cost,
--           on_miss: 'full'   a missing key is a full bucket (version 0): the plain redis store
--                    'report' a missing key is reported and nothing at all is written: the caller loads it elsewhere
--                    'seed'   a missing key is taken to hold the seed; an existing key wins over the seed
--           seed tokens, seed last_refill_us, seed version ('' unless on_miss is 'seed')
--
-- Returns {code, now, then 6 values per key: seeded, before_t, before_l, after_t, after_l, version}:
--   code      1 allowed (every bucket debited), 0 refused (nothing debited), -1 a 'report' key was missing: nothing
--             was decided or written, and `seeded` is -1 for each missing key (the other fields are meaningless)
--   now       the instant decided at (each bucket raises it to its own before_l: a clock behind mints nothing)
--   seeded    1 when the key was missing and its seed was decided against
--   before_*  the state decided against; after_* the state left behind (equal to before_* unless allowed)
--   version   the version left behind (bumped once per allowed call)

-- A whole number as plain decimal text, exact below 2^53 ('%d' rather than '%.0f': see token_bucket.lua).
local function int(x)
  return string.format('%d', x)
end

local function idiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

local now
if ARGV[1] == '' then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
else
  now = tonumber(ARGV[1])
end

local n = #KEYS
local buckets = {}
local missing = false
for i = 1, n do
  local base = 2 + 7 * (i - 1)
  local b = {
    capacity = tonumber(ARGV[base]),
    interval = tonumber(ARGV[base + 1]),
    cost = tonumber(ARGV[base + 2]),
    on_miss = ARGV[base + 3],
    seeded = 0,
  }
  local stored = redis.call('HMGET', KEYS[i], 't', 'l', 'v')
  if stored[1] and stored[2] then
    b.tokens = tonumber(stored[1])
    b.last = tonumber(stored[2])
    b.version = tonumber(stored[3] or '0')
    if not (b.tokens and b.last and b.version) then
      return redis.error_reply('ERR bucket ' .. KEYS[i] .. ' holds a non-numeric field')
    end
  elseif stored[1] or stored[2] then
    return redis.error_reply('ERR bucket ' .. KEYS[i] .. ' lacks its t or l field')
  elseif b.on_miss == 'report' then
    b.seeded = -1
    missing = true
  elseif b.on_miss == 'seed' then
    b.tokens = tonumber(ARGV[base + 4])
    b.last = tonumber(ARGV[base + 5])
    b.version = tonumber(ARGV[base + 6])
    b.seeded = 1
  else
    b.tokens = b.capacity
    b.last = now
    b.version = 0
  end
  buckets[i] = b
end

if missing then
  local reply = {-1, now}
  for i = 1, n do
    local b = buckets[i]
    for _, x in ipairs({b.seeded, 0, 0, 0, 0, 0}) do
      reply[#reply + 1] = x
    end
  end
  return reply
end

-- Refill each bucket (refill.rs) and see whether it alone has its cost.
local allowed = true
for i = 1, n do
  local b = buckets[i]
  local at = now
  if at < b.last then
    at = b.last
  end
  if b.tokens >= b.capacity or at - b.last >= (b.capacity - b.tokens) * b.interval then
    b.t = b.capacity
    b.l = at
  else
    local added = idiv(at - b.last, b.interval)
    b.t = b.tokens + added
    b.l = b.last + added * b.interval
  end
  if b.cost > b.t then
    allowed = false
  end
  -- The TTL is token_bucket.lua's: the time to refill from empty, rounded up to whole ms.
  local fill = b.capacity * b.interval
  b.ttl = idiv(fill, 1000)
  if b.ttl * 1000 < fill then
    b.ttl = b.ttl + 1
  end
end

local reply = {allowed and 1 or 0, now}
for i = 1, n do
  local b = buckets[i]
  if allowed then
    b.t = b.t - b.cost
    b.version = b.version + 1
    redis.call('HSET', KEYS[i], 't', int(b.t), 'l', int(b.l), 'v', int(b.version))
    redis.call('PEXPIRE', KEYS[i], int(b.ttl))
  else
    -- Refused: nothing is debited. As in token_bucket.lua, a seed is cached as it is (same state, same version),
    -- so the refused caller's next checks are Redis hits instead of PostgreSQL reads.
    if b.seeded == 1 then
      redis.call('HSET', KEYS[i], 't', int(b.tokens), 'l', int(b.last), 'v', int(b.version))
      redis.call('PEXPIRE', KEYS[i], int(b.ttl))
    end
    b.t = b.tokens
    b.l = b.last
  end
  for _, x in ipairs({b.seeded, b.tokens, b.last, b.t, b.l, b.version}) do
    reply[#reply + 1] = x
  end
end
return reply
