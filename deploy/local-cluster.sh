#!/usr/bin/env bash
# A whole Switchboard cluster on this machine, on loopback: a nats-server with JetStream (the
# brokers' leader lease needs it), one broker (gRPC admin API with a fresh token), three gateways
# gw1..gw3 and an nginx of its own in front of them running deploy/nginx/switchboard-sid.conf
# (requests routed to the gateway named in the sid). The gateways run their built-in
# configuration, so the demo chat page is at the client URL. NATS runs with the shipped
# least-privileged users (deploy/nats/nats-conf.sh) and fresh random passwords: the broker,
# each gateway, workers and emitters each have their own (a worker's are in the state
# directory's nats-worker.env, an emitter's in nats-emitter.env).
#
#   deploy/local-cluster.sh           start, print the addresses, run until Ctrl-C (or SIGTERM)
#   deploy/local-cluster.sh stop      from another shell: stop the running one
#
# Installs what is missing: nats-server and nginx from apt (one `apt-get update`, needs root or
# sudo), the release binaries with cargo. Stops what it started, by PID, and nothing else: the
# PIDs are kept in the state directory, so `stop` works from another shell. nginx runs in the
# foreground (`daemon off`) with its prefix, pid file, logs and temp files in the state
# directory; the system's nginx service is never touched.
#
# Environment (defaults are the addresses deploy/nginx/switchboard-sid.conf is written for):
#   LOCAL_CLUSTER_PORT             8080             nginx: where clients connect
#   LOCAL_CLUSTER_GATEWAY_PORTS    "3001 3002 3003" gw1, gw2, gw3 (client ports: Engine.IO, /health, /ready)
#   LOCAL_CLUSTER_OPERATOR_PORTS   "9464 9465 9466" gw1, gw2, gw3 operator ports (/metrics), loopback
#   LOCAL_CLUSTER_BROKER_PORT      9090             broker HTTP (/health, /metrics, /v1/state)
#   LOCAL_CLUSTER_GRPC_PORT        50051            broker gRPC admin API
#   LOCAL_CLUSTER_NATS_PORT        4222
#   LOCAL_CLUSTER_DIR              ${TMPDIR:-/tmp}/switchboard-local-cluster (state, PIDs, logs)
#   LOCAL_CLUSTER_CONFIG           the gateways' TOML (default: their built-in configuration)
#   LOCAL_CLUSTER_DRAIN_MS         2000             the gateways' drain window on stop
#   SWITCHBOARD_ADMIN_TOKEN        the gRPC token (default: a fresh random one, printed)
#   SWITCHBOARD_GATEWAY_BIN, SWITCHBOARD_BROKER_BIN, CARGO_TARGET_DIR   which binaries to run
# With other ports the nginx config is derived from the shipped file by rewriting only its
# addresses (`listen 8080` and `server 127.0.0.1:300N`).
#
# Exit status: 0 after a clean stop, 1 when a process of the cluster died by itself, 2 on a
# set-up failure (everything started so far is stopped again).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SCRIPT="$ROOT/deploy/local-cluster.sh"
STATE=${LOCAL_CLUSTER_DIR:-${TMPDIR:-/tmp}/switchboard-local-cluster}
PIDS="$STATE/pids"
LOGS="$STATE/logs"
NGINX_CONF_SHIPPED="$ROOT/deploy/nginx/switchboard-sid.conf"
STARTUP_TIMEOUT_S=30
# How long a process may take to exit after SIGTERM before it gets SIGKILL (a gateway drains
# first, so it gets its drain window on top).
STOP_GRACE_S=10

die() { echo "local-cluster.sh: $*" >&2; exit 2; }
say() { echo "local-cluster.sh: $*" >&2; }

# ---- PID files: "<pid> <executable>", checked against /proc before any signal ------------------

# The executable of a live process, or nothing (a binary rebuilt meanwhile shows as " (deleted)").
exe_of() {
    local exe
    exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 0
    echo "${exe% (deleted)}"
}

# alive NAME: true when NAME's recorded process still runs the recorded executable (a PID reused
# by some other program does not count, so it is never signalled; for this script's own record,
# whose executable is bash, the command line must name local-cluster.sh too).
alive() {
    local file="$PIDS/$1.pid" pid exe
    [[ -f $file ]] || return 1
    read -r pid exe <"$file" || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ "$(exe_of "$pid")" == "$exe" ]] || return 1
    [[ $1 != script ]] || tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'local-cluster\.sh'
}

pid_of() { local pid _; read -r pid _ <"$PIDS/$1.pid"; echo "$pid"; }

# record NAME PID EXECUTABLE: waits (briefly) for PID to have exec'd EXECUTABLE, then writes
# NAME's PID file; a PID that is gone or runs something else fails the start.
record() {
    local name=$1 pid=$2 exe i
    exe=$(readlink -f "$3")
    for ((i = 0; i < 50; i++)); do
        [[ "$(exe_of "$pid")" == "$exe" ]] && break
        sleep 0.1
    done
    echo "$pid $exe" >"$PIDS/$name.pid"
}

# stop_one NAME GRACE_S: SIGTERM, wait up to GRACE_S seconds, then SIGKILL.
stop_one() {
    local name=$1 grace=$2 pid i
    alive "$name" || { rm -f "$PIDS/$name.pid"; return 0; }
    pid=$(pid_of "$name")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        alive "$name" || break
        sleep 0.1
    done
    if alive "$name"; then
        say "$name (pid $pid) still running after ${grace}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do alive "$name" || break; sleep 0.1; done
    fi
    rm -f "$PIDS/$name.pid"
}

# Everything, in an order that loses nothing on the way: nginx (no new clients), the gateways
# (they drain and tell the broker they leave), the broker, NATS last.
stop_all() {
    local drain_s=$(( (${LOCAL_CLUSTER_DRAIN_MS:-2000} + 999) / 1000 ))
    stop_one nginx "$STOP_GRACE_S"
    local gw waits=()
    for gw in gw1 gw2 gw3; do
        stop_one "$gw" $((STOP_GRACE_S + drain_s)) &
        waits+=($!)
    done
    wait "${waits[@]}"
    stop_one broker "$STOP_GRACE_S"
    stop_one nats "$STOP_GRACE_S"
}

# ---- `stop`: from another shell --------------------------------------------------------------

if [[ ${1:-} == stop ]]; then
    [[ -d $PIDS ]] || { echo "local-cluster.sh: nothing running (no $PIDS)"; exit 0; }
    if alive script; then
        # The running script stops its own processes (in order) and exits.
        pid=$(pid_of script)
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 600; i++)); do alive script || break; sleep 0.1; done
    fi
    # Whatever is left (the script was killed with -9, or did not finish): stop it here.
    stop_all
    rm -f "$PIDS/script.pid"
    echo "local-cluster.sh: stopped"
    exit 0
fi
[[ $# -eq 0 || ${1:-} == start ]] || die "usage: local-cluster.sh [start|stop]"

# ---- settings --------------------------------------------------------------------------------

port_var() {
    local name=$1 value=$2
    if ! [[ $value =~ ^[0-9]{1,5}$ ]] || ((10#$value < 1 || 10#$value > 65535)); then
        die "$name=$value is not a port number"
    fi
}
NGINX_PORT=${LOCAL_CLUSTER_PORT:-8080}
BROKER_PORT=${LOCAL_CLUSTER_BROKER_PORT:-9090}
GRPC_PORT=${LOCAL_CLUSTER_GRPC_PORT:-50051}
NATS_PORT=${LOCAL_CLUSTER_NATS_PORT:-4222}
read -r -a GW_PORTS <<<"${LOCAL_CLUSTER_GATEWAY_PORTS:-3001 3002 3003}"
((${#GW_PORTS[@]} == 3)) || die "LOCAL_CLUSTER_GATEWAY_PORTS must list 3 ports (gw1 gw2 gw3), got: ${GW_PORTS[*]}"
read -r -a OP_PORTS <<<"${LOCAL_CLUSTER_OPERATOR_PORTS:-9464 9465 9466}"
((${#OP_PORTS[@]} == 3)) || die "LOCAL_CLUSTER_OPERATOR_PORTS must list 3 ports (gw1 gw2 gw3), got: ${OP_PORTS[*]}"
port_var LOCAL_CLUSTER_PORT "$NGINX_PORT"
port_var LOCAL_CLUSTER_BROKER_PORT "$BROKER_PORT"
port_var LOCAL_CLUSTER_GRPC_PORT "$GRPC_PORT"
port_var LOCAL_CLUSTER_NATS_PORT "$NATS_PORT"
for p in "${GW_PORTS[@]}"; do port_var LOCAL_CLUSTER_GATEWAY_PORTS "$p"; done
for p in "${OP_PORTS[@]}"; do port_var LOCAL_CLUSTER_OPERATOR_PORTS "$p"; done
# As decimal numbers (a leading zero is not octal here).
NGINX_PORT=$((10#$NGINX_PORT)) BROKER_PORT=$((10#$BROKER_PORT)) GRPC_PORT=$((10#$GRPC_PORT)) NATS_PORT=$((10#$NATS_PORT))
GW_PORTS=($((10#${GW_PORTS[0]})) $((10#${GW_PORTS[1]})) $((10#${GW_PORTS[2]})))
OP_PORTS=($((10#${OP_PORTS[0]})) $((10#${OP_PORTS[1]})) $((10#${OP_PORTS[2]})))
DRAIN_MS=${LOCAL_CLUSTER_DRAIN_MS:-2000}
[[ $DRAIN_MS =~ ^[0-9]+$ ]] || die "LOCAL_CLUSTER_DRAIN_MS=$DRAIN_MS is not a number of milliseconds"
CONFIG=${LOCAL_CLUSTER_CONFIG:-}
if [[ -n $CONFIG ]]; then
    [[ -f $CONFIG ]] || die "LOCAL_CLUSTER_CONFIG=$CONFIG: no such file"
    CONFIG="$(cd "$(dirname "$CONFIG")" && pwd)/$(basename "$CONFIG")"
fi
TARGET=${CARGO_TARGET_DIR:-target}
[[ $TARGET == /* ]] || TARGET="$ROOT/$TARGET"
GATEWAY_BIN=${SWITCHBOARD_GATEWAY_BIN:-$TARGET/release/switchboard-gateway}
BROKER_BIN=${SWITCHBOARD_BROKER_BIN:-$TARGET/release/switchboard-broker}

if [[ -d $PIDS ]] && alive script; then
    die "already running (pid $(pid_of script), state in $STATE): stop it with \`$SCRIPT stop\`"
fi
# An earlier run killed with -9 leaves its processes running: `stop` ends them.
for name in nats broker gw1 gw2 gw3 nginx; do
    if [[ -d $PIDS ]] && alive "$name"; then
        die "$name of an earlier run is still running (pid $(pid_of "$name")): run \`$SCRIPT stop\` first"
    fi
done

# ---- what is missing -------------------------------------------------------------------------

# Debian installs both in /usr/sbin, often not on a user's PATH.
find_bin() { command -v "$1" 2>/dev/null || { [[ -x /usr/sbin/$1 ]] && echo "/usr/sbin/$1"; } || true; }
missing=()
[[ -n $(find_bin nats-server) ]] || missing+=(nats-server)
[[ -n $(find_bin nginx) ]] || missing+=(nginx)
if ((${#missing[@]} > 0)); then
    say "installing ${missing[*]} (apt-get)"
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install: ${missing[*]}"
        SUDO=(sudo)
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" </dev/null >/dev/null \
        || die "apt-get install ${missing[*]} failed"
fi
NATS_BIN=$(find_bin nats-server)
NGINX_BIN=$(find_bin nginx)
[[ -n $NATS_BIN ]] || die "nats-server not found after installing it"
[[ -n $NGINX_BIN ]] || die "nginx not found after installing it"

if [[ ! -x $GATEWAY_BIN || ! -x $BROKER_BIN ]]; then
    command -v cargo >/dev/null 2>&1 || die "$GATEWAY_BIN or $BROKER_BIN missing and cargo not found (install Rust with rustup)"
    say "building the release binaries (cargo build --release --locked)"
    (cd "$ROOT" && cargo build --release --locked -p switchboard --bins) \
        || die "cargo build failed"
fi
[[ -x $GATEWAY_BIN ]] || die "$GATEWAY_BIN not found"
[[ -x $BROKER_BIN ]] || die "$BROKER_BIN not found"

# A port already taken fails here, with the variable that moves it, rather than in a log.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
check_free() { port_free "$2" || die "port $2 ($1) is in use on 127.0.0.1: set $1 to another port"; }
check_free LOCAL_CLUSTER_PORT "$NGINX_PORT"
check_free LOCAL_CLUSTER_BROKER_PORT "$BROKER_PORT"
check_free LOCAL_CLUSTER_GRPC_PORT "$GRPC_PORT"
check_free LOCAL_CLUSTER_NATS_PORT "$NATS_PORT"
for p in "${GW_PORTS[@]}"; do check_free LOCAL_CLUSTER_GATEWAY_PORTS "$p"; done
for p in "${OP_PORTS[@]}"; do check_free LOCAL_CLUSTER_OPERATOR_PORTS "$p"; done

# ---- start -----------------------------------------------------------------------------------

# A fresh cluster each time: no JetStream state (the leader lease) from an earlier run.
rm -rf "$STATE/nats"
mkdir -p "$PIDS" "$LOGS" "$STATE/nats" "$STATE/nginx"
rm -f "$PIDS"/*.pid
record script $$ "$(exe_of $$)"
stopping=0
on_signal() {
    stopping=1
    say "stopping"
    stop_all
    rm -f "$PIDS/script.pid"
    echo "local-cluster.sh: stopped"
    exit 0
}
on_exit() {
    local status=$?
    ((stopping)) && return
    stop_all
    rm -f "$PIDS/script.pid"
    exit "$status"
}
trap on_signal INT TERM
trap on_exit EXIT
# Every background process in a process group of its own: Ctrl-C reaches this script only, which
# then stops them in order (nginx, gateways, broker, NATS).
set -m

# wait_for NAME WHAT TEST...: polls TEST until it succeeds; fails with NAME's log if NAME exits.
wait_for() {
    local name=$1 what=$2 i
    shift 2
    for ((i = 0; i < STARTUP_TIMEOUT_S * 10; i++)); do
        "$@" && return 0
        alive "$name" || { cat "$LOGS/$name.log" >&2 || true; die "$name exited before $what (log: $LOGS/$name.log)"; }
        sleep 0.1
    done
    cat "$LOGS/$name.log" >&2 || true
    die "$name: no $what within ${STARTUP_TIMEOUT_S}s (log: $LOGS/$name.log)"
}
listening() { ! port_free "$1"; }
logged() { grep -q "$2" "$LOGS/$1.log" 2>/dev/null; }
# http_status PORT PATH: the status code of GET PATH on 127.0.0.1:PORT (no curl needed).
http_status() (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
    read -r -t 2 _ status _ <&3 || exit 1
    echo "$status"
)
ready() { [[ $(http_status "$1" /ready 2>/dev/null) == 200 ]]; }

# NATS users (deploy/nats/README.md): passwords nats-server reads from its environment, each
# process given only its own. They start with letters so that NATS reads them as strings.
password() { echo "sb$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"; }
BROKER_PASSWORD=$(password)
WORKER_PASSWORD=$(password)
EMITTER_PASSWORD=$(password)
GW_PASSWORDS=("$(password)" "$(password)" "$(password)")
"$ROOT/deploy/nats/nats-conf.sh" sio gw1 gw2 gw3 >"$STATE/nats-auth.conf" || die "deploy/nats/nats-conf.sh failed"
(umask 077 && printf 'SWITCHBOARD_NATS_USER=worker\nSWITCHBOARD_NATS_PASSWORD=%s\n' "$WORKER_PASSWORD" >"$STATE/nats-worker.env")
(umask 077 && printf 'NATS_USER=emitter\nNATS_PASSWORD=%s\n' "$EMITTER_PASSWORD" >"$STATE/nats-emitter.env")
env NATS_BROKER_PASSWORD="$BROKER_PASSWORD" NATS_WORKER_PASSWORD="$WORKER_PASSWORD" NATS_EMITTER_PASSWORD="$EMITTER_PASSWORD" \
    NATS_PASSWORD_GW1="${GW_PASSWORDS[0]}" NATS_PASSWORD_GW2="${GW_PASSWORDS[1]}" \
    NATS_PASSWORD_GW3="${GW_PASSWORDS[2]}" \
    "$NATS_BIN" -c "$STATE/nats-auth.conf" -js -sd "$STATE/nats" -a 127.0.0.1 -p "$NATS_PORT" >"$LOGS/nats.log" 2>&1 &
record nats $! "$NATS_BIN"
wait_for nats "a listening client port" listening "$NATS_PORT"
NATS_URL="nats://127.0.0.1:$NATS_PORT"

TOKEN=${SWITCHBOARD_ADMIN_TOKEN:-$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')}
(umask 077 && printf '%s\n' "$TOKEN" >"$STATE/admin-token")
env SWITCHBOARD_NATS_URL="$NATS_URL" SWITCHBOARD_NATS_USER=broker SWITCHBOARD_NATS_PASSWORD="$BROKER_PASSWORD" \
    SWITCHBOARD_BROKER_HOST=127.0.0.1 SWITCHBOARD_BROKER_HTTP_PORT="$BROKER_PORT" \
    SWITCHBOARD_ADMIN_TOKEN="$TOKEN" SWITCHBOARD_GRPC_HOST=127.0.0.1 SWITCHBOARD_GRPC_PORT="$GRPC_PORT" \
    RUST_LOG="${RUST_LOG:-info}" "$BROKER_BIN" >"$LOGS/broker.log" 2>&1 &
record broker $! "$BROKER_BIN"
wait_for broker "\"listening on\"" logged broker '^listening on'

for i in 1 2 3; do
    port=${GW_PORTS[i - 1]}
    # The gateways get none of the broker's variables (a standalone-only gRPC token would only be
    # noted as ignored); the drain and advertise variables are read by gateways that have them.
    env -u SWITCHBOARD_ADMIN_TOKEN -u SWITCHBOARD_CONFIG \
        SWITCHBOARD_NATS_URL="$NATS_URL" SWITCHBOARD_NODE_ID="gw$i" \
        SWITCHBOARD_NATS_USER="gateway-gw$i" SWITCHBOARD_NATS_PASSWORD="${GW_PASSWORDS[i - 1]}" \
        SWITCHBOARD_HOST=127.0.0.1 SWITCHBOARD_PORT="$port" \
        SWITCHBOARD_OPERATOR_HOST=127.0.0.1 SWITCHBOARD_OPERATOR_PORT="${OP_PORTS[i - 1]}" \
        SWITCHBOARD_ADVERTISE_ADDR="127.0.0.1:$port" SWITCHBOARD_DRAIN_MS="$DRAIN_MS" \
        RUST_LOG="${RUST_LOG:-info}" "$GATEWAY_BIN" ${CONFIG:+"$CONFIG"} >"$LOGS/gw$i.log" 2>&1 &
    record "gw$i" $! "$GATEWAY_BIN"
done
for i in 1 2 3; do wait_for "gw$i" "/ready 200" ready "${GW_PORTS[i - 1]}"; done

# nginx: the shipped sid-routed config with only its addresses rewritten (the i-th gateway
# 127.0.0.1:300i becomes gw i's port, `listen 8080` this cluster's loopback port).
grep -q 'listen 8080;' "$NGINX_CONF_SHIPPED" || die "$NGINX_CONF_SHIPPED: no \"listen 8080;\" to rewrite"
sed -E -e "s/listen 8080;/listen 127.0.0.1:$NGINX_PORT;/" \
    -e "s/server 127\.0\.0\.1:3001/server 127.0.0.1:${GW_PORTS[0]}/" \
    -e "s/server 127\.0\.0\.1:3002/server 127.0.0.1:${GW_PORTS[1]}/" \
    -e "s/server 127\.0\.0\.1:3003/server 127.0.0.1:${GW_PORTS[2]}/" \
    "$NGINX_CONF_SHIPPED" >"$STATE/nginx/switchboard.conf"
{
    echo 'daemon off;'
    echo 'worker_processes 1;'
    echo "pid $STATE/nginx/nginx.pid;"
    echo "error_log $LOGS/nginx-error.log warn;"
    echo 'events { worker_connections 1024; }'
    echo 'http {'
    echo "  access_log $LOGS/nginx-access.log;"
    for t in client_body proxy fastcgi uwsgi scgi; do echo "  ${t}_temp_path $STATE/nginx/$t;"; done
    echo "  include $STATE/nginx/switchboard.conf;"
    echo '}'
} >"$STATE/nginx/nginx.conf"
"$NGINX_BIN" -e "$LOGS/nginx-error.log" -p "$STATE/nginx" -c "$STATE/nginx/nginx.conf" >"$LOGS/nginx.log" 2>&1 &
record nginx $! "$NGINX_BIN"
wait_for nginx "a listening port $NGINX_PORT" listening "$NGINX_PORT"

cat <<EOF

Switchboard local cluster is up (state and logs: $STATE)

  clients (through nginx)  http://127.0.0.1:$NGINX_PORT
  demo chat page           http://127.0.0.1:$NGINX_PORT/
  gateway gw1              http://127.0.0.1:${GW_PORTS[0]}   (/health, /ready)   operator http://127.0.0.1:${OP_PORTS[0]}   (/metrics)
  gateway gw2              http://127.0.0.1:${GW_PORTS[1]}   operator http://127.0.0.1:${OP_PORTS[1]}
  gateway gw3              http://127.0.0.1:${GW_PORTS[2]}   operator http://127.0.0.1:${OP_PORTS[2]}
  broker HTTP              http://127.0.0.1:$BROKER_PORT   (/health, /metrics, /v1/state)
  broker gRPC              127.0.0.1:$GRPC_PORT   token: $TOKEN   (also in $STATE/admin-token)
  NATS                     $NATS_URL   (users: deploy/nats/README.md; a worker's: $STATE/nats-worker.env; an emitter's: $STATE/nats-emitter.env)

  SWITCHBOARD_ADMIN_ADDR=http://127.0.0.1:$GRPC_PORT SWITCHBOARD_ADMIN_TOKEN=$TOKEN \\
    $TARGET/release/switchboard-admin stats

Ctrl-C here, or \`$SCRIPT stop\` from another shell, stops everything.
local cluster ready
EOF

# Wait until a signal arrives (on_signal) or one of the processes dies by itself.
while :; do
    wait -n || true
    ((stopping)) && exit 0
    for name in nats broker gw1 gw2 gw3 nginx; do
        if ! alive "$name"; then
            say "$name exited by itself (log: $LOGS/$name.log); stopping the rest"
            exit 1
        fi
    done
done
