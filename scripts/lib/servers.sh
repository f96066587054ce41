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
#   start_nats_cluster N LOG_PREFIX [ARG...]
#                                      N nats-servers joined by routes (nats1..natsN; see below);
#                                      nats_list_from I: the URL list for a process on node I
#   free_ports N                       N distinct free loopback ports (servers that cannot pick
#                                      their own: redis-server, nginx, NATS routes)
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
    if [[ -n ${nats_cluster_dir:-} ]]; then rm -rf "$nats_cluster_dir"; nats_cluster_dir=""; fi
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

# free_ports N: N distinct free loopback ports, space-separated (for servers that cannot pick
# their own port and say which: redis-server, nginx, NATS routes). Needs python3.
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# start_nats_cluster N LOG_PREFIX [ARG...]
#   N nats-servers (nats1..natsN in pids[], logs LOG_PREFIX1.log …) joined by routes on loopback
#   into one cluster, each given the extra arguments (-js: clustered JetStream, each node its own
#   store under $nats_cluster_dir). Every node's route list names every node (clustered JetStream
#   wants its routes configured, not only gossiped), so the route ports are chosen first (needs
#   python3). Returns once every node routes to every other (and, with -js, they agree on a meta
#   leader; needs jq and curl). Sets nats_urls (each node's client URL), nats_monitor (each
#   node's monitoring URL) and nats_cluster_dir (removed by stop_all).
start_nats_cluster() {
    local n=$1 prefix=$2 i port routes="" js=0 arg
    shift 2
    for arg in "$@"; do [[ $arg == -js ]] && js=1; done
    command -v python3 >/dev/null || die "a NATS cluster needs python3 (to pick free route ports)"
    command -v jq >/dev/null || die "a NATS cluster needs jq"
    nats_cluster_dir=$(mktemp -d "${TMPDIR:-/tmp}/bench-nats-cluster.XXXXXX")
    local ports=()
    read -r -a ports <<< "$(free_ports "$n")"
    for port in "${ports[@]}"; do routes+="${routes:+, }\"nats-route://127.0.0.1:$port\""; done
    nats_urls=()
    nats_monitor=()
    for (( i = 1; i <= n; i++ )); do
        mkdir -p "$nats_cluster_dir/n$i"
        cat > "$nats_cluster_dir/n$i.conf" <<CONF
server_name: "n$i"
http: "127.0.0.1:-1"
cluster {
  name: "bench"
  listen: "127.0.0.1:${ports[i - 1]}"
  routes: [$routes]
}
CONF
        local extra=("$@")
        (( js )) && extra+=(-sd "$nats_cluster_dir/n$i")
        start "nats$i" "$prefix$i.log" "$NATS_SERVER" -a 127.0.0.1 -p -1 -c "$nats_cluster_dir/n$i.conf" "${extra[@]}"
    done
    for (( i = 1; i <= n; i++ )); do
        port=$(wait_for "nats$i" "$prefix$i.log" 's|.*Listening for client connections on 127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p')
        nats_urls+=("nats://127.0.0.1:$port")
        port=$(wait_for "nats$i" "$prefix$i.log" 's|.*Starting http monitor on 127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p')
        nats_monitor+=("http://127.0.0.1:$port")
    done
    local formed
    for _ in $(seq $(( STARTUP_TIMEOUT_S * 10 ))); do
        formed=1
        for (( i = 0; i < n; i++ )); do
            [[ $(curl -s --max-time 1 "${nats_monitor[i]}/routez" | jq '[.routes[]?.remote_id] | unique | length') -ge $(( n - 1 )) ]] || formed=0
            if (( js )); then
                [[ -n $(curl -s --max-time 1 "${nats_monitor[i]}/jsz" | jq -r '.meta_cluster.leader // empty') ]] || formed=0
            fi
        done
        (( formed )) && return 0
        sleep 0.1
    done
    die "the $n nats-servers did not form a cluster within ${STARTUP_TIMEOUT_S}s (logs: $prefix*.log)"
}

# The comma-separated URL list for a process placed on node I (1-based) of nats_urls: its own
# node first, then the others in order (Switchboard tries them in the order given).
nats_list_from() {
    local i=$1 n=${#nats_urls[@]} k out=""
    for (( k = 0; k < n; k++ )); do out+="${out:+,}${nats_urls[(i - 1 + k) % n]}"; done
    echo "$out"
}
