#!/usr/bin/env python3
"""Quick throughput check of a running dfend-emulator.

usage: bench.py PORT [N_REQUESTS] [N_CONNECTIONS] [KEY]

Each connection is one keep-alive http.client connection (TCP_NODELAY) that
sends N_REQUESTS/N_CONNECTIONS sequential POST /identity requests with unique
userIds.  Prints requests/s.  Python's client is the bottleneck, not the server.
"""
import http.client, json, socket, sys, threading, time

port = int(sys.argv[1])
n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
conns = int(sys.argv[3]) if len(sys.argv) > 3 else 1
key = sys.argv[4] if len(sys.argv) > 4 else "sk_test_emulator"
per = n // conns
errors = []

def run(ci):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.connect()
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    hdrs = {"x-api-key": key, "content-type": "application/json"}
    tag = "%d-%d" % (ci, time.monotonic_ns())
    for i in range(per):
        c.request("POST", "/identity", body=json.dumps({"userId": "bench-%s-%d" % (tag, i), "email": "b%d@example.com" % i}), headers=hdrs)
        r = c.getresponse()
        r.read()
        if r.status != 200:
            errors.append(r.status)
    c.close()

t0 = time.perf_counter()
ts = [threading.Thread(target=run, args=(i,)) for i in range(conns)]
for t in ts: t.start()
for t in ts: t.join()
dt = time.perf_counter() - t0
total = per * conns
print("%d requests over %d keep-alive connection(s) in %.3f s: %.0f req/s, %d errors"
      % (total, conns, dt, total / dt, len(errors)))
sys.exit(1 if errors else 0)
