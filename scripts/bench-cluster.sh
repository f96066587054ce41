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
#   scripts/bench-cluster.sh --recovery the cost of connection state recovery's log, in one run:
#                                       at each rate, six phases alternate between `/chat` (A:
#                                       emits over core NATS) and `/chat-r` (B: the same rules
#                                       with `[namespace.recovery]`, every emit through the
#                                       JetStream log), A B A B A B, one `fanout` run each (its
#                                       members join afresh); then the medians of the A and of
#                                       the B phases and their ratio B/A. nats-server runs with
#                                       JetStream (`-js`, file store in a temporary directory,
#                                       removed on exit); needs jq. With --quick: a smoke run,
#                                       one A and one B phase per rate.
#
# The servers (both gateways, nats-server, the broker) run pinned to CPU $SERVER_CPU (default 0),
# the load generator to CPU $CLIENT_CPU (default 1), with `taskset`, so that the load generator's
# CPU does not mix with theirs; on a 2-core machine the four servers share one core, and their
# CPU per delivery adds up to that core's work. NATS_SERVER (default: nats-server on PATH, else
# /usr/sbin/nats-server) picks the NATS binary; BENCH_CONFIG the gateway configuration (default
# loadtest/bench.toml: the built-in default with neither the per-socket rate limit nor recovery
# on /chat, plus /chat-r: /chat with recovery).
# Every run prints a table and one JSON line; the JSON lines also go to
# target/bench/cluster-results.jsonl (with --recovery: cluster-recovery-results.jsonl, each line
# with its phase, path and the log's counters), the servers' logs to target/bench/cluster-*.log.
# The script stops the processes it started (by PID) on exit, and only those.
#
# Exit status: 0 when every run reported ok, 1 when a run found problems, 2 on set-up failure.
set -euo pipefail

cd "$(dirname "$0")/.."

quick=0
build=1
recovery=0
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        --no-build) build=0 ;;
        --recovery) recovery=1 ;;
        -h | --help) sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
# --recovery: the phases at each rate, A = core path, B = recovery log.
PHASES=(A B A B A B)
CORE_NSP=/chat
LOG_NSP=/chat-r

if [[ $quick == 1 ]]; then
    MEMBERS=200; SECONDS_PER_RUN=2
    PHASES=(A B)   # --recovery --quick checks both paths, it measures nothing
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
if [[ $recovery == 1 ]]; then
    command -v jq >/dev/null || die "--recovery needs jq (apt-get install jq)"
    grep -q "^name = \"$LOG_NSP\"" "$BENCH_CONFIG" ||
        die "--recovery needs the namespace $LOG_NSP (with [namespace.recovery]) in $BENCH_CONFIG"
fi

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
[[ $recovery == 0 ]] || results="$OUT/cluster-recovery-results.jsonl"
: > "$results"

# shellcheck source=scripts/lib/servers.sh
source scripts/lib/servers.sh

if [[ $recovery == 1 ]]; then
    # JetStream's file store, as deployed (docs/recovery.md), on the disk /tmp is on.
    js_dir=$(mktemp -d "${TMPDIR:-/tmp}/bench-cluster-js.XXXXXX")
    trap 'stop_all; rm -rf "$js_dir"' EXIT
    start_nats "$OUT/cluster-nats.log" -js -sd "$js_dir"
else
    start_nats "$OUT/cluster-nats.log"
fi

SWITCHBOARD_NATS_URL=$nats_url SWITCHBOARD_BROKER_HTTP_PORT=0 SWITCHBOARD_BROKER_LEADER=always \
    SWITCHBOARD_SUBJECT_PREFIX=$PREFIX start broker "$OUT/cluster-broker.log" "$BROKER"
broker_url=$(wait_for broker "$OUT/cluster-broker.log" 's|.*listening on \(http://[^ ]*\).*|\1|p')

gateway_urls=()
declare -A operator=()
for gw in gw1 gw2; do
    SWITCHBOARD_NATS_URL=$nats_url SWITCHBOARD_NODE_ID=$gw SWITCHBOARD_SUBJECT_PREFIX=$PREFIX \
        SWITCHBOARD_PORT=0 SWITCHBOARD_HOST=127.0.0.1 \
        start "$gw" "$OUT/cluster-$gw.log" "$GATEWAY" "$BENCH_CONFIG"
done
for gw in gw1 gw2; do
    operator[$gw]=$(wait_for "$gw" "$OUT/cluster-$gw.log" 's|^operator listening on \(127\.0\.0\.1:[0-9][0-9]*\).*|\1|p')
    port=$(wait_for "$gw" "$OUT/cluster-$gw.log" 's|.*listening on http://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p')
    gateway_urls+=("http://127.0.0.1:$port")
done
# Listening is not joined: wait until each gateway reports its bus up (/ready answers 200).
for u in "${gateway_urls[@]}"; do wait_ready "$u"; done
if [[ $recovery == 1 ]]; then
    for gw in gw1 gw2; do
        if grep -q 'recovery log is unavailable' "$OUT/cluster-$gw.log"; then
            cat "$OUT/cluster-$gw.log" >&2
            die "$gw has no recovery log (is JetStream on?): $LOG_NSP would take the core path"
        fi
    done
fi

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
if [[ $recovery == 1 ]]; then
    echo "  JetStream file store $js_dir; phases ${PHASES[*]} at each rate: A = $CORE_NSP (core NATS), B = $LOG_NSP (recovery log)"
fi
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

# --recovery: a counter of a gateway's /metrics (the sum over its label sets), and one of
# nats-server's /proc/PID/io fields.
metric() {
    curl -s --max-time 5 "http://${operator[$1]}/metrics" |
        awk -v m="$2" '$1 == m || index($1, m "{") == 1 { s += $NF } END { printf "%d\n", s }'
}
nats_io() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/${pids[nats]}/io" 2>/dev/null || echo 0; }
log_counters() {
    echo "$(metric gw1 switchboard_gateway_log_published_total) $(metric gw1 switchboard_gateway_log_received_total)" \
        "$(metric gw2 switchboard_gateway_log_received_total) $(nats_io write_bytes) $(nats_io wchar)"
}
# One phase of --recovery: a fan-out run on NSP, its JSON line annotated with the phase, the
# path, the log's counters over the run (emits gw1 published into the log, emits each gateway's
# follower read back) and nats-server's bytes written, then checked: a core phase must not touch
# the log, a log phase must put every emit through it (else the namespace fell back to the
# core path, and the comparison would be void).
phase() {
    local label=$1 nsp=$2 rate=$3 rc=0 path before after line problems
    path=$([[ $nsp == "$LOG_NSP" ]] && echo log || echo core)
    read -r -a before <<< "$(log_counters)"
    timeout --kill-after=10 $(( SECONDS_PER_RUN + RUN_SLACK_S )) "${gen[@]}" fanout --url "$urls" \
        --pid "$watched" --members "$MEMBERS" --rate "$rate" --seconds "$SECONDS_PER_RUN" \
        --namespace "$nsp" > "$OUT/cluster-run.out" || rc=$?
    read -r -a after <<< "$(log_counters)"
    cat "$OUT/cluster-run.out"
    line=$(grep -m1 '^{' "$OUT/cluster-run.out" || true)
    if [[ -z $line ]]; then
        echo "bench-cluster.sh: phase $label ($nsp, $rate msg/s) printed no result (exit $rc)" >&2
        status=1; echo; return
    fi
    line=$(jq -c --arg phase "$label" --arg path "$path" \
        --argjson pub "$(( after[0] - before[0] ))" --argjson r1 "$(( after[1] - before[1] ))" \
        --argjson r2 "$(( after[2] - before[2] ))" --argjson wb "$(( after[3] - before[3] ))" \
        --argjson wc "$(( after[4] - before[4] ))" \
        '. + {phase: $phase, path: $path, gw1_log_published: $pub, gw1_log_received: $r1,
              gw2_log_received: $r2, nats_write_bytes: $wb, nats_wchar: $wc,
              duplicates: ([.deliveries - .expected_deliveries, 0] | max)}' <<< "$line")
    problems=$(jq -r 'if .path == "core" then
            if .gw1_log_published + .gw1_log_received + .gw2_log_received > 0
            then "the core phase went through the log" else empty end
        elif .gw1_log_published != .sent or .gw1_log_received != .sent or .gw2_log_received != .sent
        then "the log phase logged \(.gw1_log_published), read back \(.gw1_log_received) / \(.gw2_log_received) of \(.sent) emits"
        else empty end' <<< "$line")
    echo "  log: gw1 published $(jq .gw1_log_published <<< "$line"), read back gw1 $(jq .gw1_log_received <<< "$line") gw2 $(jq .gw2_log_received <<< "$line"); nats-server wrote $(jq .nats_write_bytes <<< "$line") B to disk"
    echo "$line" >> "$results"
    if [[ -n $problems ]]; then
        echo "bench-cluster.sh: phase $label ($nsp, $rate msg/s): $problems" >&2
        status=1
    fi
    if (( rc != 0 )); then
        echo "bench-cluster.sh: phase $label ($nsp, $rate msg/s) failed (exit $rc)" >&2
        status=1
    fi
    echo
}

gen=(taskset -c "$CLIENT_CPU" "$LOADTEST")
for rate in "${RATES[@]}"; do
    if [[ $recovery == 1 ]]; then
        declare -A seen=()
        for p in "${PHASES[@]}"; do
            seen[$p]=$(( ${seen[$p]:-0} + 1 ))
            nsp=$([[ $p == A ]] && echo "$CORE_NSP" || echo "$LOG_NSP")
            alive || die "a server died before phase $p${seen[$p]} at $rate msg/s"
            echo "== phase $p${seen[$p]} ($nsp): $MEMBERS members over gw1 + gw2, $rate msg/s for $SECONDS_PER_RUN s =="
            phase "$p${seen[$p]}" "$nsp" "$rate"
            sleep 2
        done
        unset seen
        continue
    fi
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
if [[ $recovery == 1 && -s $results ]]; then
    echo
    echo "== recovery: the phases (A = $CORE_NSP core NATS, B = $LOG_NSP recovery log) =="
    echo "   latency in ms (gwN_: of the members on gwN); gw1 … total: server CPU µs per delivery;"
    echo "   B/emit: bytes nats-server wrote to disk per emit sent"
    printf '%-6s %-6s %-8s %-16s %-5s %-4s %-7s %-7s %-8s %-8s %-8s %-8s %-6s %-6s %-6s %-6s %-6s %-7s\n' \
        msg/s phase nsp delivered loss dup p50_ms p99_ms gw1_p50 gw2_p50 gw1_p99 gw2_p99 gw1 gw2 nats broker total B/emit
    jq -r '[.rate_target, .phase, .namespace, "\(.deliveries)/\(.expected_deliveries)", .loss, .duplicates,
            (.latency_p50_us/1000*100|round/100), (.latency_p99_us/1000*100|round/100),
            (.url1_latency_p50_us/1000*100|round/100), (.url2_latency_p50_us/1000*100|round/100),
            (.url1_latency_p99_us/1000*100|round/100), (.url2_latency_p99_us/1000*100|round/100),
            (.gw1_cpu_us_per_delivery*100|round/100), (.gw2_cpu_us_per_delivery*100|round/100),
            (.nats_cpu_us_per_delivery*100|round/100), (.broker_cpu_us_per_delivery*100|round/100),
            (.total_cpu_us_per_delivery*100|round/100), (.nats_write_bytes / ([.sent, 1] | max) | round)]
           | @tsv' "$results" |
        while IFS=$'\t' read -r -a row; do
            printf '%-6s %-6s %-8s %-16s %-5s %-4s %-7s %-7s %-8s %-8s %-8s %-8s %-6s %-6s %-6s %-6s %-6s %-7s\n' "${row[@]}"
        done
    echo
    echo "== recovery: medians of the A and of the B phases, ratio B/A =="
    # B/emit: bytes nats-server wrote to disk per emit sent.
    jq -rs '
        def median: sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
        def r2: if . == null then "-" else . * 100 | round / 100 end;
        def metrics: [["p50_ms", .latency_p50_us / 1000], ["p99_ms", .latency_p99_us / 1000],
                      ["gw1_p50_ms", .url1_latency_p50_us / 1000], ["gw2_p50_ms", .url2_latency_p50_us / 1000],
                      ["gw1_p99_ms", .url1_latency_p99_us / 1000], ["gw2_p99_ms", .url2_latency_p99_us / 1000],
                      ["gw1_us", .gw1_cpu_us_per_delivery], ["gw2_us", .gw2_cpu_us_per_delivery],
                      ["nats_us", .nats_cpu_us_per_delivery], ["broker_us", .broker_cpu_us_per_delivery],
                      ["total_us", .total_cpu_us_per_delivery], ["client_us", .client_cpu_us_per_delivery],
                      ["nats_cpu_us_per_emit", .nats_cpu_s * 1e6 / ([.sent, 1] | max)],
                      ["nats_disk_B_per_emit", .nats_write_bytes / ([.sent, 1] | max)]];
        group_by(.rate_target)[] as $runs
        | ($runs[0].rate_target) as $rate
        | ($runs | map(select(.path == "core") | metrics)) as $a
        | ($runs | map(select(.path == "log") | metrics)) as $b
        | range(0; $a[0] | length) as $i
        | ($a | map(.[$i][1]) | median) as $ma
        | ($b | map(.[$i][1]) | median) as $mb
        | [$rate, $a[0][$i][0], ($ma | r2), ($mb | r2),
           (if $ma == null or $mb == null or $ma == 0 then "-" else $mb / $ma | r2 end)]
        | @tsv' "$results" |
        { printf '%-6s %-21s %-10s %-10s %-6s\n' msg/s metric A_median B_median B/A
          while IFS=$'\t' read -r -a row; do printf '%-6s %-21s %-10s %-10s %-6s\n' "${row[@]}"; done; }
fi
exit "$status"
