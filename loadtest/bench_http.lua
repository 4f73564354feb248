-- wrk load shapes for `cargo xtask bench` (xtask/src/bench.rs), which runs it as
--   wrk -t1 -c32 -d5s --latency -s loadtest/bench_http.lua http://127.0.0.1:PORT -- MODE RUN_ID [START] [POOL]
-- MODE:
--   floor  GET /healthz: the HTTP floor of the same server, with the same per-request header work as `many`
--   many   GET / as a new user every request (key RUN_ID-N, N counting up from START, modulo POOL if given)
--   returning  GET / as user RUN_ID-N with N random in [0, POOL) (POOL defaults to 10000), the keys `many` gives
--          the same users: after a warm-up of `many` over the same POOL, every request is a returning user that
--          the store already holds (a Redis hit in the redis and tiered stores), not a new one
--   hot    GET / as one user, so all but the first `capacity` requests are refused
--   check-many  POST /v1/check {"key": RUN_ID-N} with N random in [0, POOL) (POOL defaults to 100000): the service
--               form beside which the gRPC front is measured (bucket-grpc-load --shape many)
--   check-hot   POST /v1/check {"key": RUN_ID-hot}: one key (bucket-grpc-load --shape hot)
-- Every request is built in Lua (also for `floor`), so the client spends the same effort on each shape and the
-- ratios compare the server alone. `done` prints one machine-readable line, including p99.9, which
-- `wrk --latency` does not show.

local mode = "floor"
local run_id = "bench"
local counter = 0
local pool = 0

function init(args)
  mode = args[1] or mode
  run_id = args[2] or run_id
  counter = tonumber(args[3] or "0")
  pool = tonumber(args[4] or "0")
end

local check_headers = { ["Content-Type"] = "application/json" }

function request()
  if mode == "check-many" then
    local n = math.random(0, (pool > 0 and pool or 100000) - 1)
    return wrk.format("POST", "/v1/check", check_headers, string.format('{"key":"%s-%d"}', run_id, n))
  elseif mode == "check-hot" then
    return wrk.format("POST", "/v1/check", check_headers, string.format('{"key":"%s-hot"}', run_id))
  end
  counter = counter + 1
  local n = counter
  if mode == "returning" then
    n = math.random(0, (pool > 0 and pool or 10000) - 1)
  elseif pool > 0 then
    n = counter % pool
  end
  local user = string.format("%s-%010d", run_id, n)
  if mode == "hot" then
    user = run_id .. "-hot-user"
  end
  local path = "/"
  if mode == "floor" then
    path = "/healthz"
  end
  return wrk.format("GET", path, { ["X-User-ID"] = user })
end

-- `done`, shared with the other load scripts: found beside this file whatever the working directory.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "bench_report.lua")
