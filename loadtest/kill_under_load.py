# The exactness side of kill_under_load.sh: 16 threads send GET / for 20 keys over the given instances, as fast as
# each answer comes, for DURATION seconds; prints the answers of each second (status:X-Data-Source), the answers
# slower than 2 s, and each key's grants against capacity + refill x elapsed, the most any store may grant.
#   usage: python3 kill_under_load.py <port,port,...> <run id> <seconds> <capacity> <refill per s>
import collections
import http.client
import sys
import threading
import time

ports = [int(p) for p in sys.argv[1].split(",")]
run, duration = sys.argv[2], float(sys.argv[3])
capacity, refill = int(sys.argv[4]), float(sys.argv[5])
keys = [f"{run}-k{i}" for i in range(20)]
lock = threading.Lock()
grants = collections.Counter()
per_second = collections.defaultdict(collections.Counter)
slow = []
t0 = time.time()


def worker(n):
    conns, i = {}, n
    while time.time() - t0 < duration:
        port, key = ports[i % len(ports)], keys[i % len(keys)]
        i += 7
        start = time.time()
        try:
            conn = conns.get(port) or http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conns[port] = conn
            conn.request("GET", "/", headers={"X-User-ID": key})
            reply = conn.getresponse()
            reply.read()
            answer = f"{reply.status}:{reply.getheader('x-data-source', '-')}"
        except Exception as e:  # a refused or reset connection is an answer to count, not a reason to stop
            conns.pop(port, None)
            answer = "error:" + type(e).__name__
            time.sleep(0.05)
        took = time.time() - start
        with lock:
            per_second[int(start - t0)][answer] += 1
            if answer.startswith("200"):
                grants[key] += 1
            if took > 2:
                slow.append((int(start - t0), answer, round(took, 2)))


threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.time() - t0
for second in sorted(per_second):
    print(second, dict(per_second[second]))
print(f"slower than 2 s: {len(slow)} {slow[:20]}")
bound = capacity + int(refill * elapsed)
print(f"grants per key (at most {bound} = {capacity} + {refill}/s x {elapsed:.1f} s): {sorted(grants.values())}")
over = {k: v for k, v in grants.items() if v > bound}
print("OVER CAPACITY:", over if over else "none")
sys.exit(1 if over else 0)
