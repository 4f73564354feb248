#!/bin/bash
# Where the CPU goes, by process and by function, for one store and load shape: the release API on the local
# PostgreSQL and Redis (a schema and key prefix of its own), a 2 s warm-up, then 9 s of `wrk -t1 -c32` with
# `perf record -e cpu-clock -a -g` sampling the whole machine for 5 s in the middle of it (docs/perf.md §14).
# cpu-clock is a software event, so this works where hardware counters are not offered (`perf stat -e instructions
# true` says "not supported"). Needs Debian's linux-perf. Prints the request rate, the share of each command and,
# for PostgreSQL, the inclusive share of planning, execution, commit and the socket; the data file stays for
# `perf report -i <out>`.
#   usage: [STORE=tiered|redis|postgres|memory] [CAPACITY=10] loadtest/perf_profile.sh <bucket-api binary>
#          <sync|write_behind> <many|returning|hot> <output perf.data>
set -e
BIN=$(realpath "$1"); MODE=$2; SHAPE=$3; OUT=$(realpath -m "$4"); PORT=$((20000 + RANDOM % 10000)); RUN=pf$RANDOM$RANDOM
cd "$(dirname "$0")/.."
LOG=${TMPDIR:-/tmp}/perf_profile_$RUN.log
env BUCKET_LISTEN=127.0.0.1:$PORT BUCKET_STORE=${STORE:-tiered} \
  DATABASE_URL="postgres://postgres@127.0.0.1:5432/test?application_name=$RUN" REDIS_URL=redis://127.0.0.1:6379 \
  BUCKET_PG_SCHEMA=pf_$RUN BUCKET_REDIS_KEY_PREFIX=pf:$RUN: BUCKET_WRITE_MODE=$MODE \
  BUCKET_CAPACITY=${CAPACITY:-10} BUCKET_REFILL_PER_SEC=1 BUCKET_LOG_LEVEL=warning "$BIN" > "$LOG" 2>&1 &
SPID=$!
trap 'kill $SPID 2>/dev/null; psql -q postgres://postgres@127.0.0.1:5432/test -c "DROP SCHEMA IF EXISTS pf_$RUN CASCADE" 2>/dev/null' EXIT
for i in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.2; done
if [ "$SHAPE" = returning ]; then
  wrk -t1 -c32 -d6s -s loadtest/bench_http.lua http://127.0.0.1:$PORT/ -- many $RUN 0 10000 >/dev/null 2>&1
fi
wrk -t1 -c32 -d2s -s loadtest/bench_http.lua http://127.0.0.1:$PORT/ -- $SHAPE $RUN >/dev/null 2>&1
wrk -t1 -c32 -d9s -s loadtest/bench_http.lua http://127.0.0.1:$PORT/ -- $SHAPE $RUN > "$LOG.wrk" 2>&1 &
WPID=$!
sleep 2
perf record -e cpu-clock -F 1999 -a -g -o "$OUT" -- sleep 5 >/dev/null 2>&1
wait $WPID
grep Requests/sec "$LOG.wrk"
echo "-- share of all samples, by command"
perf report -i "$OUT" --no-children --sort comm -g none 2>/dev/null | grep "%" | head -8
echo "-- PostgreSQL, inclusive share of all samples"
perf report -i "$OUT" --comm postgres --children --sort sym -g none 2>/dev/null |
  grep -E "\] (PostgresMain|pg_plan_queries|standard_ExecutorStart|standard_ExecutorRun|CommitTransactionCommand|XLogFlush|secure_read)$|\[k\] (__x64_sys_sendto|do_fsync)$" | head -12
