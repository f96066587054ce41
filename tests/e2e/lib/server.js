'use strict';
// Starts the binaries under test as child processes and stops them again.
//
// A server is started with port 0 and we read the port from the one line it prints once bound:
// `listening on http://127.0.0.1:<port>` (a gateway prints `operator listening on HOST:PORT`, its
// operator port with /metrics and /v1/state, before it). Every child is killed by the `stop()` the test calls
// in its `after` hook, and, as a last resort, when this process exits. Only processes started
// here are ever signalled.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..', '..', '..');
const TARGET = process.env.CARGO_TARGET_DIR
  ? path.resolve(REPO, process.env.CARGO_TARGET_DIR)
  : path.join(REPO, 'target');
const BUILD_HINT = 'run `cargo build --release --workspace --bins --examples` first (or `bash scripts/test.sh`)';
const START_TIMEOUT_MS = 20_000;
const LOG_LIMIT = 64 * 1024;

const children = new Set();

process.on('exit', () => {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => process.exit(130));
}

/** Path of the standalone gateway binary (override: SWITCHBOARD_GATEWAY_BIN). */
function gatewayBin() {
  return process.env.SWITCHBOARD_GATEWAY_BIN || path.join(TARGET, 'release', 'switchboard-gateway');
}

/** Path of the conformance example (override: SWITCHBOARD_CONFORMANCE_BIN). */
function conformanceBin() {
  return process.env.SWITCHBOARD_CONFORMANCE_BIN || path.join(TARGET, 'release', 'examples', 'conformance');
}

/**
 * Spawns `bin` with `args` and `env` added to ours, waits for its `listening on` line.
 * Resolves to { url, port, grpcAddr and operatorUrl (when printed), pid, stop(graceMs), logs(),
 * exited(), exitStatus() }.
 */
function start(name, bin, args, env) {
  if (!fs.existsSync(bin)) {
    return Promise.reject(new Error(`${name}: binary ${bin} not found: ${BUILD_HINT}`));
  }
  const child = spawn(bin, args, {
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let logs = '';
  const keep = (chunk) => {
    logs += chunk;
    if (logs.length > LOG_LIMIT) logs = logs.slice(-LOG_LIMIT);
    if (process.env.E2E_VERBOSE) process.stderr.write(`[${name}] ${chunk}`);
  };
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', keep);

  let exited = false;
  const exitedPromise = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      exited = true;
      children.delete(child);
      resolve({ code, signal });
    });
  });

  /** SIGTERM, then SIGKILL if it has not exited after `graceMs`; resolves once it exited. */
  const stop = async (graceMs = 3000) => {
    if (exited) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => {
      if (!exited) child.kill('SIGKILL');
    }, graceMs);
    await exitedPromise;
    clearTimeout(timer);
  };

  return new Promise((resolve, reject) => {
    let stdout = '';
    let settled = false;
    const fail = (why) => {
      if (settled) return;
      settled = true;
      stop().finally(() => reject(new Error(`${name} (${bin}): ${why}\n--- its output ---\n${stdout}${logs}`)));
    };
    const timer = setTimeout(() => fail(`no "listening on" line within ${START_TIMEOUT_MS} ms`), START_TIMEOUT_MS);
    child.once('error', (err) => {
      clearTimeout(timer);
      fail(`could not start: ${err.message}`);
    });
    exitedPromise.then(({ code, signal }) => {
      clearTimeout(timer);
      fail(`exited before listening (code ${code}, signal ${signal})`);
    });
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      if (settled) {
        keep(chunk);
        return;
      }
      stdout += chunk;
      const m = /listening on (http:\/\/127\.0\.0\.1:(\d+))/.exec(stdout);
      if (!m) return;
      settled = true;
      clearTimeout(timer);
      resolve({
        name,
        url: m[1],
        port: Number(m[2]),
        // `grpc on HOST:PORT`, printed before `listening on` by binaries serving the admin API.
        grpcAddr: (/grpc on (127\.0\.0\.1:\d+)/.exec(stdout) || [])[1],
        // `operator listening on HOST:PORT`, printed before `listening on` by the gateway.
        operatorUrl: operatorUrlOf(stdout),
        pid: child.pid,
        stop,
        logs: () => logs,
        exited: () => exited,
        /** Resolves to { code, signal } once the process exited. */
        exitStatus: () => exitedPromise,
      });
    });
  });
}

/** The operator URL a gateway printed (`operator listening on 127.0.0.1:PORT`), or undefined. */
function operatorUrlOf(stdout) {
  const m = /^operator listening on (127\.0\.0\.1:\d+)$/m.exec(stdout);
  return m ? `http://${m[1]}` : undefined;
}

/**
 * The operator port of every gateway a test starts: a free one (the default, 9464, would be
 * shared by every gateway on the machine).
 */
const GATEWAY_ENV = { SWITCHBOARD_OPERATOR_PORT: '0' };

/**
 * The conformance example (or, with E2E_REFERENCE=1, the Node reference configured the same way).
 */
function startConformance(env = {}) {
  if (process.env.E2E_REFERENCE) {
    return start('reference', process.execPath, [path.join(__dirname, '..', 'reference', 'conformance.js')], {
      PORT: '0',
      ...env,
    });
  }
  return start('conformance', conformanceBin(), [], { PORT: '0', ...env });
}

/** The standalone gateway with the given config file (absolute or relative to fixtures/). */
function startGateway({ config, env = {} } = {}) {
  const extra = { SWITCHBOARD_PORT: '0', PORT: '0', ...GATEWAY_ENV, ...env };
  if (config) extra.SWITCHBOARD_CONFIG = path.resolve(__dirname, '..', 'fixtures', config);
  return start('gateway', gatewayBin(), [], extra);
}

module.exports = { start, startConformance, startGateway, gatewayBin, conformanceBin, GATEWAY_ENV, REPO };
