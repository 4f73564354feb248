#!/bin/bash
# Instructions per request of the release API, by valgrind's callgrind: repeatable on a busy machine, where
# wall-clock ratios are not (docs/perf.md §4c). Memory store, one worker, wrk -c8 for each shape of
# loadtest/bench_http.lua: a 4 s warm-up, then the counters zeroed, 8 s measured, the counters dumped.
#   usage: loadtest/callgrind_http.sh <path to bucket-api release binary> <label> [output dir]
# Prints "<label> <shape> requests=N Ir=I per_request=I/N"; the dumps stay in the output dir for callgrind_annotate.
set -e
BIN=$(realpath "$1"); LABEL=$2; PORT=${PORT:-18190}
OUT=$(realpath -m "${3:-target/callgrind}/$LABEL"); mkdir -p "$OUT"; rm -f "$OUT"/callgrind.*
cd "$(dirname "$0")/.."
BUCKET_LISTEN=127.0.0.1:$PORT BUCKET_LOG_LEVEL=warning BUCKET_WORKERS=1 valgrind --tool=callgrind --callgrind-out-file="$OUT"/callgrind.%p.out --dump-instr=no "$BIN" > "$OUT"/server.log 2>&1 &
VPID=$!
for i in $(seq 60); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 1; done
for mode in floor many hot check-many check-hot; do
  wrk -t1 -c8 -d4s --timeout 10s -s loadtest/bench_http.lua http://127.0.0.1:$PORT -- $mode warm-$mode >/dev/null 2>&1 || true
  callgrind_control -z $VPID >/dev/null
  R=$(wrk -t1 -c8 -d8s --timeout 10s -s loadtest/bench_http.lua http://127.0.0.1:$PORT -- $mode run-$mode | grep '^BENCH' | sed 's/BENCH //' | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
  callgrind_control -d $mode $VPID >/dev/null
  F=$(ls -t "$OUT"/callgrind.*.out.* | head -1)
  IR=$(grep -E '^(summary|totals):' $F | head -1 | awk '{print $2}')
  echo "$LABEL $mode requests=$R Ir=$IR per_request=$((IR / R))" | tee -a "$OUT"/summary.txt
done
kill $VPID; wait $VPID 2>/dev/null || true
