#!/bin/bash
# Instructions redis-server spends per call of token_bucket.lua, by valgrind's callgrind: repeatable on a busy
# machine, and the same whoever the client is (docs/perf.md §19). A private redis-server on a free port, no
# persistence; redis-benchmark sends N calls (-c 4 -P 16, so the socket's cost is spread thin and the script's own
# work is what is counted) for each shape, with the counters zeroed before and dumped after:
#   new      'full' mode on keys never seen (the redis store's many-users shape: read, miss, write)
#   returning 'full' mode on 1,000 keys that already hold a bucket (read, refill, write)
#   report   'report' mode on keys never seen (the tiered store's first look: read, miss, nothing written)
#   empty    a script that only returns its reply string: what any EVALSHA costs before our script runs
#   usage: loadtest/callgrind_redis.sh [script file, default the store's token_bucket.lua] [label] [calls]
# Prints "<label> <shape> calls=N Ir=I per_call=I/N"; the dumps stay in target/callgrind-redis/<label>.
set -e
cd "$(dirname "$0")/.."
SCRIPT=$(realpath "${1:-crates/bucket-store/src/redis/token_bucket.lua}"); LABEL=${2:-script}; N=${3:-20000}
OUT=$(realpath -m "target/callgrind-redis/$LABEL"); mkdir -p "$OUT"; rm -f "$OUT"/callgrind.*
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
valgrind --tool=callgrind --callgrind-out-file="$OUT"/callgrind.out "$(command -v redis-server)" --port "$PORT" \
  --bind 127.0.0.1 --save '' --appendonly no > "$OUT"/server.log 2>&1 &
VPID=$!
trap 'redis-cli -p $PORT shutdown nosave >/dev/null 2>&1 || kill $VPID 2>/dev/null; wait $VPID 2>/dev/null || true' EXIT
for _ in $(seq 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.2; done
SHA=$(redis-cli -p "$PORT" SCRIPT LOAD "$(cat "$SCRIPT")")
EMPTY=$(redis-cli -p "$PORT" SCRIPT LOAD "return '1 0 0 0 0 0 0 0'")
bench() { redis-benchmark -p "$PORT" -c 4 -P 16 -n "$N" "$@" > /dev/null; }
# The returning shape's 1,000 keys, written once before its measurement.
bench -r 1000 EVALSHA "$SHA" 1 'ret:{user-__rand_int__}' 1000000 1000 1 '' full
measure() {
  local shape=$1; shift
  callgrind_control -z $VPID > /dev/null 2>&1
  bench "$@"
  callgrind_control -d "$shape" $VPID > /dev/null 2>&1
  local file ir
  file=$(ls -t "$OUT"/callgrind.out.* | head -1)
  ir=$(grep -E '^(summary|totals):' "$file" | head -1 | awk '{print $2}')
  echo "$LABEL $shape calls=$N Ir=$ir per_call=$((ir / N))" | tee -a "$OUT"/summary.txt
}
measure new -r 100000000 EVALSHA "$SHA" 1 'new:{user-__rand_int__}' 10 1000000 1 '' full
measure returning -r 1000 EVALSHA "$SHA" 1 'ret:{user-__rand_int__}' 1000000 1000 1 '' full
measure report -r 100000000 EVALSHA "$SHA" 1 'rep:{user-__rand_int__}' 10 1000000 1 '' report
measure empty -r 100000000 EVALSHA "$EMPTY" 1 'nil:{user-__rand_int__}' 10 1000000 1 '' full
