#!/usr/bin/env bash
# Load-tests a release build of the gateway on this machine, over loopback.
#
#   scripts/bench.sh            full run: the loopback write floors; idle with 10 000
#                               connections; fan-out to 1 000 room members at 10 msg/s for
#                               20 s; the same at saturation with 8 and 32 messages in flight
#   scripts/bench.sh --quick    tiny versions (100 connections, 2 s): a smoke test for CI
#   scripts/bench.sh --no-build skip `cargo build --release`
#
# The gateway runs pinned to CPU $SERVER_CPU (default 0) and the load generator to CPU
# $CLIENT_CPU (default 1), with `taskset` (util-linux), so that their CPU figures do not mix. The
# open-files limit is raised to the hard limit (each side holds one socket per connection).
# The gateway runs with loadtest/bench.toml: the built-in default configuration without the
# per-socket rate limit on /chat (which caps one sender at 20 msg/s) and without connection state
# recovery on /chat (the core path; /chat-r has it). BENCH_CONFIG=path picks
# another file; BENCH_CONFIG= (empty) runs the built-in default.
# Every run prints a table and one JSON line; the JSON lines are also written to
# target/bench/results.jsonl. The script stops the gateway it started (by its PID) on exit.
#
# Exit status: 0 when every run reported ok, 1 when a run found problems, 2 on set-up failure.
set -euo pipefail

cd "$(dirname "$0")/.."

quick=0
build=1
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        --no-build) build=0 ;;
        -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done

SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BENCH_CONFIG=${BENCH_CONFIG-loadtest/bench.toml}
GATEWAY=target/release/switchboard-gateway
LOADTEST=target/release/switchboard-loadtest
OUT=target/bench
STARTUP_TIMEOUT_S=30

if [[ $quick == 1 ]]; then
    FLOOR_WRITES=20000; IDLE_CONNECTIONS=100; MEMBERS=100; SECONDS_PER_RUN=2; LOW_RATE=10
else
    FLOOR_WRITES=200000; IDLE_CONNECTIONS=10000; MEMBERS=1000; SECONDS_PER_RUN=20; LOW_RATE=10
fi

die() { echo "bench.sh: $*" >&2; exit 2; }

command -v taskset >/dev/null || die "taskset not found: install util-linux"
ncpu=$(nproc)
(( SERVER_CPU < ncpu && CLIENT_CPU < ncpu )) || die "need CPUs $SERVER_CPU and $CLIENT_CPU, this machine has $ncpu"
[[ $SERVER_CPU != "$CLIENT_CPU" ]] || echo "bench.sh: warning: server and load generator share CPU $SERVER_CPU" >&2

# One socket per connection on each side, plus a few for everything else.
need_fds=$(( IDLE_CONNECTIONS + MEMBERS + 256 ))
hard=$(ulimit -Hn)
if [[ $hard != unlimited ]] && (( hard < need_fds )); then
    die "open-files hard limit is $hard, $need_fds are needed (raise it in limits.conf or the container)"
fi
if [[ $hard == unlimited ]]; then ulimit -n 1048576 2>/dev/null || ulimit -n "$need_fds"; else ulimit -n "$hard"; fi

if [[ $build == 1 ]]; then
    cargo build --release -p switchboard -p switchboard-loadtest --features switchboard-loadtest/grpc || die "build failed"
fi
[[ -x $GATEWAY && -x $LOADTEST ]] || die "$GATEWAY or $LOADTEST missing (build first)"

mkdir -p "$OUT"
results="$OUT/results.jsonl"
: > "$results"
server_log="$OUT/gateway.log"

echo "== machine =="
echo "  $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "  kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg), open files $(ulimit -n)"
echo "  server on CPU $SERVER_CPU, load generator on CPU $CLIENT_CPU$([[ $quick == 1 ]] && echo ', quick mode')"
echo

status=0
# Runs one scenario; its JSON line goes to the results file; a failed run fails the script at
# the end, not at once, so that the other numbers are still taken.
run() {
    local rc=0
    "$@" > "$OUT/run.out" || rc=$?
    cat "$OUT/run.out"
    grep '^{' "$OUT/run.out" >> "$results" || true
    if (( rc != 0 )); then
        echo "bench.sh: run failed (exit $rc): $*" >&2
        status=1
    fi
    echo
}

# The floors run before the server starts, writer on the server's CPU and reader on the load
# generator's, like a delivery from the gateway to a client: first one connection written back
# to back (the cheapest write there is), then the shape of the low-rate fan-out (one write to
# each of $MEMBERS connections, $LOW_RATE bursts a second), the floor for its cost per delivery.
floor=(taskset -c "$SERVER_CPU,$CLIENT_CPU" "$LOADTEST" floor --writer-cpu "$SERVER_CPU" --reader-cpu "$CLIENT_CPU")
run "${floor[@]}" --writes "$FLOOR_WRITES"
run "${floor[@]}" --writes $(( MEMBERS * LOW_RATE * SECONDS_PER_RUN )) --sockets "$MEMBERS" \
    --bursts-per-sec "$LOW_RATE"

server_pid=""
stop_server() {
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$server_pid" 2>/dev/null && kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=""
}
trap stop_server EXIT

if [[ -n $BENCH_CONFIG ]]; then
    [[ -f $BENCH_CONFIG ]] || die "configuration $BENCH_CONFIG not found"
    export SWITCHBOARD_CONFIG=$BENCH_CONFIG
else
    unset SWITCHBOARD_CONFIG
fi
SWITCHBOARD_PORT=0 SWITCHBOARD_OPERATOR_PORT=0 taskset -c "$SERVER_CPU" "$GATEWAY" > "$server_log" 2>&1 &
server_pid=$!
port=""
for _ in $(seq $(( STARTUP_TIMEOUT_S * 10 ))); do
    port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p' "$server_log" | head -n1)
    [[ -n $port ]] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$server_log" >&2; die "the gateway exited during start-up"; }
    sleep 0.1
done
[[ -n $port ]] || { cat "$server_log" >&2; die "the gateway did not print 'listening on http://127.0.0.1:<port>' within ${STARTUP_TIMEOUT_S}s"; }
url="http://127.0.0.1:$port"
echo "gateway pid $server_pid listening on $url (config: ${BENCH_CONFIG:-built-in default}, log: $server_log)"
echo

gen=(taskset -c "$CLIENT_CPU" "$LOADTEST")
run "${gen[@]}" idle --url "$url" --pid "$server_pid" --connections "$IDLE_CONNECTIONS"
sleep 2
run "${gen[@]}" fanout --url "$url" --pid "$server_pid" --members "$MEMBERS" --rate "$LOW_RATE" \
    --seconds "$SECONDS_PER_RUN"
sleep 2
# Saturation twice: with 8 and with 32 messages in flight. The cost per delivery falls as more
# frames wait per connection and go out in one write (coalescing).
for window in 8 32; do
    run "${gen[@]}" fanout --url "$url" --pid "$server_pid" --members "$MEMBERS" --rate 0 \
        --seconds "$SECONDS_PER_RUN" --window "$window"
    sleep 2
done

kill -0 "$server_pid" 2>/dev/null || { echo "bench.sh: the gateway died during the runs; log:" >&2; cat "$server_log" >&2; status=1; }
stop_server

echo "== results ($results) =="
cat "$results"
exit "$status"
