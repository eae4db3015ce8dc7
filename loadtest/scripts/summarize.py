#!/usr/bin/env python3
"""Prints the matrix reports (JSON files given as arguments) as a Markdown table."""
import json
import sys

def secs(d):
    """A serde Duration ({"secs": s, "nanos": n}) in seconds."""
    return d["secs"] + d["nanos"] / 1e9


rows = []
for path in sys.argv[1:]:
    with open(path) as f:
        r = json.load(f)
    c = r["config"]
    slow = r.get("slow")
    rows.append((
        c["frequency_hz"], c["clients"], c["slow_fraction"], c["payload"],
        r["delivery"]["frames"] / secs(c["duration"]), r["delivery"]["events"] / secs(c["duration"]),
        r["fast"]["latency"]["p50_ms"], r["fast"]["latency"]["p99_ms"], r["fast"]["latency"]["p999_ms"],
        r["fast"]["missing"], r["server"]["frames_dropped"],
        r["server"]["rss_per_connection_bytes"], r["tick_rate"]["measured_mean_hz"],
        r["server"]["cpu_us_per_frame"], r["server"]["cpu_us_per_event"],
        r["connections"]["established"], slow["missing"] if slow else None,
    ))
rows.sort()
print("| Hz | clients | slow | payload B | frames/s | events/s | p50 ms | p99 ms | p99.9 ms | fast missing | server drops | RSS/conn B | tick Hz | CPU µs/frame | CPU µs/event |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for (hz, n, slow, p, fps, eps, p50, p99, p999, miss, drops, rss, tick, cpuf, cpue, est, _slow_miss) in rows:
    est_note = "" if est == n else f" ({est} up)"
    print(f"| {hz:g} | {n}{est_note} | {slow:.0%} | {p} | {fps:,.0f} | {eps:,.0f} | {p50:.1f} | {p99:.1f} | {p999:.1f} | {miss} | {drops:,.0f} | {rss:,.0f} | {tick:.3f} | {cpuf:.2f} | {cpue:.2f} |")
