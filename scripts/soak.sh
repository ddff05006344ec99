#!/usr/bin/env bash
# Soak: hostile functions (CPU spin, heap and native-memory bombs, a zip
# bomb, log floods, parallel PBKDF2, Atomics.wait, unread 1 MiB uploads,
# exploding JSON results) run against one `isola serve` while wrk loads a
# hello function. Prints hello's latency quiet and under attack, and the
# node's RSS before, during and after. Loopback only; bounded in time.
#   scripts/soak.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
seconds="${1:-60}"
connections="${2:-16}"
cd "$root/bench/soak"
port=8795
"$isola" serve --addr 127.0.0.1:$port --data "$work/isola" --token soak >"$work/isola.log" 2>&1 &
server=$!
pids+=($server)
wait_for http://127.0.0.1:$port/healthz
export ISOLA_SERVER=http://127.0.0.1:$port ISOLA_TOKEN=soak ISOLA_CONFIG="$work/cli.json"
for name in hello cpu heap native bomb logs crypto wait explode; do
  "$isola" functions create --name "$name" >/dev/null
  "$isola" functions deploy "$name.js" --function "$name" --memory-mb 64 >/dev/null 2>&1
done
rss() { awk '/VmRSS/ {print int($2 / 1024) " MiB"}' "/proc/$server/status"; }
head -c $((1 << 20)) /dev/zero >"$work/upload.bin"
wrk -t2 -c"$connections" -d3s http://127.0.0.1:$port/fn/hello/ >/dev/null
echo "soak: ${seconds}s, wrk -t2 -c$connections, $(nproc) cores"
printf "%-14s %12s %10s %10s %10s %8s %10s\n" phase "requests/s" p50 p90 p99 non-2xx "cpu us/req"
export SERVER_PID="$server"
wrk_row quiet http://127.0.0.1:$port/fn/hello/ "" "" 10 "$connections"
baseline="$(rss)"

# Attackers: 4 concurrent loops in one Deno process (bounded by the
# deadline and by a round count), while wrk loads hello.
"$DENO" run --allow-net --allow-env attack.js "http://127.0.0.1:$port" soak "$seconds" 4 >"$work/attack.log" 2>&1 &
attackers=($!)
wrk_row "under attack" http://127.0.0.1:$port/fn/hello/ "" "" "$seconds" "$connections"
during="$(rss)"
wait "${attackers[@]}" || true
cat "$work/attack.log"
sleep 5
wrk_row after http://127.0.0.1:$port/fn/hello/ "" "" 10 "$connections"
after5="$(rss)"
sleep 25
echo "RSS: baseline $baseline, end of attack $during, 5 s after $after5, 30 s after $(rss)"
curl -s -H "authorization: Bearer soak" http://127.0.0.1:$port/metrics | grep -E '^isola_invocations_total' | sed 's/^/  /' | head -40
