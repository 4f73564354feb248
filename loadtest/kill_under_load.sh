#!/bin/bash
# The tiered store's fault matrix by hand, with real kills instead of fault proxies (docs/reliability.md, "Killed
# under load"): a private PostgreSQL and Redis on ports of their own, two bucket-api instances on them, wrk putting
# new users on both, kill_under_load.py hammering 20 keys over both and counting each key's grants; meanwhile
# Redis is SIGKILLed and restarted, then PostgreSQL (postmaster and sessions; it restarts with crash recovery),
# then both. Run as root (it starts PostgreSQL as the postgres user) on a machine with PostgreSQL's server
# binaries, redis-server and wrk. Prints the timeline, the answers of each second, each key's grants against the
# most allowed, the metrics of both instances and how many "store failed" lines each logged.
#   usage: loadtest/kill_under_load.sh <bucket-api binary> <sync|write_behind> [aof]
#   aof: Redis keeps an append-only file (fsync always) and restarts with its data, instead of empty.
set -u
BIN=$(realpath "$1"); MODE=$2; AOF=${3:-}
CAPACITY=20; REFILL=2; PGPORT=55432; RPORT=56379
cd "$(dirname "$0")"
D=$(mktemp -d /tmp/kill_under_load.XXXX); chown postgres "$D"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { su postgres -c "$*"; }
pg_start() { as_pg "$PGBIN/pg_ctl -D $D/pg -o '-p $PGPORT -k $D -c max_connections=200' -l $D/pg.log start -w" >/dev/null; }
redis_start() {
  if [ "$AOF" = aof ]; then set -- --appendonly yes --appendfsync always; else set -- --save '' --appendonly no; fi
  (cd "$D" && redis-server --bind 127.0.0.1 --port $RPORT --daemonize yes --logfile "$D/redis.log" "$@")
}
redis_kill() { pkill -9 -f "redis-server 127.0.0.1:$RPORT"; }
APIS=""
cleanup() { kill $APIS 2>/dev/null; redis_kill; as_pg "$PGBIN/pg_ctl -D $D/pg stop -m immediate" >/dev/null 2>&1; }
trap cleanup EXIT
as_pg "$PGBIN/initdb -D $D/pg -A trust -U postgres" >/dev/null
pg_start || { echo "PostgreSQL did not start (port $PGPORT taken?): $D/pg.log"; exit 2; }
redis_start || { echo "Redis did not start (port $RPORT taken?)"; exit 2; }
for port in 18080 18081; do
  env BUCKET_LISTEN=127.0.0.1:$port BUCKET_STORE=tiered DATABASE_URL=postgres://postgres@127.0.0.1:$PGPORT/postgres \
    REDIS_URL=redis://127.0.0.1:$RPORT BUCKET_WRITE_MODE=$MODE BUCKET_CAPACITY=$CAPACITY BUCKET_REFILL_PER_SEC=$REFILL \
    BUCKET_FAILURE_MODE=fail_closed BUCKET_LOG_FORMAT=text "$BIN" > "$D/api$port.log" 2>&1 &
  APIS="$APIS $!"
done
for _ in $(seq 100); do
  curl -sf http://127.0.0.1:18080/healthz >/dev/null && curl -sf http://127.0.0.1:18081/healthz >/dev/null && break
  sleep 0.2
done
RUN=k$RANDOM
for port in 18080 18081; do
  wrk -t1 -c16 -d75s -s bench_http.lua http://127.0.0.1:$port/ -- many w$port$RUN > "$D/wrk$port.txt" 2>&1 &
done
python3 kill_under_load.py 18080,18081 $RUN 80 $CAPACITY $REFILL > "$D/checker.txt" 2>&1 &
CHECKER=$!
T0=$(date +%s)
event() { echo "t=$(( $(date +%s) - T0 )) s: $*"; }
sleep 10; event "Redis SIGKILLed"; redis_kill
sleep 10; event "Redis restarted"; redis_start
sleep 10; event "PostgreSQL SIGKILLed (postmaster and every process of it)"
PM=$(head -1 "$D/pg/postmaster.pid"); pkill -9 -P "$PM"; kill -9 "$PM"
sleep 10; event "PostgreSQL restarted (crash recovery)"; pg_start
sleep 10; event "both SIGKILLed"; redis_kill; as_pg "$PGBIN/pg_ctl -D $D/pg stop -m immediate" >/dev/null
sleep 8; event "PostgreSQL restarted"; pg_start
sleep 4; event "Redis restarted"; redis_start
wait $CHECKER; STATUS=$?
event "end"
cat "$D/checker.txt"
for port in 18080 18081; do
  echo "== instance $port"
  curl -s http://127.0.0.1:$port/metrics | grep -E "^bucket_(fallbacks|redis_invalidations|write_queue_(depth|dropped)|dependency_up|store_errors|failure_mode)"
  echo "\"store failed\" lines logged: $(grep -c 'store failed' "$D/api$port.log")"
  grep -h "Requests/sec" "$D/wrk$port.txt"
done
echo "logs: $D"
exit $STATUS
