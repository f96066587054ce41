#!/usr/bin/env bash
# Compression's cost against the bytes it saves, on JSON chat traffic (docs/scaling.md,
# Compression): room fan-out to WebSocket members at a fixed rate, with messages of about 100 B,
# 1 KB and 10 KB of chat-like text, permessage-deflate off and on (threshold 1 024 B, Node's
# default; for 100 B also threshold 0, which compresses every message).
#
#   scripts/bench-compress.sh                 3 runs per point, 10 s each
#   scripts/bench-compress.sh --quick         1 run of 2 s per point (a smoke test)
#   scripts/bench-compress.sh --no-build      skip `cargo build --release`
#
# For every point the gateway (loadtest/bench.toml with the compression keys set) runs pinned to
# CPU $SERVER_CPU (default 0) and the load generator to $CLIENT_CPU (default 1); the generator's
# connections offer permessage-deflate (SWITCHBOARD_LOADTEST_DEFLATE=1, as browsers and Node's
# `ws` do) and its padding is chat-like text (SWITCHBOARD_LOADTEST_CHAT_TEXT=1). Measured: server
# CPU per delivery, p99 and the bytes on the wire per delivery (what the generator's connections
# read while sending, WebSocket framing included; /proc/<pid>/io's wchar does not count socket
# sends, so the reader counts). Each point takes
# /tmp/switchboard-bench.lock for its runs only (set BENCH_LOCK= to run without it). The table at
# the end gives medians; every run's JSON line is in target/bench/compress.jsonl.
set -euo pipefail

cd "$(dirname "$0")/.."

quick=0
build=1
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        --no-build) build=0 ;;
        -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-compress.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done

SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BENCH_LOCK=${BENCH_LOCK-/tmp/switchboard-bench.lock}
GATEWAY=target/release/switchboard-gateway
LOADTEST=target/release/switchboard-loadtest
OUT=target/bench
MEMBERS=${MEMBERS:-100}
RATE=${RATE:-100}          # messages/s to the room: MEMBERS × RATE deliveries/s
if [[ $quick == 1 ]]; then RUNS=1; SECS=2; else RUNS=3; SECS=10; fi

die() { echo "bench-compress.sh: $*" >&2; exit 2; }
command -v taskset >/dev/null || die "taskset not found: install util-linux"
if [[ $build == 1 ]]; then
    nice -n 19 cargo build --release -p switchboard -p switchboard-loadtest || die "build failed"
fi
[[ -x $GATEWAY && -x $LOADTEST ]] || die "$GATEWAY or $LOADTEST missing (build first)"
mkdir -p "$OUT"
results="$OUT/compress.jsonl"
: > "$results"

# One point: a gateway with `deflate` (true/false) and `threshold`, RUNS fan-out runs of
# `payload` bytes of padding. Appends one JSON line per run with the point and the bytes written.
point() {
    local deflate=$1 threshold=$2 payload=$3
    local config="$OUT/compress-$deflate-$threshold.toml"
    sed "s/^\[server\]$/[server]\nper_message_deflate = $deflate\nper_message_deflate_threshold_bytes = $threshold/" \
        loadtest/bench.toml > "$config"
    grep -q "^per_message_deflate = $deflate" "$config" || die "could not write $config"
    local log="$OUT/compress-gateway.log"
    SWITCHBOARD_CONFIG=$config SWITCHBOARD_PORT=0 SWITCHBOARD_OPERATOR_PORT=0 \
        taskset -c "$SERVER_CPU" "$GATEWAY" > "$log" 2>&1 &
    local pid=$! port=""
    for _ in $(seq 300); do
        port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p' "$log" | head -n1)
        [[ -n $port ]] && break
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "the gateway exited during start-up"; }
        sleep 0.1
    done
    [[ -n $port ]] || { kill "$pid"; die "the gateway did not start"; }
    for run in $(seq "$RUNS"); do
        local line
        line=$(SWITCHBOARD_LOADTEST_DEFLATE=1 SWITCHBOARD_LOADTEST_CHAT_TEXT=1 \
            taskset -c "$CLIENT_CPU" "$LOADTEST" fanout --url "http://127.0.0.1:$port" --pid "$pid" \
            --members "$MEMBERS" --rate "$RATE" --seconds "$SECS" --payload-bytes "$payload" \
            | grep '^{' || true)
        [[ -n $line ]] || { echo "bench-compress.sh: run failed ($deflate $threshold $payload)" >&2; continue; }
        python3 - "$line" "$deflate" "$threshold" "$payload" "$run" "$(cut -d' ' -f1-3 /proc/loadavg)" >> "$results" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
r["compress"] = {"deflate": sys.argv[2] == "true", "threshold": int(sys.argv[3]), "payload": int(sys.argv[4]),
                 "run": int(sys.argv[5]), "loadavg": sys.argv[6]}
print(json.dumps(r))
PY
        sleep 1
    done
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

lock() { if [[ -n $BENCH_LOCK ]]; then flock "$BENCH_LOCK" "$@"; else "$@"; fi; }
export -f point die
export RUNS SECS MEMBERS RATE SERVER_CPU CLIENT_CPU GATEWAY LOADTEST OUT results

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); commit $(git rev-parse --short HEAD)"
for payload in 100 1000 10000; do
    for deflate in false true; do
        echo "== payload $payload B, permessage-deflate $deflate, load $(cut -d' ' -f1-3 /proc/loadavg) =="
        lock bash -c "point $deflate 1024 $payload"
    done
done
echo "== payload 100 B, permessage-deflate true, threshold 0 =="
lock bash -c "point true 0 100"

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def metric(r, key):
    for k in ("metrics", "values"):
        if isinstance(r.get(k), dict) and key in r[k]:
            v = r[k][key]
            return v["value"] if isinstance(v, dict) else v
    v = r.get(key)
    return v["value"] if isinstance(v, dict) else v
points = {}
for r in rows:
    c = r["compress"]
    points.setdefault((c["payload"], c["deflate"], c["threshold"]), []).append(r)
print(f"{'payload':>8} {'deflate':>8} {'threshold':>9} {'runs':>4} {'deliveries/s':>12} {'server µs/delivery':>18} {'p99 ms':>7} {'wire B/deliv.':>13}")
for (payload, deflate, threshold), rs in sorted(points.items()):
    med = lambda f: statistics.median(f(r) for r in rs)
    dps = med(lambda r: metric(r, "deliveries_per_sec"))
    cpu = med(lambda r: metric(r, "server_cpu_us_per_delivery"))
    p99 = med(lambda r: metric(r, "latency_p99_us") / 1000)
    wire = med(lambda r: metric(r, "client_rx_bytes_per_delivery") or 0)
    print(f"{payload:>8} {str(deflate):>8} {threshold:>9} {len(rs):>4} {dps:>12.0f} {cpu:>18.2f} {p99:>7.2f} {wire:>13.0f}")
PY
