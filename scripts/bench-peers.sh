#!/usr/bin/env bash
# Installs the peers isola is measured against (workerd and Deno, from npm),
# and Hono and esbuild for the framework benchmark, into a scratch folder
# outside the repository and prints their paths.
#   source <(scripts/bench-peers.sh env)   # exports WORKERD, DENO, DENO_DIR, DENO_NO_UPDATE_CHECK, ESBUILD, PEERS_NODE_MODULES
set -euo pipefail
dir="${ISOLA_PEERS_DIR:-$HOME/.cache/isola/peers}"
mkdir -p "$dir"
if [ ! -x "$dir/node_modules/.bin/deno" ] || [ ! -x "$dir/node_modules/.bin/workerd" ] ||
   [ ! -x "$dir/node_modules/.bin/esbuild" ] || [ ! -f "$dir/node_modules/hono/package.json" ]; then
  (cd "$dir" && npm install --no-audit --no-fund workerd deno esbuild hono >/dev/null)
fi
echo "export WORKERD=$dir/node_modules/.bin/workerd"
echo "export DENO=$dir/node_modules/.bin/deno"
echo "export DENO_DIR=$dir/deno_dir"
echo "export DENO_NO_UPDATE_CHECK=1"
echo "export ESBUILD=$dir/node_modules/.bin/esbuild"
echo "export PEERS_NODE_MODULES=$dir/node_modules"
