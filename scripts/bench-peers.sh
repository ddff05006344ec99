#!/usr/bin/env bash
# Installs the peers isola is measured against (workerd and Deno, from npm)
# into a scratch folder outside the repository and prints their paths.
#   source <(scripts/bench-peers.sh env)   # exports WORKERD, DENO, DENO_DIR, DENO_NO_UPDATE_CHECK
set -euo pipefail
dir="${ISOLA_PEERS_DIR:-$HOME/.cache/isola/peers}"
mkdir -p "$dir"
if [ ! -x "$dir/node_modules/.bin/deno" ] || [ ! -x "$dir/node_modules/.bin/workerd" ]; then
  (cd "$dir" && npm install --no-audit --no-fund workerd deno >/dev/null)
fi
echo "export WORKERD=$dir/node_modules/.bin/workerd"
echo "export DENO=$dir/node_modules/.bin/deno"
echo "export DENO_DIR=$dir/deno_dir"
echo "export DENO_NO_UPDATE_CHECK=1"
