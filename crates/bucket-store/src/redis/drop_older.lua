-- drop_older.lua: deletes a bucket that is older than PostgreSQL's row of it, in one atomic step (tiered store).
--
-- Why: after a failover, a promoted replica can hold an older bucket than the one PostgreSQL committed (replication
-- is asynchronous). The tiered store notices when PostgreSQL refuses an allowed decision's write as not newer than
-- its row; it then runs this script with that row, and decides again from the row if the bucket was dropped. The
-- check and the DEL are one script so that a bucket another request made current in between is never dropped.
--
-- KEYS[1]   the bucket hash (t, l, v as in token_bucket.lua)
-- ARGV[1-3] PostgreSQL's row: tokens, last_refill_us, version
--
-- Returns 1 when the key is now absent: it held an older version than the row, or the same version with another
-- state (a different history that reached the same number), or was already gone. Returns 0 when it holds a newer
-- version, or the row's very state: Redis is current, and a newer write of the same bucket won the race to
-- PostgreSQL.
local stored = redis.call('HMGET', KEYS[1], 't', 'l', 'v')
if not stored[1] then
  return 1
end
local version = tonumber(stored[3] or '0')
local row_version = tonumber(ARGV[3])
if version > row_version then
  return 0
end
if version == row_version and tonumber(stored[1]) == tonumber(ARGV[1]) and tonumber(stored[2]) == tonumber(ARGV[2]) then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
