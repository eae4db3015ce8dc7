#!/bin/bash
# Four nodes x 19,000 clients sharing one Redis, then a one-node baseline (BENCHMARKS.md).
cd /work/main
P=four-$(date +%s)
# One token secret for every node: the admin token node 1 prints (--dev) works on all of them.
SECRET=four-nodes-load-test-secret-of-32-bytes
# 19,000 connections per node from one address, ramped fast: above the production defaults
# (max_connections_per_ip 1000, accept_rate 2000/s).
LIMITS="--max-connections 19800 --max-connections-per-ip 19800 --accept-rate 100000 --accept-burst 100000"
rm -f /tmp/four.sqlite*
for n in 1 2 3 4; do
  REDIS_URL=redis://127.0.0.1:6379 target/release/ovasabi --http-addr 127.0.0.1:1809$n --metrics-addr 127.0.0.1:1909$n --database-url sqlite:///tmp/four.sqlite --redis-prefix $P --node-id node-$n --grpc-addr 127.0.0.1:1808$n --jwt-secret "$SECRET" --dev $LIMITS > /tmp/four-node$n.log 2>&1 &
  sleep 0.5
done
sleep 1
OVASABI_TOKEN=$(grep -A1 '^dev mode:' /tmp/four-node1.log | tail -1); export OVASABI_TOKEN
target/release/ovasabi-loadtest cluster \
  --node http://127.0.0.1:18091 --metrics http://127.0.0.1:19091 \
  --node http://127.0.0.1:18092 --metrics http://127.0.0.1:19092 \
  --node http://127.0.0.1:18093 --metrics http://127.0.0.1:19093 \
  --node http://127.0.0.1:18094 --metrics http://127.0.0.1:19094 \
  --publish-node http://127.0.0.1:18091 --publish-metrics http://127.0.0.1:19091 \
  -n 76000 -c 1 --frequency 1 -r 1 --immediate -d 20s --ramp 4000 --deadline 5m \
  --json loadtest/results/four-nodes-76000.json
pkill -TERM -f "ovasabi --http-addr 127.0.0.1:1809"
sleep 3
P=one-$(date +%s)
D=$(mktemp -d)
REDIS_URL=redis://127.0.0.1:6379 target/release/ovasabi --http-addr 127.0.0.1:18091 --metrics-addr 127.0.0.1:19091 --database-url sqlite://$D/db.sqlite --redis-prefix $P --node-id single --grpc-addr 127.0.0.1:18081 --jwt-secret "$SECRET" --dev $LIMITS > /tmp/one-node.log 2>&1 &
sleep 1
OVASABI_TOKEN=$(grep -A1 '^dev mode:' /tmp/one-node.log | tail -1); export OVASABI_TOKEN
target/release/ovasabi-loadtest fanout --node http://127.0.0.1:18091 --metrics http://127.0.0.1:19091 \
  -n 19000 -c 1 --frequency 1 -r 1 --immediate -d 20s --ramp 4000 --deadline 5m --source-ips 1 \
  --json loadtest/results/four-nodes-baseline-19000.json
pkill -TERM -f "ovasabi --http-addr 127.0.0.1:1809"
echo FOUR-DONE
