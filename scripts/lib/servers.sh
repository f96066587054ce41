# shellcheck shell=bash
# Sourced by the benchmark scripts (scripts/bench-*.sh): the server processes a script starts,
# pinned to one CPU, each with its log, stopped by PID in reverse order of start — and only those.
#
# The sourcing script sets SERVER_CPU (the servers' CPU), STARTUP_TIMEOUT_S (how long a server
# may take to say it is ready) and defines `die MESSAGE` (print and exit 2), then:
#
#   start NAME LOG COMMAND...          run COMMAND pinned to $SERVER_CPU, output to LOG (truncated)
#   wait_for NAME LOG SED_EXPRESSION   print the first match of the expression in LOG once it
#                                      appears; die if NAME exits first or nothing comes in time
#   wait_ready URL                     wait until URL/ready answers 200 (a gateway on its bus)
#   stop_one NAME / stop_all           SIGTERM, then SIGKILL after 5 s; wait for the exit
#   start_nats LOG [ARG...]            a nats-server ($NATS_SERVER) on a free port, with the extra
#                                      arguments (e.g. -js -sd DIR); sets nats_url
#
# `pids[NAME]` holds each running server's PID. stop_all runs on exit (trap) unless the script
# sets its own trap that calls it.

# Gateways started here take a free operator port (/metrics): the default, 9464, can be bound by
# one gateway on the machine only.
export SWITCHBOARD_OPERATOR_PORT=${SWITCHBOARD_OPERATOR_PORT:-0}

# name → PID of every process this script started.
declare -A pids=()
started=()

stop_one() {
    local pid=${pids[$1]:-}
    [[ -n $pid ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    wait "$pid" 2>/dev/null || true
    unset "pids[$1]"
}

stop_all() {
    local i
    for (( i = ${#started[@]} - 1; i >= 0; i-- )); do stop_one "${started[i]}"; done
    started=()
}
trap stop_all EXIT

# taskset execs the command, so $! is the server's own PID.
start() {
    local name=$1 log=$2
    shift 2
    : > "$log"
    taskset -c "$SERVER_CPU" "$@" >> "$log" 2>&1 &
    pids[$name]=$!
    started+=("$name")
}

wait_for() {
    local name=$1 log=$2 expr=$3 found=""
    for _ in $(seq $(( STARTUP_TIMEOUT_S * 10 ))); do
        found=$(sed -n "$expr" "$log" | head -n1)
        [[ -n $found ]] && { echo "$found"; return 0; }
        kill -0 "${pids[$name]}" 2>/dev/null || { cat "$log" >&2; die "$name exited during start-up (log: $log)"; }
        sleep 0.1
    done
    cat "$log" >&2
    die "$name did not report ready within ${STARTUP_TIMEOUT_S}s (log: $log)"
}

wait_ready() {
    for _ in $(seq $(( STARTUP_TIMEOUT_S * 10 ))); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1/ready") == 200 ]] && return 0
        sleep 0.1
    done
    die "$1 did not answer 200 on /ready within ${STARTUP_TIMEOUT_S}s"
}

# NATS picks a free port itself (-p -1) and logs it, so no port can be taken in between.
# (Not in a command substitution: that would lose the PID it records.)
start_nats() {
    local log=$1 port
    shift
    start nats "$log" "$NATS_SERVER" -a 127.0.0.1 -p -1 "$@"
    port=$(wait_for nats "$log" 's|.*Listening for client connections on 127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p')
    # shellcheck disable=SC2034  # read by the sourcing script
    nats_url="nats://127.0.0.1:$port"
}

# The line a gateway, broker or peer prints once bound, as its URL.
# shellcheck disable=SC2034  # used by the scripts that source this file
LISTENING='s|.*listening on \(http://127\.0\.0\.1:[0-9][0-9]*\).*|\1|p'
