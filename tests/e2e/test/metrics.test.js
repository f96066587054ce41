'use strict';
// `/metrics` on both tiers after scripted scenarios: every named series is looked up with its
// labels and compared with the exact value the scenario implies (counts, gauges, histogram
// _count and _sum). Values that other traffic could also move are compared as differences
// between two scrapes around one action.
//
// 1. A standalone gateway (embedded broker, gRPC on) with official socket.io-clients over
//    WebSocket and long-polling on three namespaces, two refused by the token check, an
//    acknowledged event on each transport, a broadcast, disconnects, and gRPC calls with a good
//    and a bad token.
// 2. A cluster (nats-server, broker, two gateways, a worker): the broker's directory gauges equal
//    its state, and the gateways' NATS series (publishes, request latency of forward / reserve /
//    barrier, a forward timeout) are there with their counts.
// 3. The Grafana dashboard and the metrics table of docs/operations.md name exactly the series the
//    binaries define.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { io } = require('socket.io-client');
const { startGateway, startCluster, waitFor } = require('../lib/cluster');
const { REPO } = require('../lib/server');
const { Members, converged, CONFIG, ENV, NS, OK } = require('../lib/members');
const { startWorker } = require('../lib/worker');
const { adminClient, status } = require('../lib/admin');
const { connected, connectError, hs256, now, once, within } = require('../lib/client');

const TOKEN = 'e2e-metrics-admin-token-0123456789';
const SECRET = 'e2e-metrics-secret-0123456789abcdef0123';

// Long heartbeats: no ping or pong may fall inside a counted exchange.
const STANDALONE_TOML = `
[server]
host = "127.0.0.1"
port = 0
path = "/socket.io/"
ping_interval_ms = 120000
ping_timeout_ms = 60000
transports = ["polling", "websocket"]

[[namespace]]
name = "/"

[[namespace.event]]
name = "echo"
action = "echo"

[[namespace]]
name = "/chat"

[[namespace.event]]
name = "join"
action = "join"
room_arg = 0
allow = ["*"]

[[namespace.event]]
name = "shout"
action = "broadcast"
include_sender = false

[[namespace]]
name = "/secure"
auth = "required"

[namespace.jwt]
algorithm = "HS256"
secret_env = "SWITCHBOARD_JWT_SECRET"
issuer = "switchboard-e2e"
audience = "switchboard"
`;

/**
 * Parses Prometheus text format into { name → [{ labels, value }] } (comments skipped). Label
 * values here are simple: no escaped quotes.
 */
function parse(text) {
  const series = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a Prometheus sample line: ${JSON.stringify(line)}`);
    const labels = {};
    for (const pair of (m[2] || '').split(/,(?=[a-zA-Z_]+=")/).filter(Boolean)) {
      const eq = pair.indexOf('=');
      labels[pair.slice(0, eq)] = JSON.parse(pair.slice(eq + 1));
    }
    if (!series.has(m[1])) series.set(m[1], []);
    series.get(m[1]).push({ labels, value: Number(m[3]) });
  }
  return series;
}

/** Scrapes `url`/metrics; resolves to a lookup `(name, labels = {}) → value or undefined`. */
async function scrape(url) {
  const res = await fetch(`${url}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
  const series = parse(await res.text());
  const get = (name, labels = {}) => {
    const want = Object.entries(labels);
    const hit = (series.get(name) || []).find(
      (s) => Object.keys(s.labels).length === want.length && want.every(([k, v]) => s.labels[k] === v),
    );
    return hit ? hit.value : undefined;
  };
  get.series = series;
  return get;
}

/** Asserts that `name{labels}` exists with exactly `value`. */
function expect(get, name, labels, value) {
  const got = get(name, labels);
  assert.notEqual(got, undefined, `${name}${JSON.stringify(labels)} is missing`);
  assert.equal(got, value, `${name}${JSON.stringify(labels)}`);
}

/** A series that may not have been recorded yet counts as 0. */
const count = (get, name, labels = {}) => get(name, labels) || 0;

/** Waits until `name{labels}` on `url` equals `value` (gauges follow closes asynchronously). */
async function settles(url, name, labels, value) {
  let last;
  try {
    await waitFor(
      async () => {
        last = (await scrape(url))(name, labels);
        return last === value;
      },
      { timeoutMs: 8000, what: `${name}${JSON.stringify(labels)} = ${value}` },
    );
  } catch (err) {
    assert.fail(`${err.message}; last value ${last}`);
  }
}

function jwt(sub, secret = SECRET) {
  return hs256({ sub, iss: 'switchboard-e2e', aud: 'switchboard', iat: now(), exp: now() + 600 }, secret);
}

/** A socket.io-client connection, not awaited. */
function client(url, nsp, transport, auth) {
  return io(`${url}${nsp}`, {
    transports: [transport],
    forceNew: true,
    reconnection: false,
    timeout: 5000,
    ...(auth ? { auth } : {}),
  });
}

/** Emits `event` with `args` and resolves to the ack's arguments. */
function ask(socket, event, ...args) {
  return within(new Promise((resolve) => socket.emit(event, ...args, (...reply) => resolve(reply))), `ack of ${event}`);
}

describe('/metrics of a standalone gateway after a scripted scenario', () => {
  let dir;
  let gw;
  let admin;
  const sockets = [];

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-metrics-'));
    const config = path.join(dir, 'gateway.toml');
    fs.writeFileSync(config, STANDALONE_TOML);
    gw = await startGateway({
      config,
      env: { SWITCHBOARD_JWT_SECRET: SECRET, SWITCHBOARD_ADMIN_TOKEN: TOKEN, SWITCHBOARD_GRPC_PORT: '0' },
    });
    assert.ok(gw.grpcAddr, 'the standalone gateway printed its gRPC address');
    admin = adminClient(gw.grpcAddr, TOKEN);
  });

  after(async () => {
    for (const s of sockets) s.disconnect();
    if (admin) admin.close();
    if (gw) await gw.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('serves the series of both tiers before any client, with histograms as histograms', async () => {
    const get = await scrape(gw.operatorUrl);
    for (const ns of ['/', '/chat', '/secure']) {
      expect(get, 'switchboard_gateway_sockets', { namespace: ns }, 0);
      expect(get, 'switchboard_gateway_namespace_connects_total', { namespace: ns }, 0);
    }
    // The embedded broker's gauges, read from its directory.
    expect(get, 'switchboard_broker_sockets', {}, 0);
    expect(get, 'switchboard_broker_rooms', {}, 0);
    expect(get, 'switchboard_broker_users', {}, 0);
    expect(get, 'switchboard_broker_nodes', {}, 1);
    expect(get, 'switchboard_broker_leader', {}, 1);
    // The start-up barrier of the cluster layer was measured as a histogram with buckets.
    assert.ok(count(get, 'switchboard_gateway_bus_request_seconds_count', { op: 'barrier' }) >= 1);
    expect(get, 'switchboard_gateway_bus_request_seconds_bucket', { op: 'barrier', le: '+Inf' },
      get('switchboard_gateway_bus_request_seconds_count', { op: 'barrier' }));
  });

  it('counts connections, namespaces, auth failures, packets, bytes, fan-out and disconnects exactly', async () => {
    const before0 = await scrape(gw.operatorUrl);
    // ws: WebSocket on /chat; poll: long-polling on /chat; root: WebSocket on /; alice: polling on
    // /secure with a good token; two refused on /secure: a bad signature (WebSocket) and no token
    // (polling).
    const ws = client(gw.url, '/chat', 'websocket');
    const poll = client(gw.url, '/chat', 'polling');
    const root = client(gw.url, '/', 'websocket');
    const alice = client(gw.url, '/secure', 'polling', { token: jwt('alice') });
    sockets.push(ws, poll, root, alice);
    await Promise.all([ws, poll, root, alice].map((s) => connected(s)));
    const forged = client(gw.url, '/secure', 'websocket', { token: jwt('mallory', 'not-the-secret-0123456789abcdef') });
    const anonymous = client(gw.url, '/secure', 'polling');
    const refusals = await Promise.all([connectError(forged), connectError(anonymous)]);
    assert.deepEqual(refusals.map((e) => e.data && e.data.code), ['bad_signature', 'missing_token']);

    let get = await scrape(gw.operatorUrl);
    const delta = (name, labels) => count(get, name, labels) - count(before0, name, labels);
    // Six Engine.IO sessions, each opened on the transport it asked for.
    assert.equal(delta('switchboard_gateway_handshakes_total', { transport: 'websocket' }), 3);
    assert.equal(delta('switchboard_gateway_handshakes_total', { transport: 'polling' }), 3);
    expect(get, 'switchboard_gateway_sockets', { namespace: '/chat' }, 2);
    expect(get, 'switchboard_gateway_sockets', { namespace: '/' }, 1);
    expect(get, 'switchboard_gateway_sockets', { namespace: '/secure' }, 1);
    expect(get, 'switchboard_gateway_namespace_connects_total', { namespace: '/chat' }, 2);
    expect(get, 'switchboard_gateway_namespace_connects_total', { namespace: '/' }, 1);
    expect(get, 'switchboard_gateway_namespace_connects_total', { namespace: '/secure' }, 1);
    expect(get, 'switchboard_gateway_auth_failures_total', { reason: 'bad_signature' }, 1);
    expect(get, 'switchboard_gateway_auth_failures_total', { reason: 'missing_token' }, 1);
    expect(get, 'switchboard_gateway_connects_refused_total', { reason: 'middleware' }, 2);
    // A client refused on its only namespace closes its session (socket.io-client's manager
    // closes once no socket is left): one of each transport remains open per accepted client.
    await settles(gw.operatorUrl, 'switchboard_gateway_connections', { transport: 'websocket' }, 2);
    await settles(gw.operatorUrl, 'switchboard_gateway_connections', { transport: 'polling' }, 2);

    // One acknowledged event over WebSocket: exactly one packet each way, byte counts of the
    // Engine.IO packets as written.
    let before1 = await scrape(gw.operatorUrl);
    const reply = await ask(root, 'echo', 'hi');
    assert.deepEqual(reply, ['hi']);
    get = await scrape(gw.operatorUrl);
    const diff = (name, labels) => count(get, name, labels) - count(before1, name, labels);
    assert.equal(diff('switchboard_gateway_packets_received_total', { transport: 'websocket' }), 1);
    assert.equal(diff('switchboard_gateway_bytes_received_total', { transport: 'websocket' }), '420["echo","hi"]'.length);
    assert.equal(diff('switchboard_gateway_packets_sent_total', { transport: 'websocket' }), 1);
    assert.equal(diff('switchboard_gateway_bytes_sent_total', { transport: 'websocket' }), '430["hi"]'.length);
    assert.equal(diff('switchboard_gateway_packets_received_total', { transport: 'polling' }), 0);
    assert.equal(diff('switchboard_gateway_packets_sent_total', { transport: 'polling' }), 0);

    // The same over long-polling: one POSTed packet, one packet in a GET's answer.
    before1 = await scrape(gw.operatorUrl);
    assert.deepEqual(await ask(poll, 'join', 'lobby'), [OK]);
    get = await scrape(gw.operatorUrl);
    assert.equal(diff('switchboard_gateway_packets_received_total', { transport: 'polling' }), 1);
    assert.equal(diff('switchboard_gateway_bytes_received_total', { transport: 'polling' }), '42/chat,0["join","lobby"]'.length);
    assert.equal(diff('switchboard_gateway_packets_sent_total', { transport: 'polling' }), 1);
    assert.equal(diff('switchboard_gateway_bytes_sent_total', { transport: 'polling' }), '43/chat,0[{"ok":true}]'.length);
    assert.equal(diff('switchboard_gateway_packets_received_total', { transport: 'websocket' }), 0);

    // A broadcast to /chat without the sender: one fan-out of one recipient.
    before1 = await scrape(gw.operatorUrl);
    const heard = once(poll, 'shout');
    ws.emit('shout', { text: 'hello' });
    assert.deepEqual(await heard, [{ text: 'hello' }]);
    get = await scrape(gw.operatorUrl);
    assert.equal(diff('switchboard_gateway_fanout_size_count'), 1);
    assert.equal(diff('switchboard_gateway_fanout_size_sum'), 1);
    assert.equal(diff('switchboard_gateway_fanout_size_bucket', { le: '1' }), 1);
    assert.equal(diff('switchboard_gateway_packets_sent_total', { transport: 'polling' }), 1);

    // Disconnects: a polling client says goodbye with a close packet, a WebSocket one closes.
    before1 = await scrape(gw.operatorUrl);
    poll.disconnect();
    ws.disconnect();
    await settles(gw.operatorUrl, 'switchboard_gateway_sockets', { namespace: '/chat' }, 0);
    await settles(gw.operatorUrl, 'switchboard_gateway_connections', { transport: 'polling' }, 1);
    await settles(gw.operatorUrl, 'switchboard_gateway_connections', { transport: 'websocket' }, 1);
    get = await scrape(gw.operatorUrl);
    assert.equal(diff('switchboard_gateway_disconnects_total', { reason: 'client_close' }), 1);
    assert.equal(diff('switchboard_gateway_disconnects_total', { reason: 'transport_close' }), 1);
    expect(get, 'switchboard_gateway_namespace_connects_total', { namespace: '/chat' }, 2);
  });

  it('moves an upgraded session from polling to websocket', async () => {
    const before0 = await scrape(gw.operatorUrl);
    const up = io(`${gw.url}/`, { transports: ['polling', 'websocket'], upgrade: true, forceNew: true, reconnection: false });
    sockets.push(up);
    await connected(up);
    if (up.io.engine.transport.name !== 'websocket') await once(up.io.engine, 'upgrade');
    const ws0 = before0('switchboard_gateway_connections', { transport: 'websocket' });
    const poll0 = before0('switchboard_gateway_connections', { transport: 'polling' });
    await settles(gw.operatorUrl, 'switchboard_gateway_connections', { transport: 'websocket' }, ws0 + 1);
    const get = await scrape(gw.operatorUrl);
    expect(get, 'switchboard_gateway_connections', { transport: 'polling' }, poll0);
    assert.equal(count(get, 'switchboard_gateway_handshakes_total', { transport: 'polling' })
      - count(before0, 'switchboard_gateway_handshakes_total', { transport: 'polling' }), 1);
    up.disconnect();
    await settles(gw.operatorUrl, 'switchboard_gateway_connections', { transport: 'websocket' }, ws0);
  });

  it('keeps the embedded broker gauges equal to its directory and counts gRPC calls by method and code', async () => {
    const stats = await admin.call('Stats', {});
    const state = await gw.state();
    const get = await scrape(gw.operatorUrl);
    expect(get, 'switchboard_broker_sockets', {}, state.sockets.length);
    expect(get, 'switchboard_broker_sockets', {}, Number(stats.sockets));
    expect(get, 'switchboard_broker_rooms', {}, Number(stats.rooms));
    expect(get, 'switchboard_broker_nodes', {}, state.nodes.length);
    // alice on /secure is the only socket with a user.
    expect(get, 'switchboard_broker_users', {}, new Set(state.sockets.map((s) => s.user).filter(Boolean)).size);
    expect(get, 'switchboard_broker_users', {}, 1);

    await assert.rejects(admin.call('Stats', {}, { token: 'wrong-token-0123456789abcdef' }), (e) => e.code === status.UNAUTHENTICATED);
    await assert.rejects(admin.call('Rooms', {}, { token: '' }), (e) => e.code === status.UNAUTHENTICATED);
    await assert.rejects(admin.call('RoomMembers', { ns: '/chat', room: '' }), (e) => e.code === status.INVALID_ARGUMENT);
    const after1 = await scrape(gw.operatorUrl);
    expect(after1, 'switchboard_broker_grpc_calls_total', { method: 'Stats', code: 'OK' }, 1);
    expect(after1, 'switchboard_broker_grpc_calls_total', { method: 'Stats', code: 'UNAUTHENTICATED' }, 1);
    expect(after1, 'switchboard_broker_grpc_calls_total', { method: 'Rooms', code: 'UNAUTHENTICATED' }, 1);
    expect(after1, 'switchboard_broker_grpc_calls_total', { method: 'RoomMembers', code: 'INVALID_ARGUMENT' }, 1);
    expect(after1, 'switchboard_broker_grpc_call_seconds_count', { method: 'Stats' }, 2);
    expect(after1, 'switchboard_broker_grpc_call_seconds_bucket', { method: 'Stats', le: '+Inf' }, 2);
  });

  it('labels only from closed sets: no sid, room or user appears in any label', async () => {
    const get = await scrape(gw.operatorUrl);
    const state = await gw.state();
    const secrets = new Set(['alice', 'mallory', 'lobby', ...state.sockets.map((s) => s.id)]);
    for (const [name, samples] of get.series) {
      for (const { labels } of samples) {
        for (const v of Object.values(labels)) {
          assert.ok(!secrets.has(v), `${name} has label value ${v}`);
        }
      }
    }
  });
});

describe('/metrics in a cluster: broker gauges equal its state, NATS series on the gateways', () => {
  let cluster;
  let worker;
  const members = new Members();

  before(async () => {
    cluster = await startCluster({ config: CONFIG, env: ENV, gateways: 2 });
    worker = await startWorker({ url: cluster.nats.url, prefix: cluster.prefix });
  });

  after(async () => {
    members.closeAll();
    if (worker) await worker.stop();
    if (cluster) await cluster.stop();
  });

  it('the broker gauges equal its directory and the gateways count their bus round trips', async () => {
    const [g1, g2] = cluster.gateways;
    const alice = await members.connect(g1, { user: 'alice' });
    const bob = await members.connect(g2, { user: 'bob' });
    const anon = await members.connect(g1);
    assert.deepEqual(await alice.join('lobby'), OK);
    assert.deepEqual(await bob.join('lobby'), OK);
    assert.deepEqual(await anon.join('vip'), OK);
    await converged(() => cluster.broker.state(), members);

    const state = await cluster.broker.state();
    const broker = await scrape(cluster.broker.url);
    expect(broker, 'switchboard_broker_sockets', {}, 3);
    expect(broker, 'switchboard_broker_sockets', {}, state.sockets.length);
    expect(broker, 'switchboard_broker_nodes', {}, 2);
    expect(broker, 'switchboard_broker_users', {}, 2);
    const rooms = new Set(state.sockets.flatMap((s) => s.rooms.map((r) => `${s.ns}\u0000${r}`)));
    expect(broker, 'switchboard_broker_rooms', {}, rooms.size);
    assert.ok(count(broker, 'switchboard_broker_messages_applied_total', { kind: 'heartbeat' }) >= 2);
    assert.ok(count(broker, 'switchboard_broker_messages_applied_total', { kind: 'join' }) >= 3);

    // gw1: a forward answered by the worker, one that times out, and a room with a capacity.
    const before1 = await scrape(g1.operatorUrl);
    assert.ok(await alice.ack('ask', { q: 1 }), 'the worker answered');
    const timedOut = await alice.ack('slow', {});
    assert.equal(timedOut.ok, false, JSON.stringify(timedOut));
    assert.deepEqual(await alice.join('small-1', 'join-small'), OK);
    const get = await scrape(g1.operatorUrl);
    const diff = (name, labels) => count(get, name, labels) - count(before1, name, labels);
    assert.equal(diff('switchboard_gateway_bus_request_seconds_count', { op: 'forward' }), 1);
    assert.equal(diff('switchboard_gateway_bus_errors_total', { op: 'forward', kind: 'timeout' }), 1);
    assert.ok(diff('switchboard_gateway_bus_request_seconds_count', { op: 'reserve' }) >= 1);
    assert.equal(diff('switchboard_gateway_bus_errors_total', { op: 'reserve', kind: 'timeout' }), 0);
    assert.ok(count(get, 'switchboard_gateway_bus_request_seconds_count', { op: 'barrier' }) >= 1);
    assert.ok(count(get, 'switchboard_gateway_bus_published_total', { kind: 'heartbeat' }) >= 1);
    assert.ok(diff('switchboard_gateway_bus_published_total', { kind: 'join' }) >= 1);
    assert.equal(count(get, 'switchboard_gateway_bus_out_dropped_total', { kind: 'join' }), 0);

    // The join shows in the broker's gauges too, equal to its state.
    await converged(() => cluster.broker.state(), members);
    const state2 = await cluster.broker.state();
    const broker2 = await scrape(cluster.broker.url);
    const rooms2 = new Set(state2.sockets.flatMap((s) => s.rooms.map((r) => `${s.ns}\u0000${r}`)));
    expect(broker2, 'switchboard_broker_rooms', {}, rooms2.size);
    assert.equal(rooms2.size, rooms.size + 1, 'small-1 is one more room');
    expect(broker2, 'switchboard_broker_reservations_total', { outcome: 'joined' }, 1);
  });
});

describe('the dashboard and the docs name the series the binaries define', () => {
  // Every metric name is a string constant in a `metrics` module (and the bus crate's one).
  const SOURCES = ['gateway/src/metrics.rs', 'broker/src/metrics.rs', 'bus/src/lib.rs', 'bin/src/allocator.rs'];
  const defined = new Set();
  for (const file of SOURCES) {
    for (const m of fs.readFileSync(path.join(REPO, file), 'utf8').matchAll(/"(switchboard_[a-z_]*[a-z])"/g)) defined.add(m[1]);
  }
  // A histogram's series carry a suffix.
  const base = (name) => (defined.has(name) ? name : name.replace(/_(bucket|count|sum)$/, ''));

  it('every query of the dashboard uses a defined series, and every group of the issue has a panel', () => {
    const file = path.join(REPO, 'deploy', 'grafana', 'switchboard-dashboard.json');
    const dashboard = JSON.parse(fs.readFileSync(file, 'utf8'));
    const exprs = dashboard.panels.flatMap((p) => (p.targets || []).map((t) => t.expr));
    assert.ok(exprs.length > 0);
    const used = new Set(exprs.flatMap((e) => [...e.matchAll(/switchboard_[a-z_]+/g)].map((m) => base(m[0]))));
    for (const name of used) assert.ok(defined.has(name), `the dashboard queries ${name}, which no binary defines`);
    for (const name of [
      'switchboard_gateway_connections',
      'switchboard_gateway_disconnects_total',
      'switchboard_gateway_namespace_connects_total',
      'switchboard_gateway_packets_sent_total',
      'switchboard_gateway_bytes_received_total',
      'switchboard_gateway_fanout_size',
      'switchboard_gateway_emits_dropped_total',
      'switchboard_gateway_auth_failures_total',
      'switchboard_gateway_bus_errors_total',
      'switchboard_gateway_bus_request_seconds',
      'switchboard_broker_sockets',
      'switchboard_broker_rooms',
      'switchboard_broker_users',
      'switchboard_broker_nodes',
      'switchboard_broker_grpc_calls_total',
    ]) {
      assert.ok(used.has(name), `no panel shows ${name}`);
    }
    // Histograms are shown as quantiles over their buckets.
    assert.ok(exprs.some((e) => /histogram_quantile\(0\.99, sum by \(le\) \(rate\(switchboard_gateway_fanout_size_bucket/.test(e)));
  });

  it("the metrics table of docs/operations.md lists exactly the defined series", () => {
    const doc = fs.readFileSync(path.join(REPO, 'docs', 'operations.md'), 'utf8');
    const section = doc.split('\n## Metrics\n')[1];
    assert.ok(section, 'docs/operations.md has a Metrics section');
    const rows = section.split('\n## ')[0].split('\n').filter((l) => /^\| `switchboard_/.test(l));
    const listed = new Set();
    for (const row of rows) {
      // The first cell: full names, and `_suffix` short for the same tier's prefix.
      const cell = row.split('|')[1];
      const names = [...cell.matchAll(/`([a-z_]+)`/g)].map((m) => m[1]);
      const tier = /^switchboard_[a-z]+/.exec(names[0])[0];
      for (const n of names) listed.add(n.startsWith('_') ? tier + n : n);
    }
    assert.ok(defined.size >= 40, `found only ${defined.size} metric names in ${SOURCES.join(', ')}`);
    assert.deepEqual([...listed].sort(), [...defined].sort());
  });
});
