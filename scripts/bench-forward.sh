#!/usr/bin/env bash
# Measures what passing a long-polling request to its session's owner costs (polling behind a
# load balancer without stickiness): nats-server and two gateways (loadtest/bench.toml, cluster
# mode) on loopback; a polling client (scripts/bench-forward.js) makes the same POST + GET
# exchanges first at the owner, then at the other gateway, which passes each request on.
# Servers run pinned to CPU $SERVER_CPU (default 0), the client to $CLIENT_CPU (1).
#
#   scripts/bench-forward.sh            5 000 exchanges (10 000 requests) per mode, 3 runs
#   scripts/bench-forward.sh --quick    200 exchanges, 1 run: a smoke test
#   scripts/bench-forward.sh --no-build skip `cargo build --release --bins`
#
# JSON lines go to target/bench/forward-results.jsonl, logs to target/bench/forward-*.log. Only
# the processes this script started are stopped (by PID). Exit: 0 ok, 1 a run failed, 2 set-up.
set -euo pipefail
cd "$(dirname "$0")/.."

iterations=5000 runs=3 build=1
for arg in "$@"; do
    case "$arg" in
        --quick) iterations=200 runs=1 ;;
        --no-build) build=0 ;;
        -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-forward.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
NATS_SERVER=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
OUT=target/bench
PREFIX="benchfwd$$"

die() { echo "bench-forward.sh: $*" >&2; exit 2; }
[[ $build == 1 ]] && cargo build --release --bins --quiet
[[ -x $NATS_SERVER ]] || die "nats-server not found (apt-get install nats-server)"
mkdir -p "$OUT"
results="$OUT/forward-results.jsonl"
: >"$results"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# Starts "$@" pinned to the server CPU, output to forward-$1.{out,log}; waits for $2 in the output.
start() {
    local name=$1 pattern=$2; shift 2
    taskset -c "$SERVER_CPU" "$@" >"$OUT/forward-$name.out" 2>"$OUT/forward-$name.log" &
    pids+=($!)
    for _ in $(seq 300); do
        grep -q "$pattern" "$OUT/forward-$name.out" "$OUT/forward-$name.log" 2>/dev/null && return 0
        kill -0 "${pids[-1]}" 2>/dev/null || die "$name exited: $(tail -5 "$OUT/forward-$name.log")"
        sleep 0.1
    done
    die "$name did not print $pattern"
}

natsdir=$(mktemp -d)
start nats "Listening for client connections" "$NATS_SERVER" -a 127.0.0.1 -p -1 --ports_file_dir "$natsdir"
for _ in $(seq 50); do compgen -G "$natsdir/*.ports" >/dev/null && break; sleep 0.1; done
nats_port=$(sed -n 's/.*"nats":\["[^"]*:\([0-9]*\)".*/\1/p' "$natsdir"/*.ports)
[[ -n $nats_port ]] || die "no NATS port in $natsdir"
export SWITCHBOARD_NATS_URL="nats://127.0.0.1:$nats_port" SWITCHBOARD_SUBJECT_PREFIX=$PREFIX SWITCHBOARD_PORT=0 RUST_LOG=warn
declare -A url pid
for gw in gw1 gw2; do
    SWITCHBOARD_NODE_ID=$gw start "$gw" "listening on" target/release/switchboard-gateway loadtest/bench.toml
    pid[$gw]=${pids[-1]}
    url[$gw]=$(sed -n 's/^listening on \(http:[^ ]*\).*/\1/p' "$OUT/forward-$gw.out")
done
for gw in gw1 gw2; do
    for _ in $(seq 100); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "${url[$gw]}/ready") == 200 ]] && break
        sleep 0.1
    done
done

status=0
for run in $(seq "$runs"); do
    echo "== run $run: $iterations exchanges (POST + GET) per mode =="
    if ! taskset -c "$CLIENT_CPU" node scripts/bench-forward.js "${url[gw1]}" "${url[gw2]}" "$iterations" \
        "${pid[gw1]}" "${pid[gw2]}" | tee -a "$results"; then
        status=1
    fi
done
rm -rf "$natsdir"
exit $status
