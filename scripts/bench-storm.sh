#!/usr/bin/env bash
# A reconnect storm, measured (issue 17 item 4): three gateways behind nginx (the shipped
# deploy/nginx/switchboard-roundrobin.conf, addresses rewritten), a nats-server and a broker;
# N WebSocket clients (socket.io-client's reconnection: delay 1000 ms, max 5000, randomization
# 0.5; each rejoins its room on reconnect, as an app does) in rooms of 30; then gw3 is killed with
# SIGKILL (`kill`), or drained with SIGTERM (`term`, its drain window SWITCHBOARD_DRAIN_MS,
# default 10 s; --quick: 2 s). Reported per run (`switchboard-loadtest storm`): signal → the last
# of gw3's clients back in its room elsewhere; signal → the broker's /v1/state equal to the truth (every client's socket
# once, in its room, none of gw3's left); connect p99 of the reconnects; failed attempts; lost
# clients. Then the same against three Node socket.io processes (loadtest/peers/server.js) with
# the Redis adapter behind the same nginx, SIGKILL only: Node has no cluster-wide directory, so
# only the clients' side compares (docs/scaling.md, "Reconnect storm").
#
#   scripts/bench-storm.sh              30 000 clients, 1 000 rooms; 3 runs of each: kill, term,
#                                       node-kill; medians at the end
#   scripts/bench-storm.sh --quick      300 clients, 10 rooms, one kill and one term run (a smoke
#                                       test, seconds; no Node)
#   scripts/bench-storm.sh --no-build   skip `cargo build --release`
#   scripts/bench-storm.sh --runs N     N runs of each (default 3)
#   scripts/bench-storm.sh --only LIST  comma-separated subset of kill,term,node-kill
#
# Every run starts a fresh cluster (servers and nginx pinned to CPU $SERVER_CPU, default 0) and
# the generator on CPU $CLIENT_CPU (default 1). One process may hold only as many sockets as the
# open-files hard limit allows: nginx runs 4 workers (reuseport), and the generator splits its
# clients over as many processes as that limit needs, all on the one CPU. nginx listens on
# 127.0.0.1-3 so that the clients' connections spread over three destination addresses (one has
# only ~28 000 ephemeral ports). JSON lines go to target/bench/storm-results.jsonl, logs to
# target/bench/storm-*.log; only the processes started here are stopped, by PID.
#
# Exit status: 0 when every run reported ok, 1 when a run found problems, 2 on set-up failure.
set -euo pipefail

cd "$(dirname "$0")/.."

quick=0
build=1
runs=3
only=kill,term,node-kill
while (( $# )); do
    case "$1" in
        --quick) quick=1 ;;
        --no-build) build=0 ;;
        --runs) runs=${2:?--runs N}; shift ;;
        --only) only=${2:?--only LIST}; shift ;;
        -h | --help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-storm.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BENCH_CONFIG=${BENCH_CONFIG:-loadtest/bench.toml}
GATEWAY=target/release/switchboard-gateway
BROKER=target/release/switchboard-broker
LOADTEST=target/release/switchboard-loadtest
NATS_SERVER=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server || echo /usr/bin/redis-server)}
PEER=loadtest/peers/server.js
NGINX_CONF=deploy/nginx/switchboard-roundrobin.conf
OUT=target/bench
STARTUP_TIMEOUT_S=30
NGINX_WORKERS=4
PREFIX=storm

if [[ $quick == 1 ]]; then
    CLIENTS=300; ROOMS=10; runs=1
    [[ $only == kill,term,node-kill ]] && only=kill,term
    DEADLINE_S=60
    # A short drain window keeps the smoke run short; the full runs use the default (10 s).
    export SWITCHBOARD_DRAIN_MS=${SWITCHBOARD_DRAIN_MS:-2000}
else
    CLIENTS=${CLIENTS:-30000}; ROOMS=1000; DEADLINE_S=${DEADLINE_S:-120}
fi

die() { echo "bench-storm.sh: $*" >&2; exit 2; }

command -v taskset >/dev/null || die "taskset not found: install util-linux"
command -v jq >/dev/null || die "jq not found: apt-get install jq"
[[ -x $NATS_SERVER ]] || die "nats-server not found (install it, or set NATS_SERVER=)"
[[ -x $NGINX ]] || die "nginx not found (apt-get install nginx, or set NGINX=)"
ncpu=$(nproc)
(( SERVER_CPU < ncpu && CLIENT_CPU < ncpu )) || die "need CPUs $SERVER_CPU and $CLIENT_CPU, this machine has $ncpu"
[[ -f $BENCH_CONFIG ]] || die "configuration $BENCH_CONFIG not found"
if [[ ,$only, == *,node-kill,* ]]; then
    command -v node >/dev/null || die "node not found (needed for node-kill; --only kill,term skips it)"
    [[ -x $REDIS_SERVER ]] || die "redis-server not found (apt-get install redis-server, or set REDIS_SERVER=)"
fi

# Every process takes the hard limit: a gateway ends with ~N/2 sockets, nginx's workers ~2N/4.
hard=$(ulimit -Hn)
[[ $hard == unlimited ]] && hard=1048576
ulimit -n "$hard"
(( hard >= 1024 )) || die "open-files hard limit is $hard: too low"
per_worker=$(( hard - 64 ))
(( CLIENTS * 2 / NGINX_WORKERS + CLIENTS / 10 < per_worker )) ||
    die "nginx's $NGINX_WORKERS workers cannot hold $CLIENTS clients under an open-files limit of $hard"

if [[ $build == 1 ]]; then
    cargo build --release --bins --features switchboard-loadtest/grpc || die "build failed"
fi
for bin in "$GATEWAY" "$BROKER" "$LOADTEST"; do
    [[ -x $bin ]] || die "$bin missing (build first: cargo build --release --bins)"
done
if [[ ,$only, == *,node-kill,* ]]; then
    (cd loadtest/peers && npm ci --no-audit --no-fund --loglevel=error </dev/null >/dev/null) ||
        die "npm ci in loadtest/peers failed"
fi

unset SWITCHBOARD_CONFIG
mkdir -p "$OUT"
results="$OUT/storm-results.jsonl"
: > "$results"
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-storm.XXXXXX")

# shellcheck source=scripts/lib/servers.sh
source scripts/lib/servers.sh
cleanup() { stop_all; rm -rf "$work"; }
trap cleanup EXIT

# nginx_up PORT UPSTREAM...: the shipped round-robin file, listening on 127.0.0.1-3:PORT, its
# three upstreams replaced by UPSTREAM (host:port each). `backlog=4096`: nginx's default accept
# queue (511) overflows when a third of 30 000 clients reconnect within a second, and each
# overflowing client pays a SYN retransmit (1 s, then 3 s, 7 s): measured, connect p50 1.05 s and
# p99 6.2 s with the default (docs/scaling.md, "Reconnect storm").
nginx_up() {
    local port=$1 dir=$work/nginx t
    shift
    rm -rf "$dir"; mkdir -p "$dir"; : > "$OUT/storm-nginx-error.log"
    local servers="" u
    for u in "$@"; do servers+="    server $u;\n"; done
    sed -e "s|^    listen 8080;|    listen 127.0.0.1:$port reuseport backlog=4096;\n    listen 127.0.0.2:$port reuseport backlog=4096;\n    listen 127.0.0.3:$port reuseport backlog=4096;|" \
        -e '/^    server 127\.0\.0\.1:300[23];/d' \
        -e "s|^    server 127\.0\.0\.1:3001;|$servers|" \
        "$NGINX_CONF" > "$dir/switchboard.conf"
    grep -q "listen 127.0.0.3:$port" "$dir/switchboard.conf" || die "could not rewrite $NGINX_CONF"
    {
        echo 'daemon off;'
        echo "worker_processes $NGINX_WORKERS;"
        echo "pid $dir/nginx.pid;"
        echo "error_log $PWD/$OUT/storm-nginx-error.log error;"
        echo "worker_rlimit_nofile $hard;"
        echo "events { worker_connections $per_worker; }"
        echo 'http {'
        echo '  access_log off;'
        for t in client_body proxy fastcgi uwsgi scgi; do echo "  ${t}_temp_path $dir/$t;"; done
        echo "  include $dir/switchboard.conf;"
        echo '}'
    } > "$dir/nginx.conf"
    start nginx "$OUT/storm-nginx.log" "$NGINX" -p "$dir" -c "$dir/nginx.conf"
    for _ in $(seq 100); do
        # Any answer will do (a Node peer has no /health): nginx is listening.
        [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port/health" || true) != 000 ]] && return 0
        kill -0 "${pids[nginx]}" 2>/dev/null || { cat "$OUT/storm-nginx.log" "$OUT/storm-nginx-error.log" >&2; die "nginx exited"; }
        sleep 0.1
    done
    die "nginx did not answer on 127.0.0.1:$port"
}

# switchboard_up: nats, broker, gw1..gw3 (SIGKILL victim gw3), nginx; sets lb, broker_url.
switchboard_up() {
    local n u=()
    start_nats "$OUT/storm-nats.log"
    SWITCHBOARD_NATS_URL=$nats_url SWITCHBOARD_BROKER_HTTP_PORT=0 SWITCHBOARD_BROKER_LEADER=always \
        SWITCHBOARD_SUBJECT_PREFIX=$PREFIX start broker "$OUT/storm-broker.log" "$BROKER"
    broker_url=$(wait_for broker "$OUT/storm-broker.log" 's|.*listening on \(http://[^ ]*\).*|\1|p')
    for n in gw1 gw2 gw3; do
        SWITCHBOARD_NATS_URL=$nats_url SWITCHBOARD_NODE_ID=$n SWITCHBOARD_SUBJECT_PREFIX=$PREFIX \
            SWITCHBOARD_PORT=0 SWITCHBOARD_HOST=127.0.0.1 \
            start "$n" "$OUT/storm-$n.log" "$GATEWAY" "$BENCH_CONFIG"
    done
    for n in gw1 gw2 gw3; do u+=("$(wait_for "$n" "$OUT/storm-$n.log" "$LISTENING")"); done
    for n in 0 1 2; do wait_ready "${u[n]}"; done
    lb_port=$(free_ports 1)
    nginx_up "$lb_port" "${u[@]#http://}"
}

# node_up: redis, node1..node3 with the Redis adapter, nginx.
node_up() {
    local n u=() port
    port=$(free_ports 1)
    mkdir -p "$work/redis"
    start redis "$OUT/storm-redis.log" "$REDIS_SERVER" --bind 127.0.0.1 --port "$port" --dir "$work/redis" \
        --save "" --appendonly no --daemonize no
    wait_for redis "$OUT/storm-redis.log" 's|.*\(Ready to accept connections\).*|\1|p' >/dev/null
    for n in node1 node2 node3; do REDIS_URL=redis://127.0.0.1:$port PORT=0 start "$n" "$OUT/storm-$n.log" node "$PEER"; done
    for n in node1 node2 node3; do u+=("$(wait_for "$n" "$OUT/storm-$n.log" "$LISTENING")"); done
    lb_port=$(free_ports 1)
    nginx_up "$lb_port" "${u[@]#http://}"
}

echo "== machine =="
echo "  $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "  kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg), open files $(ulimit -n)"
echo "  servers and nginx ($NGINX_WORKERS workers) on CPU $SERVER_CPU; load generator on CPU $CLIENT_CPU"
echo "  $CLIENTS clients in $ROOMS rooms; runs of each: $runs ($only)$([[ $quick == 1 ]] && echo ', quick mode')"
echo "  commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo

status=0
# storm KIND RUN: one run on a fresh set of servers.
storm() {
    local kind=$1 i=$2 rc=0 args
    local urls="http://127.0.0.1:PORT,http://127.0.0.2:PORT,http://127.0.0.3:PORT"
    case $kind in
        kill | term)
            switchboard_up
            args=(--kill-pid "${pids[gw3]}" --signal "$kind" --victim gw3 --broker "$broker_url")
            ;;
        node-kill)
            node_up
            args=(--kill-pid "${pids[node3]}" --signal kill)
            ;;
    esac
    echo "== $kind, run $i: $CLIENTS clients, load average $(cut -d' ' -f1 /proc/loadavg) =="
    timeout --kill-after=10 $(( DEADLINE_S + 300 )) taskset -c "$CLIENT_CPU" "$LOADTEST" storm \
        --url "${urls//PORT/$lb_port}" --clients "$CLIENTS" --rooms "$ROOMS" \
        --deadline-secs "$DEADLINE_S" "${args[@]}" > "$work/run.out" 2> "$OUT/storm-run.log" || rc=$?
    cat "$work/run.out"
    local line
    line=$(grep -m1 '^{' "$work/run.out" || true)
    if [[ -n $line ]]; then
        jq -c --arg kind "$kind" --argjson run "$i" --arg commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
            '. + {kind: $kind, run: $run, commit: $commit}' <<< "$line" >> "$results"
    fi
    if (( rc != 0 )); then
        echo "bench-storm.sh: $kind run $i failed (exit $rc); generator log $OUT/storm-run.log:" >&2
        tail -n 20 "$OUT/storm-run.log" >&2
        status=1
    fi
    # The victim is gone (or draining to its exit); everything else stops here.
    stop_all
    echo
}

IFS=, read -r -a kinds <<< "$only"
for i in $(seq "$runs"); do
    for kind in "${kinds[@]}"; do
        case $kind in kill | term | node-kill) ;; *) die "unknown kind $kind (kill, term, node-kill)" ;; esac
        storm "$kind" "$i"
    done
done

echo "== medians of $runs run(s) ($results) =="
printf '%-10s %-5s %-8s %-8s %-8s %-9s %-9s %-9s %-9s %-9s %-7s %-5s\n' \
    kind runs dropped back lost clients_s broker_s stale_s gap_p99 conn_p99 failed load
jq -rs '
    def median: map(select(. != null)) | sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
    def r(d): if . == null then "-" else . * d | round / d end;
    group_by(.kind)[] | . as $g
    | [$g[0].kind, ($g | length),
       ($g | map(.dropped) | median), ($g | map(.back) | median), ($g | map(.lost) | median),
       ($g | map(.storm_clients_s) | median | r(100)), ($g | map(.storm_broker_s) | median | r(100)),
       ($g | map(.stale_gone_s) | median | r(100)), ($g | map(.gap_p99_ms) | median | r(1)),
       ($g | map(.reconnect_connect_p99_ms) | median | r(10)), ($g | map(.failed_attempts) | median),
       ($g | map(.loadavg_1m) | median | r(100))]
    | map(tostring) | @tsv' "$results" |
    while IFS=$'\t' read -r -a row; do
        printf '%-10s %-5s %-8s %-8s %-8s %-9s %-9s %-9s %-9s %-9s %-7s %-5s\n' "${row[@]}"
    done
echo "(clients_s: signal → last dropped client back in its room; broker_s: → broker equal to the"
echo " truth; stale_s: → no socket of the victim left in the broker; gap_p99: a client's drop →"
echo " back, ms; conn_p99: reconnect attempt → CONNECT, ms; failed: failed reconnect attempts)"
exit "$status"
