#!/usr/bin/env bash
# A cluster's throughput with 1, 3 and 5 workers (issue #14): nats-server
# with JetStream, one gateway, N `isola serve --role worker` processes, each
# worker held to the same CPU share by a cgroup v1 quota (as root; these
# machines have 2 cores, so the quota is what lets 5 workers fit), driven
# through the gateway by wrk over ten functions in turn: five compute
# functions (about 1 ms of JSON work each) and five call-out functions
# (each fetches a local upstream that answers after 20 ms).
#
#   scripts/bench-cluster.sh [DURATION] [CONNECTIONS] [QUOTA_PERCENT] [WORKERS...]
#   scripts/bench-cluster.sh 10 64 20 1 3 5
#
# Then the gateway's overhead: p50 of a hello function with one connection,
# through a gateway and one (unrestricted) worker, against a single node.
#
# Bounded: per worker count, 3 s of warm-up and DURATION seconds measured;
# 5 s per overhead run; everything listens on 127.0.0.1 only.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
duration="${1:-10}" connections="${2:-64}" quota="${3:-20}"
shift $(($# < 3 ? $# : 3))
counts=(1 3 5)
[ $# = 0 ] || counts=("$@")
[ "$(id -u)" = 0 ] || { echo "run as root: worker CPU quotas are cgroups" >&2; exit 1; }
command -v nats-server >/dev/null || { echo "install nats-server: apt-get install -y nats-server" >&2; exit 1; }
cgroups=/sys/fs/cgroup/cpu
[ -w "$cgroups" ] || { echo "no writable cgroup v1 cpu controller at $cgroups" >&2; exit 1; }
bench="$root/bench/cluster"
key="$work/node.key"

start nats nats-server -js -sd "$work/nats" -a 127.0.0.1 -p 4299
start upstream "$DENO" serve --port 8796 --host 127.0.0.1 "$bench/slow-upstream.js"
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/4299) 2>/dev/null && break; sleep 0.1; done
start gateway "$isola" serve --addr 127.0.0.1:8795 --data "$work/gateway" --token bench \
  --nats nats://127.0.0.1:4299 --role gateway --node-key-file "$key"
wait_for http://127.0.0.1:8795/healthz
wait_for http://127.0.0.1:8796/
export ISOLA_SERVER=http://127.0.0.1:8795 ISOLA_TOKEN=bench ISOLA_CONFIG="$work/cli.json"
for i in 1 2 3 4 5; do
  for kind in compute callout; do
    out="$({ "$isola" functions create --name "$kind$i" &&
      "$isola" functions deploy "$bench/$kind.js" --function "$kind$i" --allow-host 127.0.0.1; } 2>&1)" ||
      { echo "$out" >&2; exit 1; }
  done
done

# worker N: starts worker N in a cgroup of its own limited to $quota % of a core.
declare -a groups=()
worker() {
  local group="$cgroups/isola-bench-$1"
  mkdir -p "$group"
  echo 100000 >"$group/cpu.cfs_period_us"
  echo $((quota * 1000)) >"$group/cpu.cfs_quota_us"
  groups+=("$group")
  start "worker$1" "$isola" serve --role worker --workers 1 --data "$work/worker$1" \
    --nats nats://127.0.0.1:4299 --node-key-file "$key"
  echo "${pids[-1]}" >"$group/cgroup.procs"
}
release_groups() { local g; for g in "${groups[@]}"; do rmdir "$g" 2>/dev/null || true; done; groups=(); }
trap 'cleanup; release_groups' EXIT

echo "cluster: wrk -t2 -c$connections -d${duration}s over 10 functions; each worker held to ${quota}% of a core; $(nproc) cores"
printf "%-8s %12s %10s %10s %10s %8s %10s\n" workers "requests/s" p50 p90 p99 non-2xx "vs 1"
first=""
for n in "${counts[@]}"; do
  mark=${#pids[@]}
  for i in $(seq "$n"); do worker "$i"; done
  # Every worker's heartbeat reaches the gateway within a second or two.
  for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:8795/fn/compute1/ && break; sleep 0.1; done
  sleep 3
  wrk -t2 -c"$connections" -d3s -s "$bench/mix.lua" http://127.0.0.1:8795 >/dev/null
  out="$(wrk -t2 -c"$connections" -d"${duration}s" --latency -s "$bench/mix.lua" http://127.0.0.1:8795)"
  rate="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  first="${first:-$rate}"
  printf "%-8s %12s %10s %10s %10s %8s %10s\n" "$n" "$rate" \
    "$(awk '$1=="50%" {print $2}' <<<"$out")" "$(awk '$1=="90%" {print $2}' <<<"$out")" \
    "$(awk '$1=="99%" {print $2}' <<<"$out")" "$(awk '/Non-2xx/ {print $NF}' <<<"$out" | grep . || echo 0)" \
    "$(awk -v a="$rate" -v b="$first" 'BEGIN { printf "%.2f×", a / b }')"
  stop_from "$mark"
  release_groups
done

# The gateway's overhead: hello with one connection, cluster vs one node.
"$isola" functions create --name hello >/dev/null
"$isola" functions deploy "$root/bench/peers/hello-worker.js" --function hello >/dev/null 2>&1
mark=${#pids[@]}
start worker-free "$isola" serve --role worker --workers 1 --data "$work/worker-free" \
  --nats nats://127.0.0.1:4299 --node-key-file "$key"
for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:8795/fn/hello/ && break; sleep 0.1; done
start single "$isola" serve --addr 127.0.0.1:8794 --workers 1 --data "$work/single" --token bench
wait_for http://127.0.0.1:8794/healthz
ISOLA_SERVER=http://127.0.0.1:8794 "$isola" functions create --name hello >/dev/null
ISOLA_SERVER=http://127.0.0.1:8794 "$isola" functions deploy "$root/bench/peers/hello-worker.js" --function hello >/dev/null 2>&1
p50() { wrk -t1 -c1 -d2s "$1" >/dev/null; wrk -t1 -c1 -d5s --latency "$1" | awk '$1=="50%" {print $2}'; }
cluster_p50="$(p50 http://127.0.0.1:8795/fn/hello/)" single_p50="$(p50 http://127.0.0.1:8794/fn/hello/)"
echo "hello, one connection: p50 through a gateway and a worker $cluster_p50, on one node $single_p50"
stop_from "$mark"
