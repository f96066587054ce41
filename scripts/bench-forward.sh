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
[[ $build == 1 ]] && cargo build --release --bins --features switchboard-loadtest/grpc --quiet
[[ -x $NATS_SERVER ]] || die "nats-server not found (apt-get install nats-server)"
mkdir -p "$OUT"
results="$OUT/forward-results.jsonl"
: >"$results"

STARTUP_TIMEOUT_S=30
# shellcheck source=scripts/lib/servers.sh
source scripts/lib/servers.sh

start_nats "$OUT/forward-nats.log"
export SWITCHBOARD_NATS_URL=$nats_url SWITCHBOARD_SUBJECT_PREFIX=$PREFIX SWITCHBOARD_PORT=0 RUST_LOG=warn
declare -A url
for gw in gw1 gw2; do
    SWITCHBOARD_NODE_ID=$gw start "$gw" "$OUT/forward-$gw.log" target/release/switchboard-gateway loadtest/bench.toml
done
for gw in gw1 gw2; do
    url[$gw]=$(wait_for "$gw" "$OUT/forward-$gw.log" "$LISTENING")
    wait_ready "${url[$gw]}"
done

status=0
for run in $(seq "$runs"); do
    echo "== run $run: $iterations exchanges (POST + GET) per mode =="
    if ! taskset -c "$CLIENT_CPU" node scripts/bench-forward.js "${url[gw1]}" "${url[gw2]}" "$iterations" \
        "${pids[gw1]}" "${pids[gw2]}" | tee -a "$results"; then
        status=1
    fi
done
exit $status
