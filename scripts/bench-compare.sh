#!/usr/bin/env bash
# Side by side: Switchboard, Node's socket.io 4.8 (loadtest/peers/server.js) and socketioxide 0.18
# (loadtest/peers/socketioxide, a Rust Socket.IO server), the same /chat behaviours, under the same
# load generator, in the same run, on this machine, over loopback.
#
#   scripts/bench-compare.sh                     every scenario, full size (about 14 minutes)
#   scripts/bench-compare.sh --quick             tiny counts, under a minute: the CI smoke run
#   scripts/bench-compare.sh --scenarios a,b     only these of: floor idle connect fanout rooms
#                                                polling cluster (fanout = saturation and the
#                                                sweep over offered load, whose lowest level is
#                                                the low-load point)
#   scripts/bench-compare.sh --no-build          skip `cargo build --release --bins`
#
# Servers run pinned to CPU $SERVER_CPU (default 0), the load generator to CPU $CLIENT_CPU
# (default 1), with taskset. Each scenario runs against every server back to back, the order
# rotating from one run to the next; idle and connect get freshly started servers. Switchboard
# runs standalone with loadtest/bench.toml (the default config without /chat's rate limit and
# connection state recovery; the peers have neither); the cluster scenario runs two gateways +
# nats-server + broker against two Node processes + redis-server (@socket.io/redis-adapter),
# every server process on $SERVER_CPU (socketioxide: not run, see the report).
#
# Medians: idle, connect, fan-out at saturation and every level of the sweep run $REPEAT times
# per server (3 in a full run), and the report gives, for each figure, the median of its runs
# (each figure's own median). Rooms, polling and cluster run once per server.
#
# It prints ratios against the best peer (the better of Node and socketioxide for each measure)
# and checks the targets: issue 17's (at every offered load and at saturation, server CPU per
# delivery and p99 no worse than the best peer's; the low-load floor) and issue 6's (against
# Node), MET or MISSED by how much.
# Results: raw JSON lines (one per run, with "tag" and "target" added) in $OUT (default
# target/bench/compare, or target/bench/compare-quick), and, in a full run, docs/benchmarks.md
# (written entirely by this script: command, commit, machine, tables, ratios, targets), its raw
# results as docs/benchmarks.jsonl, and docs/latency-vs-load.png (gnuplot). A --quick or
# --scenarios run writes its report to $OUT instead, so docs/ only ever holds complete runs.
#
# Needs: taskset, node/npm (npm ci in loadtest/peers is run here), redis-server and nats-server
# (cluster), gnuplot (the plot; installed with apt-get when missing and running as root), jq,
# target/release/socketioxide-peer (built by the same cargo build as the rest).
# Stops only the processes it started, by PID, on exit.
# Exit status: 0 when every run was ok, 1 when a run found problems (loss, failures),
# 2 on set-up failure. A MISSED target is reported, not an error; nor is a peer that does not
# sustain a sweep level (it is not run at higher levels).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
COMMAND_LINE="scripts/bench-compare.sh${*:+ $*}"

quick=0
build=1
scenarios="floor,idle,connect,fanout,rooms,polling,cluster"
while (( $# )); do
    case "$1" in
        --quick) quick=1 ;;
        --no-build) build=0 ;;
        --scenarios) shift; scenarios=${1:-} ;;
        --scenarios=*) scenarios=${1#*=} ;;
        -h | --help) sed -n '2,42p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-compare.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
ALL_SCENARIOS=(floor idle connect fanout rooms polling cluster)
IFS=, read -r -a chosen <<< "$scenarios"
(( ${#chosen[@]} )) || { echo "bench-compare.sh: --scenarios needs a list" >&2; exit 2; }
for s in "${chosen[@]}"; do
    [[ " ${ALL_SCENARIOS[*]} " == *" $s "* ]] || { echo "bench-compare.sh: unknown scenario $s (${ALL_SCENARIOS[*]})" >&2; exit 2; }
done
wants() { [[ ",$scenarios," == *",$1,"* ]]; }
complete=0
[[ $quick == 0 && $scenarios == "floor,idle,connect,fanout,rooms,polling,cluster" ]] && complete=1

SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BENCH_CONFIG=loadtest/bench.toml
GATEWAY=target/release/switchboard-gateway
BROKER=target/release/switchboard-broker
LOADTEST=target/release/switchboard-loadtest
PEER=loadtest/peers/server.js
SIOXIDE=target/release/socketioxide-peer
NATS_SERVER=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server || echo /usr/bin/redis-server)}
STARTUP_TIMEOUT_S=30
RUN_SLACK_S=120

if [[ $quick == 1 ]]; then
    OUT=${OUT:-target/bench/compare-quick}
    IDLE_N=200; CONNECT_N=200; REPEAT=1; MEMBERS=50; SECS=1; FAN_SECS=1; SWEEP=(10 50)
    ROOMS=20; ROOM_SIZE=5; ROOMS_RATE=100; POLL_MEMBERS=50; POLL_RATE=10
    CLUSTER_MEMBERS=100; CLUSTER_RATE=10; FLOOR_WRITES=20000
else
    OUT=${OUT:-target/bench/compare}
    # idle, connect, saturation and every sweep level run REPEAT times per server; the report
    # gives each figure's median. The sweep's runs are FAN_SECS long so that the whole run
    # stays near a quarter of an hour: 1000 members at 10 msg/s for 5 s are 50 000 deliveries.
    IDLE_N=10000; CONNECT_N=10000; REPEAT=3; MEMBERS=1000; SECS=10; FAN_SECS=5
    # msg/s to MEMBERS members: 10 k to 1 M deliveries/s offered.
    SWEEP=(10 50 100 300 500 1000)
    ROOMS=1000; ROOM_SIZE=10; ROOMS_RATE=1000; POLL_MEMBERS=1000; POLL_RATE=10
    CLUSTER_MEMBERS=2000; CLUSTER_RATE=50; FLOOR_WRITES=200000
fi
# The sweep's lowest level is the low-load point (the floor's shape: MEMBERS sockets, LOW_RATE
# bursts a second).
LOW_RATE=${SWEEP[0]}

die() { echo "bench-compare.sh: $*" >&2; exit 2; }

command -v taskset >/dev/null || die "taskset not found: install util-linux"
command -v node >/dev/null || die "node not found: install nodejs and npm"
command -v jq >/dev/null || die "jq not found: install jq"
ncpu=$(nproc)
(( SERVER_CPU < ncpu && CLIENT_CPU < ncpu )) || die "need CPUs $SERVER_CPU and $CLIENT_CPU, this machine has $ncpu"
[[ $SERVER_CPU != "$CLIENT_CPU" ]] || echo "bench-compare.sh: warning: servers and load generator share CPU $SERVER_CPU" >&2
if wants cluster; then
    [[ -x $NATS_SERVER ]] || die "nats-server not found (install it, or set NATS_SERVER=)"
    [[ -x $REDIS_SERVER ]] || die "redis-server not found (apt-get install redis-server, or set REDIS_SERVER=)"
fi
plot=1
if [[ $complete == 1 ]] && ! command -v gnuplot >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "bench-compare.sh: installing gnuplot-nox for the plot" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox </dev/null >/dev/null ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox </dev/null >/dev/null; } ||
            die "could not install gnuplot-nox"
    else
        die "gnuplot not found: install gnuplot-nox (the plot is part of the report)"
    fi
fi
command -v gnuplot >/dev/null || plot=0

# One socket per connection on each side (a polling member may hold two), plus a few more.
need_fds=512
for n in "$IDLE_N" "$CONNECT_N" $(( ROOMS * ROOM_SIZE )) $(( 2 * POLL_MEMBERS )) "$CLUSTER_MEMBERS"; do
    (( n + 512 > need_fds )) && need_fds=$(( n + 512 ))
done
hard=$(ulimit -Hn)
if [[ $hard != unlimited ]] && (( hard < need_fds )); then
    die "open-files hard limit is $hard, $need_fds are needed (raise it in limits.conf or the container)"
fi
if [[ $hard == unlimited ]]; then ulimit -n 1048576 2>/dev/null || ulimit -n "$need_fds"; else ulimit -n "$hard"; fi

if [[ $build == 1 ]]; then
    cargo build --release --bins --features switchboard-loadtest/grpc --locked || die "build failed (use --no-build to run the binaries you have)"
fi
for bin in "$GATEWAY" "$BROKER" "$LOADTEST" "$SIOXIDE"; do
    [[ -x $bin ]] || die "$bin missing (build first: cargo build --release --bins)"
done
(cd loadtest/peers && npm ci --no-audit --no-fund --loglevel=error </dev/null >/dev/null) ||
    die "npm ci in loadtest/peers failed"
unset SWITCHBOARD_CONFIG

mkdir -p "$OUT"
results="$OUT/results.jsonl"
: > "$results"
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-compare.XXXXXX")

# shellcheck source=scripts/lib/servers.sh
source scripts/lib/servers.sh
cleanup() { stop_all; rm -rf "$work"; }
trap cleanup EXIT

# up TARGET NAME: starts one standalone server; sets url and pid.
up() {
    case $1 in
        switchboard) SWITCHBOARD_PORT=0 start "$2" "$OUT/$2.log" "$GATEWAY" "$BENCH_CONFIG" ;;
        node) PORT=0 start "$2" "$OUT/$2.log" node "$PEER" ;;
        socketioxide) PORT=0 start "$2" "$OUT/$2.log" "$SIOXIDE" ;;
    esac
    url=$(wait_for "$2" "$OUT/$2.log" "$LISTENING")
    pid=${pids[$2]}
}

# cluster_up TARGET: two servers of one cluster on the servers' CPU; sets urls and watched.
cluster_up() {
    local n u=()
    case $1 in
        switchboard)
            start_nats "$OUT/nats.log"
            SWITCHBOARD_NATS_URL=$nats_url SWITCHBOARD_BROKER_HTTP_PORT=0 SWITCHBOARD_BROKER_LEADER=always \
                SWITCHBOARD_SUBJECT_PREFIX=compare start broker "$OUT/broker.log" "$BROKER"
            wait_for broker "$OUT/broker.log" 's|.*listening on \(http://[^ ]*\).*|\1|p' >/dev/null
            for n in gw1 gw2; do
                SWITCHBOARD_NATS_URL=$nats_url SWITCHBOARD_NODE_ID=$n SWITCHBOARD_SUBJECT_PREFIX=compare \
                    SWITCHBOARD_PORT=0 SWITCHBOARD_HOST=127.0.0.1 start "$n" "$OUT/$n.log" "$GATEWAY" "$BENCH_CONFIG"
            done
            for n in gw1 gw2; do u+=("$(wait_for "$n" "$OUT/$n.log" "$LISTENING")"); done
            # Listening is not joined: wait until each gateway's bus is up (/ready).
            for n in 0 1; do wait_ready "${u[n]}"; done
            watched="gw1=${pids[gw1]},gw2=${pids[gw2]},nats=${pids[nats]},broker=${pids[broker]}"
            ;;
        node)
            local port
            port=$(free_ports 1)
            mkdir -p "$work/redis"
            start redis "$OUT/redis.log" "$REDIS_SERVER" --bind 127.0.0.1 --port "$port" --dir "$work/redis" \
                --save "" --appendonly no --daemonize no
            wait_for redis "$OUT/redis.log" 's|.*\(Ready to accept connections\).*|\1|p' >/dev/null
            for n in node1 node2; do REDIS_URL=redis://127.0.0.1:$port PORT=0 start "$n" "$OUT/$n.log" node "$PEER"; done
            for n in node1 node2; do u+=("$(wait_for "$n" "$OUT/$n.log" "$LISTENING")"); done
            watched="node1=${pids[node1]},node2=${pids[node2]},redis=${pids[redis]}"
            ;;
    esac
    urls=$(IFS=,; echo "${u[*]}")
}

status=0
# run TAG TARGET ARGS...: one load-generator run on the generator's CPU; its table goes to
# $OUT/runs.log, its JSON line (tagged) to the results, a one-line summary to stdout.
run() {
    local tag=$1 target=$2 rc=0
    shift 2
    timeout --kill-after=10 $(( SECS + RUN_SLACK_S )) taskset -c "$CLIENT_CPU" "$LOADTEST" "$@" --quiet \
        > "$work/run.out" 2>> "$OUT/runs.log" || rc=$?
    { echo "### $tag $target: $*"; cat "$work/run.out"; } >> "$OUT/runs.log"
    local line
    line=$(grep '^{' "$work/run.out" | tail -n1 || true)
    if [[ -z $line ]]; then
        line=$(jq -cn --arg s "$1" '{scenario:$s, ok:false, problems:["no result (exit status '"$rc"')"]}')
    fi
    jq -c --arg tag "$tag" --arg target "$target" '{tag:$tag, target:$target} + .' <<< "$line" >> "$results"
    jq -r --arg tag "$tag" --arg target "$target" '"  \($tag) \($target): " + (
        [ (if .deliveries_per_sec then "\(.deliveries_per_sec|floor) deliveries/s" else empty end),
          (if .latency_p99_us then "p99 \(.latency_p99_us/1000*100|round/100) ms" else empty end),
          (if .loss != null then "loss \(.loss)" else empty end),
          (if .server_cpu_us_per_delivery then "\(.server_cpu_us_per_delivery) µs CPU/delivery" else empty end),
          (if .total_cpu_us_per_delivery then "\(.total_cpu_us_per_delivery) µs CPU/delivery (all servers)" else empty end),
          (if .connects_per_sec then "\(.connects_per_sec|floor) connects/s" else empty end),
          (if .server_rss_per_connection_bytes and .scenario == "idle" then "\(.server_rss_per_connection_bytes|floor) B/connection" else empty end),
          (if .writer_cpu_us_per_write then "\(.writer_cpu_us_per_write) µs per write" else empty end),
          (if .ok then "ok" else "PROBLEMS: \(.problems|join("; "))" end)
        ] | join(", "))' <<< "$line" | tee -a "$OUT/summary.log"
    if (( rc != 0 )); then status=1; fi
}

# Rotates which server goes first (order ORDER... for a subset).
TARGETS=(switchboard node socketioxide)
turn=0
order() {
    local list=("${@:-${TARGETS[@]}}") i n
    n=${#list[@]}
    for (( i = 0; i < n; i++ )); do echo "${list[(turn + i) % n]}"; done
    turn=$(( turn + 1 ))
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== machine =="
echo "  $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); $(uname -sr)"
echo "  load average $(cut -d' ' -f1-3 /proc/loadavg); servers on CPU $SERVER_CPU, generator on CPU $CLIENT_CPU$([[ $quick == 1 ]] && echo '; quick mode')"
echo "  node $(node --version), socket.io $(node -p 'require("./loadtest/peers/node_modules/socket.io/package.json").version'); socketioxide $("$SIOXIDE" --version 2>/dev/null || echo unknown)"
echo "  results: $results, tables: $OUT/runs.log"
: > "$OUT/runs.log"
: > "$OUT/summary.log"

common_fanout=(--seconds "$SECS" --concurrency 256)
sweep_fanout=(--seconds "$FAN_SECS" --concurrency 256)

if wants floor; then
    echo "== floor: one small loopback write (writer on CPU $SERVER_CPU) =="
    floor=(floor --writer-cpu "$SERVER_CPU" --reader-cpu "$CLIENT_CPU")
    # The generator's taskset would pin the writer too: the floor pins its own threads.
    CLIENT_CPU="$SERVER_CPU,$CLIENT_CPU" run floor loopback "${floor[@]}" --writes "$FLOOR_WRITES"
    CLIENT_CPU="$SERVER_CPU,$CLIENT_CPU" run floor_fanout loopback "${floor[@]}" \
        --writes $(( MEMBERS * LOW_RATE * SECS )) --sockets "$MEMBERS" --bursts-per-sec "$LOW_RATE"
fi

if wants connect; then
    echo "== connect: a storm of $CONNECT_N connections, 256 at once (fresh servers, $REPEAT runs each) =="
    for _ in $(seq "$REPEAT"); do
        for target in $(order); do
            up "$target" "$target-connect"
            run connect "$target" connect --url "$url" --pid "$pid" --connections "$CONNECT_N" --concurrency 256
            stop_one "$target-connect"
        done
    done
fi

if wants idle; then
    echo "== idle: $IDLE_N connections, server RSS per connection (fresh servers, $REPEAT runs each) =="
    for _ in $(seq "$REPEAT"); do
        for target in $(order); do
            up "$target" "$target-idle"
            run idle "$target" idle --url "$url" --pid "$pid" --connections "$IDLE_N" --settle-secs 3
            stop_one "$target-idle"
        done
    done
fi

if wants fanout; then
    echo "== fanout: $MEMBERS members, saturation ($REPEAT runs each), and p99 and CPU over offered load (${SWEEP[*]} msg/s, $REPEAT runs each) =="
    declare -A fan_url=() fan_pid=()
    for target in "${TARGETS[@]}"; do
        up "$target" "$target-fanout"; fan_url[$target]=$url; fan_pid[$target]=$pid
    done
    # First, that the three implement the same /chat (the official client, a few seconds).
    contract=$(for t in "${TARGETS[@]}"; do printf '%s=%s,' "$t" "${fan_url[$t]}"; done)
    if (cd loadtest/peers && CONTRACT_URLS=${contract%,} node --test contract.test.js) > "$OUT/contract.log" 2>&1; then
        echo "  contract (loadtest/peers/contract.test.js): the same /chat on all three"
    else
        grep -E '^not ok|^# (pass|fail)' "$OUT/contract.log" | sed 's/^/  /'
        echo "  contract: FAILED, the comparison is not like for like (log: $OUT/contract.log)"
        status=1
    fi
    for _ in $(seq "$REPEAT"); do
        for target in $(order); do
            run fanout_saturation "$target" fanout --url "${fan_url[$target]}" --pid "${fan_pid[$target]}" \
                --members "$MEMBERS" --rate 0 --window 32 "${sweep_fanout[@]}"
        done
    done
    # The sweep: every level for every server, until a peer no longer sustains one (then the
    # others alone). Sustained: most of its runs at the level lost nothing and delivered at
    # least 95 % of the offered load.
    declare -A sustains=([switchboard]=1 [node]=1 [socketioxide]=1)
    for rate in "${SWEEP[@]}"; do
        for _ in $(seq "$REPEAT"); do
            for target in $(order); do
                [[ ${sustains[$target]} == 1 || $target == switchboard ]] || continue
                run "sweep_$rate" "$target" fanout --url "${fan_url[$target]}" --pid "${fan_pid[$target]}" \
                    --members "$MEMBERS" --rate "$rate" "${sweep_fanout[@]}"
            done
        done
        for target in node socketioxide; do
            [[ ${sustains[$target]} == 1 ]] || continue
            jq -se --arg tag "sweep_$rate" --arg t "$target" --argjson offered $(( rate * MEMBERS )) '
                map(select(.tag == $tag and .target == $t)) |
                (map(select(.ok and .deliveries_per_sec >= 0.95 * $offered)) | length) * 2 > length' \
                "$results" >/dev/null || { sustains[$target]=0; echo "  ($target does not sustain $rate msg/s: not run above it)"; }
        done
    done
    for target in "${TARGETS[@]}"; do stop_one "$target-fanout"; done
fi

if wants rooms; then
    echo "== rooms: $ROOMS rooms of $ROOM_SIZE, $ROOMS_RATE msg/s in all =="
    for target in $(order); do
        up "$target" "$target-rooms"
        run rooms "$target" rooms --url "$url" --pid "$pid" --rooms "$ROOMS" --size "$ROOM_SIZE" \
            --rate "$ROOMS_RATE" "${common_fanout[@]}"
        stop_one "$target-rooms"
    done
fi

if wants polling; then
    echo "== polling: $POLL_MEMBERS long-polling members, $POLL_RATE msg/s =="
    for target in $(order); do
        up "$target" "$target-polling"
        run polling "$target" polling --url "$url" --pid "$pid" --members "$POLL_MEMBERS" --rate "$POLL_RATE" \
            "${common_fanout[@]}"
        stop_one "$target-polling"
    done
fi

if wants cluster; then
    echo "== cluster: $CLUSTER_MEMBERS members over two servers, $CLUSTER_RATE msg/s (not socketioxide: see the report) =="
    for target in $(order switchboard node); do
        cluster_up "$target"
        run cluster "$target" cluster --url "$urls" --pid "$watched" --members "$CLUSTER_MEMBERS" \
            --rate "$CLUSTER_RATE" "${common_fanout[@]}"
        stop_all
    done
fi
stop_all

# ---- the report ---------------------------------------------------------------------------
if [[ $complete == 1 ]]; then
    doc_dir=docs
else
    doc_dir=$OUT
fi
mkdir -p "$doc_dir"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo " (with uncommitted changes)" || true)
SIOXIDE_VERSION=$("$SIOXIDE" --version 2>/dev/null || echo unknown)
export ROOT LOAD_START SIOXIDE_VERSION COMMAND_LINE commit dirty results doc_dir OUT quick MEMBERS SECS FAN_SECS LOW_RATE IDLE_N CONNECT_N REPEAT \
    ROOMS ROOM_SIZE ROOMS_RATE POLL_MEMBERS POLL_RATE CLUSTER_MEMBERS CLUSTER_RATE SERVER_CPU CLIENT_CPU plot
python3 - <<'PY'
import json, os, platform, subprocess, datetime, statistics

env = os.environ
runs = [json.loads(l) for l in open(env["results"]) if l.strip()]
SERVERS = ["switchboard", "node", "socketioxide"]
PEERS = ["node", "socketioxide"]
NAME = {"switchboard": "Switchboard", "node": "Node socket.io", "socketioxide": "socketioxide"}
members = int(env["MEMBERS"])

def is_num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)

# A scenario run several times stands for all of them as one record: each numeric figure is the
# median of its runs (its own median: the p99 and the CPU may come from different runs), `ok`
# only if every run was ok, and `runs` how many there were.
_cache = {}
def get(tag, target):
    if (tag, target) in _cache: return _cache[(tag, target)]
    found = [r for r in runs if r.get("tag") == tag and r.get("target") == target]
    if tag == "fanout_low" and not found:
        found = [r for r in runs if r.get("tag") == f"sweep_{env['LOW_RATE']}" and r.get("target") == target]
    rec = None
    if len(found) == 1:
        rec = dict(found[0]); rec["runs"] = 1
    elif found:
        rec = {"tag": tag, "target": target, "runs": len(found), "ok": all(r.get("ok") for r in found),
               "problems": sorted({p for r in found for p in r.get("problems", [])})}
        for k in {k for r in found for k in r}:
            vals = [r[k] for r in found if is_num(r.get(k))]
            if vals and k not in rec:
                rec[k] = statistics.median_low(sorted(vals)) if len(vals) % 2 == 0 else statistics.median(vals)
    _cache[(tag, target)] = rec
    return rec
def val(tag, target, key):
    r = get(tag, target)
    return None if r is None else r.get(key)
def fmt(x, digits=1):
    if x is None: return "–"
    if isinstance(x, str): return x
    if isinstance(x, bool): return str(x)
    if isinstance(x, int): return f"{x:,}".replace(",", " ")
    if abs(x) >= 1000: return f"{x:,.0f}".replace(",", " ")
    return f"{x:.{digits}f}"
def ratio(a, b):
    if a is None or b is None or b == 0: return None
    return a / b
def best_peer(values, lower):
    # values: {peer: value or None} → (peer, value) of the best, or (None, None).
    have = [(p, v) for p, v in values.items() if v is not None]
    if not have: return None, None
    return (min if lower else max)(have, key=lambda pv: pv[1])

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown CPU")
machine = f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}"
date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
out = []
w = out.append
w("# Switchboard vs Node's socket.io and socketioxide, side by side")
w("")
w("Generated by `scripts/bench-compare.sh` — do not edit by hand; rerun the script.")
w("")
w(f"- command: `{env['COMMAND_LINE']}`")
w(f"- commit: `{env['commit']}`{env['dirty']}")
w(f"- machine: {machine}")
w(f"- date: {date}; load average at the start: {env.get('LOAD_START', '?')}, at the end: {open('/proc/loadavg').read().split()[0]}")
w(f"- servers pinned to CPU {env['SERVER_CPU']}, the load generator (`switchboard-loadtest`) to CPU {env['CLIENT_CPU']}")
try:
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    sio = json.load(open("loadtest/peers/node_modules/socket.io/package.json"))["version"]
    w(f"- Node {node}, socket.io {sio} (`loadtest/peers/server.js`); Switchboard standalone with `loadtest/bench.toml`")
except Exception:
    pass
w(f"- socketioxide {env.get('SIOXIDE_VERSION', '?')} (`loadtest/peers/socketioxide`, binary `socketioxide-peer`): see "
  "[its settings](#the-peers-settings) below")
w("")
raw = "benchmarks.jsonl" if env["doc_dir"] == "docs" else env["results"]
medians = (f"; for these, **each figure in the tables is the median of its {env['REPEAT']} runs**, taken figure by figure. "
           if int(env["REPEAT"]) > 1 else ". ")
w("Each scenario ran against every server back to back, the order rotating from run to run. "
  f"Idle, connect (fresh servers each time), fan-out at saturation and every level of the sweep ran {env['REPEAT']} times per server"
  + medians + "Rooms, polling and cluster ran once per server. "
  f"Raw results: one JSON object per run in [`{raw}`]({raw}) (`tag` names the run, `target` the server).")
noisy = [r for r in runs if any("machine was shared" in n or "waited" in n for n in r.get("notes", []))]
if noisy:
    w("")
    w(f"**The machine was not quiet**: {len(noisy)} of {len(runs)} runs noted other processes on the CPUs or "
      "run-queue waits (see `notes` in the raw results); treat these numbers as noisy.")

# ---- the sweep
levels = sorted({int(r["tag"].split("_")[1]) for r in runs if r.get("tag", "").startswith("sweep_")})
def sustained(tag, target_, offered):
    # As the script decides whether to go on: most of the runs lost nothing and delivered at
    # least 95 % of the offered load.
    found = [r for r in runs if r.get("tag") == tag and r.get("target") == target_]
    good = [r for r in found if r.get("ok") and (r.get("deliveries_per_sec") or 0) >= 0.95 * offered]
    return bool(found) and 2 * len(good) > len(found)
sweep = []   # (rate, offered, {server: rec}, {server: sustained})
for rate in levels:
    offered = rate * members
    recs = {t: get(f"sweep_{rate}", t) for t in SERVERS}
    sweep.append((rate, offered, recs, {t: sustained(f"sweep_{rate}", t, offered) for t in SERVERS}))

# ---- targets of issue 17: no worse than the best peer, at every level and at saturation
t17 = []   # (what, ours, best peer name, best value, met, how much)
def vs_best(what, ours, peer_values, ours_ok=True):
    peer, best = best_peer(peer_values, lower=True)
    if ours is None:
        t17.append((what, None, None, None, None, "not measured")); return
    if not ours_ok:
        t17.append((what, ours, peer, best, False, "ours did not sustain the level")); return
    if best is None:
        t17.append((what, ours, None, None, True, "no peer sustains this level")); return
    r = ratio(ours, best)
    if r is None:
        # A CPU figure of 0: the run was shorter than one tick of the CPU clock (quick runs).
        t17.append((what, ours, peer, best, None, "the best peer's figure is 0: below the CPU clock's tick")); return
    how = f"{r:.2f}× the best peer" + ("" if r <= 1 else f" — over by {(r - 1) * 100:.0f} %")
    t17.append((what, ours, peer, best, r <= 1, how))
for rate, offered, recs, sus in sweep:
    o = recs["switchboard"]
    peers_ok = {p: recs[p] for p in PEERS if sus[p]}
    vs_best(f"server CPU µs per delivery at {fmt(offered)} deliveries/s ({rate} msg/s)", o and o.get("server_cpu_us_per_delivery"),
            {p: r.get("server_cpu_us_per_delivery") for p, r in peers_ok.items()}, sus["switchboard"])
    vs_best(f"p99 µs at {fmt(offered)} deliveries/s ({rate} msg/s)", o and o.get("latency_p99_us"),
            {p: r.get("latency_p99_us") for p, r in peers_ok.items()}, sus["switchboard"])
sat = {t: get("fanout_saturation", t) for t in SERVERS}
if sat["switchboard"]:
    vs_best("server CPU µs per delivery at saturation (32 in flight)", sat["switchboard"].get("server_cpu_us_per_delivery"),
            {p: r.get("server_cpu_us_per_delivery") for p, r in sat.items() if p != "switchboard" and r and r.get("ok")})
    vs_best("p99 µs at saturation (32 in flight)", sat["switchboard"].get("latency_p99_us"),
            {p: r.get("latency_p99_us") for p, r in sat.items() if p != "switchboard" and r and r.get("ok")})
low_ours = val("fanout_low", "switchboard", "server_cpu_us_per_delivery")
floor = val("floor_fanout", "loopback", "writer_cpu_us_per_write")

# ---- targets of issue 6, against Node
targets = []   # (name, ours, theirs, ratio text, met?, how much)
def target(name, ours, theirs, want, kind):
    r = ratio(ours, theirs)
    if r is None:
        targets.append((name, ours, theirs, "–", None, "not measured")); return
    if kind == "higher":       # ours/theirs >= want
        met = r >= want; by = f"{r:.2f}× (want ≥ {want}×)" if met else f"{r:.2f}× — short by {want / r:.2f}×"
    else:                      # theirs/ours >= want (ours lower)
        inv = 1 / r if r else float("inf")
        met = inv >= want; by = f"{inv:.2f}× lower (want ≥ {want}×)" if met else f"{inv:.2f}× lower — short by {want / inv:.2f}×"
    targets.append((name, ours, theirs, f"{r:.3f}", met, by))
def per_core(target_):
    # Deliveries per second per server core actually used (the servers are pinned to one core;
    # when the generator is the limit, the server uses less than the whole core).
    d, u = val("fanout_saturation", target_, "deliveries_per_sec"), val("fanout_saturation", target_, "server_cpu_util")
    return d / u if d is not None and u else None
target("deliveries/s per server core at saturation", per_core("switchboard"), per_core("node"), 8, "higher")
target("server CPU µs per delivery at saturation", val("fanout_saturation", "switchboard", "server_cpu_us_per_delivery"),
       val("fanout_saturation", "node", "server_cpu_us_per_delivery"), 8, "lower")
target("server RSS per idle connection (B)", val("idle", "switchboard", "server_rss_per_connection_bytes"),
       val("idle", "node", "server_rss_per_connection_bytes"), 4, "lower")
target("connects per second", val("connect", "switchboard", "connects_per_sec"), val("connect", "node", "connects_per_sec"), 5, "higher")
def floor_target(limit):
    if low_ours is not None and floor:
        r = low_ours / floor
        return (f"low-load CPU µs per delivery ÷ floor of one small loopback write (ours only; want ≤ {limit}×)", low_ours, f"floor {floor:.2f}",
                f"{r:.3f} (ours ÷ floor)", r <= limit, f"{r:.2f}× the floor" if r <= limit else f"{r:.2f}× the floor — over by {r / limit:.2f}×")
    return (f"low-load CPU µs per delivery ÷ floor (want ≤ {limit}×)", low_ours, floor, "–", None, "not measured")
targets.append(floor_target(1.3))
worse = [f"{fmt(off)}/s: {recs['switchboard']['latency_p99_us']/1e3:.2f} ms vs {recs['node']['latency_p99_us']/1e3:.2f} ms"
         for rate, off, recs, sus in sweep
         if sus["node"] and recs["switchboard"] is not None and (recs["switchboard"].get("latency_p99_us") or 0) >= (recs["node"].get("latency_p99_us") or 0)]
compared = [1 for rate, off, recs, sus in sweep if sus["node"] and recs["switchboard"] is not None]
if compared:
    targets.append(("lower p99 latency at every load level Node sustains", None, None, f"{len(compared)} levels", not worse,
                    f"lower at all {len(compared)}" if not worse else "not lower at " + "; ".join(worse)))
else:
    targets.append(("lower p99 latency at every load level Node sustains", None, None, "–", None, "not measured"))

# ---- ratios against the best peer
ratios = []   # (measure, {server: value}, unit, lower is better)
def add_ratio(name, tag, key, unit, lower, only_sustained=None):
    vals = {t: val(tag, t, key) for t in SERVERS}
    if only_sustained is not None:
        vals = {t: (v if only_sustained[t] or t == "switchboard" else None) for t, v in vals.items()}
    ratios.append((name, vals, unit, lower))
add_ratio("deliveries/s at saturation", "fanout_saturation", "deliveries_per_sec", "/s", False)
ratios.append(("deliveries/s per server core at saturation", {t: per_core(t) for t in SERVERS}, "/s", False))
add_ratio("server CPU per delivery at saturation", "fanout_saturation", "server_cpu_us_per_delivery", "µs", True)
add_ratio("p99 latency at saturation", "fanout_saturation", "latency_p99_us", "µs", True)
for rate, offered, recs, sus in sweep:
    add_ratio(f"server CPU per delivery at {fmt(offered)} offered deliveries/s", f"sweep_{rate}", "server_cpu_us_per_delivery", "µs", True, sus)
    add_ratio(f"p99 latency at {fmt(offered)} offered deliveries/s", f"sweep_{rate}", "latency_p99_us", "µs", True, sus)
add_ratio("server RSS per idle connection", "idle", "server_rss_per_connection_bytes", "B", True)
add_ratio("connects per second", "connect", "connects_per_sec", "/s", False)
add_ratio("server CPU per connect", "connect", "server_cpu_us_per_connect", "µs", True)
add_ratio(f"server CPU per delivery, {env['ROOMS']} rooms of {env['ROOM_SIZE']}", "rooms", "server_cpu_us_per_delivery", "µs", True)
add_ratio("server CPU per delivery to long-polling members", "polling", "server_cpu_us_per_delivery", "µs", True)
w("")
w("## Ratios against the best peer")
w("")
w("The best peer is, for each measure, the better of Node and socketioxide (on the sweep: of those that sustain the level). "
  "Below 1 is better for Switchboard where lower is better (CPU, latency, memory), above 1 where higher is better (rates).")
w("")
w("| measure | Switchboard | Node | socketioxide | best peer | ours / best peer |")
w("|---|---|---|---|---|---|")
for name, vals, unit, lower in ratios:
    peer, best = best_peer({p: vals[p] for p in PEERS}, lower)
    w(f"| {name} | {fmt(vals['switchboard'], 2)} {unit} | {fmt(vals['node'], 2)} {unit} | {fmt(vals['socketioxide'], 2)} {unit} | "
      f"{NAME.get(peer, '–')} | {fmt(ratio(vals['switchboard'], best), 3)} |")
if floor:
    w(f"| floor: one small loopback write ({members} sockets, {env['LOW_RATE']} bursts/s) | {fmt(floor, 2)} µs | | | | |")
    if low_ours is not None:
        w(f"| our low-load CPU per delivery ÷ floor | {fmt(low_ours / floor, 3)} | | | | |")

w("")
w("## Targets (issue 17): no worse than the best peer at every load")
w("")
w(f"At every level of the sweep ({members} members; the best peer among those that sustain the level: nothing lost, "
  "≥ 95 % of the offered deliveries) and at saturation: Switchboard's server CPU per delivery and p99 ≤ the best peer's. "
  "The low-load point is the sweep's lowest level.")
w("")
def verdict(met):
    return "–" if met is None else ("**MET**" if met else "**MISSED**")
w("| target | Switchboard | best peer | its value | result |")
w("|---|---|---|---|---|")
ft = floor_target(1.1)
for what, ours, peer, best, met, how in t17 + [(ft[0], ft[1], None, ft[2], ft[4], ft[5])]:
    w(f"| {what} | {fmt(ours, 2)} | {NAME.get(peer, '')} | {fmt(best, 2)} | {verdict(met)}: {how} |")
met17 = [m for _, _, _, _, m, _ in t17 + [(None,) * 4 + (ft[4], None)] if m is not None]
w("")
w(f"{sum(met17)} of {len(met17)} MET.")

w("")
w("## Targets (issue 6): against Node")
w("")
w("Deliveries per server core = deliveries/s ÷ the server's CPU use (cores) in the saturation run; "
  "the raw deliveries/s are in the saturation table below.")
w("")
w("| target | Switchboard | Node | ours / theirs | result |")
w("|---|---|---|---|---|")
for name, ours, theirs, r, met, by in targets:
    w(f"| {name} | {fmt(ours, 2)} | {fmt(theirs, 2)} | {r} | {verdict(met)}: {by} |")

def table(title, tag, keys, targets_=SERVERS):
    rows = [(t, get(tag, t)) for t in targets_]
    if all(r is None for _, r in rows): return
    w(""); w(f"## {title}"); w("")
    w("| | " + " | ".join(k[1] for k in keys) + " | runs | ok |")
    w("|---" * (len(keys) + 3) + "|")
    for t, r in rows:
        if r is None: continue
        w(f"| {t} | " + " | ".join(fmt(r.get(k[0]), 2) for k in keys) + f" | {r.get('runs', 1)} | {'yes' if r.get('ok') else 'NO: ' + '; '.join(r.get('problems', []))} |")
    ours = rows[0][1]
    peers_ = [r for t, r in rows[1:] if r is not None]
    if ours and peers_:
        cells = []
        for k in keys:
            o = ours.get(k[0]); lower = k[2] if len(k) > 2 else None
            pv = [r.get(k[0]) for r in peers_ if is_num(r.get(k[0]))]
            if lower is None or not is_num(o) or not pv:
                cells.append("–"); continue
            b = min(pv) if lower else max(pv)
            cells.append(f"{ratio(o, b):.3f}" if b else "–")
        w("| ours / best peer | " + " | ".join(cells) + " | | |")

w(""); w("## Floor: one small loopback write"); w("")
for tag, what in (("floor", "one connection, back to back"), ("floor_fanout", f"{members} connections, {env['LOW_RATE']} bursts/s (the low-load fan-out's shape)")):
    r = get(tag, "loopback")
    if r: w(f"- {what}: **{r.get('writer_cpu_us_per_write')} µs** writer CPU per write")
table(f"Idle: {env['IDLE_N']} connections to `/`", "idle",
      [("server_rss_per_connection_bytes", "RSS per connection (B)", True), ("server_cpu_us_per_connect", "CPU per connect (µs)", True), ("connects_per_sec", "connects/s", False), ("client_rss_per_connection_bytes", "generator RSS per connection (B)")])
table(f"Connect: a storm of {env['CONNECT_N']}, 256 at once", "connect",
      [("connects_per_sec", "connects/s", False), ("connect_time_p50_us", "p50 (µs)", True), ("connect_time_p99_us", "p99 (µs)", True), ("failed", "failures"), ("server_cpu_us_per_connect", "server CPU per connect (µs)", True), ("client_cpu_s", "generator CPU (s)")])
fan_keys = [("deliveries_per_sec", "deliveries/s", False), ("loss", "lost"), ("latency_p50_us", "p50 (µs)", True), ("latency_p99_us", "p99 (µs)", True), ("latency_p999_us", "p99.9 (µs)", True), ("server_cpu_us_per_delivery", "server CPU/delivery (µs)", True), ("server_cpu_util", "server cores"), ("client_cpu_us_per_delivery", "generator CPU/delivery (µs)")]
table(f"Fan-out, low load: {members} members, {env['LOW_RATE']} msg/s (the sweep's lowest level)", "fanout_low", fan_keys)
table(f"Fan-out at saturation: {members} members, 32 messages in flight", "fanout_saturation", fan_keys)
if sweep:
    w(""); w(f"## p99 latency and server CPU per delivery vs offered load ({members} members, {env['FAN_SECS']} s per run)"); w("")
    w("![p99 latency and CPU per delivery vs offered load](latency-vs-load.png)"); w("")
    w("A value in parentheses comes from a level the server did not sustain (loss, or < 95 % of the offered deliveries); "
      "a peer is not run above the first level it does not sustain.")
    w("")
    w("| msg/s | offered deliveries/s | " + " | ".join(f"{NAME[t]} p99 (ms) | CPU/delivery (µs) | delivered/s" for t in SERVERS) + " |")
    w("|---|---|" + "---|---|---|" * len(SERVERS))
    for rate, offered, recs, sus in sweep:
        cells = []
        for t in SERVERS:
            r = recs[t]
            if r is None:
                cells += ["not run", "", ""]; continue
            wrap = (lambda s: s) if sus[t] else (lambda s: f"({s})")
            p99 = r.get("latency_p99_us")
            cells += [wrap(fmt(p99 / 1e3 if p99 else None, 2)), wrap(fmt(r.get("server_cpu_us_per_delivery"), 2)), wrap(fmt(r.get("deliveries_per_sec")))]
        w(f"| {rate} | {fmt(offered)} | " + " | ".join(cells) + " |")
table(f"Rooms: {env['ROOMS']} rooms of {env['ROOM_SIZE']}, {env['ROOMS_RATE']} msg/s in all", "rooms", fan_keys)
table(f"Polling: {env['POLL_MEMBERS']} long-polling members, {env['POLL_RATE']} msg/s", "polling", fan_keys)
table(f"Cluster: {env['CLUSTER_MEMBERS']} members over two servers, {env['CLUSTER_RATE']} msg/s (Switchboard: 2 gateways + NATS + broker; Node: 2 processes + redis)", "cluster",
      [("deliveries_per_sec", "deliveries/s", False), ("loss", "lost"), ("latency_p50_us", "p50 (µs)", True), ("latency_p99_us", "p99 (µs)", True), ("total_cpu_us_per_delivery", "all servers' CPU/delivery (µs)", True), ("client_cpu_us_per_delivery", "generator CPU/delivery (µs)")],
      ("switchboard", "node"))
w("")
w("socketioxide is not in the cluster scenario: its redis adapter (the `socketioxide-redis` crate, 0.4) would put a redis "
  "client crate into the workspace's build for one benchmark row, and was not set up; the cluster row compares Node's "
  "redis adapter only.")
w("")
w("## The peers' settings")
w("")
w(open(os.path.join(env["ROOT"], "loadtest/peers/settings.md")).read().strip())
w("")
w("CPU figures come from `/proc/PID/stat` (10 ms ticks) over the measured period; RSS per idle "
  "connection is the server's VmRSS delta over the connections. The generator reports its own "
  "CPU so a reader can check it was not the bottleneck (see `client_cpu_util` in the raw results).")
open(os.path.join(env["doc_dir"], "benchmarks.md"), "w").write("\n".join(out) + "\n")

# The summary on stdout.
print("\n== ratios (ours / best peer) ==")
for name, vals, unit, lower in ratios:
    peer, best = best_peer({p: vals[p] for p in PEERS}, lower)
    print(f"  {name}: ours {fmt(vals['switchboard'], 2)} {unit}, node {fmt(vals['node'], 2)}, socketioxide {fmt(vals['socketioxide'], 2)}: "
          f"{fmt(ratio(vals['switchboard'], best), 3)} of {NAME.get(peer, '–')}")
if floor:
    print(f"  floor (one small loopback write): {fmt(floor, 2)} µs; our low-load CPU per delivery ÷ floor: {fmt(low_ours / floor if low_ours is not None else None, 3)}")
print("\n== targets (issue 17: no worse than the best peer) ==")
for what, ours, peer, best, met, how in t17 + [(ft[0], ft[1], None, None, ft[4], ft[5])]:
    res = "-" if met is None else ("MET" if met else "MISSED")
    print(f"  {res:7} {what}: ours {fmt(ours, 2)}, best peer {NAME.get(peer, '–')} {fmt(best, 2)}; {how}")
print("\n== targets (issue 6: against Node) ==")
for name, ours, theirs, r, met, by in targets:
    res = "-" if met is None else ("MET" if met else "MISSED")
    print(f"  {res:7} {name}: ours {fmt(ours, 2)}, theirs {fmt(theirs, 2)}, ours/theirs {r}; {by}")
with open(os.path.join(env["OUT"], "latency-vs-load.dat"), "w") as f:
    f.write("# offered_deliveries_per_sec, then p99_ms and cpu_us_per_delivery of: " + " ".join(SERVERS) + " (NaN: not run or not sustained)\n")
    for rate, offered, recs, sus in sweep:
        cols = []
        for key, scale in (("latency_p99_us", 1e3), ("server_cpu_us_per_delivery", 1)):
            for t in SERVERS:
                r = recs[t]
                v = r.get(key) if r and sus[t] else None
                cols.append(str(v / scale) if v else "NaN")
        f.write(f"{offered} " + " ".join(cols) + "\n")
PY
[[ $doc_dir == docs ]] && cp "$results" docs/benchmarks.jsonl
if [[ $plot == 1 && -s $OUT/latency-vs-load.dat ]]; then
    gnuplot <<EOF || echo "bench-compare.sh: gnuplot failed; no plot" >&2
set terminal pngcairo size 900,900 noenhanced
set output "$doc_dir/latency-vs-load.png"
set multiplot layout 2,1 title "$MEMBERS-member room, server on CPU $SERVER_CPU, generator on CPU $CLIENT_CPU (levels each server sustains; medians of $REPEAT)"
set logscale xy
set grid
set key top left
set xlabel "offered deliveries per second"
set ylabel "p99 latency (ms)"
plot "$OUT/latency-vs-load.dat" using 1:2 with linespoints lw 2 title "Switchboard", \
     "$OUT/latency-vs-load.dat" using 1:3 with linespoints lw 2 title "Node socket.io 4.8", \
     "$OUT/latency-vs-load.dat" using 1:4 with linespoints lw 2 title "socketioxide 0.18"
set ylabel "server CPU per delivery (µs)"
plot "$OUT/latency-vs-load.dat" using 1:5 with linespoints lw 2 title "Switchboard", \
     "$OUT/latency-vs-load.dat" using 1:6 with linespoints lw 2 title "Node socket.io 4.8", \
     "$OUT/latency-vs-load.dat" using 1:7 with linespoints lw 2 title "socketioxide 0.18"
unset multiplot
EOF
fi
echo
echo "report: $doc_dir/benchmarks.md$([[ $plot == 1 ]] && echo ", plot: $doc_dir/latency-vs-load.png")"
exit "$status"
