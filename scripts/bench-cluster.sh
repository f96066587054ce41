#!/usr/bin/env bash
# Load-tests cross-gateway fan-out through NATS on this machine, over loopback: a nats-server, the
# broker and two gateways of one cluster; one room whose members are split round-robin over the
# two gateways; one sender on gateway 1 emitting `say` at a fixed rate. Deliveries to gateway 2's
# members cross NATS. Reports deliveries per second, p50 / p99 latency (overall and per gateway)
# and CPU per delivery of each tier (gw1, gw2, nats, broker).
#
#   scripts/bench-cluster.sh            2 000 members, 10 msg/s and 50 msg/s, 20 s each
#   scripts/bench-cluster.sh --quick    200 members, the same rates for 2 s: a smoke test
#   scripts/bench-cluster.sh --no-build skip `cargo build --release --bins`
#
# The servers (both gateways, nats-server, the broker) run pinned to CPU $SERVER_CPU (default 0),
# the load generator to CPU $CLIENT_CPU (default 1), with `taskset`, so that the load generator's
# CPU does not mix with theirs; on a 2-core machine the four servers share one core, and their
# CPU per delivery adds up to that core's work. NATS_SERVER (default: nats-server on PATH, else
# /usr/sbin/nats-server) picks the NATS binary; BENCH_CONFIG the gateway configuration (default
# loadtest/bench.toml: the built-in default without the per-socket rate limit on /chat).
# Every run prints a table and one JSON line; the JSON lines also go to
# target/bench/cluster-results.jsonl, the servers' logs to target/bench/cluster-*.log.
# The script stops the processes it started (by PID) on exit, and only those.
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
        -h | --help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-cluster.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done

SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BENCH_CONFIG=${BENCH_CONFIG:-loadtest/bench.toml}
GATEWAY=target/release/switchboard-gateway
BROKER=target/release/switchboard-broker
LOADTEST=target/release/switchboard-loadtest
NATS_SERVER=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
PREFIX=bench
OUT=target/bench
STARTUP_TIMEOUT_S=30
# How long the load generator may take beyond its sending time (set-up, drain, close).
RUN_SLACK_S=180
RATES=(10 50)

if [[ $quick == 1 ]]; then
    MEMBERS=200; SECONDS_PER_RUN=2
else
    MEMBERS=2000; SECONDS_PER_RUN=20
fi

die() { echo "bench-cluster.sh: $*" >&2; exit 2; }

command -v taskset >/dev/null || die "taskset not found: install util-linux"
[[ -x $NATS_SERVER ]] || die "nats-server not found (install it, or set NATS_SERVER=/path/to/nats-server)"
ncpu=$(nproc)
(( SERVER_CPU < ncpu && CLIENT_CPU < ncpu )) || die "need CPUs $SERVER_CPU and $CLIENT_CPU, this machine has $ncpu"
[[ $SERVER_CPU != "$CLIENT_CPU" ]] || echo "bench-cluster.sh: warning: servers and load generator share CPU $SERVER_CPU" >&2
[[ -f $BENCH_CONFIG ]] || die "configuration $BENCH_CONFIG not found"

# One socket per member on each side (split over the gateways), plus a few for everything else.
need_fds=$(( MEMBERS + 256 ))
hard=$(ulimit -Hn)
if [[ $hard != unlimited ]] && (( hard < need_fds )); then
    die "open-files hard limit is $hard, $need_fds are needed (raise it in limits.conf or the container)"
fi
if [[ $hard == unlimited ]]; then ulimit -n 1048576 2>/dev/null || ulimit -n "$need_fds"; else ulimit -n "$hard"; fi

if [[ $build == 1 ]]; then
    cargo build --release --bins --features switchboard-loadtest/grpc || die "build failed (if others are mid-edit, retry later or use --no-build)"
fi
for bin in "$GATEWAY" "$BROKER" "$LOADTEST"; do
    [[ -x $bin ]] || die "$bin missing (build first: cargo build --release --bins)"
done

# The configuration file is passed as the gateways' argument; nothing else may pick another.
unset SWITCHBOARD_CONFIG

mkdir -p "$OUT"
results="$OUT/cluster-results.jsonl"
: > "$results"

# shellcheck source=scripts/lib/servers.sh
source scripts/lib/servers.sh

start_nats "$OUT/cluster-nats.log"

SWITCHBOARD_NATS_URL=$nats_url SWITCHBOARD_BROKER_HTTP_PORT=0 SWITCHBOARD_BROKER_LEADER=always \
    SWITCHBOARD_SUBJECT_PREFIX=$PREFIX start broker "$OUT/cluster-broker.log" "$BROKER"
broker_url=$(wait_for broker "$OUT/cluster-broker.log" 's|.*listening on \(http://[^ ]*\).*|\1|p')

gateway_urls=()
for gw in gw1 gw2; do
    SWITCHBOARD_NATS_URL=$nats_url SWITCHBOARD_NODE_ID=$gw SWITCHBOARD_SUBJECT_PREFIX=$PREFIX \
        SWITCHBOARD_PORT=0 SWITCHBOARD_HOST=127.0.0.1 \
        start "$gw" "$OUT/cluster-$gw.log" "$GATEWAY" "$BENCH_CONFIG"
done
for gw in gw1 gw2; do
    port=$(wait_for "$gw" "$OUT/cluster-$gw.log" 's|.*listening on http://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p')
    gateway_urls+=("http://127.0.0.1:$port")
done
# Listening is not joined: wait until each gateway reports its bus up (/ready answers 200).
for u in "${gateway_urls[@]}"; do wait_ready "$u"; done

urls=$(IFS=,; echo "${gateway_urls[*]}")
watched="gw1=${pids[gw1]},gw2=${pids[gw2]},nats=${pids[nats]},broker=${pids[broker]}"

echo "== machine =="
echo "  $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "  kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg), open files $(ulimit -n)"
echo "  gw1, gw2, nats-server and broker on CPU $SERVER_CPU; load generator on CPU $CLIENT_CPU$([[ $quick == 1 ]] && echo ', quick mode')"
echo "  $("$NATS_SERVER" --version 2>&1 | head -n1)"
echo "== cluster =="
echo "  nats   pid ${pids[nats]}   $nats_url"
echo "  broker pid ${pids[broker]}   $broker_url (leader: always)"
echo "  gw1    pid ${pids[gw1]}   ${gateway_urls[0]} (the sender's gateway)"
echo "  gw2    pid ${pids[gw2]}   ${gateway_urls[1]}"
echo "  subject prefix $PREFIX, config $BENCH_CONFIG, logs $OUT/cluster-*.log"
echo

status=0
alive() {
    local name ok=1
    for name in "${started[@]}"; do
        if ! kill -0 "${pids[$name]}" 2>/dev/null; then
            echo "bench-cluster.sh: $name (pid ${pids[$name]}) died; log $OUT/cluster-$name.log:" >&2
            tail -n 30 "$OUT/cluster-$name.log" >&2
            ok=0
        fi
    done
    (( ok ))
}
run() {
    local rc=0
    timeout --kill-after=10 $(( SECONDS_PER_RUN + RUN_SLACK_S )) "$@" > "$OUT/cluster-run.out" || rc=$?
    cat "$OUT/cluster-run.out"
    grep '^{' "$OUT/cluster-run.out" >> "$results" || true
    if (( rc != 0 )); then
        echo "bench-cluster.sh: run failed (exit $rc): $*" >&2
        status=1
    fi
    echo
}

gen=(taskset -c "$CLIENT_CPU" "$LOADTEST")
for rate in "${RATES[@]}"; do
    alive || die "a server died before the $rate msg/s run"
    echo "== fan-out: $MEMBERS members over gw1 + gw2, $rate msg/s for $SECONDS_PER_RUN s =="
    run "${gen[@]}" fanout --url "$urls" --pid "$watched" --members "$MEMBERS" --rate "$rate" \
        --seconds "$SECONDS_PER_RUN"
    sleep 2
done
alive || status=1
stop_all

echo "== results ($results) =="
cat "$results"
if command -v jq >/dev/null && [[ -s $results ]]; then
    echo
    echo "== summary (CPU µs per delivery; servers on CPU $SERVER_CPU, load generator on CPU $CLIENT_CPU) =="
    printf '%-8s %-8s %-10s %-12s %-9s %-9s %-9s %-9s %-6s %-6s %-6s %-6s %-6s %-6s\n' \
        members msg/s delivered deliveries/s p50_ms p99_ms gw1_p99 gw2_p99 gw1 gw2 nats broker total client
    jq -r '[.members, .rate_target, "\(.deliveries)/\(.expected_deliveries)", (.deliveries_per_sec|floor),
            (.latency_p50_us/1000*100|round/100), (.latency_p99_us/1000*100|round/100),
            (.url1_latency_p99_us/1000*100|round/100), (.url2_latency_p99_us/1000*100|round/100),
            (.gw1_cpu_us_per_delivery*10|round/10), (.gw2_cpu_us_per_delivery*10|round/10),
            (.nats_cpu_us_per_delivery*10|round/10), (.broker_cpu_us_per_delivery*10|round/10),
            (.total_cpu_us_per_delivery*10|round/10), (.client_cpu_us_per_delivery*10|round/10)]
           | @tsv' "$results" |
        while IFS=$'\t' read -r -a row; do
            printf '%-8s %-8s %-10s %-12s %-9s %-9s %-9s %-9s %-6s %-6s %-6s %-6s %-6s %-6s\n' "${row[@]}"
        done
fi
exit "$status"
