#!/bin/bash
# One store's throughput and CPU time per request, for A/B runs of the tiered store's settings (docs/perf.md §11):
# the release API on the local PostgreSQL and Redis, a fresh schema and key prefix, wrk -c32 for 5 s after a 2 s
# warm-up (returning: after 6 s of `many` over the same 10,000 users); CPU = utime+stime of bucket-api, its own
# PostgreSQL sessions (plus the WAL writer and checkpointer) and redis-server over the measured 5 s, per request;
# then the table's scan counters. DBURL overrides the database URL (session options: ?options=-c%20name%3Dvalue);
# CAPACITY the default policy's capacity (10; 1000000 makes every returning user's request allowed).
#   usage: [STORE=redis|postgres|tiered] loadtest/store_cpu.sh <bucket-api binary> <label> <sync|write_behind>
#          <commit_window_us> <many|returning> [pg pool size]
BIN=$(realpath "$1"); LABEL=$2; MODE=$3; WIN=$4; SHAPE=$5; POOL=${6:-32}; STORE=${STORE:-tiered}
PORT=$((20000 + RANDOM % 10000)); RUN=ab$RANDOM$RANDOM
cd "$(dirname "$0")/.."
DB=${DBURL:-postgres://postgres@127.0.0.1:5432/test}
case $DB in *\?*) DB="$DB&application_name=$RUN" ;; *) DB="$DB?application_name=$RUN" ;; esac
env BUCKET_LISTEN=127.0.0.1:$PORT BUCKET_STORE=$STORE DATABASE_URL="$DB" \
  REDIS_URL=redis://127.0.0.1:6379 BUCKET_PG_SCHEMA=ab_$RUN BUCKET_REDIS_KEY_PREFIX=ab:$RUN: \
  BUCKET_WRITE_MODE=$MODE BUCKET_COMMIT_WINDOW_US=$WIN BUCKET_PG_POOL_SIZE=$POOL BUCKET_CAPACITY=${CAPACITY:-10} BUCKET_REFILL_PER_SEC=1 \
  BUCKET_LOG_LEVEL=warning $BIN > ${TMPDIR:-/tmp}/$LABEL.log 2>&1 &
SPID=$!
for i in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.2; done
if [ "$SHAPE" = returning ]; then
  wrk -t1 -c32 -d6s -s loadtest/bench_http.lua http://127.0.0.1:$PORT/ -- many $RUN 0 10000 >/dev/null 2>&1
fi
wrk -t1 -c32 -d2s -s loadtest/bench_http.lua http://127.0.0.1:$PORT/ -- $SHAPE $RUN >/dev/null 2>&1
ticks() { local t=0; for p in "$@"; do
  set -- $(sed 's/^.*) //' /proc/$p/stat 2>/dev/null); [ -n "${12}" ] && t=$((t + ${12} + ${13})); done; echo $t; }
# PostgreSQL's share: this API's own sessions (by application_name) and the server's WAL writer and checkpointer,
# not the sessions of anything else using the same server meanwhile (tests, other benchmarks).
pg_pids() { echo $(psql -tA postgres://postgres@127.0.0.1:5432/test -c "SELECT pid FROM pg_stat_activity WHERE application_name = '$RUN' OR backend_type IN ('walwriter', 'checkpointer')"); }
PGP=$(pg_pids); RP="$(pgrep -x redis-server)"
M0=$(curl -s http://127.0.0.1:$PORT/metrics | grep -E "^bucket_postgres_statements_total" | tr '\n' ' ')
T0=$(ticks $SPID $PGP $RP); P0=$(ticks $PGP); R0=$(ticks $RP); A0=$(ticks $SPID)
OUT=$(wrk -t1 -c32 -d5s -s loadtest/bench_http.lua http://127.0.0.1:$PORT/ -- $SHAPE $RUN)
PGP=$(pg_pids)
T1=$(ticks $SPID $PGP $RP); P1=$(ticks $PGP); R1=$(ticks $RP); A1=$(ticks $SPID)
REQ=$(echo "$OUT" | grep "^BENCH" | sed 's/BENCH //' | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
RPS=$(echo "$OUT" | grep "^Requests/sec" | awk '{print $2}')
REFUSED=$(echo "$OUT" | grep "^BENCH" | sed 's/BENCH //' | python3 -c 'import json,sys; b=json.load(sys.stdin); print(round(b["non_2xx"]/b["requests"],3))')
ALLOWED=$(echo "$OUT" | grep "^BENCH" | sed 's/BENCH //' | python3 -c 'import json,sys; b=json.load(sys.stdin); print(b["requests"]-b["non_2xx"])')
LAT=$(echo "$OUT" | grep -E "^ +Latency" | awk '{print $2}')
M=$(curl -s http://127.0.0.1:$PORT/metrics | grep -E "^bucket_postgres_statements_total" | tr '\n' ' ')
kill $SPID; wait $SPID 2>/dev/null
STATS=$(psql -tA postgres://postgres@127.0.0.1:5432/test -c "SELECT relname||':seq='||seq_scan||',seq_tup='||seq_tup_read||',idx='||coalesce(idx_scan,0)||',n_live='||n_live_tup||',upd='||n_tup_upd||',hot='||n_tup_hot_upd FROM pg_stat_user_tables WHERE schemaname='ab_$RUN'" | tr '\n' ' ')
psql -q postgres://postgres@127.0.0.1:5432/test -c "DROP SCHEMA IF EXISTS ab_$RUN CASCADE" 2>/dev/null
CPU="us_per_req(api+pg+redis)=$(( (T1-T0)*10000000/REQ/1000 )) us_per_req(api)=$(( (A1-A0)*10000000/REQ/1000 )) pg=$(( (P1-P0)*10000000/REQ/1000 )) redis=$(( (R1-R0)*10000000/REQ/1000 ))"
[ "$ALLOWED" -gt 0 ] && CPU="$CPU pg_per_allowed=$(( (P1-P0)*10000000/ALLOWED/1000 ))"
echo "$LABEL $CPU refused=$REFUSED store=$STORE mode=$MODE window=$WIN shape=$SHAPE pool=$POOL rps=$RPS lat=$LAT load=$(cut -d' ' -f1 /proc/loadavg) requests=$REQ before: $M0 after: $M $STATS"
