#!/bin/bash
# Instructions per ShouldRateLimit decision of the release API's gateway front, by valgrind's callgrind (the §4c
# method for gRPC, docs/perf.md §4b.1 and §17): memory store, one worker, the bench's limits file
# (target/bench/grpc-limits.yaml, written by `cargo xtask bench --only grpc`), bucket-grpc-load on one connection:
# a 4 s warm-up, the counters zeroed, 8 s measured, the counters dumped.
#   usage: loadtest/callgrind_grpc.sh <bucket-api release binary> <label> [many|hot] [output dir]
# Prints "<label> <shape> decisions=N per_decision=I"; the dumps stay in the output dir for callgrind_annotate.
set -e
BIN=$(realpath "$1"); LABEL=$2; SHAPE=${3:-many}; P=${PORT:-18290}; G=$((P + 1))
OUT=$(realpath -m "${4:-target/callgrind}/$LABEL"); mkdir -p "$OUT"; rm -f "$OUT"/callgrind.*
cd "$(dirname "$0")/.."
LIMITS=target/bench/grpc-limits.yaml LOAD=target/release/bucket-grpc-load
[ -f $LIMITS ] && [ -x $LOAD ] || { echo "run cargo xtask bench --only grpc first (limits file, load generator)"; exit 1; }
BUCKET_LISTEN=127.0.0.1:$P BUCKET_GRPC_LISTEN=127.0.0.1:$G BUCKET_LIMITS=$LIMITS BUCKET_LOG_LEVEL=warning BUCKET_WORKERS=1 \
  valgrind --tool=callgrind --callgrind-out-file="$OUT"/callgrind.%p.out --dump-instr=no "$BIN" > "$OUT"/server.log 2>&1 &
VPID=$!
for i in $(seq 200); do curl -sf http://127.0.0.1:$P/healthz >/dev/null && break; sleep 0.2; done
load() { $LOAD --url http://127.0.0.1:$G --shape $SHAPE --prefix "$LABEL" --pool 100000 --concurrency 32 --connections 1 \
  --threads 1 --warmup 0 --duration "$1"; }
load 4 >/dev/null 2>&1
callgrind_control -z $VPID >/dev/null
N=$(load 8 2>&1 | grep '^BENCH' | sed 's/BENCH //' | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
callgrind_control -d $SHAPE $VPID >/dev/null
F=$(ls -t "$OUT"/callgrind.*.out.* | head -1)
IR=$(grep -E '^(summary|totals):' "$F" | head -1 | awk '{print $2}')
kill $VPID; wait $VPID 2>/dev/null || true
echo "$LABEL $SHAPE decisions=$N per_decision=$((IR / N))" | tee -a "$OUT"/summary.txt
