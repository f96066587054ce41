#!/usr/bin/env bash
# Side by side: Switchboard and Node's socket.io 4.8 (loadtest/peers/server.js, the same /chat
# behaviours) under the same load generator, in the same run, on this machine, over loopback.
#
#   scripts/bench-compare.sh                     every scenario, full size (about 5 minutes)
#   scripts/bench-compare.sh --quick             tiny counts, about 35 seconds: the CI smoke run
#   scripts/bench-compare.sh --scenarios a,b     only these of: floor idle connect fanout rooms
#                                                polling cluster (fanout = saturation, low load
#                                                and the latency sweep)
#   scripts/bench-compare.sh --no-build          skip `cargo build --release --bins`
#
# Servers run pinned to CPU $SERVER_CPU (default 0), the load generator to CPU $CLIENT_CPU
# (default 1), with taskset. Each scenario runs against both servers back to back, the order
# alternating from one scenario (and sweep level) to the next; idle and connect get freshly
# started servers. Switchboard runs standalone with loadtest/bench.toml (the default config
# without /chat's rate limit and connection state recovery; the peer has neither); the cluster scenario runs two gateways
# + nats-server + broker against two Node processes + redis-server (@socket.io/redis-adapter),
# every server process on $SERVER_CPU.
#
# It prints ratios (ours / theirs) and checks the targets of issue 6, MET or MISSED by how much.
# Results: raw JSON lines (one per run, with "tag" and "target" added) in $OUT (default
# target/bench/compare, or target/bench/compare-quick), and, in a full run, docs/benchmarks.md
# (written entirely by this script: command, commit, machine, tables, ratios, targets), its raw
# results as docs/benchmarks.jsonl, and docs/latency-vs-load.png (gnuplot). A --quick or --scenarios run writes its report to $OUT
# instead, so docs/ only ever holds complete runs.
#
# Needs: taskset, node/npm (npm ci in loadtest/peers is run here), redis-server and nats-server
# (cluster), gnuplot (the plot; installed with apt-get when missing and running as root), jq.
# Stops only the processes it started, by PID, on exit.
# Exit status: 0 when every run was ok, 1 when a run found problems (loss, failures),
# 2 on set-up failure. A MISSED target is reported, not an error.
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
        -h | --help) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
NATS_SERVER=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server || echo /usr/bin/redis-server)}
STARTUP_TIMEOUT_S=30
RUN_SLACK_S=120

if [[ $quick == 1 ]]; then
    OUT=${OUT:-target/bench/compare-quick}
    IDLE_N=200; CONNECT_N=200; REPEAT=1; MEMBERS=50; SECS=1; LOW_RATE=10; SWEEP=(10 50)
    ROOMS=20; ROOM_SIZE=5; ROOMS_RATE=100; POLL_MEMBERS=50; POLL_RATE=10
    CLUSTER_MEMBERS=100; CLUSTER_RATE=10; FLOOR_WRITES=20000
else
    OUT=${OUT:-target/bench/compare}
    # idle and connect vary most from run to run (allocator state, the kernel's accept path):
    # REPEAT runs each on fresh servers, and the report takes the median run.
    IDLE_N=10000; CONNECT_N=10000; REPEAT=3; MEMBERS=1000; SECS=10; LOW_RATE=10
    SWEEP=(10 50 100 200 400 800)
    ROOMS=1000; ROOM_SIZE=10; ROOMS_RATE=1000; POLL_MEMBERS=1000; POLL_RATE=10
    CLUSTER_MEMBERS=2000; CLUSTER_RATE=50; FLOOR_WRITES=200000
fi

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
for bin in "$GATEWAY" "$BROKER" "$LOADTEST"; do
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

# A free loopback port for redis-server (which cannot pick one and say so).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# up TARGET NAME: starts one standalone server; sets url and pid.
up() {
    case $1 in
        switchboard) SWITCHBOARD_PORT=0 start "$2" "$OUT/$2.log" "$GATEWAY" "$BENCH_CONFIG" ;;
        node) PORT=0 start "$2" "$OUT/$2.log" node "$PEER" ;;
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
            port=$(free_port)
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

# Alternates which server goes first.
turn=0
order() { if (( turn++ % 2 == 0 )); then echo switchboard node; else echo node switchboard; fi; }

echo "== machine =="
echo "  $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); $(uname -sr)"
echo "  load average $(cut -d' ' -f1-3 /proc/loadavg); servers on CPU $SERVER_CPU, generator on CPU $CLIENT_CPU$([[ $quick == 1 ]] && echo '; quick mode')"
echo "  node $(node --version), socket.io $(node -p 'require("./loadtest/peers/node_modules/socket.io/package.json").version')"
echo "  results: $results, tables: $OUT/runs.log"
: > "$OUT/runs.log"
: > "$OUT/summary.log"

common_fanout=(--seconds "$SECS" --concurrency 256)

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
    echo "== fanout: $MEMBERS members, low load, saturation, and p99 over offered load =="
    up switchboard sb-fanout; sb_url=$url; sb_pid=$pid
    up node node-fanout; node_url=$url; node_pid=$pid
    target_url() { if [[ $1 == switchboard ]]; then echo "$sb_url --pid $sb_pid"; else echo "$node_url --pid $node_pid"; fi; }
    for target in $(order); do
        # shellcheck disable=SC2046
        run fanout_low "$target" fanout --url $(target_url "$target") --members "$MEMBERS" --rate "$LOW_RATE" "${common_fanout[@]}"
    done
    for target in $(order); do
        # shellcheck disable=SC2046
        run fanout_saturation "$target" fanout --url $(target_url "$target") --members "$MEMBERS" --rate 0 --window 32 "${common_fanout[@]}"
    done
    # The sweep: every level for both, until Node no longer sustains it (then ours alone).
    node_sustains=1
    for rate in "${SWEEP[@]}"; do
        for target in $(order); do
            [[ $target == node && $node_sustains == 0 ]] && continue
            # shellcheck disable=SC2046
            run "sweep_$rate" "$target" fanout --url $(target_url "$target") --members "$MEMBERS" --rate "$rate" "${common_fanout[@]}"
            if [[ $target == node ]]; then
                # Sustained: nothing lost, and deliveries kept up with the offered load.
                jq -e --argjson offered $(( rate * MEMBERS )) 'select(.tag | startswith("sweep_")) |
                    (.ok and .deliveries_per_sec >= 0.95 * $offered)' <(tail -n1 "$results") >/dev/null || node_sustains=0
            fi
        done
    done
    stop_one sb-fanout; stop_one node-fanout
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
    echo "== cluster: $CLUSTER_MEMBERS members over two servers, $CLUSTER_RATE msg/s =="
    for target in $(order); do
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
export COMMAND_LINE commit dirty results doc_dir OUT quick MEMBERS SECS LOW_RATE IDLE_N CONNECT_N REPEAT \
    ROOMS ROOM_SIZE ROOMS_RATE POLL_MEMBERS POLL_RATE CLUSTER_MEMBERS CLUSTER_RATE SERVER_CPU CLIENT_CPU plot
python3 - <<'PY'
import json, os, platform, subprocess, datetime

env = os.environ
runs = [json.loads(l) for l in open(env["results"]) if l.strip()]
# Scenarios run several times: the run with the median of this key stands for them all.
MEDIAN_OF = {"idle": "server_rss_per_connection_bytes", "connect": "connects_per_sec"}
def get(tag, target):
    found = [r for r in runs if r.get("tag") == tag and r.get("target") == target]
    if not found: return None
    key = MEDIAN_OF.get(tag)
    if key is None or len(found) == 1: return found[0]
    found.sort(key=lambda r: (r.get(key) is None, r.get(key) or 0))
    return found[(len(found) - 1) // 2]
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

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown CPU")
machine = f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}"
date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
out = []
w = out.append
w("# Switchboard vs Node's socket.io, side by side")
w("")
w("Generated by `scripts/bench-compare.sh` — do not edit by hand; rerun the script.")
w("")
w(f"- command: `{env['COMMAND_LINE']}`")
w(f"- commit: `{env['commit']}`{env['dirty']}")
w(f"- machine: {machine}")
w(f"- date: {date}; load average at the end: {open('/proc/loadavg').read().split()[0]}")
w(f"- servers pinned to CPU {env['SERVER_CPU']}, the load generator (`switchboard-loadtest`) to CPU {env['CLIENT_CPU']}")
try:
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    sio = json.load(open("loadtest/peers/node_modules/socket.io/package.json"))["version"]
    w(f"- Node {node}, socket.io {sio} (`loadtest/peers/server.js`); Switchboard standalone with `loadtest/bench.toml`")
except Exception:
    pass
w("")
raw = "benchmarks.jsonl" if env["doc_dir"] == "docs" else env["results"]
w("Each scenario ran against both servers back to back, the order alternating; "
  f"idle and connect ran {env['REPEAT']} times each on fresh servers, and their tables show each server's median run. "
  f"Raw results: one JSON object per run in [`{raw}`]({raw}) (`tag` names the run, `target` the server).")
notes = []
for r in runs:
    for n in r.get("notes", []):
        if "machine was shared" in n or "waited" in n:
            notes.append(f"{r['tag']} {r['target']}: {n}")
if notes:
    w("")
    w(f"**The machine was not quiet**: {len(notes)} runs noted other processes on the CPUs or "
      "run-queue waits (see the raw results); treat these numbers as noisy.")

# ---- targets
targets = []   # (name, ours, theirs, ratio text, met?, how much)
def target(name, ours, theirs, good, want, kind):
    r = ratio(ours, theirs)
    if r is None:
        targets.append((name, ours, theirs, "–", None, "not measured")); return
    if kind == "higher":       # ours/theirs >= want
        met = r >= want; by = f"{r:.2f}× (want ≥ {want}×)" if met else f"{r:.2f}× — short by {want / r:.2f}×"
    else:                      # theirs/ours >= want (ours lower)
        inv = 1 / r if r else float("inf")
        met = inv >= want; by = f"{inv:.2f}× lower (want ≥ {want}×)" if met else f"{inv:.2f}× lower — short by {want / inv:.2f}×"
    targets.append((name, ours, theirs, f"{r:.3f}", met, by))

def sat_raw(target_):
    return val("fanout_saturation", target_, "deliveries_per_sec")
def per_core(target_):
    # Deliveries per second per server core actually used (both servers are pinned to one core;
    # when the generator is the limit, the server uses less than the whole core).
    d, u = val("fanout_saturation", target_, "deliveries_per_sec"), val("fanout_saturation", target_, "server_cpu_util")
    return d / u if d is not None and u else None
target("deliveries/s per server core at saturation", per_core("switchboard"), per_core("node"), None, 8, "higher")
cpu_ours, cpu_node = val("fanout_saturation", "switchboard", "server_cpu_us_per_delivery"), val("fanout_saturation", "node", "server_cpu_us_per_delivery")
target("server CPU µs per delivery at saturation", cpu_ours, cpu_node, None, 8, "lower")
rss_ours, rss_node = val("idle", "switchboard", "server_rss_per_connection_bytes"), val("idle", "node", "server_rss_per_connection_bytes")
target("server RSS per idle connection (B)", rss_ours, rss_node, None, 4, "lower")
con_ours, con_node = val("connect", "switchboard", "connects_per_sec"), val("connect", "node", "connects_per_sec")
target("connects per second", con_ours, con_node, None, 5, "higher")
low_ours, low_node = val("fanout_low", "switchboard", "server_cpu_us_per_delivery"), val("fanout_low", "node", "server_cpu_us_per_delivery")
floor = val("floor_fanout", "loopback", "writer_cpu_us_per_write")
if low_ours is not None and floor:
    r = low_ours / floor
    targets.append(("low-load CPU µs per delivery ÷ floor of one small loopback write (ours only)", low_ours, f"floor {floor:.2f}",
                    f"{r:.3f} (ours ÷ floor)", r <= 1.3, f"{r:.2f}× the floor (want ≤ 1.3×)" if r <= 1.3 else f"{r:.2f}× the floor — over by {r / 1.3:.2f}×"))
else:
    targets.append(("low-load CPU µs per delivery ÷ floor", low_ours, floor, "–", None, "not measured"))
# p99 at every level Node sustains.
levels = sorted({int(r["tag"].split("_")[1]) for r in runs if r.get("tag", "").startswith("sweep_")})
sweep_rows, worse = [], []
members = int(env["MEMBERS"])
for rate in levels:
    o, n = get(f"sweep_{rate}", "switchboard"), get(f"sweep_{rate}", "node")
    offered = rate * members
    sustained = n is not None and n.get("ok") and (n.get("deliveries_per_sec") or 0) >= 0.95 * offered
    sweep_rows.append((rate, offered, o, n, sustained))
    if sustained and o is not None and (o.get("latency_p99_us") or 0) >= (n.get("latency_p99_us") or 0):
        worse.append(f"{offered} deliveries/s: {o['latency_p99_us']/1e3:.2f} ms vs {n['latency_p99_us']/1e3:.2f} ms")
compared = [r for r in sweep_rows if r[4] and r[2] is not None]
if compared:
    met = not worse
    targets.append(("lower p99 latency at every load level Node sustains", None, None,
                    f"{len(compared)} levels", met,
                    f"lower at all {len(compared)}" if met else "not lower at " + "; ".join(worse)))
else:
    targets.append(("lower p99 latency at every load level Node sustains", None, None, "–", None, "not measured"))

# ---- ratios (ours / theirs)
ratios = []
def add_ratio(name, ours, theirs, unit=""):
    r = ratio(ours, theirs)
    ratios.append((name, ours, theirs, unit, r))
add_ratio("deliveries/s at saturation", sat_raw("switchboard"), sat_raw("node"), "/s")
add_ratio("deliveries/s per server core at saturation", per_core("switchboard"), per_core("node"), "/s")
add_ratio("server CPU per delivery at saturation", cpu_ours, cpu_node, "µs")
add_ratio("server CPU per delivery at low load", low_ours, low_node, "µs")
add_ratio("server RSS per idle connection", rss_ours, rss_node, "B")
for rate, offered, o, n, sus in sweep_rows:
    if sus and o is not None:
        add_ratio(f"p99 latency at {offered} offered deliveries/s", o.get("latency_p99_us"), n.get("latency_p99_us"), "µs")
add_ratio("connects per second", con_ours, con_node, "/s")
add_ratio("server CPU per connect", val("connect", "switchboard", "server_cpu_us_per_connect"), val("connect", "node", "server_cpu_us_per_connect"), "µs")
w("")
w("## Ratios (ours / theirs)")
w("")
w("| measure | Switchboard | Node | ours / theirs |")
w("|---|---|---|---|")
for name, ours, theirs, unit, r in ratios:
    w(f"| {name} | {fmt(ours, 2)} {unit} | {fmt(theirs, 2)} {unit} | {fmt(r, 3)} |")
if floor:
    w(f"| floor: one small loopback write ({members} sockets, {env['LOW_RATE']} bursts/s) | {fmt(floor, 2)} µs | | |")
    if low_ours is not None:
        w(f"| our low-load CPU per delivery ÷ floor | {fmt(low_ours / floor, 3)} | | |")

w("")
w("## Targets (issue 6)")
w("")
w("Deliveries per server core = deliveries/s ÷ the server's CPU use (cores) in the saturation run; "
  "the raw deliveries/s are in the saturation table below.")
w("")
w("| target | Switchboard | Node | ours / theirs | result |")
w("|---|---|---|---|---|")
for name, ours, theirs, r, met, by in targets:
    res = "–" if met is None else ("**MET**" if met else "**MISSED**")
    w(f"| {name} | {fmt(ours, 2)} | {fmt(theirs, 2)} | {r} | {res}: {by} |")

def table(title, tag, keys, targets_=("switchboard", "node")):
    rows = [(t, get(tag, t)) for t in targets_]
    if all(r is None for _, r in rows): return
    w(""); w(f"## {title}"); w("")
    w("| | " + " | ".join(k[1] for k in keys) + " | ok |")
    w("|---" * (len(keys) + 2) + "|")
    for t, r in rows:
        if r is None: continue
        w(f"| {t} | " + " | ".join(fmt(r.get(k[0]), 2) for k in keys) + f" | {'yes' if r.get('ok') else 'NO: ' + '; '.join(r.get('problems', []))} |")
    if len(rows) == 2 and rows[0][1] and rows[1][1]:
        w("| ours / theirs | " + " | ".join(
            (f"{ratio(rows[0][1].get(k[0]), rows[1][1].get(k[0])):.3f}" if isinstance(rows[0][1].get(k[0]), (int, float)) and isinstance(rows[1][1].get(k[0]), (int, float)) and rows[1][1].get(k[0]) else "–")
            for k in keys) + " | |")

w(""); w("## Floor: one small loopback write"); w("")
for tag, what in (("floor", "one connection, back to back"), ("floor_fanout", f"{members} connections, {env['LOW_RATE']} bursts/s (the low-load fan-out's shape)")):
    r = get(tag, "loopback")
    if r: w(f"- {what}: **{r.get('writer_cpu_us_per_write')} µs** writer CPU per write")
table(f"Idle: {env['IDLE_N']} connections to `/`", "idle",
      [("server_rss_per_connection_bytes", "RSS per connection (B)"), ("server_cpu_us_per_connect", "CPU per connect (µs)"), ("connects_per_sec", "connects/s"), ("client_rss_per_connection_bytes", "generator RSS per connection (B)")])
table(f"Connect: a storm of {env['CONNECT_N']}, 256 at once", "connect",
      [("connects_per_sec", "connects/s"), ("connect_time_p50_us", "p50 (µs)"), ("connect_time_p99_us", "p99 (µs)"), ("failed", "failures"), ("server_cpu_us_per_connect", "server CPU per connect (µs)"), ("client_cpu_s", "generator CPU (s)")])
fan_keys = [("deliveries_per_sec", "deliveries/s"), ("loss", "lost"), ("latency_p50_us", "p50 (µs)"), ("latency_p99_us", "p99 (µs)"), ("latency_p999_us", "p99.9 (µs)"), ("server_cpu_us_per_delivery", "server CPU/delivery (µs)"), ("server_cpu_util", "server cores"), ("client_cpu_us_per_delivery", "generator CPU/delivery (µs)")]
table(f"Fan-out, low load: {members} members, {env['LOW_RATE']} msg/s", "fanout_low", fan_keys)
table(f"Fan-out at saturation: {members} members, 32 messages in flight", "fanout_saturation", fan_keys)
if sweep_rows:
    w(""); w(f"## p99 latency vs offered load ({members} members)"); w("")
    w("![p99 latency vs offered load](latency-vs-load.png)"); w("")
    w("| msg/s | offered deliveries/s | Switchboard p99 (ms) | delivered/s | Node p99 (ms) | delivered/s | Node sustains | ours / theirs p99 |")
    w("|---|---|---|---|---|---|---|---|")
    for rate, offered, o, n, sus in sweep_rows:
        op = o.get("latency_p99_us") if o else None
        np_ = n.get("latency_p99_us") if n else None
        w(f"| {rate} | {fmt(offered)} | {fmt(op / 1e3 if op else None, 2)} | {fmt(o.get('deliveries_per_sec') if o else None)} | "
          f"{fmt(np_ / 1e3 if np_ else None, 2)} | {fmt(n.get('deliveries_per_sec') if n else None)} | "
          f"{'yes' if sus else ('not run' if n is None else 'no')} | {fmt(ratio(op, np_), 3)} |")
table(f"Rooms: {env['ROOMS']} rooms of {env['ROOM_SIZE']}, {env['ROOMS_RATE']} msg/s in all", "rooms", fan_keys)
table(f"Polling: {env['POLL_MEMBERS']} long-polling members, {env['POLL_RATE']} msg/s", "polling", fan_keys)
table(f"Cluster: {env['CLUSTER_MEMBERS']} members over two servers, {env['CLUSTER_RATE']} msg/s (Switchboard: 2 gateways + NATS + broker; Node: 2 processes + redis)", "cluster",
      [("deliveries_per_sec", "deliveries/s"), ("loss", "lost"), ("latency_p50_us", "p50 (µs)"), ("latency_p99_us", "p99 (µs)"), ("total_cpu_us_per_delivery", "all servers' CPU/delivery (µs)"), ("client_cpu_us_per_delivery", "generator CPU/delivery (µs)")])
w("")
w("CPU figures come from `/proc/PID/stat` (10 ms ticks) over the measured period; RSS per idle "
  "connection is the server's VmRSS delta over the connections. The generator reports its own "
  "CPU so a reader can check it was not the bottleneck (see `client_cpu_util` in the raw results).")
open(os.path.join(env["doc_dir"], "benchmarks.md"), "w").write("\n".join(out) + "\n")

# The summary on stdout.
print("\n== ratios (ours / theirs) ==")
for name, ours, theirs, unit, r in ratios:
    print(f"  {name}: ours {fmt(ours, 2)} {unit}, theirs {fmt(theirs, 2)} {unit}: {fmt(r, 3)}")
if floor:
    print(f"  floor (one small loopback write): {fmt(floor, 2)} µs; our low-load CPU per delivery ÷ floor: {fmt(low_ours / floor if low_ours is not None else None, 3)}")
print("\n== targets ==")
for name, ours, theirs, r, met, by in targets:
    res = "-" if met is None else ("MET" if met else "MISSED")
    print(f"  {res:7} {name}: ours {fmt(ours, 2)}, theirs {fmt(theirs, 2)}, ours/theirs {r}; {by}")
with open(os.path.join(env["OUT"], "latency-vs-load.dat"), "w") as f:
    f.write("# offered_deliveries_per_sec switchboard_p99_ms node_p99_ms\n")
    for rate, offered, o, n, sus in sweep_rows:
        op = o.get("latency_p99_us") / 1e3 if o and o.get("latency_p99_us") else "NaN"
        np_ = n.get("latency_p99_us") / 1e3 if n and n.get("latency_p99_us") and sus else "NaN"
        f.write(f"{offered} {op} {np_}\n")
PY
[[ $doc_dir == docs ]] && cp "$results" docs/benchmarks.jsonl
if [[ $plot == 1 && -s $OUT/latency-vs-load.dat ]]; then
    gnuplot <<EOF || echo "bench-compare.sh: gnuplot failed; no plot" >&2
set terminal pngcairo size 900,560 noenhanced
set output "$doc_dir/latency-vs-load.png"
set title "p99 delivery latency vs offered load ($MEMBERS-member room; server on CPU $SERVER_CPU, generator on CPU $CLIENT_CPU)"
set xlabel "offered deliveries per second"
set ylabel "p99 latency (ms)"
set logscale xy
set grid
set key top left
plot "$OUT/latency-vs-load.dat" using 1:2 with linespoints lw 2 title "Switchboard", \
     "$OUT/latency-vs-load.dat" using 1:3 with linespoints lw 2 title "Node socket.io 4.8 (levels it sustains)"
EOF
fi
echo
echo "report: $doc_dir/benchmarks.md$([[ $plot == 1 ]] && echo ", plot: $doc_dir/latency-vs-load.png")"
exit "$status"
