#!/usr/bin/env bash
# Does the gateway's memory come back after connections close? Opens and closes N connections
# in C cycles against one standalone gateway (loadtest/bench.toml) and records its RSS before each
# cycle, at the cycle's idle peak (all N connected, after --settle seconds) and after closing
# them (after the same settle): one `switchboard-loadtest idle` run per cycle.
#
#   scripts/bench-memory.sh                     5 cycles of 10 000 WebSocket connections
#   scripts/bench-memory.sh --transport polling the same over long-polling
#   scripts/bench-memory.sh --quick             3 cycles of 200 (seconds): a smoke test for CI
#   scripts/bench-memory.sh --allocator NAME    build the gateway with that allocator (system,
#                                               mimalloc, jemalloc; default: the build's default)
#                                               into target/bench/memory/, and measure that
#   scripts/bench-memory.sh --fanout            also fan-out CPU per delivery afterwards: 1 000
#                                               members at 100 msg/s for 10 s (the middle band)
#   scripts/bench-memory.sh --no-build          skip the build
#   CYCLES=n CONNECTIONS=n SETTLE_SECS=n        override the counts (environment)
#
# The verdict (docs/scaling.md, issue 17 item 5): the last cycle's idle peak is within 20 % of
# the first cycle's. It is printed, not enforced: RSS over a few hundred connections (--quick)
# is page-size noise. Exit status: 0 every run ok, 1 a run found problems, 2 set-up failure.
# Run it under the bench lock by hand (`flock /tmp/switchboard-bench.lock scripts/...`): the
# gateway is pinned to CPU $SERVER_CPU (0), the load generator to $CLIENT_CPU (1).
# JSON lines: target/bench/memory-results.jsonl (the idle runs, then one summary line).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0 build=1 transport=websocket allocator="" fanout=0
while (( $# > 0 )); do
    case "$1" in
        --quick) quick=1 ;;
        --no-build) build=0 ;;
        --fanout) fanout=1 ;;
        --transport) transport=${2:?--transport needs websocket or polling}; shift ;;
        --allocator) allocator=${2:?--allocator needs system, mimalloc or jemalloc}; shift ;;
        -h | --help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-memory.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

die() { echo "bench-memory.sh: $*" >&2; exit 2; }
case "$transport" in websocket | polling) ;; *) die "--transport: websocket or polling, not $transport" ;; esac

if [[ $quick == 1 ]]; then
    CYCLES=${CYCLES:-3} CONNECTIONS=${CONNECTIONS:-200} SETTLE_SECS=${SETTLE_SECS:-1}
    FANOUT_MEMBERS=100 FANOUT_SECS=2
else
    CYCLES=${CYCLES:-5} CONNECTIONS=${CONNECTIONS:-10000} SETTLE_SECS=${SETTLE_SECS:-3}
    FANOUT_MEMBERS=1000 FANOUT_SECS=10
fi
FANOUT_RATE=100
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
STARTUP_TIMEOUT_S=30
OUT=target/bench
LOADTEST=target/release/switchboard-loadtest
GATEWAY=target/release/switchboard-gateway

command -v taskset >/dev/null || die "taskset not found: install util-linux"
command -v jq >/dev/null || die "jq not found: install jq"
need_fds=$(( CONNECTIONS + 256 ))
hard=$(ulimit -Hn)
if [[ $hard != unlimited ]] && (( hard < need_fds )); then
    die "open-files hard limit is $hard, $need_fds are needed"
fi
if [[ $hard == unlimited ]]; then ulimit -n 1048576 2>/dev/null || ulimit -n "$need_fds"; else ulimit -n "$hard"; fi

mkdir -p "$OUT/memory"
if [[ -n $allocator ]]; then
    case "$allocator" in
        system) features=(--no-default-features) ;;
        mimalloc) features=(--no-default-features --features mimalloc) ;;
        jemalloc) features=(--no-default-features --features jemalloc) ;;
        *) die "--allocator: system, mimalloc or jemalloc, not $allocator" ;;
    esac
    if [[ $build == 1 ]]; then
        cargo build --release -p switchboard --bin switchboard-gateway "${features[@]}" || die "build failed"
        cp target/release/switchboard-gateway "$OUT/memory/switchboard-gateway-$allocator"
    fi
    GATEWAY=$OUT/memory/switchboard-gateway-$allocator
elif [[ $build == 1 ]]; then
    cargo build --release -p switchboard -p switchboard-loadtest || die "build failed"
fi
if [[ $build == 1 && ! -x $LOADTEST ]]; then
    cargo build --release -p switchboard-loadtest || die "build failed"
fi
[[ -x $GATEWAY && -x $LOADTEST ]] || die "$GATEWAY or $LOADTEST missing (build first)"

results="$OUT/memory-results.jsonl"
: >"$results"
# shellcheck source=scripts/lib/servers.sh
source scripts/lib/servers.sh

log="$OUT/memory-gateway.log"
SWITCHBOARD_PORT=0 start gateway "$log" "$GATEWAY" loadtest/bench.toml
url=$(wait_for gateway "$log" "$LISTENING")
operator=$(wait_for gateway "$log" 's|.*operator listening on \([0-9.]*:[0-9]*\).*|\1|p')
# The bytes the gateway's own code holds (jemalloc's statistics, bin/src/allocator.rs; null with
# another allocator): what RSS after closing would be if the allocator kept nothing.
heap() {
    curl -s --max-time 5 "http://$operator/metrics" |
        awk '$1 == "switchboard_heap_allocated_bytes" { printf "%d", $2; found = 1 } END { if (!found) print "null" }'
}
heap_start=$(heap)
alloc_name=$(sed -n 's/.*allocator="\{0,1\}\([a-z]*\).*/\1/p' "$log" | head -n1)
echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== gateway $GATEWAY (allocator ${alloc_name:-unknown}, pid ${pids[gateway]}) at $url: $CYCLES cycles of $CONNECTIONS $transport connections"

status=0
gen=(taskset -c "$CLIENT_CPU" "$LOADTEST")
for cycle in $(seq "$CYCLES"); do
    rc=0
    "${gen[@]}" --quiet idle --url "$url" --pid "${pids[gateway]}" --connections "$CONNECTIONS" \
        --transport "$transport" --settle-secs "$SETTLE_SECS" >"$OUT/memory-run.out" || rc=$?
    if (( rc != 0 )); then
        cat "$OUT/memory-run.out" >&2
        echo "bench-memory.sh: cycle $cycle failed (exit $rc)" >&2
        status=1
    fi
    grep '^{' "$OUT/memory-run.out" | jq -c --argjson cycle "$cycle" --argjson heap "$(heap)" \
        '. + {cycle: $cycle, server_heap_after_close_bytes: $heap}' >>"$results" || true
    kill -0 "${pids[gateway]}" 2>/dev/null || { cat "$log" >&2; die "the gateway died in cycle $cycle"; }
done

# The series, and the verdict. Keys of the idle report: loadtest/src/idle.rs.
mib='(. / 1048576 * 10 | round / 10)'
echo
printf '%-6s %12s %12s %12s %14s %10s %16s\n' cycle "before MiB" "peak MiB" "closed MiB" "B/connection" "µs/connect" "heap closed MiB"
jq -r "select(.cycle) | [.cycle, (.server_rss_before_bytes | $mib), (.server_rss_after_bytes | $mib),
    (.server_rss_after_close_bytes | $mib), (.server_rss_per_connection_bytes | round),
    (.server_cpu_us_per_connect * 10 | round / 10),
    (.server_heap_after_close_bytes | if . then $mib else \"-\" end)] | @tsv" "$results" |
    while IFS=$'\t' read -r c b p a n u h; do
        printf '%-6s %12s %12s %12s %14s %10s %16s\n' "$c" "$b" "$p" "$a" "$n" "$u" "$h"
    done

fanout_cpu=null
if [[ $fanout == 1 ]]; then
    rc=0
    "${gen[@]}" --quiet fanout --url "$url" --pid "${pids[gateway]}" --members "$FANOUT_MEMBERS" \
        --rate "$FANOUT_RATE" --seconds "$FANOUT_SECS" >"$OUT/memory-run.out" || rc=$?
    (( rc == 0 )) || { cat "$OUT/memory-run.out" >&2; status=1; }
    line=$(grep '^{' "$OUT/memory-run.out" | tail -n1)
    fanout_cpu=$(jq '[to_entries[] | select(.key | test("^server.*_cpu_us_per_delivery$")) | .value] | first // null' <<<"$line")
    echo "fan-out: $FANOUT_MEMBERS members × $FANOUT_RATE msg/s for ${FANOUT_SECS}s: server CPU $fanout_cpu µs per delivery"
fi

summary=$(jq -sc --arg allocator "${alloc_name:-unknown}" --arg transport "$transport" \
    --argjson fanout "$fanout_cpu" --argjson heap_start "$heap_start" --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" '
    [.[] | select(.cycle)] as $c | {
      scenario: "memory-cycles", allocator: $allocator, transport: $transport,
      cycles: ($c | length), connections: ($c[0].connections),
      rss_start_bytes: $c[0].server_rss_before_bytes,
      rss_peak_bytes: [$c[].server_rss_after_bytes],
      rss_closed_bytes: [$c[].server_rss_after_close_bytes],
      heap_start_bytes: $heap_start, heap_closed_bytes: [$c[].server_heap_after_close_bytes],
      bytes_per_connection_first: $c[0].server_rss_per_connection_bytes,
      cpu_us_per_connect_median: ([$c[].server_cpu_us_per_connect] | sort | .[length / 2 | floor]),
      last_peak_over_first: ($c[-1].server_rss_after_bytes / $c[0].server_rss_after_bytes),
      last_closed_over_first_peak: ($c[-1].server_rss_after_close_bytes / $c[0].server_rss_after_bytes),
      fanout_cpu_us_per_delivery: $fanout, loadavg_end: $load }' "$results")
echo "$summary" >>"$results"
ratio=$(jq '.last_peak_over_first * 1000 | round / 1000' <<<"$summary")
closed=$(jq '.last_closed_over_first_peak * 1000 | round / 1000' <<<"$summary")
verdict=$(jq -r 'if .last_peak_over_first <= 1.2 then "met" else "MISSED" end' <<<"$summary")
echo "last idle peak / first: $ratio (≤ 1.2: $verdict); last RSS after close / first peak: $closed"
echo "$summary"
stop_all
exit $status
