#!/usr/bin/env bash
# The one test command: `bash scripts/test.sh`.
#
# 1. Installs what is missing (Debian packages: chromium for the browser test, nats-server for
#    the cluster tests, nginx for the load-balancer tests, redis-server and jq for the
#    side-by-side smoke run; nodejs and npm only when node is absent), with a single
#    `apt-get update`, and only if something is missing.
# 2. Builds the workspace once in release mode (binaries and examples), runs the Rust tests
#    (reusing that build); then the emitter packages' unit tests (emitters/node with npm,
#    emitters/python in the venv emitters/python/.venv, made and filled only when missing).
# 3. Runs the end-to-end tests in tests/e2e (node's test runner): first the conformance tests
#    against the Node reference server (to check the tests themselves), then everything against
#    the built binaries: protocol conformance, the official socket.io-client, and the demo page
#    in headless Chromium; then, when a copy is provided, the official protocol suites and the
#    official clients' own test suites.
#
# Works unattended (CI=true, no stdin). Exits non-zero if anything fails.
# Environment: E2E_VERBOSE=1 shows the servers' logs; SKIP_CARGO=1 skips steps 2 (binaries
# must already be built); E2E_ONLY="test/foo.test.js ..." runs only those e2e files.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

log() { printf '\n==> %s\n' "$*"; }

# ---- 1. system packages --------------------------------------------------------------------
missing=()
# need <command name or absolute path> <Debian package that provides it>
need() {
  if [[ "$1" == /* ]]; then
    [ -x "$1" ] || missing+=("$2")
  else
    command -v "$1" >/dev/null 2>&1 || missing+=("$2")
  fi
}
need node nodejs
need npm npm
need /usr/bin/chromium chromium   # the browser test (playwright-core drives Debian's Chromium)
need taskset util-linux           # the load-test smoke run pins server and generator to cores
# the cluster tests; Debian installs it in /usr/sbin, often not on a user's PATH
command -v nats-server >/dev/null 2>&1 || need /usr/sbin/nats-server nats-server
# the load-balancer tests run deploy/nginx/'s configs in a real nginx (also in /usr/sbin)
command -v nginx >/dev/null 2>&1 || need /usr/sbin/nginx nginx
# redis: the side-by-side smoke run's Node cluster; jq: that run and bench-cluster.sh --recovery
command -v redis-server >/dev/null 2>&1 || need /usr/bin/redis-server redis-server
need jq jq
# the Python emitter package (emitters/python) runs in a venv: Debian splits venv out of python3
if ! command -v python3 >/dev/null 2>&1; then
  missing+=(python3 python3-venv)
elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  log "installing missing packages: ${missing[*]}"
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      SUDO=(sudo -n)
    else
      echo "error: need root (or sudo) to install: ${missing[*]}" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq "${missing[@]}" </dev/null >/dev/null
fi

command -v cargo >/dev/null 2>&1 || { echo "error: cargo not found (install Rust with rustup)" >&2; exit 1; }
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 18 ]; then
  echo "error: node $(node --version) is too old: the end-to-end tests need node >= 18" >&2
  exit 1
fi
# A hung test fails after this long instead of holding the run (node >= 20 has the flag).
node_flags=()
if [ "$node_major" -ge 20 ]; then
  node_flags+=(--test-timeout=60000)
fi

# ---- 2. build and Rust tests ----------------------------------------------------------------
if [ -z "${SKIP_CARGO:-}" ]; then
  # switchboard/fault-injection: the fault injection the end-to-end suite uses (never in a
  # release build); switchboard-loadtest/grpc: the load generator's `admin` scenario (the gRPC
  # smoke run below).
  log "cargo build --release --workspace --bins --examples --features switchboard/fault-injection,switchboard-loadtest/grpc --locked"
  cargo build --release --workspace --bins --examples --features switchboard/fault-injection,switchboard-loadtest/grpc --locked

  log "cargo test --release --workspace --features switchboard/fault-injection,switchboard-loadtest/grpc --locked"
  cargo test --release --workspace --features switchboard/fault-injection,switchboard-loadtest/grpc --locked

  # The fuzz targets (fuzz/, a workspace of its own) are run by hand, not here, but they must
  # keep compiling: twice a new message field or subject broke them unnoticed. About 80 s.
  log "cargo check --manifest-path fuzz/Cargo.toml --bins --locked (the fuzz targets compile)"
  CARGO_TARGET_DIR="$ROOT/target/fuzz-check" cargo check --manifest-path "$ROOT/fuzz/Cargo.toml" --bins --locked
fi

# ---- 2b. the emitter packages -----------------------------------------------------------------
# Their encoders are checked byte for byte against emitters/vectors.json (which the Rust tests
# above check against the Rust code); their types with tsc and mypy --strict. Installs only
# what is missing: npm ci when the lockfile changed, pip when the venv lacks a package.
log "emitter packages: unit tests (emitters/node, emitters/python)"
cd "$ROOT/emitters/node"
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error </dev/null
fi
npm test --silent </dev/null
venv="$ROOT/emitters/python/.venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! "$venv/bin/python" -c 'import switchboard_emitter, nats, mypy' >/dev/null 2>&1; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT/emitters/python[test]" </dev/null
fi
(cd "$ROOT/emitters/python" && "$venv/bin/python" -m unittest discover -s tests) </dev/null
# tests/e2e/test/emitters.test.js drives the Python package through this venv.
export SWITCHBOARD_EMITTER_PYTHON="$venv/bin/python"

# ---- 3. end-to-end tests --------------------------------------------------------------------
log "npm ci (tests/e2e)"
cd "$ROOT/tests/e2e"
npm ci --no-audit --no-fund --loglevel=error </dev/null

target="${CARGO_TARGET_DIR:-target}"
[[ "$target" == /* ]] || target="$ROOT/$target"
export SWITCHBOARD_GATEWAY_BIN="${SWITCHBOARD_GATEWAY_BIN:-$target/release/switchboard-gateway}"
export SWITCHBOARD_BROKER_BIN="${SWITCHBOARD_BROKER_BIN:-$target/release/switchboard-broker}"
export SWITCHBOARD_CONFORMANCE_BIN="${SWITCHBOARD_CONFORMANCE_BIN:-$target/release/examples/conformance}"

if [ -z "${E2E_ONLY:-}" ]; then
  # The conformance tests are ours, written from the protocol's observed behaviour: run them
  # against the Node reference (socket.io 4.8, pinned by the lockfile) first, so that a test
  # that drifted from the reference fails here rather than passing judgement on our server.
  log "node --test: conformance tests against the Node reference (checks the tests)"
  E2E_REFERENCE=1 node --test "${node_flags[@]}" test/*conformance*.test.js </dev/null >"${TMPDIR:-/tmp}/switchboard-e2e-reference.log" 2>&1 || {
    cat "${TMPDIR:-/tmp}/switchboard-e2e-reference.log"
    echo "error: the conformance tests fail against the Node reference: fix the tests" >&2
    exit 1
  }
  grep -E '^# (tests|pass|fail) ' "${TMPDIR:-/tmp}/switchboard-e2e-reference.log" | sed 's/^# /reference: /'
fi

# shellcheck disable=SC2206
files=(${E2E_ONLY:-test/*.test.js})
log "node --test (tests/e2e: ${#files[@]} files)"
e2e_log="${TMPDIR:-/tmp}/switchboard-e2e.log"
node --test "${node_flags[@]}" "${files[@]}" </dev/null | tee "$e2e_log"

# ---- 3b. the official protocol suites, when provided ------------------------------------------
# The official Engine.IO v4 and Socket.IO v5 test suites live in the socket.io monorepo (docs/);
# their code is not copied into this repository. When a copy is provided — in
# $SWITCHBOARD_PROTOCOL_SUITES or ../shared/protocol-suites, laid out as in the monorepo's docs/
# folder — they run here against the conformance example (they hard-code localhost:3000).
suites="${SWITCHBOARD_PROTOCOL_SUITES:-$ROOT/../shared/protocol-suites}"
if [ -z "${E2E_ONLY:-}" ] && [ -f "$suites/engine.io-protocol/v4-test-suite/test-suite.js" ] \
    && [ -f "$suites/socket.io-protocol/v5-test-suite/test-suite.js" ]; then
  log "official protocol suites ($suites) against the conformance example on port 3000"
  if (exec 3<>/dev/tcp/127.0.0.1/3000) 2>/dev/null; then
    echo "error: port 3000 is in use; the official suites need it" >&2
    exit 1
  fi
  conf_log="${TMPDIR:-/tmp}/switchboard-official-conformance.log"
  PORT=3000 "$SWITCHBOARD_CONFORMANCE_BIN" >"$conf_log" 2>&1 &
  conf_pid=$!
  trap 'kill "$conf_pid" 2>/dev/null || true' EXIT
  for _ in $(seq 100); do grep -q '^listening on' "$conf_log" && break; sleep 0.1; done
  grep -q '^listening on' "$conf_log" || { cat "$conf_log"; echo "error: the conformance example did not start" >&2; exit 1; }
  for suite in engine.io-protocol/v4-test-suite socket.io-protocol/v5-test-suite; do
    work="$(mktemp -d)"
    cp -r "$suites/$suite/." "$work/"
    # The v5 suite imports the same node-imports.js as the v4 suite.
    [ -f "$work/node-imports.js" ] || cp "$suites/engine.io-protocol/v4-test-suite/node-imports.js" "$work/"
    (
      cd "$work"
      if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi
      npx mocha --no-color test-suite.js
    ) </dev/null
    rm -rf "$work"
  done
  kill "$conf_pid" 2>/dev/null || true
  trap - EXIT
else
  echo "official protocol suites: not provided (see scripts/test.sh); the conformance tests above cover the same behaviours"
fi

# ---- 3c. the official clients' own test suites, when provided ---------------------------------
# socket.io-client's and engine.io-client's suites (the socket.io monorepo's packages/; not
# copied here) run unmodified against the client-suite example when a copy is provided — in
# $SWITCHBOARD_CLIENT_SUITES or ../shared/client-suites. They print passed/total; a failing test
# does not fail this command (docs/conformance.md lists the known ones).
client_suites="${SWITCHBOARD_CLIENT_SUITES:-$ROOT/../shared/client-suites}"
if [ -z "${E2E_ONLY:-}" ] && [ -f "$client_suites/socket.io-client/test/support/server.ts" ] \
    && [ -f "$client_suites/engine.io-client/test/support/hooks.js" ]; then
  log "official client suites ($client_suites) against the client-suite example on ports 3210 and 3000"
  SWITCHBOARD_CLIENT_SUITES="$client_suites" \
    SWITCHBOARD_CLIENT_SUITE_BIN="${SWITCHBOARD_CLIENT_SUITE_BIN:-$target/release/examples/client-suite}" \
    bash "$ROOT/scripts/client-suites.sh" </dev/null
else
  echo "official client suites: not provided (see scripts/client-suites.sh); skipped"
fi

# ---- 4. benchmark smoke runs -----------------------------------------------------------------
# Seconds-long versions of the benchmarks (a few hundred connections, seconds each): keep the
# load-test tool, its scenarios and the benchmark scripts working, and check that no delivery is
# lost. The numbers come from full runs by hand (the same scripts without --quick), not from here.
# smoke SCRIPT WHAT [ARG...]: runs scripts/SCRIPT --no-build --quick ARG..., showing its log
# only if it fails.
smoke() {
  local script=$1 what=$2 out="${TMPDIR:-/tmp}/switchboard-${1%.sh}${3:+$3}-smoke.log"
  shift 2
  log "scripts/$script --quick${*:+ $*} ($what smoke run)"
  bash "scripts/$script" --no-build --quick "$@" </dev/null >"$out" 2>&1 || {
    cat "$out"
    echo "error: the $what smoke run failed" >&2
    exit 1
  }
  echo "$what smoke run: ok (log: $out)"
}
if [ -z "${E2E_ONLY:-}" ]; then
  cd "$ROOT"
  smoke bench.sh "load-test"
  smoke bench-cluster.sh "cross-gateway fan-out"
  smoke bench-cluster.sh "recovery log against core NATS" --recovery
  smoke bench-admin.sh "gRPC admin API"
  smoke bench-broker.sh "broker capacity (50 simulated gateways)"
  smoke bench-forward.sh "forwarded polling requests"
  smoke bench-compare.sh "side-by-side with Node's socket.io"
  smoke bench-storm.sh "reconnect storm (kill and drain of a gateway behind nginx)"
  smoke bench-memory.sh "memory over connection cycles"
fi

# The e2e runner's totals again as the last line, after the smoke run's output.
pass=$(grep -E '^# pass ' "$e2e_log" | awk '{print $3}')
fail=$(grep -E '^# fail ' "$e2e_log" | awk '{print $3}')
echo "e2e: ${pass:-0} passed, ${fail:-0} failed"
