#!/usr/bin/env bash
# Which tokio runtime suits socketioxide-peer best on one pinned CPU: current_thread or
# multi_thread with one worker (SIO_RUNTIME). Fan-out to 1000 members in the middle band
# (300 msg/s = 300 k deliveries/s offered) and at saturation (window 32), each flavour RUNS times,
# the order alternating; prints server CPU per delivery, p99 and deliveries/s of every run and
# their medians. docs/benchmarks.md states the result; the peer's default is the winner.
#
#   flock /tmp/switchboard-bench.lock loadtest/peers/socketioxide/flavours.sh
#
# Needs target/release/{socketioxide-peer,switchboard-loadtest} (cargo build --release) and jq.
set -euo pipefail
cd "$(dirname "$0")/../../.."
RUNS=${RUNS:-3}
SECS=${SECS:-5}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PEER=target/release/socketioxide-peer
LOADTEST=target/release/switchboard-loadtest
out=$(mktemp -d "${TMPDIR:-/tmp}/sio-flavours.XXXXXX")
pid=""
trap '[[ -n $pid ]] && kill "$pid" 2>/dev/null; rm -rf "$out"' EXIT

echo "commit $(git rev-parse --short HEAD); load average $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq "$RUNS"); do
    flavours=(current_thread multi_thread)
    (( i % 2 == 0 )) && flavours=(multi_thread current_thread)
    for flavour in "${flavours[@]}"; do
        SIO_RUNTIME=$flavour PORT=0 taskset -c "$SERVER_CPU" "$PEER" > "$out/peer.log" 2>&1 &
        pid=$!
        for _ in $(seq 50); do grep -q 'listening on' "$out/peer.log" && break; sleep 0.1; done
        url=$(sed -n 's|.*listening on \(http://[^ ]*\).*|\1|p' "$out/peer.log")
        for load in "--rate 300" "--rate 0 --window 32"; do
            # shellcheck disable=SC2086
            taskset -c "$CLIENT_CPU" "$LOADTEST" fanout --url "$url" --pid "$pid" --members 1000 $load \
                --seconds "$SECS" --quiet 2>/dev/null | grep '^{' |
                jq -c --arg f "$flavour" --arg l "$load" '{flavour:$f, load:$l, ok, deliveries_per_sec, latency_p99_us, server_cpu_us_per_delivery}' |
                tee -a "$out/runs.jsonl" || true   # a run with problems exits 1: keep it, ok:false
        done
        kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
    done
done
echo "medians:"
jq -s -r 'group_by(.flavour + .load)[] | {f: .[0].flavour, l: .[0].load,
    cpu: (map(.server_cpu_us_per_delivery) | sort | .[length/2|floor]),
    p99: (map(.latency_p99_us) | sort | .[length/2|floor]),
    rate: (map(.deliveries_per_sec) | sort | .[length/2|floor])} |
    "  \(.f) \(.l): \(.cpu) µs CPU/delivery, p99 \(.p99/1000|floor) ms, \(.rate|floor) deliveries/s"' "$out/runs.jsonl"
echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
