#!/usr/bin/env bash
# Broker capacity (issue 17 item 3): one switchboard-broker fed by 50 simulated gateways that
# publish real membership messages over NATS (`broker_bench`, broker/examples/broker_bench.rs:
# the phases and what every number means are in its header). Per run: connect N sockets, churn
# (join + leave), FetchSockets / Rooms / Stats over gRPC at N sockets, then SIGKILL the broker and
# time its rebuild from the gateways' snapshots.
# nats-server and the broker run pinned to CPU $SERVER_CPU (default 0), the simulated gateways
# to $CLIENT_CPU (1).
#
#   scripts/bench-broker.sh                  1 000 000 sockets, 3 runs (the figures in docs/scaling.md)
#   scripts/bench-broker.sh --runs 1         one run
#   scripts/bench-broker.sh --sockets 200000 another size
#   scripts/bench-broker.sh --presence off   sockets whose namespace announces no presence
#   scripts/bench-broker.sh --presence-batches off   every presence announcement in its own message
#   scripts/bench-broker.sh --headers none   handshakes without user-agent / origin headers
#   scripts/bench-broker.sh --batch 1        every membership event alone (default: batches of 64)
#   scripts/bench-broker.sh --quick          5 000 sockets, 1 run: a smoke test (seconds)
#   scripts/bench-broker.sh --no-build       skip the release build
#
# Run it under the shared bench lock (flock /tmp/switchboard-bench.lock ...) for figures. JSON
# lines go to target/bench/broker-results.jsonl, logs to target/bench/broker-*.log. Only the
# processes this script started are stopped (by PID). Exit: 0 ok, 1 a run found problems, 2 set-up.
set -euo pipefail
cd "$(dirname "$0")/.."

sockets=1000000 churn=200000 queries=100 runs=3 build=1 presence=on headers=browser batch=64
presence_batches=on
while (( $# )); do
    case "$1" in
        --quick) sockets=5000 churn=5000 queries=5 runs=1 ;;
        --no-build) build=0 ;;
        --runs) runs=$2; shift ;;
        --sockets) sockets=$2; shift ;;
        --churn) churn=$2; shift ;;
        --queries) queries=$2; shift ;;
        --presence) presence=$2; shift ;;
        --presence-batches) presence_batches=$2; shift ;;
        --headers) headers=$2; shift ;;
        --batch) batch=$2; shift ;;
        -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-broker.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
NATS_SERVER=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
OUT=target/bench

die() { echo "bench-broker.sh: $*" >&2; exit 2; }
if [[ $build == 1 ]]; then
    cargo build --release -p switchboard --bin switchboard-broker --quiet
    cargo build --release -p switchboard-broker --example broker_bench --quiet
fi
[[ -x target/release/switchboard-broker ]] || die "no target/release/switchboard-broker (build it)"
[[ -x target/release/examples/broker_bench ]] || die "no target/release/examples/broker_bench (build it)"
mkdir -p "$OUT"
results="$OUT/broker-results.jsonl"
: >"$results"

STARTUP_TIMEOUT_S=30
# shellcheck source=scripts/lib/servers.sh
source scripts/lib/servers.sh
# broker_bench starts the broker itself and writes its PID here: if the bench is killed, the
# broker (which inherits this script's descriptors, the bench lock's included) is stopped too.
pidfile="$OUT/broker-bench.pid"
stop_broker() {
    local pid
    pid=$(cat "$pidfile" 2>/dev/null || true)
    # Only if that PID is still a switchboard-broker started from here (not a reused PID).
    if [[ -n $pid && $(readlink "/proc/$pid/cwd" 2>/dev/null) == "$PWD" ]] &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q switchboard-broker; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    return 0
}
trap 'stop_broker; stop_all' EXIT

status=0
for run in $(seq "$runs"); do
    echo "== run $run/$runs: $sockets sockets, 50 gateways, batches of $batch, presence $presence (batches $presence_batches), headers $headers; load: $(uptime | sed 's/.*load average: //') =="
    start_nats "$OUT/broker-nats.log"
    : >"$OUT/broker-process.log"
    line=$(taskset -c "$CLIENT_CPU" target/release/examples/broker_bench --nats "$nats_url" \
        --broker target/release/switchboard-broker --broker-cpu "$SERVER_CPU" \
        --sockets "$sockets" --gateways 50 --churn "$churn" --queries "$queries" \
        --batch "$batch" --presence "$presence" --presence-batches "$presence_batches" --headers "$headers" --log "$OUT/broker-process.log" \
        --pidfile "$pidfile") || status=1
    stop_broker
    stop_all
    [[ -n $line ]] || { cat "$OUT/broker-process.log" >&2; die "run $run produced no result"; }
    echo "$line" | tee -a "$results"
done
echo "== results ($results); commit $(git rev-parse --short HEAD); load: $(uptime | sed 's/.*load average: //') =="
exit $status
