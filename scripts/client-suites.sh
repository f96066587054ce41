#!/usr/bin/env bash
# The official clients' own test suites (socket.io-client's and engine.io-client's, from the
# socket.io monorepo's packages/) run unmodified against Switchboard's client-suite example.
#
#   scripts/client-suites.sh [--reference] [--no-build]
#
# The suites are not vendored: point SWITCHBOARD_CLIENT_SUITES at a copy of the monorepo's
# packages/ folder (it needs socket.io-client/ and engine.io-client/), or put them in
# ../shared/client-suites. Each package is copied to a work directory ($TMPDIR), its test
# dependencies installed from npm and the client compiled as its own `compile` script does (the
# tests import the package root, i.e. its build). Then mocha runs the suite's test files as its
# `test:node` script does, minus the `--require test/support/hooks.*` that would start the Node
# support server in-process (the example serves socket.io-client's suite on 3210 and
# engine.io-client's on 3000, as the support servers do), plus our root hook
# tests/e2e/tools/client-suites-hooks.cjs, which keeps a failed fake-timers test from breaking
# every later one. engine.io-client's test/webtransport.mjs (its own HTTP/3 server) is not run,
# and neither suite runs with --bail. The work directory (SWITCHBOARD_CLIENT_SUITES_WORK, default
# $TMPDIR/switchboard-client-suites) is reused while the copy and the dependencies are the same.
#
# --reference runs the same test files against the suites' own support servers instead (their
# hooks, with socket.io 4.8 / engine.io 6.6 from npm): the Node figure on the same machine.
# --no-build uses target/release/examples/client-suite as it is; SWITCHBOARD_CLIENT_SUITE_BIN
# names another build (nothing is built then).
#
# Prints `socket.io-client: P/T passed` and `engine.io-client: P/T passed`; exits non-zero when
# the suites are missing or cannot be installed, not when a test fails (the figures are the
# result; docs/conformance.md lists the known failures).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
reference=0
build=1
for arg in "$@"; do
  case "$arg" in
    --reference) reference=1 ;;
    --no-build) build=0 ;;
    *) echo "usage: $0 [--reference] [--no-build]" >&2; exit 2 ;;
  esac
done

suites="${SWITCHBOARD_CLIENT_SUITES:-$ROOT/../shared/client-suites}"
if [ ! -f "$suites/socket.io-client/test/support/server.ts" ] \
  || [ ! -f "$suites/engine.io-client/test/support/hooks.js" ]; then
  echo "client suites: not provided (set SWITCHBOARD_CLIENT_SUITES to the socket.io monorepo's packages/)" >&2
  exit 3
fi

for port in 3000 3210; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "error: port $port is in use; the client suites need it" >&2
    exit 1
  fi
done

work="${SWITCHBOARD_CLIENT_SUITES_WORK:-${TMPDIR:-/tmp}/switchboard-client-suites}"
mkdir -p "$work"

# The test-only dependencies, at the versions of the monorepo's root package.json (its
# devDependencies serve every package). The reference adds what the support servers load.
common=(mocha@^10.6.0 expect.js@^0.3.1 @sinonjs/fake-timers@^11.2.2)
sio_deps=(tsx@~4.20.6 typescript@^6.0.3 @types/node@^24.13.2 @types/mocha@^10.0.7
  @types/expect.js@^0.3.32 @types/debug@^4.1.12 has-cors@^1.1.0 text-blob-builder@0.0.1
  base64-arraybuffer@^1.0.2)
eio_deps=(typescript@^6.0.3 @types/node@^24.13.2 @types/mocha@^10.0.7 blob@^0.1.0)
ref_sio=(socket.io@~4.8.1)
ref_eio=(engine.io@~6.6.2 express@^4.19.2 cookie@~0.7.2 rollup@^2.79.1
  @rollup/plugin-node-resolve@^15.2.3 @rollup/plugin-commonjs@^26.0.1 @rollup/plugin-babel@^6.0.4
  @babel/core@^7.24.7 @babel/preset-env@^7.24.7 @babel/plugin-transform-object-assign@^7.24.7
  rollup-plugin-terser@^7.0.2)

# prepare PKG DEPS...: a fresh copy of the package with its dependencies and its build.
prepare() {
  local pkg=$1 dir="$work/$1"
  shift
  # Reused while the copy and the dependency list are the same.
  local stamp
  stamp="$(cd "$suites/$pkg" && find lib test -type f -exec md5sum {} + | sort | md5sum) $*"
  if [ -f "$dir/.prepared" ] && [ "$(cat "$dir/.prepared")" = "$stamp" ]; then
    return
  fi
  rm -rf "$dir"
  cp -r "$suites/$pkg" "$dir"
  rm -rf "$dir/build" "$dir/node_modules"
  (
    cd "$dir"
    npm install --no-save --no-audit --no-fund --loglevel=error "$@"
    npx tsc
    npx tsc -p tsconfig.esm.json
    bash ./postcompile.sh
    echo "$stamp" >.prepared
  ) </dev/null >"$work/$pkg-prepare.log" 2>&1 || {
    cat "$work/$pkg-prepare.log"
    echo "error: preparing $pkg failed" >&2
    exit 1
  }
}

if [ "$reference" = 1 ]; then
  prepare socket.io-client "${common[@]}" "${sio_deps[@]}" "${ref_sio[@]}"
  prepare engine.io-client "${common[@]}" "${eio_deps[@]}" "${ref_eio[@]}"
else
  prepare socket.io-client "${common[@]}" "${sio_deps[@]}"
  prepare engine.io-client "${common[@]}" "${eio_deps[@]}"
  bin="${SWITCHBOARD_CLIENT_SUITE_BIN:-$ROOT/target/release/examples/client-suite}"
  if [ "$build" = 1 ] && [ -z "${SWITCHBOARD_CLIENT_SUITE_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release -q -p switchboard-gateway --example client-suite)
  fi
  log="$work/client-suite.log"
  "$bin" >"$log" 2>&1 &
  server=$!
  trap 'kill "$server" 2>/dev/null || true' EXIT
  for _ in $(seq 100); do grep -q '^listening on http://127.0.0.1:3210' "$log" && break; sleep 0.1; done
  grep -q '^listening on http://127.0.0.1:3210' "$log" || { cat "$log"; echo "error: the client-suite example did not start" >&2; exit 1; }
fi

# run PKG MOCHA-ARGS...: the suite's mocha run, its summary as `PKG: passed/total passed`.
run() {
  local pkg=$1 out="$work/$1.log"
  shift
  (cd "$work/$pkg" && npx mocha --no-color --reporter spec "$@") </dev/null >"$out" 2>&1 || true
  local pass fail pending
  pass=$(grep -Eo '^ +[0-9]+ passing' "$out" | grep -Eo '[0-9]+' || echo 0)
  fail=$(grep -Eo '^ +[0-9]+ failing' "$out" | grep -Eo '[0-9]+' || echo 0)
  pending=$(grep -Eo '^ +[0-9]+ pending' "$out" | grep -Eo '[0-9]+' || echo 0)
  # The failures' titles, as mocha lists them after the summary (suite, …, test).
  sed -n '/^ *[0-9]* failing/,$p' "$out" | awk '
    /^ +[0-9]+\) / { title = $0; sub(/^ +/, "", title); grab = 1; next }
    grab && /^ +[^ ]/ && !/:$/ { line = $0; sub(/^ +/, "", line); title = title " > " line; next }
    grab && /:$/ { line = $0; sub(/^ +/, "", line); print "  failed: " title " > " line; grab = 0 }'
  [ "$pending" = 0 ] && pending=""
  echo "$pkg: $pass/$((pass + fail)) passed${pending:+ ($pending pending)} (log: $out)"
}

# Our root hook only isolates a failed fake-timers test from the rest (see the file).
isolate="$ROOT/tests/e2e/tools/client-suites-hooks.cjs"
if [ "$reference" = 1 ]; then
  run socket.io-client --import=tsx --require test/support/hooks.ts --require "$isolate" --exit test/index.ts
  run engine.io-client --require test/support/hooks.js --require "$isolate" --exit test/index.js
else
  run socket.io-client --import=tsx --require "$isolate" --exit test/index.ts
  run engine.io-client --require "$isolate" --exit test/index.js
  kill "$server" 2>/dev/null || true
  trap - EXIT
fi
