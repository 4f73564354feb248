#!/bin/bash
# Instructions per request of the release API for returning users (docs/perf.md §17), by valgrind's callgrind: the
# redis store or the tiered store (write-behind by default) on the local Redis and PostgreSQL, a fresh key prefix and
# schema, capacity 1,000,000 so every request is allowed and written; one worker, wrk -c8: 10 s of `many` over 2,000
# users (each seen before the measurement), 3 s of `returning`, the counters zeroed, 8 s of `returning` measured.
# Under callgrind the API answers about a thousand requests a second, so a write-behind flush carries a few rows
# where the bench's carry hundreds: read the flusher's share as an upper bound.
#   usage: loadtest/callgrind_returning.sh <bucket-api release binary> <label> <redis|tiered> [sync|write_behind] [out]
set -e
BIN=$(realpath "$1"); LABEL=$2; STORE=$3; MODE=${4:-write_behind}; P=${PORT:-18390}; RUN=cg$RANDOM$RANDOM
OUT=$(realpath -m "${5:-target/callgrind}/$LABEL"); mkdir -p "$OUT"; rm -f "$OUT"/callgrind.*
cd "$(dirname "$0")/.."
DB=postgres://postgres@127.0.0.1:5432/test
BUCKET_LISTEN=127.0.0.1:$P BUCKET_STORE=$STORE DATABASE_URL="$DB" REDIS_URL=redis://127.0.0.1:6379 \
  BUCKET_PG_SCHEMA=cg_$RUN BUCKET_REDIS_KEY_PREFIX=cg:$RUN: BUCKET_WRITE_MODE=$MODE BUCKET_CAPACITY=1000000 \
  BUCKET_REFILL_PER_SEC=1 BUCKET_LOG_LEVEL=warning BUCKET_WORKERS=1 \
  valgrind --tool=callgrind --callgrind-out-file="$OUT"/callgrind.%p.out --dump-instr=no "$BIN" > "$OUT"/server.log 2>&1 &
VPID=$!
trap 'psql -q "$DB" -c "DROP SCHEMA IF EXISTS cg_$RUN CASCADE" >/dev/null 2>&1' EXIT
for i in $(seq 200); do curl -sf http://127.0.0.1:$P/healthz >/dev/null && break; sleep 0.2; done
load() { wrk -t1 -c8 -d"$1"s --timeout 10s -s loadtest/bench_http.lua http://127.0.0.1:$P/ -- "$2" $RUN 0 2000; }
load 10 many >/dev/null 2>&1
load 3 returning >/dev/null 2>&1
callgrind_control -z $VPID >/dev/null
N=$(load 8 returning | grep '^BENCH' | sed 's/BENCH //' | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
callgrind_control -d returning $VPID >/dev/null
F=$(ls -t "$OUT"/callgrind.*.out.* | head -1)
IR=$(grep -E '^(summary|totals):' "$F" | head -1 | awk '{print $2}')
kill $VPID; wait $VPID 2>/dev/null || true
echo "$LABEL $STORE $MODE returning requests=$N per_request=$((IR / N))" | tee -a "$OUT"/summary.txt
