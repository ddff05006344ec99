#!/usr/bin/env bash
# Hello-world Workers script over HTTP: isola, workerd and Deno serving the
# identical module (bench/peers/hello-worker.js), each loaded by wrk on
# loopback in the same run, one after the other. Bounded: DURATION seconds each.
#   scripts/bench-http.sh [DURATION] [CONNECTIONS]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
duration="${1:-10}"
connections="${2:-64}"
eval "$("$root/scripts/bench-peers.sh")"
isola="$root/target/release/isola"
[ -x "$isola" ] || { echo "build first: ./scripts/cargo build --release -p isola" >&2; exit 1; }
command -v wrk >/dev/null || { echo "install wrk: apt-get install -y wrk" >&2; exit 1; }

work="$(mktemp -d)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

wait_for() { for _ in $(seq 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

# isola
"$isola" serve --addr 127.0.0.1:8790 --data "$work/isola" --token bench >"$work/isola.log" 2>&1 &
pids+=($!)
wait_for http://127.0.0.1:8790/healthz
export ISOLA_SERVER=http://127.0.0.1:8790 ISOLA_TOKEN=bench ISOLA_CONFIG="$work/cli.json"
"$isola" functions create --name hello >/dev/null
"$isola" functions deploy "$root/bench/peers/hello-worker.js" --function hello >/dev/null 2>&1
# workerd
(cd "$root/bench/peers" && exec "$WORKERD" serve workerd.capnp) >"$work/workerd.log" 2>&1 &
pids+=($!)
# deno
(cd "$root/bench/peers" && exec "$DENO" serve --port 8792 --host 127.0.0.1 hello-worker.js) >"$work/deno.log" 2>&1 &
pids+=($!)

targets=("isola http://127.0.0.1:8790/fn/hello/" "workerd http://127.0.0.1:8791/" "deno http://127.0.0.1:8792/")
for target in "${targets[@]}"; do
  set -- $target
  wait_for "$2"
  [ "$(curl -s "$2")" = "hello world" ] || { echo "$1 did not answer hello world" >&2; exit 1; }
  wrk -t2 -c"$connections" -d2s "$2" >/dev/null   # warm-up
done
echo "wrk -t2 -c$connections -d${duration}s, hello-world fetch handler, $(nproc) cores"
printf "%-8s %12s %10s %10s %10s\n" peer "requests/s" p50 p90 p99
for target in "${targets[@]}"; do
  set -- $target
  out="$(wrk -t2 -c"$connections" -d"${duration}s" --latency "$2")"
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p50="$(awk '$1=="50%" {print $2}' <<<"$out")"
  p90="$(awk '$1=="90%" {print $2}' <<<"$out")"
  p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
  errors="$(grep -E "Non-2xx|Socket errors" <<<"$out" || true)"
  printf "%-8s %12s %10s %10s %10s %s\n" "$1" "$rps" "$p50" "$p90" "$p99" "$errors"
done
