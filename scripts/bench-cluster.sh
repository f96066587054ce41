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
#   scripts/bench-cluster.sh --nats-cluster
#                                       the same over a 3-node NATS cluster (n1..n3, routes on
#                                       loopback): gw1 is given the node list starting at n1, gw2
#                                       at n2, the broker at n3, so every cross-gateway delivery
#                                       crosses a route; with --recovery, clustered JetStream and
#                                       an R3 log (SWITCHBOARD_NATS_REPLICAS=3). CPU per delivery
#                                       counts all three nats-servers (nats = nats1+nats2+nats3).
#                                       Needs python3 and jq.
#   scripts/bench-cluster.sh --kill-node N
#                                       --nats-cluster, one run at $KILL_RATE msg/s (default 50):
#                                       halfway through its sending time, node N (1: the sender's
#                                       gateway's, 2: the receiving gateway's, 3: the
#                                       broker's) is killed with -9. Reports the deliveries lost
#                                       (and the emits they amount to), how long each gateway's
#                                       NATS link was down (its log), p99 and the slowest
#                                       deliveries; loss is expected and is not a failure here.
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
# with its phase, path and the log's counters; --nats-cluster: cluster-nats3-…, --kill-node N:
# cluster-nats3-killN-…), the servers' logs to target/bench/cluster-*.log.
# BENCH_CLUSTER_RATES (default "10 50") sets the rates.
# The script stops the processes it started (by PID) on exit, and only those.
#
# Exit status: 0 when every run reported ok, 1 when a run found problems, 2 on set-up failure.
set -euo pipefail

cd "$(dirname "$0")/.."

quick=0
build=1
recovery=0
nats_nodes=1
want_kill=0
kill_node=0
for arg in "$@"; do
    if [[ $want_kill == 1 ]]; then
        [[ $arg =~ ^[123]$ ]] || { echo "bench-cluster.sh: --kill-node takes 1, 2 or 3" >&2; exit 2; }
        kill_node=$arg; nats_nodes=3; want_kill=0; continue
    fi
    case "$arg" in
        --quick) quick=1 ;;
        --no-build) build=0 ;;
        --recovery) recovery=1 ;;
        --nats-cluster) nats_nodes=3 ;;
        --kill-node) want_kill=1 ;;
        -h | --help) sed -n '2,50p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-cluster.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done

[[ $want_kill == 0 ]] || { echo "bench-cluster.sh: --kill-node takes 1, 2 or 3" >&2; exit 2; }
(( kill_node == 0 || recovery == 0 )) || { echo "bench-cluster.sh: --kill-node and --recovery do not combine" >&2; exit 2; }

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
# The rates (msg/s) of a run; BENCH_CLUSTER_RATES="50" runs one.
read -r -a RATES <<< "${BENCH_CLUSTER_RATES:-10 50}"
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
if (( kill_node > 0 )); then
    RATES=("${KILL_RATE:-50}")
    (( quick == 0 )) || SECONDS_PER_RUN=6
fi

die() { echo "bench-cluster.sh: $*" >&2; exit 2; }

command -v taskset >/dev/null || die "taskset not found: install util-linux"
[[ -x $NATS_SERVER ]] || die "nats-server not found (install it, or set NATS_SERVER=/path/to/nats-server)"
ncpu=$(nproc)
(( SERVER_CPU < ncpu && CLIENT_CPU < ncpu )) || die "need CPUs $SERVER_CPU and $CLIENT_CPU, this machine has $ncpu"
[[ $SERVER_CPU != "$CLIENT_CPU" ]] || echo "bench-cluster.sh: warning: servers and load generator share CPU $SERVER_CPU" >&2
[[ -f $BENCH_CONFIG ]] || die "configuration $BENCH_CONFIG not found"
if (( nats_nodes > 1 )); then
    command -v jq >/dev/null || die "--nats-cluster needs jq (apt-get install jq)"
    command -v python3 >/dev/null || die "--nats-cluster needs python3"
fi
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
# One results file per mode, so that a run of one does not overwrite another's.
mode=""
(( nats_nodes == 1 )) || mode="-nats$nats_nodes"
(( kill_node == 0 )) || mode="-nats$nats_nodes-kill$kill_node"
results="$OUT/cluster$mode-results.jsonl"
[[ $recovery == 0 ]] || results="$OUT/cluster$mode-recovery-results.jsonl"
: > "$results"

# shellcheck source=scripts/lib/servers.sh
source scripts/lib/servers.sh

# Where each process connects: the one nats-server, or on a NATS cluster its own node first
# (gw1 → n1, gw2 → n2, broker → n3).
declare -A nats_for=()
if (( nats_nodes > 1 )); then
    if [[ $recovery == 1 ]]; then
        start_nats_cluster "$nats_nodes" "$OUT/cluster-nats" -js
        export SWITCHBOARD_NATS_REPLICAS=3
    else
        start_nats_cluster "$nats_nodes" "$OUT/cluster-nats"
    fi
    nats_for=([gw1]=$(nats_list_from 1) [gw2]=$(nats_list_from 2) [broker]=$(nats_list_from 3))
    nats_names=()
    for (( i = 1; i <= nats_nodes; i++ )); do nats_names+=("nats$i"); done
elif [[ $recovery == 1 ]]; then
    # JetStream's file store, as deployed (docs/recovery.md), on the disk /tmp is on.
    js_dir=$(mktemp -d "${TMPDIR:-/tmp}/bench-cluster-js.XXXXXX")
    trap 'stop_all; rm -rf "$js_dir"' EXIT
    start_nats "$OUT/cluster-nats.log" -js -sd "$js_dir"
    nats_for=([gw1]=$nats_url [gw2]=$nats_url [broker]=$nats_url)
    nats_names=(nats)
else
    start_nats "$OUT/cluster-nats.log"
    nats_for=([gw1]=$nats_url [gw2]=$nats_url [broker]=$nats_url)
    nats_names=(nats)
fi

SWITCHBOARD_NATS_URL=${nats_for[broker]} SWITCHBOARD_BROKER_HTTP_PORT=0 SWITCHBOARD_BROKER_LEADER=always \
    SWITCHBOARD_SUBJECT_PREFIX=$PREFIX start broker "$OUT/cluster-broker.log" "$BROKER"
broker_url=$(wait_for broker "$OUT/cluster-broker.log" 's|.*listening on \(http://[^ ]*\).*|\1|p')

gateway_urls=()
declare -A operator=()
for gw in gw1 gw2; do
    SWITCHBOARD_NATS_URL=${nats_for[$gw]} SWITCHBOARD_NODE_ID=$gw SWITCHBOARD_SUBJECT_PREFIX=$PREFIX \
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
watched="gw1=${pids[gw1]},gw2=${pids[gw2]}"
for name in "${nats_names[@]}"; do
    # The node killed during the run is not watched: its CPU cannot be read once it is gone.
    [[ $kill_node != 0 && $name == "nats$kill_node" ]] && continue
    watched+=",$name=${pids[$name]}"
done
watched+=",broker=${pids[broker]}"

echo "== machine =="
echo "  $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "  kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg), open files $(ulimit -n)"
echo "  gw1, gw2, nats-server$( (( nats_nodes > 1 )) && echo "s ($nats_nodes)") and broker on CPU $SERVER_CPU; load generator on CPU $CLIENT_CPU$([[ $quick == 1 ]] && echo ', quick mode')"
echo "  $("$NATS_SERVER" --version 2>&1 | head -n1)"
echo "== cluster =="
for name in "${nats_names[@]}"; do
    if [[ $name == nats ]]; then
        echo "  nats   pid ${pids[nats]}   $nats_url"
    else
        echo "  $name  pid ${pids[$name]}   ${nats_urls[${name#nats} - 1]}"
    fi
done
echo "  broker pid ${pids[broker]}   $broker_url (leader: always; NATS ${nats_for[broker]})"
echo "  gw1    pid ${pids[gw1]}   ${gateway_urls[0]} (the sender's gateway; NATS ${nats_for[gw1]})"
echo "  gw2    pid ${pids[gw2]}   ${gateway_urls[1]} (NATS ${nats_for[gw2]})"
if (( kill_node > 0 )); then
    echo "  kill -9 of nats$kill_node halfway through the sending time (${SECONDS_PER_RUN}s at ${RATES[0]} msg/s)"
fi
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
    grep '^{' "$OUT/cluster-run.out" | annotate >> "$results" || true
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
    line=$(grep -m1 '^{' "$OUT/cluster-run.out" | annotate || true)
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

# The JSON line of a run on a NATS cluster, annotated: the node count, and `nats` as the sum of
# the nodes' CPU (so the summaries read it as for one nats-server).
annotate() {
    if (( nats_nodes == 1 )); then cat; return; fi
    jq -c --argjson nodes "$nats_nodes" '. + {nats_nodes: $nodes}
        | . + ([to_entries[] | select(.key | test("^nats[0-9]+_cpu_(s|us_per_delivery)$"))]
               | group_by(.key | sub("^nats[0-9]+_"; "")) | map({key: ("nats_" + (.[0].key | sub("^nats[0-9]+_"; ""))), value: (map(.value) | add)})
               | from_entries)'
}

# When gateway GW's NATS link went down last and came back up after it (its log's
# "NATS connection lost" and the next "NATS connected"), in ms; empty if it did not go down.
link_down_ms() {
    awk '
        function ms(ts,   d, t, h) { split(ts, d, "T"); split(d[2], t, ":"); sub("Z", "", t[3]);
                                      return ((t[1] * 60 + t[2]) * 60 + t[3]) * 1000 }
        /NATS connection lost/ { down = ms($1); up = "" }
        /NATS connected/ && down != "" && up == "" { up = ms($1) }
        END { if (down != "" && up != "") printf "%.0f\n", up - down }' "$OUT/cluster-$1.log"
}

# --kill-node: one fan-out run at RATE; nats$kill_node is killed with -9 halfway through the
# sending time. Loss is expected: it is reported (with the emits it amounts to, and how long each
# gateway's link was down), not counted as a failure; any other problem is.
run_kill() {
    local rate=$1 rc=0 victim="nats$kill_node" vpid killer line err="$OUT/cluster-run.err"
    vpid=${pids[$victim]}
    : > "$err"
    (
        for _ in $(seq $(( RUN_SLACK_S * 10 ))); do grep -q ': sending for' "$err" && break; sleep 0.1; done
        sleep "$(( SECONDS_PER_RUN / 2 ))"
        kill -KILL "$vpid" 2>/dev/null
    ) &
    killer=$!
    timeout --kill-after=10 $(( SECONDS_PER_RUN + RUN_SLACK_S )) "${gen[@]}" fanout --url "$urls" \
        --pid "$watched" --members "$MEMBERS" --rate "$rate" --seconds "$SECONDS_PER_RUN" \
        > "$OUT/cluster-run.out" 2> >(tee "$err" >&2) || rc=$?
    wait "$killer" || true
    wait "$vpid" 2>/dev/null || true
    unset "pids[$victim]"
    local keep=()
    for name in "${started[@]}"; do [[ $name == "$victim" ]] || keep+=("$name"); done
    started=("${keep[@]}")
    cat "$OUT/cluster-run.out"
    line=$(grep -m1 '^{' "$OUT/cluster-run.out" || true)
    if [[ -z $line ]]; then
        echo "bench-cluster.sh: the run printed no result (exit $rc)" >&2
        status=1; return
    fi
    local d1 d2 db
    d1=$(link_down_ms gw1); d2=$(link_down_ms gw2); db=$(link_down_ms broker)
    line=$(annotate <<< "$line" | jq -c --argjson node "$kill_node" --arg d1 "$d1" --arg d2 "$d2" --arg db "$db" '
        def num: if . == "" then null else tonumber end;
        . + {killed_node: $node, gw1_link_down_ms: ($d1 | num), gw2_link_down_ms: ($d2 | num),
             broker_link_down_ms: ($db | num),
             emits_lost_gw1: (if .url1_members > 0 then .url1_loss / .url1_members else 0 end),
             emits_lost_gw2: (if .url2_members > 0 then .url2_loss / .url2_members else 0 end)}
        | . + {gap_ms_gw2: (.emits_lost_gw2 / .rate_target * 1000)}')
    echo "$line" >> "$results"
    echo "  killed nats$kill_node: link down gw1 ${d1:-no} ms, gw2 ${d2:-no} ms, broker ${db:-no} ms;" \
        "deliveries lost $(jq .loss <<< "$line") = $(jq .emits_lost_gw1 <<< "$line") emits on gw1's members," \
        "$(jq .emits_lost_gw2 <<< "$line") on gw2's (≈ $(jq '.gap_ms_gw2 | round' <<< "$line") ms of sending)"
    # Loss was the point; anything else the run found is a failure.
    if [[ -n $(jq -r '.problems[] | select(test(" lost$") | not)' <<< "$line") ]]; then
        echo "bench-cluster.sh: the run found more than the loss: $(jq -c .problems <<< "$line")" >&2
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
    echo "== fan-out: $MEMBERS members over gw1 + gw2, $rate msg/s for $SECONDS_PER_RUN s$( (( kill_node > 0 )) && echo ", nats$kill_node killed halfway") =="
    if (( kill_node > 0 )); then
        run_kill "$rate"
        continue
    fi
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
