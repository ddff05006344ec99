#!/usr/bin/env bash
# WebSocket echo on isola, Deno (`deno serve`, Deno.upgradeWebSocket) and
# workerd (WebSocketPair: the same module as isola's), one after the other
# in one run, on loopback:
#   1. messages/s and round-trip p50/p99: `isola-bench ws-echo`, CONNECTIONS
#      connections each sending its next 64-byte message when the echo came;
#   2. memory per idle connection: RSS of each server before and while
#      `isola-bench ws-idle` holds IDLE connections open.
# Ports: isola 8790, workerd 8791, deno 8792. Bounded: DURATION seconds per
# peer, idle connections held 5 s.
#   scripts/bench-ws.sh [DURATION] [CONNECTIONS] [IDLE]   # 10 32 1000
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
cd "$root/bench/peers"
duration="${1:-10}" connections="${2:-32}" idle="${3:-1000}"
bench="$root/target/release/isola-bench"
[ -x "$bench" ] || { echo "build first: ./scripts/cargo build --release -p isola -p isola-bench" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

start isola "$isola" serve --addr 127.0.0.1:8790 --data "$work/isola" --token bench
isola_pid=${pids[-1]}
wait_for http://127.0.0.1:8790/healthz
export ISOLA_SERVER=http://127.0.0.1:8790 ISOLA_TOKEN=bench ISOLA_CONFIG="$work/cli.json"
"$isola" deploy ws-echo-worker.js --function echo >/dev/null
start workerd "$WORKERD" serve workerd-ws.capnp
workerd_pid=${pids[-1]}
start deno "$DENO" serve --port 8792 --host 127.0.0.1 ws-echo-deno.js
deno_pid=${pids[-1]}
wait_for http://127.0.0.1:8791/
wait_for http://127.0.0.1:8792/
declare -A url=([isola]=ws://127.0.0.1:8790/fn/echo/ [deno]=ws://127.0.0.1:8792/ [workerd]=ws://127.0.0.1:8791/)
declare -A pid=([isola]=$isola_pid [deno]=$deno_pid [workerd]=$workerd_pid)
declare -A mps p99us

echo "WebSocket echo, $connections connections, 64 B text messages, ${duration} s each"
printf "%-8s %12s %10s %10s\n" peer "messages/s" "p50 µs" "p99 µs"
for name in isola deno workerd; do
  out="$("$bench" ws-echo --url "${url[$name]}" --connections "$connections" --duration "$duration" --json)"
  mps[$name]="$(jq -r '.messages_per_s | floor' <<<"$out")"
  p99us[$name]="$(jq -r '.latency.p99_us' <<<"$out")"
  printf "%-8s %12s %10s %10s\n" "$name" "${mps[$name]}" "$(jq -r '.latency.p50_us' <<<"$out")" "${p99us[$name]}"
done
awk -v i="${mps[isola]}" -v d="${mps[deno]}" -v w="${mps[workerd]}" \
  'BEGIN { printf "isola/deno = %.2f×, isola/workerd = %.2f× (messages/s)\n", i / d, i / w }'

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
echo
echo "Memory per idle connection, $idle connections held open"
printf "%-8s %12s %12s %14s\n" peer "RSS before" "RSS open" "per connection"
for name in isola deno workerd; do
  before="$(rss_kib "${pid[$name]}")"
  fifo="$work/idle-$name"
  "$bench" ws-idle --url "${url[$name]}" --connections "$idle" --hold 5 >"$fifo" &
  idler=$!
  for _ in $(seq 300); do grep -q '^open' "$fifo" 2>/dev/null && break; sleep 0.1; done
  sleep 1
  during="$(rss_kib "${pid[$name]}")"
  wait "$idler" || true
  printf "%-8s %9s KiB %9s KiB %10s KiB\n" "$name" "$before" "$during" \
    "$(awk -v a="$before" -v b="$during" -v n="$idle" 'BEGIN { printf "%.1f", (b - a) / n }')"
done
