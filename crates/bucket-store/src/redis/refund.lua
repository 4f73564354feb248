-- refund.lua: gives back the tokens a multi-key request took in one hash slot, because another slot refused it
-- (Redis Cluster only: see redis/slots.rs).
--
-- Atomic like the other scripts: every key below is read and written with no other command in between. It adds
-- exactly the cost taken back to the stored tokens, capped at capacity, and leaves the refill time as it is, so the
-- bucket holds what it would hold had the request never debited it (less whatever others took meanwhile, which
-- stays taken). A key that is gone (reset, or expired because it refilled) is full already: nothing to give back.
-- The version is bumped, as for every write, so a tiered store never mistakes the refunded state for an older one.
--
-- KEYS[i]   the bucket hashes, each once, all in one hash slot
-- ARGV[1]   now in µs, or '' to read the server's own clock (TIME)
-- then 2 values per key, for key i at ARGV[2 * i] and ARGV[2 * i + 1]: capacity, tokens to give back
--
-- Returns {now, then 4 values per key: present (1, or 0 when gone), tokens, last_refill_us, version}

-- A whole number as plain decimal text, exact below 2^53 ('%d' rather than '%.0f': see token_bucket.lua).
local function int(x)
  return string.format('%d', x)
end

local now
if ARGV[1] == '' then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
else
  now = tonumber(ARGV[1])
end

local reply = {now}
for i = 1, #KEYS do
  local capacity = tonumber(ARGV[2 * i])
  local back = tonumber(ARGV[2 * i + 1])
  local stored = redis.call('HMGET', KEYS[i], 't', 'l', 'v')
  local tokens, last, version = tonumber(stored[1]), tonumber(stored[2]), tonumber(stored[3] or '0')
  if tokens and last and version then
    tokens = math.min(capacity, tokens + back)
    version = version + 1
    redis.call('HSET', KEYS[i], 't', int(tokens), 'v', int(version))
    for _, x in ipairs({1, tokens, last, version}) do
      reply[#reply + 1] = x
    end
  else
    for _, x in ipairs({0, 0, 0, 0}) do
      reply[#reply + 1] = x
    end
  end
end
return reply
