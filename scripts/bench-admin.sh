#!/usr/bin/env bash
# Benchmarks the broker's gRPC admin API on this machine, over loopback: 10 000 members in one
# room on a gateway, then FetchSockets of the whole room and Broadcast to it (50 calls each):
# call latency and Broadcast call → last delivery (`switchboard-loadtest admin`). Twice:
#   standalone  one gateway, its embedded broker serving gRPC in-process;
#   cluster     nats-server, switchboard-broker (serving gRPC), one gateway.
# Servers run pinned to CPU $SERVER_CPU (default 0), the load generator to $CLIENT_CPU (1).
#
#   scripts/bench-admin.sh            10 000 members, 50 calls
#   scripts/bench-admin.sh --quick    500 members, 5 calls: a smoke test
#   scripts/bench-admin.sh --no-build skip `cargo build --release --bins --features switchboard-loadtest/grpc`
#
# JSON lines go to target/bench/admin-results.jsonl, logs to target/bench/admin-*.log. Only the
# processes this script started are stopped (by PID). Exit: 0 ok, 1 a run found problems, 2 set-up.
set -euo pipefail
cd "$(dirname "$0")/.."

members=10000 calls=50 build=1
for arg in "$@"; do
    case "$arg" in
        --quick) members=500 calls=5 ;;
        --no-build) build=0 ;;
        -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-admin.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
NATS_SERVER=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
OUT=target/bench
export SWITCHBOARD_ADMIN_TOKEN="bench-admin-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"

die() { echo "bench-admin.sh: $*" >&2; exit 2; }
[[ $build == 1 ]] && cargo build --release --bins --features switchboard-loadtest/grpc --quiet
mkdir -p "$OUT"
results="$OUT/admin-results.jsonl"
: >"$results"

STARTUP_TIMEOUT_S=30
# shellcheck source=scripts/lib/servers.sh
source scripts/lib/servers.sh
GRPC='s|.*grpc on \([0-9.:]*\).*|\1|p'

run() {
    local mode=$1 url=$2 grpc=$3
    echo "== $mode: $members members, $calls calls =="
    local line status=0
    taskset -c "$CLIENT_CPU" target/release/switchboard-loadtest admin --url "$url" --grpc "$grpc" \
        --members "$members" --calls "$calls" | tee "$OUT/admin-$mode.txt" || status=$?
    line=$(grep '^{' "$OUT/admin-$mode.txt" | tail -1)
    echo "{\"mode\":\"$mode\",${line#\{}" >>"$results"
    return $status
}

status=0
export SWITCHBOARD_PORT=0 SWITCHBOARD_GRPC_PORT=0
start standalone "$OUT/admin-standalone.log" target/release/switchboard-gateway loadtest/bench.toml
url=$(wait_for standalone "$OUT/admin-standalone.log" "$LISTENING")
grpc=$(wait_for standalone "$OUT/admin-standalone.log" "$GRPC")
run standalone "$url" "$grpc" || status=1
stop_all

start_nats "$OUT/admin-nats.log"
export SWITCHBOARD_NATS_URL=$nats_url SWITCHBOARD_SUBJECT_PREFIX=benchadmin
SWITCHBOARD_BROKER_HTTP_PORT=0 SWITCHBOARD_BROKER_LEADER=always \
    start broker "$OUT/admin-broker.log" target/release/switchboard-broker
grpc=$(wait_for broker "$OUT/admin-broker.log" "$GRPC")
SWITCHBOARD_NODE_ID=gw1 start gateway "$OUT/admin-gateway.log" target/release/switchboard-gateway loadtest/bench.toml
url=$(wait_for gateway "$OUT/admin-gateway.log" "$LISTENING")
wait_ready "$url"
run cluster "$url" "$grpc" || status=1
echo "== results ($results) =="
cat "$results"
exit $status
