# Shared by the bench-*.sh scripts (source it): the peers, the isola binary,
# a scratch folder, background processes stopped on exit, and wrk rows.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
eval "$("$root/scripts/bench-peers.sh")"
isola="$root/target/release/isola"
[ -x "$isola" ] || { echo "build first: ./scripts/cargo build --release -p isola" >&2; exit 1; }
command -v wrk >/dev/null || { echo "install wrk: apt-get install -y wrk" >&2; exit 1; }
work="$(mktemp -d)"
pids=()
# workerd can outlive a SIGTERM while connections are open: SIGKILL after 2 s.
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# start NAME COMMAND...: runs COMMAND in the background, its output in $work/NAME.log.
declare -A pid_of
start() { local log="$work/$1.log" name="$1"; shift; "$@" >"$log" 2>&1 & pids+=($!); pid_of[$name]=$!; }

# cpu_ticks PID: user + system clock ticks of PID and all its descendants
# (a peer started through a wrapper script runs in a child).
cpu_ticks() {
  local pid="$1" total=0 child
  [ -r "/proc/$pid/stat" ] && total=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat")
  for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
    total=$((total + $(cpu_ticks "$child")))
  done
  echo "$total"
}

# stop_from N: stops the processes started after the first N (5 s each at most,
# then killed outright) and forgets them.
stop_from() {
  local pid
  for pid in "${pids[@]:$1}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]:$1}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=("${pids[@]:0:$1}")
}

# wait_for URL: until it answers at all, any status (10 s at most).
wait_for() { for _ in $(seq 100); do curl -s -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

# request URL PAYLOAD TOKEN: the body of a GET of URL or, with a PAYLOAD, of a
# POST of it as JSON; with a TOKEN, as `authorization: Bearer TOKEN`.
request() {
  local args=(-s --max-time 5)
  [ -z "$2" ] || args+=(-X POST -H "content-type: application/json" --data-raw "$2")
  [ -z "$3" ] || args+=(-H "authorization: Bearer $3")
  curl "${args[@]}" "$1"
}

# load URL PAYLOAD TOKEN WRK_ARGS...: wrk on URL, the same request as `request`
# (bench/peers/post-json.lua when there is a PAYLOAD).
load() {
  local url="$1" payload="$2" token="$3"; shift 3
  [ -z "$payload" ] || set -- "$@" -s "$root/bench/peers/post-json.lua"
  BENCH_BODY="$payload" BENCH_TOKEN="$token" wrk -t2 "$@" "$url"
}

# wrk_row NAME URL PAYLOAD TOKEN DURATION CONNECTIONS: one line of requests/s,
# latency and errors; keeps requests/s and p99 in rps[NAME] and p99[NAME].
# The CPU column: the server's own CPU time (user + system, all its threads
# and child processes) per request served during the run, in microseconds;
# SERVER_PID names the process ("?" without one).
declare -A rps p99
wrk_row() {
  local out before after cpu="?"
  before="$([ -z "${SERVER_PID:-}" ] || cpu_ticks "$SERVER_PID")"
  out="$(load "$2" "$3" "$4" -c"$6" -d"$5s" --latency)"
  after="$([ -z "${SERVER_PID:-}" ] || cpu_ticks "$SERVER_PID")"
  rps[$1]="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p99[$1]="$(awk '$1=="99%" {print $2}' <<<"$out")"
  if [ -n "${SERVER_PID:-}" ]; then
    cpu="$(awk -v t="$((after - before))" -v hz="$(getconf CLK_TCK)" '/requests in/ { if ($1 > 0) printf "%.1f", t / hz * 1e6 / $1 }' <<<"$out")"
  fi
  printf "%-8s %12s %10s %10s %10s %8s %10s  %s\n" "$1" "${rps[$1]}" \
    "$(awk '$1=="50%" {print $2}' <<<"$out")" "$(awk '$1=="90%" {print $2}' <<<"$out")" "${p99[$1]}" \
    "$(awk '/Non-2xx/ {print $NF}' <<<"$out" | grep . || echo 0)" "$cpu" \
    "$(sed -n 's/.*Socket errors: //p' <<<"$out" | grep . || echo none)"
}

# ratios NAME...: requests/s of the first NAME over each other one's, and every p99.
ratios() {
  local first="$1" name line="" p99s=""
  for name in "${@:2}"; do
    line+="${line:+, }$first/$name = $(awk -v a="${rps[$first]}" -v b="${rps[$name]}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "?" }')×"
  done
  for name in "$@"; do p99s+="${p99s:+, }$name ${p99[$name]}"; done
  echo "$line   (p99: $p99s)"
}

# compare DURATION CONNECTIONS EXPECTED PAYLOAD "NAME URL [TOKEN]"...: checks
# each answers exactly EXPECTED (see `request`), warms each up for 2 s, then
# measures each in turn and prints the first one's ratios to the others.
compare() {
  local duration="$1" connections="$2" expected="$3" payload="$4"; shift 4
  local targets=("$@") target name url token got names=()
  for target in "${targets[@]}"; do
    read -r name url token <<<"$target"
    wait_for "$url"
    got="$(request "$url" "$payload" "$token")"
    [ "$got" = "$expected" ] || { echo "$name answered '$got', not '$expected' ($url)" >&2; exit 1; }
    load "$url" "$payload" "$token" -c"$connections" -d2s >/dev/null
    names+=("$name")
  done
  echo "wrk -t2 -c$connections -d${duration}s, $(nproc) cores"
  printf "%-8s %12s %10s %10s %10s %8s %10s  %s\n" peer "requests/s" p50 p90 p99 non-2xx "cpu us/req" "socket errors"
  for target in "${targets[@]}"; do
    read -r name url token <<<"$target"
    SERVER_PID="${pid_of[${name%%-*}]:-}" wrk_row "$name" "$url" "$payload" "$token" "$duration" "$connections"
  done
  ratios "${names[@]}"
}
