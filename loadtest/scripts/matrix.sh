#!/usr/bin/env bash
# The single-node matrix of BENCHMARKS.md: tick rate × clients × slow fraction × payload.
# Starts a release node pinned to CPU 0, runs ovasabi-loadtest pinned to CPU 1, one run per
# cell, and writes one JSON report per cell under $OUT (default loadtest/results/matrix).
# Usage: loadtest/scripts/matrix.sh [quick]   ("quick" runs a 4-cell subset)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-loadtest/results/matrix}
DURATION=${DURATION:-10s}
mkdir -p "$OUT"
cargo build --release -p api -p loadtest >/dev/null
# The harness opens up to 19,000 connections from one address, 4,000 a second: above the
# node's production defaults (max_connections_per_ip 1000, accept_rate 2000/s).
LIMITS="--max-connections 19800 --max-connections-per-ip 19800 --accept-rate 100000 --accept-burst 100000"

HZS="1 10 60"; CLIENTS="1000 5000 19000"; SLOWS="0 0.1"; PAYLOADS="100 2000"
if [ "${1:-}" = quick ]; then HZS="10"; CLIENTS="1000"; SLOWS="0 0.1"; PAYLOADS="100 2000"; fi

for hz in $HZS; do for n in $CLIENTS; do for slow in $SLOWS; do for p in $PAYLOADS; do
  name="hz${hz}-n${n}-slow${slow}-p${p}"
  data=$(mktemp -d)
  taskset -c 0 target/release/ovasabi --http-addr 127.0.0.1:18090 --metrics-addr 127.0.0.1:19090 \
    --grpc-addr 127.0.0.1:18080 --database-url "sqlite://$data/db.sqlite" --dev $LIMITS >"$data/node.log" 2>&1 &
  node=$!
  for _ in $(seq 50); do curl -sf 127.0.0.1:19090/healthz >/dev/null && break; sleep 0.1; done
  # --dev prints an admin token on the line after "dev mode:"; the harness sends it.
  OVASABI_TOKEN=$(grep -A1 '^dev mode:' "$data/node.log" | tail -1); export OVASABI_TOKEN
  # Every tick carries events: publish at twice the tick rate, at least 10 events/s.
  rate=$(python3 -c "print(max(10, 2 * $hz))")
  if [ "$slow" = 0 ]; then scenario=(fanout); else scenario=(slow --slow-fraction "$slow" --slow-read stall); fi
  taskset -c 1 target/release/ovasabi-loadtest "${scenario[@]}" \
    --node http://127.0.0.1:18090 --metrics http://127.0.0.1:19090 \
    -n "$n" -c 1 --frequency "$hz" -r "$rate" -d "$DURATION" -p "$p" --ramp 4000 \
    --deadline 3m --json "$OUT/$name.json" >"$OUT/$name.txt" 2>/dev/null || echo "run $name failed"
  kill -TERM $node; wait $node || true
  rm -rf "$data"
  echo "$name: $(grep -E '^delivery' "$OUT/$name.txt" || true)"
done; done; done; done
