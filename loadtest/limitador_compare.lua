-- wrk load for loadtest/limitador_compare.sh: the same request shapes against bucket and against the limitador
-- library's HTTP harness (loadtest/limitador), built by the same code so the client spends the same effort on both.
--   wrk -t1 -c32 -d5s --latency -s loadtest/limitador_compare.lua http://127.0.0.1:PORT -- SERVER MODE RUN [NS] [POOL]
-- SERVER: bucket | limitador
-- MODE:
--   floor  the server's own trivial route: bucket GET /healthz, limitador GET /status
--   many   a decision for a random user of POOL (default 100,000) per request:
--          bucket POST /v1/check {"key":"RUN-N"}
--          limitador POST /check_and_report {"namespace":"NS","values":{"user":"RUN-N"},"delta":1}
--   hot    the same decision for one user, RUN-hot: all but the first few requests are refused
--   many-headers  (limitador only) `many` with "response_headers":"DraftVersion03", so the answer carries
--          X-RateLimit-Limit/Remaining/Reset as bucket's always carries its RateLimit headers
-- `done` prints one machine-readable line, as loadtest/bench_http.lua does.

local server = "bucket"
local mode = "floor"
local run_id = "cmp"
local namespace = "cmp"
local pool = 100000

function init(args)
  server = args[1] or server
  mode = args[2] or mode
  run_id = args[3] or run_id
  namespace = args[4] or namespace
  pool = tonumber(args[5] or "100000")
end

local json_headers = { ["Content-Type"] = "application/json" }

local function decision(user)
  if server == "bucket" then
    return wrk.format("POST", "/v1/check", json_headers, string.format('{"key":"%s"}', user))
  end
  local extra = ""
  if mode == "many-headers" then
    extra = ',"response_headers":"DraftVersion03"'
  end
  return wrk.format("POST", "/check_and_report", json_headers,
    string.format('{"namespace":"%s","values":{"user":"%s"},"delta":1%s}', namespace, user, extra))
end

function request()
  if mode == "many" or mode == "many-headers" then
    return decision(string.format("%s-%d", run_id, math.random(0, pool - 1)))
  elseif mode == "hot" then
    return decision(run_id .. "-hot")
  end
  if server == "bucket" then
    return wrk.format("GET", "/healthz")
  end
  return wrk.format("GET", "/status")
end

-- `done`, shared with the other load scripts: found beside this file whatever the working directory.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "bench_report.lua")
