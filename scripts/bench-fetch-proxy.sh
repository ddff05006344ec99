#!/usr/bin/env bash
# A fetch-proxy function (bench/peers/fetch-proxy.js: fetch a local upstream,
# return its body) in isola, workerd and Deno, loaded by wrk on loopback in the
# same run. The upstream is `deno serve bench/peers/hello-worker.js` on 8793.
#   scripts/bench-fetch-proxy.sh [DURATION] [CONNECTIONS]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
duration="${1:-10}"
connections="${2:-32}"
eval "$("$root/scripts/bench-peers.sh")"
isola="$root/target/release/isola"
[ -x "$isola" ] || { echo "build first: ./scripts/cargo build --release -p isola" >&2; exit 1; }

work="$(mktemp -d)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
wait_for() { for _ in $(seq 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

cd "$root/bench/peers"
"$DENO" serve --port 8793 --host 127.0.0.1 hello-worker.js >"$work/upstream.log" 2>&1 &
pids+=($!)
"$isola" serve --addr 127.0.0.1:8790 --data "$work/isola" --token bench >"$work/isola.log" 2>&1 &
pids+=($!)
"$WORKERD" serve workerd-proxy.capnp >"$work/workerd.log" 2>&1 &
pids+=($!)
"$DENO" serve --allow-net=127.0.0.1:8793 --port 8792 --host 127.0.0.1 fetch-proxy.js >"$work/deno.log" 2>&1 &
pids+=($!)
wait_for http://127.0.0.1:8793/
wait_for http://127.0.0.1:8790/healthz
export ISOLA_SERVER=http://127.0.0.1:8790 ISOLA_TOKEN=bench ISOLA_CONFIG="$work/cli.json"
"$isola" functions create --name proxy >/dev/null
"$isola" functions deploy fetch-proxy.js --function proxy --allow-host 127.0.0.1 >/dev/null 2>&1

targets=("isola http://127.0.0.1:8790/fn/proxy/" "workerd http://127.0.0.1:8791/" "deno http://127.0.0.1:8792/")
for target in "${targets[@]}"; do
  set -- $target
  wait_for "$2"
  [ "$(curl -s "$2")" = "hello world" ] || { echo "$1 did not proxy hello world: $(curl -s "$2")" >&2; exit 1; }
  wrk -t2 -c"$connections" -d2s "$2" >/dev/null
done
echo "wrk -t2 -c$connections -d${duration}s, fetch-proxy function, upstream deno serve, $(nproc) cores"
printf "%-8s %12s %10s %10s %10s\n" peer "requests/s" p50 p90 p99
for target in "${targets[@]}"; do
  set -- $target
  out="$(wrk -t2 -c"$connections" -d"${duration}s" --latency "$2")"
  printf "%-8s %12s %10s %10s %10s %s\n" "$1" "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
    "$(awk '$1=="50%" {print $2}' <<<"$out")" "$(awk '$1=="90%" {print $2}' <<<"$out")" \
    "$(awk '$1=="99%" {print $2}' <<<"$out")" "$(grep -E "Non-2xx|Socket errors" <<<"$out" || true)"
done
