'use strict';
// Multi-process clusters for the end-to-end tests: a nats-server, the broker and N gateways,
// all on 127.0.0.1 with free ports, a fresh subject prefix per cluster and test-friendly timings
// (heartbeat 200 ms, lease 1200 ms). Plus `waitFor`, to wait for convergence instead of
// sleeping, and `brokerTruth`, to compare the broker's view with what the clients know.
//
// With SWITCHBOARD_E2E_NATS_NODES=3 (or `startCluster({ natsNodes: 3 })`) the bus is three
// nats-servers joined by routes (`startNatsCluster`), the processes spread over them.
//
// A cluster's nats-server runs with the shipped permissions (deploy/nats/nats-conf.sh, for the
// cluster's prefix and gateways gw1..gw9) and fresh random passwords: the broker connects as
// `broker`, gateway gwN as `gateway-gwN`, lib/worker.js as `worker`, the emitter packages'
// tests as `emitter`, so every cluster test runs
// least-privileged. The tests' own probe (lib/bus.js `open`) is the user `e2e`, allowed
// everything: it plays a broker or a gateway to inject what they would send.
//
// The broker and the gateways are started with server.js's `start` (its spawning, logging,
// `listening on` parsing and SIGKILL-on-exit). nats-server prints no such line: it is spawned
// here, found ready through the ports file it writes, and tracked the same way. Only processes
// started here (or by server.js) are ever signalled.

const { execFileSync, spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const util = require('node:util');
const { start, gatewayBin, GATEWAY_ENV, REPO } = require('./server');
const { registerAuth, credentials } = require('./bus');

const TARGET = process.env.CARGO_TARGET_DIR ? path.resolve(REPO, process.env.CARGO_TARGET_DIR) : path.join(REPO, 'target');
const START_TIMEOUT_MS = 20_000;
const STOP_GRACE_MS = 5000;
const LOG_LIMIT = 64 * 1024;
/**
 * Test-friendly timings, overridable through `env`. A stopped gateway closes its sessions at once
 * (no drain window) unless a test asks for one.
 */
const TIMINGS = { SWITCHBOARD_HEARTBEAT_MS: '200', SWITCHBOARD_LEASE_MS: '1200', SWITCHBOARD_DRAIN_MS: '0' };
const NATS_MISSING = 'nats-server not found: apt-get install nats-server (scripts/test.sh installs it)';

const natsChildren = new Set();
const natsDirs = new Set();
process.on('exit', () => {
  for (const child of natsChildren) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  for (const dir of natsDirs) {
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      // best effort
    }
  }
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Path of the broker binary (override: SWITCHBOARD_BROKER_BIN). */
function brokerBin() {
  return process.env.SWITCHBOARD_BROKER_BIN || path.join(TARGET, 'release', 'switchboard-broker');
}

/** Path of the operators' CLI, switchboard-admin (override: SWITCHBOARD_ADMIN_BIN). */
function adminBin() {
  return process.env.SWITCHBOARD_ADMIN_BIN || path.join(TARGET, 'release', 'switchboard-admin');
}

/** Path of nats-server on PATH (or Debian's /usr/sbin, often not on a user's PATH), or null. */
function natsServerBin() {
  const dirs = (process.env.PATH || '').split(path.delimiter).filter(Boolean);
  for (const dir of [...dirs, '/usr/sbin', '/usr/local/sbin']) {
    const candidate = path.join(dir, 'nats-server');
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

/** A fresh subject prefix: `t` + 8 hex digits. */
function uniquePrefix() {
  return `t${crypto.randomBytes(4).toString('hex')}`;
}

/**
 * Polls the (async) predicate `fn` every `intervalMs` until it returns something truthy, and
 * resolves to that. Throws from `fn` count as "not yet". Rejects after `timeoutMs` with a message
 * naming `what` and the last value (or error) seen.
 */
async function waitFor(fn, { timeoutMs = 5000, intervalMs = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  const pending = Symbol('pending');
  let last = '(never evaluated)';
  for (;;) {
    let timer;
    try {
      // an evaluation still running at the deadline does not hold the wait up
      const value = await Promise.race([
        Promise.resolve().then(fn),
        new Promise((resolve) => {
          timer = setTimeout(() => resolve(pending), Math.max(deadline - Date.now(), 0));
        }),
      ]);
      if (value === pending) {
        if (last === '(never evaluated)') last = new Error(`the first evaluation was still running after ${timeoutMs} ms`);
      } else if (value) {
        return value;
      } else {
        last = value;
      }
    } catch (err) {
      last = err;
    } finally {
      clearTimeout(timer);
    }
    const left = deadline - Date.now();
    if (left <= 0) {
      const seen = last instanceof Error ? `error: ${last.message}` : util.inspect(last, { depth: 6, breakLength: Infinity });
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last value seen: ${seen}`);
    }
    await sleep(Math.min(intervalMs, left));
  }
}

/**
 * A /v1/state JSON as `{ socketId: [room, ...] }`, socket ids and rooms sorted, to deepStrictEqual
 * against what the clients know. `ns` keeps only that namespace's sockets. Throws on a malformed
 * state or on a socket id listed twice (which the map would otherwise hide).
 */
function brokerTruth(state, { ns } = {}) {
  if (!state || !Array.isArray(state.sockets)) {
    throw new Error(`not a /v1/state document (no "sockets" array): ${JSON.stringify(state)}`);
  }
  const rooms = new Map();
  for (const socket of state.sockets) {
    if (ns !== undefined && socket.ns !== ns) continue;
    if (rooms.has(socket.id)) throw new Error(`socket ${socket.id} is listed twice in the state`);
    rooms.set(socket.id, [...(socket.rooms || [])].sort());
  }
  return Object.fromEntries([...rooms.keys()].sort().map((id) => [id, rooms.get(id)]));
}

/** Resolves once a TCP connection to host:port succeeds (and closes it); rejects otherwise. */
function tcpConnect(port, host = '127.0.0.1', ms = 2000) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host });
    socket.setTimeout(ms, () => socket.destroy(new Error(`connect to ${host}:${port} timed out`)));
    socket.once('connect', () => {
      socket.destroy();
      resolve();
    });
    socket.once('error', reject);
  });
}

/**
 * A TCP port free on 127.0.0.1 a moment ago (bound, read, released): for a port that must be
 * known before the process that listens on it starts (nats-server's route ports).
 */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Resolves once the server.js-started process `handle` has exited (polls its `exited()`). */
async function exitOf(handle) {
  while (!handle.exited()) await sleep(10);
}

/** SIGKILL (kill -9) a server.js-started process and wait for it to be gone. */
async function killHandle(handle) {
  if (handle.exited()) return;
  try {
    process.kill(handle.pid, 'SIGKILL');
  } catch {
    // exited meanwhile
  }
  await exitOf(handle);
}

/** SIGTERM, wait for the exit, SIGKILL after `graceMs`. */
async function terminateHandle(handle, graceMs = STOP_GRACE_MS) {
  if (handle.exited()) return;
  try {
    process.kill(handle.pid, 'SIGTERM');
  } catch {
    return;
  }
  const timer = setTimeout(() => {
    if (!handle.exited()) process.kill(handle.pid, 'SIGKILL');
  }, graceMs);
  await exitOf(handle);
  clearTimeout(timer);
}

/** GET `url` and parse the JSON body; throws on a non-2xx status. */
async function getJson(url) {
  const res = await fetch(url);
  const body = await res.text();
  if (!res.ok) throw new Error(`GET ${url}: ${res.status} ${body}`);
  return JSON.parse(body);
}

/** GET `url` and return the body text; throws on a non-2xx status. */
async function getText(url) {
  const res = await fetch(url);
  const body = await res.text();
  if (!res.ok) throw new Error(`GET ${url}: ${res.status} ${body}`);
  return body;
}

/** Gateway nodes gw1..gwN a cluster's nats-server has users for: at least 9 (tests add some). */
const authNodes = (gateways) => Array.from({ length: Math.max(gateways, 9) }, (_, i) => `gw${i + 1}`);

/** SWITCHBOARD_NATS_USER / _PASSWORD of `role` at `natsUrl` (none when it runs without auth). */
function natsLogin(natsUrl, role) {
  const { user, pass } = credentials(natsUrl, role);
  return user ? { SWITCHBOARD_NATS_USER: user, SWITCHBOARD_NATS_PASSWORD: pass } : {};
}

/** A password nats-server reads as a string from its environment (not a number). */
const password = () => `sb${crypto.randomBytes(16).toString('hex')}`;

/**
 * The shipped permissions (deploy/nats/nats-conf.sh) for `prefix` and `nodes`, plus the tests'
 * probe user `e2e` allowed everything, written to `dir`. Returns { file, env (the passwords
 * nats-server reads), users: { role: { user, pass } } } with roles broker, worker, emitter, e2e and
 * gateway-<node>.
 */
function permissions(dir, { prefix, nodes }) {
  const script = path.join(REPO, 'deploy', 'nats', 'nats-conf.sh');
  const shipped = execFileSync('bash', [script, prefix, ...nodes], { encoding: 'utf8' });
  const users = { e2e: { user: 'e2e', pass: password() } };
  const env = {};
  for (const [role, variable] of [
    ['broker', 'NATS_BROKER_PASSWORD'],
    ['worker', 'NATS_WORKER_PASSWORD'],
    ['emitter', 'NATS_EMITTER_PASSWORD'],
    ...nodes.map((node) => [`gateway-${node}`, `NATS_PASSWORD_${node.toUpperCase()}`]),
  ]) {
    users[role] = { user: role, pass: password() };
    env[variable] = users[role].pass;
  }
  const probe = `    { user: "e2e", password: "${users.e2e.pass}" }\n  ]\n}\n`;
  const end = shipped.lastIndexOf('  ]\n}');
  if (end < 0) throw new Error(`nats-conf.sh: unexpected output:\n${shipped}`);
  const file = path.join(dir, 'auth.conf');
  fs.writeFileSync(file, shipped.slice(0, end) + probe);
  return { file, env, users };
}

/**
 * A nats-server with JetStream on 127.0.0.1 (a free port, or `port`). With `auth: { prefix,
 * nodes }` it runs with the shipped permissions for them (see `permissions`) and registers its
 * users with lib/bus.js. Resolves to { url, port, pid, users, stop(), kill(), restart(), logs() };
 * `pid` follows restarts.
 *
 * `member` (used by `startNatsCluster`) makes it one node of a cluster: { name, dir, perms,
 * clusterPort, config(clusterPort) → the text of its configuration file (server name, cluster
 * block, the permissions included) }; its handle then also has `clusterPort`, and a restart
 * keeps both ports.
 */
async function startNats({ port, auth, member } = {}) {
  const bin = natsServerBin();
  if (!bin) throw new Error(NATS_MISSING);
  const dir = member ? member.dir : fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-nats-'));
  if (member) fs.mkdirSync(dir, { recursive: true });
  natsDirs.add(dir);
  const perms = member ? member.perms : auth ? permissions(dir, auth) : null;
  const label = member ? `nats ${member.name}` : 'nats';
  let logs = '';
  let current = null; // { child, exited, exitedPromise }
  let clusterPort = member ? member.clusterPort : null;

  const keep = (chunk) => {
    logs += chunk;
    if (logs.length > LOG_LIMIT) logs = logs.slice(-LOG_LIMIT);
    if (process.env.E2E_VERBOSE) process.stderr.write(`[${label}] ${chunk}`);
  };

  /** One nats-server process; resolves to its client port once it accepts connections. */
  const spawnOnce = (wantPort) =>
    new Promise((resolve, reject) => {
      fs.mkdirSync(path.join(dir, 'js'), { recursive: true });
      const args = ['-a', '127.0.0.1', '-p', String(wantPort ?? -1), '--ports_file_dir', dir, '-js', '-sd', path.join(dir, 'js')];
      if (member) {
        const file = path.join(dir, 'node.conf');
        fs.writeFileSync(file, member.config(clusterPort ?? -1));
        args.push('-c', file);
      } else if (perms) {
        args.push('-c', perms.file);
      }
      const env = { ...process.env, ...(perms ? perms.env : {}) };
      const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
      natsChildren.add(child);
      const proc = { child, exited: false };
      proc.exitedPromise = new Promise((done) => {
        child.once('exit', (code, signal) => {
          proc.exited = true;
          natsChildren.delete(child);
          done({ code, signal });
        });
      });
      current = proc;
      for (const stream of [child.stdout, child.stderr]) {
        stream.setEncoding('utf8');
        stream.on('data', keep);
      }
      let settled = false;
      const fail = (why) => {
        if (settled) return;
        settled = true;
        if (!proc.exited) child.kill('SIGKILL');
        reject(new Error(`nats-server (${bin} ${args.join(' ')}): ${why}\n--- its output ---\n${logs}`));
      };
      child.once('error', (err) => fail(`could not start: ${err.message}`));
      proc.exitedPromise.then(({ code, signal }) => fail(`exited before ready (code ${code}, signal ${signal})`));
      const deadline = Date.now() + START_TIMEOUT_MS;
      const portsFile = () => path.join(dir, `nats-server_${child.pid}.ports`);
      (async () => {
        while (!settled) {
          if (Date.now() > deadline) return fail(`no ports file within ${START_TIMEOUT_MS} ms`);
          let ports = null;
          try {
            ports = JSON.parse(fs.readFileSync(portsFile(), 'utf8'));
          } catch {
            // not written (completely) yet
          }
          const url = ports && (ports.nats || []).find((u) => /^nats:\/\/127\.0\.0\.1:\d+$/.test(u));
          if (url) {
            const got = Number(/:(\d+)$/.exec(url)[1]);
            try {
              await tcpConnect(got);
            } catch {
              await sleep(25);
              continue;
            }
            if (settled) return undefined;
            settled = true;
            return resolve(got);
          }
          await sleep(25);
        }
        return undefined;
      })();
    });

  /** SIGTERM, wait for the exit, SIGKILL after 5 s. */
  const halt = async () => {
    const proc = current;
    if (!proc || proc.exited) return;
    proc.child.kill('SIGTERM');
    const timer = setTimeout(() => {
      if (!proc.exited) proc.child.kill('SIGKILL');
    }, STOP_GRACE_MS);
    await proc.exitedPromise;
    clearTimeout(timer);
  };

  /** Starts on `wantPort`, retrying for a while if the port is not free yet (a restart). */
  const launch = async (wantPort) => {
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      try {
        return await spawnOnce(wantPort);
      } catch (err) {
        const busy = wantPort != null && /address already in use/i.test(err.message);
        if (!busy || Date.now() > deadline) throw err;
        await sleep(100);
      }
    }
  };

  const got = await launch(port);
  if (perms) registerAuth(`nats://127.0.0.1:${got}`, perms.users);
  const nats = {
    url: `nats://127.0.0.1:${got}`,
    port: got,
    name: member ? member.name : 'nats',
    get clusterPort() {
      return clusterPort;
    },
    users: perms ? perms.users : null,
    get pid() {
      return current.child.pid;
    },
    dir,
    logs: () => logs,
    exited: () => !current || current.exited,
    /** SIGTERM (SIGKILL after 5 s), wait for the exit, remove its data directory. */
    async stop() {
      await halt();
      fs.rmSync(dir, { recursive: true, force: true });
      natsDirs.delete(dir);
    },
    /** SIGKILL (kill -9) and wait for the exit; the data directory stays (for a restart). */
    async kill() {
      const proc = current;
      if (!proc || proc.exited) return;
      proc.child.kill('SIGKILL');
      await proc.exitedPromise;
    },
    /** Stops it, then starts it again on the same port; resolves once it accepts connections. */
    async restart() {
      await halt();
      natsDirs.add(dir);
      await launch(got);
      return nats;
    },
  };
  return nats;
}

/** SWITCHBOARD_E2E_NATS_NODES: how many nats-servers a cluster of the tests runs on (1 or 3). */
function natsNodesFromEnv() {
  const raw = process.env.SWITCHBOARD_E2E_NATS_NODES;
  if (raw === undefined || raw === '') return 1;
  const n = Number(raw);
  if (n !== 1 && n !== 3) throw new Error(`SWITCHBOARD_E2E_NATS_NODES=${raw}: must be 1 or 3`);
  return n;
}

/**
 * `nodes` nats-servers (n1..nN) joined by routes on loopback into one NATS cluster with clustered
 * JetStream, every node with the same shipped permissions (`auth`, as `startNats`) and routes
 * authenticated by a route user of their own. Resolves once every node has a route to every other
 * and they agree on a JetStream meta leader, to a handle shaped like `startNats`'s, whose
 * `stop()`, `kill()` and `restart()` act on every node (a whole-bus outage), plus:
 *   nodes[i]      each node's own handle (`kill()` one node: the cluster loses one server);
 *   urls          each node's client URL;
 *   urlFor(i)     the comma-separated list a process placed on node i % N is given: its own node
 *                 first, then the others in order (Switchboard tries them in that order);
 *   url, port     node 1's, for what takes one URL (nats.js, the probes): those clients learn the
 *                 other nodes from the server's INFO and fail over to them;
 *   monitor(i, p) node i's monitoring endpoint p, parsed; jsz(i), routez(i), streams(i) (the
 *                 JetStream streams it holds a copy of), clients(i) (its clients' names).
 * Credentials are registered with lib/bus.js under every one of these URLs and lists.
 */
async function startNatsCluster({ nodes = 3, auth } = {}) {
  if (!natsServerBin()) throw new Error(NATS_MISSING);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-natscluster-'));
  natsDirs.add(dir);
  const perms = auth ? permissions(dir, auth) : null;
  const authText = perms ? fs.readFileSync(perms.file, 'utf8') : '';
  const routePass = password();
  const names = Array.from({ length: nodes }, (_, i) => `n${i + 1}`);
  // Clustered JetStream wants every node's routes configured, so the route ports are chosen
  // before any node starts (each node's list names itself too; nats-server skips that one).
  const clusterPorts = await Promise.all(names.map(() => freePort()));
  const routes = clusterPorts.map((p) => `"nats-route://route:${routePass}@127.0.0.1:${p}"`).join(', ');
  const handles = [];
  const member = (name, i) => ({
    name,
    dir: path.join(dir, name),
    perms,
    clusterPort: clusterPorts[i],
    config: (clusterPort) => {
      // The auth block is copied beside the node's file: nats-server resolves `include` relative
      // to the including file.
      if (perms) fs.writeFileSync(path.join(dir, name, 'auth.conf'), authText);
      return [
        `server_name: "${name}"`,
        'http: "127.0.0.1:-1"',
        'cluster {',
        '  name: "switchboard-e2e"',
        `  listen: "127.0.0.1:${clusterPort}"`,
        `  authorization { user: "route", password: "${routePass}" }`,
        `  routes: [${routes}]`,
        '}',
        perms ? 'include ./auth.conf' : '',
        '',
      ].join('\n');
    },
  });
  const stopAll = () => Promise.allSettled(handles.map((h) => h.stop()));
  try {
    const all = await Promise.allSettled(names.map((name, i) => startNats({ member: member(name, i) })));
    for (const r of all) if (r.status === 'fulfilled') handles.push(r.value);
    const failed = all.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  } catch (err) {
    await stopAll();
    fs.rmSync(dir, { recursive: true, force: true });
    natsDirs.delete(dir);
    throw err;
  }
  const urls = handles.map((h) => h.url);
  const urlFor = (i) => {
    const k = ((i % nodes) + nodes) % nodes;
    return [...urls.slice(k), ...urls.slice(0, k)].join(',');
  };
  if (perms) for (let i = 0; i < nodes; i++) registerAuth(urlFor(i), perms.users);
  const monitor = (i) => {
    const ports = JSON.parse(fs.readFileSync(path.join(handles[i].dir, `nats-server_${handles[i].pid}.ports`), 'utf8'));
    const http = (ports.monitoring || []).find((u) => u.startsWith('http://'));
    if (!http) throw new Error(`${names[i]}: no monitoring port in its ports file`);
    return http;
  };
  const cluster = {
    get url() {
      return urls[0];
    },
    get port() {
      return handles[0].port;
    },
    get pid() {
      return handles[0].pid;
    },
    users: perms ? perms.users : null,
    dir,
    nodes: handles,
    urls,
    urlFor,
    logs: () => handles.map((h) => `--- ${h.name} ---\n${h.logs()}`).join('\n'),
    exited: () => handles.every((h) => h.exited()),
    /** GET node i's monitoring endpoint `what` (e.g. `/connz`, `/jsz?streams=true`), parsed. */
    monitor: (i, what) => getJson(`${monitor(i)}${what}`),
    jsz: (i) => getJson(`${monitor(i)}/jsz`),
    routez: (i) => getJson(`${monitor(i)}/routez`),
    /** The JetStream streams node i holds a copy of: /jsz's stream_detail (config, cluster, state). */
    async streams(i) {
      const doc = await getJson(`${monitor(i)}/jsz?accounts=true&streams=true&config=true`);
      return (doc.account_details || []).flatMap((a) => a.stream_detail || []);
    },
    /** The names of the clients connected to node i (/connz). */
    async clients(i) {
      const doc = await getJson(`${monitor(i)}/connz?limit=1024`);
      return (doc.connections || []).map((c) => c.name || '');
    },
    /** Resolves once every running node routes to every other and all name one meta leader. */
    async formed({ timeoutMs = 30_000 } = {}) {
      const up = handles.map((h, i) => [h, i]).filter(([h]) => !h.exited());
      await waitFor(
        async () => {
          const leaders = new Set();
          for (const [, i] of up) {
            const routez = await cluster.routez(i);
            const peers = new Set((routez.routes || []).map((r) => r.remote_id));
            if (peers.size < up.length - 1) return false;
            const jsz = await cluster.jsz(i);
            if (!jsz.meta_cluster || !jsz.meta_cluster.leader) return false;
            leaders.add(jsz.meta_cluster.leader);
          }
          return leaders.size === 1;
        },
        { timeoutMs, intervalMs: 100, what: `a ${up.length}-node NATS cluster with one JetStream meta leader` },
      );
      return cluster;
    },
    async stop() {
      await stopAll();
      fs.rmSync(dir, { recursive: true, force: true });
      natsDirs.delete(dir);
    },
    async kill() {
      await Promise.all(handles.map((h) => h.kill()));
    },
    async restart() {
      await Promise.all(handles.map((h) => h.restart()));
      return cluster;
    },
  };
  try {
    await cluster.formed();
  } catch (err) {
    await cluster.stop();
    throw new Error(`${err.message}\n${cluster.logs()}`);
  }
  return cluster;
}

/**
 * The broker, connected to `natsUrl`. Resolves to
 * { url, port, pid, stop(), kill(), logs(), exited(), state() }.
 */
async function startBroker({ natsUrl, prefix, env = {} } = {}) {
  if (!natsUrl) throw new Error('startBroker: natsUrl is required');
  const handle = await start('broker', brokerBin(), [], {
    SWITCHBOARD_BROKER_HOST: '127.0.0.1',
    SWITCHBOARD_BROKER_HTTP_PORT: '0',
    ...natsLogin(natsUrl, 'broker'),
    ...TIMINGS,
    ...(prefix ? { SWITCHBOARD_SUBJECT_PREFIX: prefix } : {}),
    ...env,
    SWITCHBOARD_NATS_URL: natsUrl,
  });
  return {
    ...handle,
    stop: () => terminateHandle(handle, STOP_GRACE_MS),
    kill: () => killHandle(handle),
    state: () => getJson(`${handle.url}/v1/state`),
  };
}

/**
 * A gateway: in cluster mode with `natsUrl`, standalone (embedded broker) without. `config` is a
 * TOML file, absolute or relative to fixtures/. Resolves to server.js's
 * { url, port, operatorUrl, pid, stop(), logs(), exited() } plus nodeId, kill(), ready()
 * (GET /ready → status), metrics() (GET /metrics on the operator port, text) and state()
 * (GET /v1/state on the operator port, parsed; the standalone gateway serves it), once /ready
 * answers 200. The operator port is a free one, read from the gateway's `operator listening on`.
 */
async function startGateway({ natsUrl, nodeId = 'gw1', prefix, config, env = {} } = {}) {
  const extra = {
    SWITCHBOARD_PORT: '0',
    PORT: '0',
    SWITCHBOARD_HOST: '127.0.0.1',
    SWITCHBOARD_NODE_ID: nodeId,
    ...GATEWAY_ENV,
    ...(natsUrl ? natsLogin(natsUrl, `gateway-${nodeId}`) : {}),
    ...TIMINGS,
    ...(prefix ? { SWITCHBOARD_SUBJECT_PREFIX: prefix } : {}),
    ...(natsUrl ? { SWITCHBOARD_NATS_URL: natsUrl } : {}),
    ...env,
  };
  if (config) extra.SWITCHBOARD_CONFIG = path.resolve(__dirname, '..', 'fixtures', config);
  // Standalone means no NATS, whatever our own environment says.
  const childEnv = natsUrl || env.SWITCHBOARD_NATS_URL ? extra : { ...extra, SWITCHBOARD_NATS_URL: undefined };
  const handle = await start(`gateway ${nodeId}`, gatewayBin(), [], childEnv);
  const gw = {
    ...handle,
    nodeId,
    kill: () => killHandle(handle),
    ready: async () => (await fetch(`${handle.url}/ready`)).status,
    state: () => getJson(`${handle.operatorUrl}/v1/state`),
    metrics: () => getText(`${handle.operatorUrl}/metrics`),
  };
  // Listening is not ready: in cluster mode the NATS link comes up in the background, and until
  // it does /ready answers 503. A started gateway is a ready one.
  try {
    await waitFor(async () => (await gw.ready()) === 200, { timeoutMs: 10_000, what: `gateway ${nodeId} /ready 200` });
  } catch (err) {
    await handle.stop().catch(() => {});
    throw err;
  }
  return gw;
}

/**
 * nats, the broker, then gateways gw1..gwN in parallel, all with a fresh prefix. `env` goes to
 * the broker and every gateway (it can override the timings); `gatewayEnv(broker)`, when given,
 * adds what the gateways need to know of the started broker (e.g. its gRPC address). Resolves to
 * { nats, broker, gateways, prefix, stop() }; if any part fails to start, what did start is
 * stopped and the error is rethrown.
 *
 * `natsNodes` (default: SWITCHBOARD_E2E_NATS_NODES, else 1) = 3 runs the bus on a 3-node NATS
 * cluster (`startNatsCluster`): gateway gwK is given the node list starting at node K (gw1 on
 * n1, gw2 on n2, gw3 on n3, gw4 on n1 …), the broker the list starting at n2, and every
 * JetStream stream and bucket they make is R3 (SWITCHBOARD_NATS_REPLICAS=3; `env` may override).
 * `nats` is then the cluster's handle; processes a test adds with `nats.url` reach n1 first.
 */
async function startCluster({ gateways = 3, config, env = {}, gatewayEnv = () => ({}), natsNodes = natsNodesFromEnv() } = {}) {
  const prefix = uniquePrefix();
  const started = [];
  const stopAll = async () => {
    // gateways first, then the broker, then NATS
    const gws = started.filter((p) => p.role === 'gateway');
    await Promise.allSettled(gws.map((p) => p.handle.stop()));
    for (const role of ['broker', 'nats']) {
      for (const p of started.filter((q) => q.role === role)) await p.handle.stop().catch(() => {});
    }
  };
  try {
    const auth = { prefix, nodes: authNodes(gateways) };
    const clustered = natsNodes > 1;
    const nats = clustered ? await startNatsCluster({ nodes: natsNodes, auth }) : await startNats({ auth });
    started.push({ role: 'nats', handle: nats });
    const urlFor = (i) => (clustered ? nats.urlFor(i) : nats.url);
    const procEnv = clustered ? { SWITCHBOARD_NATS_REPLICAS: String(Math.min(natsNodes, 3)), ...env } : env;
    const broker = await startBroker({ natsUrl: urlFor(1), prefix, env: procEnv });
    started.push({ role: 'broker', handle: broker });
    const gwEnv = { ...procEnv, ...gatewayEnv(broker) };
    const results = await Promise.allSettled(
      Array.from({ length: gateways }, (_, i) => startGateway({ natsUrl: urlFor(i), nodeId: `gw${i + 1}`, prefix, config, env: gwEnv })),
    );
    for (const r of results) if (r.status === 'fulfilled') started.push({ role: 'gateway', handle: r.value });
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    return { nats, broker, gateways: results.map((r) => r.value), prefix, stop: stopAll };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

module.exports = {
  startNats,
  startNatsCluster,
  natsNodesFromEnv,
  startBroker,
  startGateway,
  startCluster,
  waitFor,
  brokerTruth,
  tcpConnect,
  uniquePrefix,
  brokerBin,
  adminBin,
  natsServerBin,
  TIMINGS,
};
