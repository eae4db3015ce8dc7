#!/usr/bin/env bash
# Redis CPU per publish of the publish script at two commits (default: before and after the
# fault-handling script of issue 9), measured by Redis itself (INFO commandstats) while
# redis-benchmark runs 100,000 EVALSHAs over 8 connections, interleaved, twice.
# Usage: loadtest/scripts/publish-script-cost.sh [OLD_COMMIT] [NEW_COMMIT]   (Redis on :6379)
set -euo pipefail
cd "$(dirname "$0")/../.."
old=${1:-31f8f42}
new=${2:-HEAD}
script_at() {
  git show "$1:engine/src/broker/redis.rs" |
    python3 -c 'import re,sys; print(re.search(r"const PUBLISH_LUA: &str = r\"(.*?)\";", sys.stdin.read(), re.S).group(1))'
}
OLD=$(redis-cli SCRIPT LOAD "$(script_at "$old")")
NEW=$(redis-cli SCRIPT LOAD "$(script_at "$new")")
BODY='{"event":{"seq":0,"name":"e","data":{"id":"abcdefgh"},"ts":1764133200123,"immediate":true}}'
P=bench-script-$$
redis-cli SET "$P:epoch:c" E >/dev/null
per_call() { redis-cli INFO commandstats | grep cmdstat_evalsha | sed 's/.*usec_per_call=\([0-9.]*\).*/\1/'; }
for round in 1 2; do
  redis-cli CONFIG RESETSTAT >/dev/null
  redis-benchmark -q -n 100000 -c 8 EVALSHA "$OLD" 5 "$P:o:seq:c" "$P:o:h:c" "$P:o:state:c" "$P:o:c:c" \
    "$P:o:statev:c" event "$BODY" 1000 600 PUBLISH >/dev/null
  echo "round $round $old: $(per_call) us per publish"
  redis-cli CONFIG RESETSTAT >/dev/null
  redis-benchmark -q -n 100000 -c 8 EVALSHA "$NEW" 7 "$P:seq:c" "$P:h:c" "$P:state:c" "$P:c:c" \
    "$P:statev:c" "$P:epoch:c" "$P:pid:c" event "$BODY" 1000 600 PUBLISH E "inst:__rand_int__" __rand_int__ >/dev/null
  echo "round $round $new: $(per_call) us per publish"
done
redis-cli --scan --pattern "$P:*" | xargs -r redis-cli DEL >/dev/null
