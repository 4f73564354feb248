#!/bin/bash
# Instructions per request of bucket-api or the limitador harness (loadtest/limitador), in memory, by callgrind
# (docs/perf.md section 12): one worker under valgrind; for the floor and then the many-users shape of
# loadtest/limitador_compare.lua, wrk -t1 -c8 for a 4 s warm-up, the counters zeroed, 8 s measured, counters dumped.
#   usage: loadtest/limitador_callgrind.sh bucket|limitador <release binary> <output dir>
# Prints "<server> <shape> requests=N Ir=I per_request=I/N file=<dump>"; read a dump with callgrind_annotate.
set -e
SERVER=$1; BIN=$(realpath "$2"); OUT=$(realpath -m "$3")
PORT=$((18200 + RANDOM % 500)); mkdir -p "$OUT"; rm -f "$OUT"/callgrind.*
cd "$(dirname "$0")/.."
if [ "$SERVER" = bucket ]; then
  env BUCKET_LISTEN=127.0.0.1:$PORT BUCKET_LOG_LEVEL=warning BUCKET_WORKERS=1 BUCKET_CAPACITY=10 BUCKET_REFILL_PER_SEC=1 \
    valgrind --tool=callgrind --callgrind-out-file="$OUT"/callgrind.%p.out --dump-instr=no "$BIN" > "$OUT"/server.log 2>&1 &
  FLOOR=/healthz
else
  env LIMITADOR_BENCH_LISTEN=127.0.0.1:$PORT LIMITADOR_BENCH_WORKERS=1 LIMITADOR_BENCH_NAMESPACE=cg \
    valgrind --tool=callgrind --callgrind-out-file="$OUT"/callgrind.%p.out --dump-instr=no "$BIN" > "$OUT"/server.log 2>&1 &
  FLOOR=/status
fi
VPID=$!
for i in $(seq 60); do curl -sf http://127.0.0.1:$PORT$FLOOR >/dev/null && break; sleep 1; done
for mode in floor many; do
  wrk -t1 -c8 -d4s --timeout 10s -s loadtest/limitador_compare.lua http://127.0.0.1:$PORT -- $SERVER $mode warm-$mode cg >/dev/null 2>&1 || true
  callgrind_control -z $VPID >/dev/null
  R=$(wrk -t1 -c8 -d8s --timeout 10s -s loadtest/limitador_compare.lua http://127.0.0.1:$PORT -- $SERVER $mode run-$mode cg | grep '^BENCH' | sed 's/BENCH //' | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
  callgrind_control -d $mode $VPID >/dev/null
  F=$(ls -t "$OUT"/callgrind.*.out.* | head -1)
  IR=$(grep -E '^(summary|totals):' $F | head -1 | awk '{print $2}')
  echo "$SERVER $mode requests=$R Ir=$IR per_request=$((IR / R)) file=$F" | tee -a "$OUT"/summary.txt
done
kill $VPID; wait $VPID 2>/dev/null || true
