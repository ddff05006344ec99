#!/usr/bin/env bash
# Hello-world Workers script over HTTP: isola, workerd and Deno serving the
# identical module (bench/peers/hello-worker.js), each loaded by wrk on
# loopback in the same run, one after the other. Bounded: DURATION seconds each.
#   scripts/bench-http.sh [DURATION] [CONNECTIONS]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
cd "$root/bench/peers"

"$isola" serve --addr 127.0.0.1:8790 --data "$work/isola" --token bench >"$work/isola.log" 2>&1 &
pids+=($!)
"$WORKERD" serve workerd.capnp >"$work/workerd.log" 2>&1 &
pids+=($!)
"$DENO" serve --port 8792 --host 127.0.0.1 hello-worker.js >"$work/deno.log" 2>&1 &
pids+=($!)
wait_for http://127.0.0.1:8790/healthz
export ISOLA_SERVER=http://127.0.0.1:8790 ISOLA_TOKEN=bench ISOLA_CONFIG="$work/cli.json"
"$isola" functions create --name hello >/dev/null
"$isola" functions deploy hello-worker.js --function hello >/dev/null 2>&1

compare "${1:-10}" "${2:-64}" "isola http://127.0.0.1:8790/fn/hello/" "workerd http://127.0.0.1:8791/" "deno http://127.0.0.1:8792/"
