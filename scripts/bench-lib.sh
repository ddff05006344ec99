# Shared by the bench-*.sh scripts (source it): the peers, the isola binary,
# a scratch folder, background processes stopped on exit, and wrk rows.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
eval "$("$root/scripts/bench-peers.sh")"
isola="$root/target/release/isola"
[ -x "$isola" ] || { echo "build first: ./scripts/cargo build --release -p isola" >&2; exit 1; }
command -v wrk >/dev/null || { echo "install wrk: apt-get install -y wrk" >&2; exit 1; }
work="$(mktemp -d)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# wait_for URL: until it answers (10 s at most).
wait_for() { for _ in $(seq 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

# wrk_row NAME URL DURATION CONNECTIONS: one line of requests/s and latency.
wrk_row() {
  local out
  out="$(wrk -t2 -c"$4" -d"$3s" --latency "$2")"
  printf "%-8s %12s %10s %10s %10s %s\n" "$1" "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
    "$(awk '$1=="50%" {print $2}' <<<"$out")" "$(awk '$1=="90%" {print $2}' <<<"$out")" \
    "$(awk '$1=="99%" {print $2}' <<<"$out")" "$(grep -E "Non-2xx|Socket errors" <<<"$out" || true)"
}

# compare DURATION CONNECTIONS "NAME URL"...: checks each answers hello world,
# warms each up for 2 s, then measures each in turn.
compare() {
  local duration="$1" connections="$2"; shift 2
  local targets=("$@") target
  for target in "${targets[@]}"; do
    set -- $target
    wait_for "$2"
    [ "$(curl -s "$2")" = "hello world" ] || { echo "$1 did not answer hello world" >&2; exit 1; }
    wrk -t2 -c"$connections" -d2s "$2" >/dev/null
  done
  echo "wrk -t2 -c$connections -d${duration}s, $(nproc) cores"
  printf "%-8s %12s %10s %10s %10s\n" peer "requests/s" p50 p90 p99
  for target in "${targets[@]}"; do
    set -- $target
    wrk_row "$1" "$2" "$duration" "$connections"
  done
}
