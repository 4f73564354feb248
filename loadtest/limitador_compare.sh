#!/bin/bash
# bucket beside Kuadrant's Limitador (docs/perf.md section 12), in one run on this machine: bucket-api and the
# limitador library's HTTP harness (loadtest/limitador, shaped like limitador-server's POST /check_and_report), both
# release builds with the same profile, each on its in-memory and its Redis storage, under the same wrk load
# (loadtest/limitador_compare.lua): the server's own trivial route as a floor, a random user of 100,000 per request
# (many), and one user (hot); limitador also `many` with its optional X-RateLimit headers asked for. Each row: a 2 s
# warm-up of the same shape, then `wrk -t1 -c32 -d5s --latency`.
# Both enforce 10 requests per user: bucket as a token bucket (capacity 10, 1 token/s), limitador as a fixed window
# (10 per 10 s). Before measuring, each server must answer 200 ten times and 429 the eleventh for a new user.
#   usage: loadtest/limitador_compare.sh [path/to/bucket-api]
#     without a path, builds it (cargo build --release -p bucket-api); the harness is always built
#     (loadtest/limitador/prepare.sh, then cargo build --release in loadtest/limitador)
#   env: REDIS_URL (redis://127.0.0.1:6379; its rows are skipped when it does not answer), JOBS (cargo -j, 2),
#        WARMUP (2s), DURATION (5s), CONNECTIONS (32), USERS (100000)
# Each shape has users of its own (RUN-MODE-N), shared only with its warm-up, so rows do not inherit each other's
# counts. Keys in Redis are this run's alone (bucket: prefix cmp:RUN:, limitador: namespace RUN) and deleted at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
JOBS=${JOBS:-2}
WARMUP=${WARMUP:-2s}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-32}
USERS=${USERS:-100000}
RUN=cmp$(date +%s)$RANDOM
WORK=$(mktemp -d "${TMPDIR:-/tmp}/limitador_compare.XXXXXX")
LUA=loadtest/limitador_compare.lua

for tool in wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "limitador_compare.sh: $tool is required (apt-get install $tool)" >&2; exit 1; }
done

if [ $# -ge 1 ]; then
  BUCKET_BIN=$(realpath "$1")
else
  echo "== cargo build --release -p bucket-api -j $JOBS" >&2
  cargo build --release -p bucket-api -j "$JOBS"
  BUCKET_BIN=$(realpath "${CARGO_TARGET_DIR:-target}/release/bucket-api")
fi
echo "== loadtest/limitador: prepare.sh, cargo build --release -j $JOBS" >&2
loadtest/limitador/prepare.sh
cargo build --release -j "$JOBS" --manifest-path loadtest/limitador/Cargo.toml
LIMITADOR_BIN=$(realpath "${CARGO_TARGET_DIR:-loadtest/limitador/target}/release/limitador-bench-server")

REDIS=no
if command -v redis-cli >/dev/null && [ "$(redis-cli -u "$REDIS_URL" ping 2>/dev/null)" = PONG ]; then REDIS=yes; fi

SPID=""
stop_server() {
  if [ -n "$SPID" ]; then kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; SPID=""; fi
}
delete_keys() { # pattern: this run's keys only, never FLUSHALL
  redis-cli -u "$REDIS_URL" --scan --pattern "$1" | xargs -r -d '\n' -n 500 redis-cli -u "$REDIS_URL" unlink >/dev/null
}
cleanup() {
  stop_server
  if [ "$REDIS" = yes ]; then delete_keys "cmp:$RUN:*"; delete_keys "namespace:{$RUN}*"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
floor_path() { if [ "$1" = bucket ]; then echo /healthz; else echo /status; fi; }

start_server() { # server store
  PORT=$(free_port)
  LOG=$WORK/$1-$2.log
  if [ "$1" = bucket ]; then
    env BUCKET_LISTEN=127.0.0.1:$PORT BUCKET_STORE=$2 REDIS_URL=$REDIS_URL BUCKET_REDIS_KEY_PREFIX=cmp:$RUN: \
      BUCKET_CAPACITY=10 BUCKET_REFILL_PER_SEC=1 BUCKET_WORKERS=2 BUCKET_LOG_LEVEL=warn "$BUCKET_BIN" >"$LOG" 2>&1 &
  else
    env LIMITADOR_BENCH_LISTEN=127.0.0.1:$PORT LIMITADOR_BENCH_STORAGE=$2 LIMITADOR_BENCH_REDIS_URL=$REDIS_URL \
      LIMITADOR_BENCH_NAMESPACE=$RUN LIMITADOR_BENCH_MAX=10 LIMITADOR_BENCH_SECONDS=10 LIMITADOR_BENCH_WORKERS=2 \
      "$LIMITADOR_BIN" >"$LOG" 2>&1 &
  fi
  SPID=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT$(floor_path "$1")" >/dev/null && return 0
    kill -0 "$SPID" 2>/dev/null || break
    sleep 0.2
  done
  echo "limitador_compare.sh: $1 ($2) did not start; its log:" >&2; cat "$LOG" >&2; exit 1
}

decide() { # server user -> HTTP status of one decision
  if [ "$1" = bucket ]; then
    curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' -d "{\"key\":\"$2\"}" \
      "http://127.0.0.1:$PORT/v1/check"
  else
    curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
      -d "{\"namespace\":\"$RUN\",\"values\":{\"user\":\"$2\"},\"delta\":1}" "http://127.0.0.1:$PORT/check_and_report"
  fi
}

check_limit() { # server store: ten 200s, then a 429, for a user no load touches
  local got=""
  for _ in $(seq 11); do got="$got $(decide "$1" "$RUN-probe-$1-$2")"; done
  if [ "$got" != "$(printf ' 200%.0s' $(seq 10)) 429" ]; then
    echo "limitador_compare.sh: $1 ($2) does not enforce 10 per user: got$got" >&2; exit 1
  fi
}

redis_commands() { # "all EVALSHA" counters of the Redis, or "0 0" for the memory store
  if [ "$1" = redis ]; then
    redis-cli -u "$REDIS_URL" info all | tr -d '\r' | awk -F'[:=,]' '
      /^total_commands_processed:/ {all = $2} /^cmdstat_evalsha:/ {sha = $3} END {print all + 0, sha + 0}'
  else echo 0 0; fi
}

ROWS=$WORK/rows.md
run_shape() { # server store mode
  local label=$1 floor_rps
  wrk -t1 -c"$CONNECTIONS" -d"$WARMUP" -s "$LUA" "http://127.0.0.1:$PORT" -- "$1" "$3" "$RUN-$3" "$RUN" "$USERS" \
    >/dev/null 2>&1
  local load c0 c1 out
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  c0=$(redis_commands "$2")
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$LUA" "http://127.0.0.1:$PORT" -- \
    "$1" "$3" "$RUN-$3" "$RUN" "$USERS")
  c1=$(redis_commands "$2")
  echo "$out" >"$WORK/$1-$2-$3.wrk"
  if [ "$3" = floor ]; then floor_rps=""; else floor_rps=$FLOOR_RPS; fi
  echo "$out" | sed -n 's/^BENCH //p' | python3 -c '
import json, sys
b = json.load(sys.stdin)
label, store, mode, floor, commands, load = sys.argv[1:7]
rps = b["requests"] / (b["duration_us"] / 1e6)
route = {"bucket": {"floor": "GET /healthz", "many": "POST /v1/check, many users", "hot": "POST /v1/check, one user"},
         "limitador": {"floor": "GET /status", "many": "POST /check_and_report, many users",
                       "many-headers": "POST /check_and_report, many users, X-RateLimit headers",
                       "hot": "POST /check_and_report, one user"}}[label][mode]
ratio = "1.00" if mode == "floor" else "%.2f" % (rps / float(floor))
all0, sha0, all1, sha1 = (int(x) for x in commands.split())
cmds = "%.2f (%.2f)" % ((all1 - all0) / b["requests"], (sha1 - sha0) / b["requests"]) \
    if store == "redis" and mode != "floor" else "–"
errors = "" if b["socket_errors"] == 0 else " (%d socket errors)" % b["socket_errors"]
print("| %s | %s | %s | %.0f | %s | %.2f | %.2f | %.1f%%%s | %d | %s | %s |" % (
    label, store, route, rps, ratio, b["p50_us"] / 1000, b["p99_us"] / 1000,
    100 * b["non_2xx"] / b["requests"], errors, b["requests"] - b["non_2xx"], cmds, load))
if mode == "floor":
    open(sys.argv[7], "w").write("%.1f" % rps)
' "$1" "$2" "$3" "${floor_rps:-0}" "$c0 $c1" "$load" "$WORK/floor_rps" | tee -a "$ROWS"
  if [ "$3" = floor ]; then FLOOR_RPS=$(cat "$WORK/floor_rps"); fi
}

START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
STORES=(memory)
[ "$REDIS" = yes ] && STORES+=(redis)
echo "| server | store | route and load | req/s | × floor | p50 ms | p99 ms | non-2xx (429) | 2xx | Redis commands/req (EVALSHA/req) | load avg at start |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
for store in "${STORES[@]}"; do
  for server in bucket limitador; do
    start_server "$server" "$store"
    check_limit "$server" "$store"
    FLOOR_RPS=0
    modes=(floor many hot)
    if [ "$server" = limitador ]; then modes=(floor many many-headers hot); fi
    for mode in "${modes[@]}"; do run_shape "$server" "$store" "$mode"; done
    stop_server
  done
done
echo
echo "Command: loadtest/limitador_compare.sh $*; each row: $WARMUP warm-up, then wrk -t1 -c$CONNECTIONS -d$DURATION --latency -s $LUA (users: $USERS). Machine: $(nproc) CPUs; load average $START_LOAD at start, $(cut -d' ' -f1-3 /proc/loadavg) at the end."
[ "$REDIS" = yes ] || echo "Redis at $REDIS_URL did not answer PING: its rows were skipped."
for log in "$WORK"/*.log; do
  # limitador's harness logs one line at start, then one per failed decision; bucket at warn logs none when healthy
  echo "log $(basename "$log"): $(wc -l <"$log") lines$(grep -ciE 'error|fail' "$log" | sed 's/^/, error or failure lines: /')"
done
echo "wrk outputs and logs: $WORK"
