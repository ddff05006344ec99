#!/usr/bin/env bash
# A fetch-proxy function (bench/peers/fetch-proxy.js: fetch a local upstream,
# return its body) in isola, workerd and Deno, loaded by wrk on loopback in the
# same run. The upstream is `deno serve bench/peers/hello-worker.js` on 8793.
#   scripts/bench-fetch-proxy.sh [DURATION] [CONNECTIONS]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
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

compare "${1:-10}" "${2:-32}" "isola http://127.0.0.1:8790/fn/proxy/" "workerd http://127.0.0.1:8791/" "deno http://127.0.0.1:8792/"
