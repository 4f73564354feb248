#!/usr/bin/env bash
# Soak run (issue 6 §7): the release API in tiered mode (sync writes, the default) against the local PostgreSQL
# and Redis, under moderate mixed-user load from wrk for SOAK_MINUTES (30) one-minute slices. After each slice it
# records requests, req/s, p50/p99, 429s, 5xx, socket errors, the API's VmRSS, bucket_write_queue_depth and
# bucket_decisions_total into a CSV under $CARGO_TARGET_DIR/soak/ (default target/soak/) and prints a Markdown
# table at the end. Then it stops the API with SIGTERM, checks exit 0, checks PostgreSQL against the metrics and
# drops its schema and Redis keys. Not run in CI: it takes half an hour by design.
#
#   loadtest/soak.sh                          # 30 minutes
#   SOAK_MINUTES=2 loadtest/soak.sh           # a short trial
#
# Settings (env): SOAK_MINUTES (30), SOAK_CONNECTIONS (4), SOAK_DELAY_MS (12, per connection before each request),
# SOAK_POOL (50000 returning users), DATABASE_URL (postgres://postgres@127.0.0.1:5432/test),
# REDIS_URL (redis://127.0.0.1:6379), CARGO_TARGET_DIR (target), SOAK_SKIP_BUILD=1 to reuse the release binary.
# Everything listens on and connects to loopback only; the run stops by itself.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
minutes="${SOAK_MINUTES:-30}"
connections="${SOAK_CONNECTIONS:-4}"
delay_ms="${SOAK_DELAY_MS:-12}"
pool="${SOAK_POOL:-50000}"
database_url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
redis_url="${REDIS_URL:-redis://127.0.0.1:6379}"
target="${CARGO_TARGET_DIR:-$root/target}"
# The default policy: 10 tokens, 1 per second (the same as `cargo xtask bench`).
capacity=10
refill_per_sec=1

stamp="$(date -u +%Y%m%d_%H%M%S)"
schema="soak_${stamp}"
prefix="soak:${stamp}:"
run_id="soak${stamp}"
out="$target/soak"
mkdir -p "$out"
csv="$out/soak_${stamp}.csv"
api_log="$out/api_${stamp}.log"

if [[ "${SOAK_SKIP_BUILD:-0}" != 1 ]]; then
  echo "== cargo build --release -p bucket-api (CARGO_TARGET_DIR=$target)"
  CARGO_TARGET_DIR="$target" cargo build --release -p bucket-api
fi
binary="$target/release/bucket-api"
[[ -x "$binary" ]] || { echo "no release binary at $binary" >&2; exit 1; }

# A free loopback port: bind port 0 and give it back (a tiny race with other processes is acceptable here).
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
addr="127.0.0.1:$port"

api_pid=""
cleanup() {
  # Runs on every exit, including Ctrl-C: the API must not outlive the script, and the schema and keys are private.
  if [[ -n "$api_pid" ]] && kill -0 "$api_pid" 2>/dev/null; then
    kill -TERM "$api_pid" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$api_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$api_pid" 2>/dev/null || true
  fi
  psql "$database_url" -XAtq -c "DROP SCHEMA IF EXISTS \"$schema\" CASCADE" >/dev/null 2>&1 || true
  redis-cli -u "$redis_url" --scan --pattern "${prefix}*" 2>/dev/null \
    | xargs -r -n 500 redis-cli -u "$redis_url" unlink >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "== starting $binary on $addr: tiered store, sync writes, schema $schema, Redis prefix $prefix"
BUCKET_LISTEN="$addr" BUCKET_STORE=tiered BUCKET_WRITE_MODE=sync BUCKET_LOG_LEVEL=warn \
  BUCKET_CAPACITY="$capacity" BUCKET_REFILL_PER_SEC="$refill_per_sec" \
  DATABASE_URL="$database_url" REDIS_URL="$redis_url" BUCKET_PG_SCHEMA="$schema" BUCKET_REDIS_KEY_PREFIX="$prefix" \
  "$binary" </dev/null >"$api_log" 2>&1 &
api_pid=$!

up=0
for _ in $(seq 600); do
  kill -0 "$api_pid" 2>/dev/null || break
  if [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/healthz")" == 200 ]]; then up=1; break; fi
  sleep 0.1
done
if [[ $up != 1 ]]; then
  echo "the API did not answer /healthz within 60 s; its log:" >&2
  tail -20 "$api_log" >&2
  exit 1
fi

metric() { # metric NAME [LABEL_FILTER]: the sum of every sample of NAME whose labels contain LABEL_FILTER
  curl -s "http://$addr/metrics" | awk -v name="$1" -v filter="${2:-}" '
    $1 == name || index($1, name "{") == 1 { if (filter == "" || index($1, filter) > 0) sum += $2 }
    END { printf "%d\n", sum }'
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$api_pid/status"; }
field() { # field JSON KEY: a number from the SOAK line
  sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"
}

echo "minute,requests,req_per_s,p50_ms,p99_ms,max_ms,ok_200,limited_429,server_5xx,other_non_2xx,socket_errors,rss_kib,write_queue_depth,decisions_total,allowed_total,load_avg" >"$csv"
echo "== startup VmRSS $(rss_kib) KiB; $minutes one-minute slices, wrk -t1 -c$connections, ${delay_ms} ms delay per request"
started_at="$(date +%s)"
for minute in $(seq 1 "$minutes"); do
  line="$(wrk -t1 -c"$connections" -d60s --latency -s loadtest/soak_mixed.lua "http://$addr" \
    -- "$run_id" "$minute" "$pool" "$delay_ms" | grep '^SOAK ')"
  kill -0 "$api_pid" 2>/dev/null || { echo "the API died during minute $minute" >&2; tail -20 "$api_log" >&2; exit 1; }
  requests="$(field "$line" requests)"
  duration_us="$(field "$line" duration_us)"
  row="$(awk -v r="$requests" -v d="$duration_us" -v p50="$(field "$line" p50_us)" -v p99="$(field "$line" p99_us)" \
    -v max="$(field "$line" max_us)" \
    'BEGIN { printf "%.1f,%.2f,%.2f,%.2f", r / (d / 1e6), p50 / 1000, p99 / 1000, max / 1000 }')"
  row="$minute,$requests,$row,$(field "$line" ok),$(field "$line" limited),$(field "$line" server_errors)"
  row="$row,$(field "$line" other),$(field "$line" socket_errors),$(rss_kib),$(metric bucket_write_queue_depth)"
  row="$row,$(metric bucket_decisions_total),$(metric bucket_decisions_total 'outcome="allowed"')"
  row="$row,$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' '/')"
  echo "$row" >>"$csv"
  echo "  $row"
done

# Consistency, while the API still runs: every allowed decision in sync mode wrote one PostgreSQL row version
# (a new row starts at 1, each grant adds 1; refusals write nothing), so the versions must add up to the allowed
# decisions, and the hot user may have been granted at most capacity + refill × elapsed seconds (it is refused
# nearly all the time, so it should sit right at that bound).
depth="$(metric bucket_write_queue_depth)"
allowed="$(metric bucket_decisions_total 'outcome="allowed"')"
fallbacks="$(metric bucket_fallbacks_total)"
store_errors="$(metric bucket_store_errors_total)"
pg_versions="$(psql "$database_url" -XAtq -c "SELECT COALESCE(SUM(version), 0) FROM \"$schema\".rate_limits")"
pg_rows="$(psql "$database_url" -XAtq -c "SELECT COUNT(*) FROM \"$schema\".rate_limits")"
hot_version="$(psql "$database_url" -XAtq -c \
  "SELECT COALESCE(MAX(version), 0) FROM \"$schema\".rate_limits WHERE user_id = '${run_id}-hot'")"
# The hot user's bucket starts full at its first request, after started_at; +1 s covers whole-second rounding.
hot_bound=$((capacity + refill_per_sec * ($(date +%s) - started_at + 1)))
final_rss="$(rss_kib)"

echo "== SIGTERM to the API (pid $api_pid)"
kill -TERM "$api_pid"
set +e
wait "$api_pid"
exit_code=$?
set -e
api_pid=""

echo
echo "| minute | req/s | p50 ms | p99 ms | 200 | 429 | 5xx | socket errors | VmRSS MiB | write queue | load avg |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
tail -n +2 "$csv" | awk -F, '{ printf "| %d | %.0f | %.2f | %.2f | %d | %d | %d | %d | %.1f | %d | %s |\n",
  $1, $3, $4, $5, $7, $8, $9, $11, $12 / 1024, $13, $16 }'
echo
echo "CSV: $csv"
echo "API log: $api_log ($(wc -l <"$api_log") lines at level warn)"
echo "final VmRSS ${final_rss} KiB; allowed decisions $allowed; PostgreSQL: $pg_rows rows, versions sum $pg_versions"
echo "hot user granted $hot_version (bound $hot_bound); write queue depth at the end $depth; fallbacks $fallbacks;" \
  "store errors $store_errors; API exit code $exit_code"

failed=0
total_5xx="$(tail -n +2 "$csv" | awk -F, '{ s += $9 } END { print s + 0 }')"
total_sock="$(tail -n +2 "$csv" | awk -F, '{ s += $11 } END { print s + 0 }')"
check() { if eval "$2"; then echo "PASS $1"; else echo "FAIL $1"; failed=1; fi; }
check "API exited 0 after SIGTERM" '[[ $exit_code == 0 ]]'
check "no 5xx ($total_5xx)" '[[ $total_5xx == 0 ]]'
check "no socket errors ($total_sock)" '[[ $total_sock == 0 ]]'
check "write queue empty at the end ($depth)" '[[ $depth == 0 ]]'
check "PostgreSQL versions sum ($pg_versions) == allowed decisions ($allowed)" '[[ $pg_versions == "$allowed" ]]'
check "hot user granted $hot_version <= $hot_bound" '(( hot_version <= hot_bound ))'
exit "$failed"
