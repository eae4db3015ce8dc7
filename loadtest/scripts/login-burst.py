#!/usr/bin/env python3
"""Login burst: N concurrent register+login pairs (default 1,000; 25 per source address 127.0.x.y, under the
registration limit of 30 per address) against a node on 127.0.0.1:PORT whose process id is PID; prints RSS before,
at peak, just after and after 10 s idle.

    python3 loadtest/scripts/login-burst.py PORT PID [N]
"""
import http.client, json, sys, threading, time, os
port = int(sys.argv[1]); pid = int(sys.argv[2]); n = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
tag = str(int(time.time()))
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1]) // 1024
results = {"ok": 0, "fail": 0}
lock = threading.Lock()
def one(i):
    src = f"127.0.{1 + i // 250}.{2 + (i // 25) % 10}"
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120, source_address=(src, 0))
        u = f"b{tag}{i}"
        c.request("POST", "/api/auth/register", json.dumps({"username": u, "email": f"{u}@example.org", "password": "password123"}), {"content-type": "application/json"})
        r = c.getresponse(); r.read()
        ok = r.status == 201
        c.request("POST", "/api/auth/login", json.dumps({"login": u, "password": "password123"}), {"content-type": "application/json"})
        r = c.getresponse(); r.read()
        ok = ok and r.status == 200
    except Exception as e:
        ok = False
    with lock: results["ok" if ok else "fail"] += 1
before = rss()
t0 = time.time()
ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
for t in ts: t.start()
peak = before
while any(t.is_alive() for t in ts):
    peak = max(peak, rss()); time.sleep(0.05)
took = time.time() - t0
after = rss()
time.sleep(10)
idle = rss()
print(json.dumps({"pairs": n, "ok": results["ok"], "fail": results["fail"], "seconds": round(took,1), "rss_mb_before": before, "rss_mb_peak": peak, "rss_mb_after": after, "rss_mb_after_10s_idle": idle}))
