#!/usr/bin/env bash
# isola, Deno (`deno serve`) and workerd serving the same code over HTTP, each
# loaded by wrk on loopback in the same run, one after the other, per scenario:
#   hello      GET /: "hello world" (bench/peers/hello-worker.js)
#   json       POST {"name":"bench","n":1}, JSON back: isola's JSON route,
#              /v1/functions/json/invoke (json-handler.js); the peers a fetch
#              module doing the same (json-worker.js)
#   framework  GET /users/42 of a Hono app with middleware (framework-app.js),
#              bundled with Hono into one module by esbuild
#   proxy      GET /: the body of a fetch to a local upstream (fetch-proxy.js;
#              the upstream is `deno serve hello-worker.js` on 127.0.0.1:8793)
#   wasm       GET /: "hello world" from a wasi:http component (built from WAT by
#              `isola-bench wasm-hello`), beside isola's JS hello and the peers'
#              hello-worker.js (not in the default list)
# Ports: isola 8790, workerd 8791, deno 8792. Bounded: per scenario and peer,
# 2 s of warm-up and DURATION seconds measured.
#   scripts/bench-http.sh [DURATION] [CONNECTIONS] [SCENARIOS]   # 10 64 hello,json,framework,proxy
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
cd "$root/bench/peers"
duration="${1:-10}" connections="${2:-64}"
IFS=, read -ra scenarios <<<"${3:-hello,json,framework,proxy}"

start isola "$isola" serve --addr 127.0.0.1:8790 --data "$work/isola" --token bench
wait_for http://127.0.0.1:8790/healthz
export ISOLA_SERVER=http://127.0.0.1:8790 ISOLA_TOKEN=bench ISOLA_CONFIG="$work/cli.json"

# deploy NAME FILE [FLAGS...]: creates the isola function NAME and deploys FILE
# to it (the CLI's output shown only if that fails).
deploy() {
  local out
  out="$({ "$isola" functions create --name "$1" && "$isola" functions deploy "$2" --function "$1" "${@:3}"; } 2>&1)" ||
    { echo "$out" >&2; echo "could not deploy $2 to isola" >&2; exit 1; }
}

# peers CAPNP MODULE [DENO_FLAGS...]: workerd on CAPNP (127.0.0.1:8791) and
# `deno serve MODULE` on 127.0.0.1:8792.
peers() { start workerd "$WORKERD" serve "$1"; start deno "$DENO" serve "${@:3}" --port 8792 --host 127.0.0.1 "$2"; }

# framework_capnp MODULE: a workerd config beside MODULE serving it (embed
# paths are relative to the config); prints the config's path.
framework_capnp() {
  cat >"$(dirname "$1")/workerd-framework.capnp" <<EOF
using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "main", worker = .app) ],
  sockets = [ (name = "http", address = "127.0.0.1:8791", http = (), service = "main") ],
);
const app :Workerd.Worker = (
  modules = [ (name = "$(basename "$1")", esModule = embed "$(basename "$1")") ],
  compatibilityDate = "2024-09-01",
);
EOF
  echo "$(dirname "$1")/workerd-framework.capnp"
}

for scenario in "${scenarios[@]}"; do
  mark=${#pids[@]} payload="" token="" path=/ extra=""
  case "$scenario" in
    hello)
      what="GET / -> hello world" expected="hello world" isola_path=/fn/hello/
      deploy hello hello-worker.js
      peers workerd.capnp hello-worker.js ;;
    json)
      payload='{"name":"bench","n":1}' expected='{"hello":"bench","n":2}' token=bench
      what="POST $payload -> $expected" isola_path=/v1/functions/json/invoke
      deploy json json-handler.js
      peers workerd-json.capnp json-worker.js ;;
    framework)
      path=/users/42 expected='{"id":42,"name":"user 42"}'
      what="Hono app, GET $path -> $expected" isola_path=/fn/framework$path
      mkdir -p "$work/framework"
      NODE_PATH="$PEERS_NODE_MODULES" "$ESBUILD" framework-app.js --bundle --format=esm --platform=neutral \
        --outfile="$work/framework/app.js" --log-level=warning
      deploy framework "$work/framework/app.js"
      peers "$(framework_capnp "$work/framework/app.js")" "$work/framework/app.js" ;;
    proxy)
      what="GET / -> fetch http://127.0.0.1:8793/ -> hello world" expected="hello world" isola_path=/fn/proxy/
      start upstream "$DENO" serve --port 8793 --host 127.0.0.1 hello-worker.js
      wait_for http://127.0.0.1:8793/
      deploy proxy fetch-proxy.js --allow-host 127.0.0.1
      peers workerd-proxy.capnp fetch-proxy.js --allow-net=127.0.0.1:8793 ;;
    wasm)
      what="GET / -> hello world (isola: a wasi:http component, and the JS hello)" expected="hello world" isola_path=/fn/wasm/
      "$root/target/release/isola-bench" wasm-hello --out "$work/hello.wasm"
      deploy wasm "$work/hello.wasm"
      deploy hello hello-worker.js
      peers workerd.capnp hello-worker.js
      extra="isola-js http://127.0.0.1:8790/fn/hello/" ;;
    *) echo "unknown scenario '$scenario' (hello, json, framework, proxy, wasm)" >&2; exit 1 ;;
  esac
  echo "== $scenario: $what"
  # shellcheck disable=SC2086
  compare "$duration" "$connections" "$expected" "$payload" \
    "isola http://127.0.0.1:8790$isola_path $token" ${extra:+"$extra"} "deno http://127.0.0.1:8792$path" "workerd http://127.0.0.1:8791$path"
  stop_from "$mark"
  echo
done
