-- Mixed-user load for one one-minute slice of the soak (loadtest/soak.sh), run as
--   wrk -t1 -cN -d60s --latency -s loadtest/soak_mixed.lua http://127.0.0.1:PORT -- RUN_ID SLICE POOL DELAY_MS
-- Each request is, at random:
--   85 %  a returning user from a pool of POOL ids (RUN_ID-u-N), so their rows already exist after the first
--         slices and each one comes back only every few minutes: practically always allowed;
--    5 %  a brand-new user (RUN_ID-new-SLICE-N, never seen before): a fresh row in Redis and PostgreSQL;
--   10 %  one hot user (RUN_ID-hot) far above its refill rate: all but about one request a second get a 429.
-- DELAY_MS pauses each connection before every request, so the rate stays moderate (a soak, not a stress test)
-- and the machine stays usable. `done` prints one machine-readable `SOAK {...}` line. The status counts are
-- kept per thread (the script runs with -t1) and read back in `done` through `thread:get`.

local run_id = "soak"
local slice = 0
local pool = 50000
local delay_ms = 10
local new_counter = 0
local threads = {}

-- Per-thread tallies, read by done().
ok = 0
limited = 0
server_errors = 0
other = 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  run_id = args[1] or run_id
  slice = tonumber(args[2] or "0")
  pool = tonumber(args[3] or "50000")
  delay_ms = tonumber(args[4] or "10")
  -- A different seed per slice, so the pool is walked differently each minute but reproducibly.
  math.randomseed(1000 + slice)
end

function request()
  local r = math.random()
  local user
  if r < 0.85 then
    user = string.format("%s-u-%d", run_id, math.random(0, pool - 1))
  elseif r < 0.90 then
    new_counter = new_counter + 1
    user = string.format("%s-new-%d-%d", run_id, slice, new_counter)
  else
    user = run_id .. "-hot"
  end
  return wrk.format("GET", "/", { ["X-User-ID"] = user })
end

function delay()
  return delay_ms
end

-- Only status classes are counted: with several connections per thread a response cannot be tied to the user
-- of its request here, so the hot user's grants are checked afterwards from its PostgreSQL row instead.
function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
  elseif status == 429 then
    limited = limited + 1
  elseif status >= 500 then
    server_errors = server_errors + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local c = { ok = 0, limited = 0, server_errors = 0, other = 0 }
  for _, t in ipairs(threads) do
    for k, _ in pairs(c) do
      c[k] = c[k] + (t:get(k) or 0)
    end
  end
  local e = summary.errors
  io.write(string.format(
    'SOAK {"requests":%d,"duration_us":%d,"ok":%d,"limited":%d,"server_errors":%d,"other":%d,'
      .. '"non_2xx":%d,"socket_errors":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, c.ok, c.limited, c.server_errors, c.other,
    e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
