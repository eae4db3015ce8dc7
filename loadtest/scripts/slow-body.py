#!/usr/bin/env python3
"""Slow-body attack: N connections (from source addresses 127.0.2.2 on) each send request headers declaring
a 100-byte body and one byte of it, then nothing. Meanwhile /healthz (metrics port) and GET /api/campaigns are
timed every 0.5 s for SECS seconds. Prints the most connections held, how many the node closed, and latencies.

    ulimit -n 20000; python3 loadtest/scripts/slow-body.py HTTP_PORT METRICS_PORT N SECS
"""
import asyncio, json, sys, time
http_port, metrics_port, n, secs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
held = 0; refused = 0; closed_by_node = 0
async def attacker(i):
    global held, refused, closed_by_node
    src = f"127.0.{2 + i // 250}.{2 + i % 250}"
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", http_port, local_addr=(src, 0)), 10)
    except Exception:
        refused += 1; return
    w.write(b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    try:
        await w.drain()
    except Exception:
        refused += 1; return
    held += 1
    try:
        data = await asyncio.wait_for(r.read(4096), secs + 30)
        closed_by_node += 1
    except Exception:
        pass
    held -= 1
    w.close()
async def timed(port, path):
    t = time.monotonic()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        w.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await w.drain()
        line = await asyncio.wait_for(r.readline(), 5)
        w.close()
        return round((time.monotonic() - t) * 1000, 1), line.split(b" ")[1].decode() if line else "eof"
    except Exception as e:
        return None, type(e).__name__
async def main():
    tasks = [asyncio.create_task(attacker(i)) for i in range(n)]
    samples = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < secs:
        await asyncio.sleep(0.5)
        h = await timed(metrics_port, "/healthz")
        a = await timed(http_port, "/api/campaigns")
        samples.append({"t": round(time.monotonic() - t0, 1), "held": held, "refused": refused, "closed_by_node": closed_by_node, "healthz_ms": h[0], "healthz": h[1], "rest_ms": a[0], "rest": a[1]})
    for t in tasks: t.cancel()
    ok_h = [s["healthz_ms"] for s in samples if s["healthz_ms"] is not None and s["healthz"] == "200"]
    ok_r = [s["rest_ms"] for s in samples if s["rest_ms"] is not None and s["rest"] == "200"]
    med = lambda v: sorted(v)[len(v)//2] if v else None
    print(json.dumps({"attackers": n, "max_held": max(s["held"] for s in samples), "refused_at_connect": refused,
        "closed_by_node": closed_by_node, "healthz_ok": f"{len(ok_h)}/{len(samples)}", "healthz_median_ms": med(ok_h), "healthz_max_ms": max(ok_h) if ok_h else None,
        "rest_ok": f"{len(ok_r)}/{len(samples)}", "rest_median_ms": med(ok_r), "rest_max_ms": max(ok_r) if ok_r else None}))
    for s in samples[::4]: print(json.dumps(s))
asyncio.run(main())
