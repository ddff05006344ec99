#!/usr/bin/env bash
# Placement in a cluster (issue #14): the warm-hit rate under a skewed load
# over many functions, and how long a dead worker's hottest function takes
# to answer again (and warm) elsewhere.
#
#   scripts/bench-placement.sh [DURATION] [CONNECTIONS] [WORKERS] [FUNCTIONS]
#   scripts/bench-placement.sh 20 32 3 1000
#
# nats-server with JetStream, one gateway, WORKERS worker processes;
# FUNCTIONS functions (each a small fetch handler) deployed through the
# API, each invoked once, then wrk draws functions from a Zipf distribution
# (s = 1.1, bench/cluster/zipf.lua) for DURATION seconds. The cold and warm
# starts come from the gateway's /metrics (it sees every outcome), counted
# over the measured run only. Then worker 1 is SIGKILLed and the hottest of
# its functions is asked every 10 ms until it answers, then until it
# answers warm.
#
# Bounded: DURATION seconds of load, 10 s at most waiting after the kill;
# everything listens on 127.0.0.1 only.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
duration="${1:-20}" connections="${2:-32}" workers="${3:-3}" functions="${4:-1000}"
command -v nats-server >/dev/null || { echo "install nats-server: apt-get install -y nats-server" >&2; exit 1; }
key="$work/node.key" gateway=http://127.0.0.1:8795

start nats nats-server -js -sd "$work/nats" -a 127.0.0.1 -p 4299
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/4299) 2>/dev/null && break; sleep 0.1; done
start gateway "$isola" serve --addr 127.0.0.1:8795 --data "$work/gateway" --token bench \
  --metrics-token bench --nats nats://127.0.0.1:4299 --role gateway --node-key-file "$key"
wait_for "$gateway/healthz"
for i in $(seq "$workers"); do
  start "worker$i" "$isola" serve --role worker --data "$work/worker$i" \
    --nats nats://127.0.0.1:4299 --node-key-file "$key"
done

echo "deploying $functions functions..."
python3 - "$gateway" "$functions" <<'PY'
import http.client, json, sys
host, n = sys.argv[1].removeprefix("http://"), int(sys.argv[2])
conn = http.client.HTTPConnection(host)
auth = {"authorization": "Bearer bench"}
for i in range(1, n + 1):
    for path, body, kind in [("/v1/functions", json.dumps({"name": f"f{i}"}), "application/json"),
                             (f"/v1/functions/f{i}/deployments",
                              f"let n = 0; export default {{ fetch() {{ n += 1; return new Response('f{i} ' + n) }} }}",
                              "application/javascript")]:
        conn.request("POST", path, body, {**auth, "content-type": kind})
        answer = conn.getresponse()
        answer.read()
        if answer.status not in (200, 201):
            sys.exit(f"{path}: {answer.status}")
PY
# Every worker heard and every slice assigned, then each function once.
for _ in $(seq 100); do
  [ "$("$isola" status --server "$gateway" --token bench 2>/dev/null | grep -c ' slices')" = "$workers" ] && break
  sleep 0.2
done
sleep 2
for i in $(seq "$functions"); do printf 'url = "%s"\noutput = "/dev/null"\n' "$gateway/fn/f$i/"; done >"$work/all.curl"
curl -s -K "$work/all.curl" -o /dev/null

starts() { curl -s -H "authorization: Bearer bench" "$gateway/metrics" |
  awk -v kind="$1" '$1 ~ "^isola_starts_total" && $1 ~ "start=\"" kind "\"" { sum += $2 } END { print sum + 0 }'; }
cold0="$(starts cold)" warm0="$(starts warm)"
curl -s -H "authorization: Bearer bench" "$gateway/metrics" >"$work/metrics.before"
out="$(FUNCTIONS="$functions" wrk -t2 -c"$connections" -d"${duration}s" --latency -s "$root/bench/cluster/zipf.lua" "$gateway")"
cold=$(($(starts cold) - cold0)) warm=$(($(starts warm) - warm0))
curl -s -H "authorization: Bearer bench" "$gateway/metrics" >"$work/metrics.after"
echo "placement: $workers workers, $functions functions, Zipf s=1.1, wrk -t2 -c$connections -d${duration}s; $(nproc) cores"
printf "%12s %10s %10s %10s %8s %12s %14s\n" "requests/s" p50 p99 non-2xx cold warm "warm-hit rate"
printf "%12s %10s %10s %8s %8s %12s %14s\n" "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
  "$(awk '$1=="50%" {print $2}' <<<"$out")" "$(awk '$1=="99%" {print $2}' <<<"$out")" \
  "$(awk '/Non-2xx/ {print $NF}' <<<"$out" | grep . || echo 0)" "$cold" "$warm" \
  "$(awk -v c="$cold" -v w="$warm" 'BEGIN { printf "%.3f%%", 100 * w / (c + w) }')"
"$isola" status --server "$gateway" --token bench | grep slices || true
# Where the cold starts were: by the function's rank (1 the hottest).
python3 - "$work/metrics.before" "$work/metrics.after" <<'PY'
import re, sys
def colds(path):
    found = {}
    for line in open(path):
        m = re.match(r'isola_starts_total\{function="f(\d+)",start="cold"\} (\d+)', line)
        if m:
            found[int(m[1])] = int(m[2])
    return found
before, after = colds(sys.argv[1]), colds(sys.argv[2])
diff = {f: n - before.get(f, 0) for f, n in after.items() if n > before.get(f, 0)}
bands = [(1, 10), (11, 100), (101, 1000), (1001, 10**9)]
print("cold starts by rank: " + ", ".join(
    f"{lo}-{hi if hi < 10**9 else 'end'}: {sum(n for f, n in diff.items() if lo <= f <= hi)}" for lo, hi in bands))
PY

# SIGKILL worker 1; then the 20 hottest functions are invoked in turn until
# each has answered, and answered warm (those worker 1 ran start cold on
# another worker): the slowest of each.
kill -9 "${pid_of[worker1]}"
python3 - "$gateway" <<'PY'
import http.client, sys, time
host = sys.argv[1].removeprefix("http://")
killed = time.monotonic()
answered, warm, failures = {}, {}, []
conn = http.client.HTTPConnection(host, timeout=10)
while len(warm) < 20 and time.monotonic() - killed < 10:
    for i in range(1, 21):
        if i in warm:
            continue
        try:
            # The owner's invoke route says whether it started cold.
            conn.request("POST", f"/v1/functions/f{i}/invoke", "{}",
                         {"authorization": "Bearer bench", "content-type": "application/json"})
            answer = conn.getresponse()
            body = answer.read()
        except OSError:
            conn = http.client.HTTPConnection(host, timeout=10)
            continue
        now = (time.monotonic() - killed) * 1000
        if answer.status != 200 and len(failures) < 5:
            failures.append(f"f{i} {answer.status} at {now:.0f} ms: {body[:120]!r}")
        if answer.status == 200:
            answered.setdefault(i, now)
            if answer.getheader("x-isola-cold-start") == "false":
                warm[i] = now
    time.sleep(0.01)
worst = lambda d: f"{max(d.values()):.0f} ms" if len(d) == 20 else f"not all ({len(d)}/20) in 10 s"
for failure in failures:
    print("  not answered:", failure)
print(f"after SIGKILL of worker 1: the 20 hottest functions all answered within {worst(answered)}, all warm within {worst(warm)}")
PY
