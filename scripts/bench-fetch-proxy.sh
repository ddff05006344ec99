#!/usr/bin/env bash
# A fetch-proxy function (bench/peers/fetch-proxy.js: fetch a local upstream,
# return its body) in isola, workerd and Deno, loaded by wrk on loopback in the
# same run: the proxy scenario of scripts/bench-http.sh.
#   scripts/bench-fetch-proxy.sh [DURATION] [CONNECTIONS]
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/bench-http.sh" "${1:-10}" "${2:-32}" proxy
