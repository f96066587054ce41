'use strict';
// The HTTP/JSON server API and scoped API keys end to end, on a standalone gateway: its operator
// listener serves the embedded broker's HTTP API (POST /api/<operation>, docs/admin-api.md) and
// its gRPC port the same keys. A backend with an emit-only key broadcasts to a room an official
// socket.io-client is in (the client receives it), but cannot kick or read on either API; an admin
// key kicks (the client is disconnected). The refusals are counted in the metrics. Then the
// broker binary of a cluster serves the same API on its HTTP port.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startCluster, startGateway, waitFor } = require('../lib/cluster');
const { Members, converged, CONFIG, ENV: MEMBER_ENV, NS, OK } = require('../lib/members');
const { adminClient, failsWith, status } = require('../lib/admin');
const { within } = require('../lib/client');

const ADMIN_KEY = 'e2e-admin-key-0123456789';
const EMIT_KEY = 'e2e-emit-key-0123456789';
const READ_KEY = 'e2e-read-key-0123456789';
const ENV = {
  ...MEMBER_ENV,
  SWITCHBOARD_API_KEYS: `ops:admin:${ADMIN_KEY}; chat-backend:emit:${EMIT_KEY}; dashboard:read:${READ_KEY}`,
  SWITCHBOARD_GRPC_PORT: '0',
};

/** POSTs `body` (JSON) to the gateway's HTTP API; resolves to { status, json }. */
async function api(gw, operation, body, key) {
  const headers = { 'content-type': 'application/json' };
  if (key) headers.authorization = `Bearer ${key}`;
  const res = await fetch(`${gw.operatorUrl}/api/${operation}`, {
    method: 'POST',
    headers,
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(15000),
  });
  return { status: res.status, json: await res.json() };
}

describe('HTTP API with scoped keys on a standalone gateway', () => {
  let gw;
  let emitGrpc;
  let adminGrpc;
  const members = new Members();

  before(async () => {
    gw = await startGateway({ nodeId: 'solo', config: CONFIG, env: ENV });
    assert.ok(gw.operatorUrl, 'the gateway printed its operator address');
    assert.ok(gw.grpcAddr, 'a key turns gRPC on too');
    emitGrpc = adminClient(gw.grpcAddr, EMIT_KEY);
    adminGrpc = adminClient(gw.grpcAddr, ADMIN_KEY);
  });
  after(async () => {
    members.closeAll();
    for (const c of [emitGrpc, adminGrpc]) if (c) c.close();
    if (gw) await gw.stop();
  });

  it('broadcasts to a room with an emit key, refuses it kicks and reads, kicks with an admin key', async () => {
    const alice = await members.connect(gw, { user: 'alice' });
    const bob = await members.connect(gw, { user: 'bob' });
    assert.deepEqual(await alice.join('lobby'), OK);
    await converged(() => gw.state(), members);

    // Emit-only: the broadcast reaches the room's member, and only it.
    const sent = await api(gw, 'broadcast', { selector: { ns: NS, rooms: ['lobby'] }, event: 'news', argsJson: '["hello",1]' }, EMIT_KEY);
    assert.equal(sent.status, 200, JSON.stringify(sent.json));
    assert.deepEqual(sent.json, { targeted: '1' });
    await alice.until('news');
    assert.deepEqual(alice.of('news'), [['hello', 1]]);
    assert.deepEqual(bob.of('news'), []);

    // Emit-only cannot kick or read, on HTTP...
    for (const [operation, body] of [
      ['disconnect', { selector: { ns: NS, socketIds: [bob.id] } }],
      ['fetch_sockets', { selector: { ns: NS } }],
      ['stats', {}],
    ]) {
      const res = await api(gw, operation, body, EMIT_KEY);
      assert.equal(res.status, 403, `${operation}: ${JSON.stringify(res.json)}`);
      assert.equal(res.json.code, 'PERMISSION_DENIED');
      assert.match(res.json.message, /chat-backend/);
    }
    // ... and on gRPC.
    await failsWith(emitGrpc.call('Disconnect', { selector: { ns: NS, socket_ids: [bob.id] } }), status.PERMISSION_DENIED);
    await failsWith(emitGrpc.call('FetchSockets', { selector: { ns: NS } }), status.PERMISSION_DENIED);
    await failsWith(emitGrpc.stream({ ns: NS }), status.PERMISSION_DENIED);
    assert.equal((await emitGrpc.call('Broadcast', { selector: { ns: NS, rooms: ['lobby'] }, event: 'again' })).targeted, 1);
    await alice.until('again');

    // No key, or an unknown one: 401 / UNAUTHENTICATED.
    for (const key of [undefined, 'not-a-key-0123456789']) {
      const res = await api(gw, 'stats', {}, key);
      assert.equal(res.status, 401);
      assert.equal(res.json.code, 'UNAUTHENTICATED');
      await failsWith(adminGrpc.call('Stats', {}, { token: key || null }), status.UNAUTHENTICATED);
    }

    // Reading with a read key: both sockets, bob still there.
    const read = await api(gw, 'fetch_sockets', { selector: { ns: NS } }, READ_KEY);
    assert.equal(read.status, 200);
    assert.deepEqual(read.json.sockets.map((s) => s.id).sort(), [alice.id, bob.id].sort());

    // The admin key kicks bob over HTTP: his client is disconnected by the server.
    const gone = new Promise((resolve) => bob.socket.once('disconnect', resolve));
    const kicked = await api(gw, 'disconnect', { selector: { ns: NS, socketIds: [bob.id] }, reason: 'bye' }, ADMIN_KEY);
    assert.equal(kicked.status, 200, JSON.stringify(kicked.json));
    assert.deepEqual(kicked.json, { disconnected: '1' });
    assert.equal(await within(gone, 'the kicked socket to disconnect'), 'io server disconnect');
    await waitFor(async () => (await api(gw, 'fetch_sockets', { selector: { ns: NS } }, READ_KEY)).json.total === '1', {
      what: 'the kicked socket gone from queries',
    });

    // Errors carry gRPC's code and message.
    const bad = await api(gw, 'fetch_sockets', { selector: { ns: 'chat' } }, ADMIN_KEY);
    assert.equal(bad.status, 400);
    assert.equal(bad.json.code, 'INVALID_ARGUMENT');
    assert.match(bad.json.message, /^selector\.ns: must start with '\/'/);

    // The refusals are counted, by API and reason.
    const metrics = await gw.metrics();
    for (const [apiName, reason] of [['http', 'scope'], ['grpc', 'scope'], ['http', 'missing'], ['grpc', 'unknown_key']]) {
      const line = new RegExp(`^switchboard_broker_api_auth_refused_total\\{[^}]*api="${apiName}"[^}]*reason="${reason}"[^}]*\\} ([0-9]+)`, 'm');
      const m = line.exec(metrics);
      assert.ok(m && Number(m[1]) >= 1, `${apiName}/${reason} counted:\n${metrics.split('\n').filter((l) => l.includes('auth_refused')).join('\n')}`);
    }
  });

  it('serves the OpenAPI document and is not on the client port', async () => {
    const doc = await (await fetch(`${gw.operatorUrl}/api/openapi.json`)).json();
    assert.equal(doc.openapi, '3.0.3');
    assert.ok(doc.paths['/api/broadcast'].post);
    const client = await fetch(`${gw.url}/api/stats`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }, body: '{}' });
    assert.equal(client.status, 404, 'the client port has no API');
  });
});

describe('HTTP API on the broker of a cluster', () => {
  let cluster;
  const members = new Members();
  before(async () => {
    cluster = await startCluster({ config: CONFIG, env: ENV, gateways: 2 });
  });
  after(async () => {
    members.closeAll();
    if (cluster) await cluster.stop();
  });

  it("serves it on the broker's HTTP port: an emit key reaches clients on both gateways, and cannot read", async () => {
    const [g1, g2] = cluster.gateways;
    const a = await members.connect(g1);
    const b = await members.connect(g2);
    for (const m of [a, b]) assert.deepEqual(await m.join('lobby'), OK);
    await converged(() => cluster.broker.state(), members);
    const broker = { operatorUrl: cluster.broker.url };
    const sent = await api(broker, 'broadcast', { selector: { ns: NS, rooms: ['lobby'] }, event: 'all-hands', argsJson: '[2]' }, EMIT_KEY);
    assert.equal(sent.status, 200, JSON.stringify(sent.json));
    assert.deepEqual(sent.json, { targeted: '2' });
    for (const m of [a, b]) {
      await m.until('all-hands');
      assert.deepEqual(m.of('all-hands'), [[2]]);
    }
    const refused = await api(broker, 'room_members', { ns: NS, room: 'lobby' }, EMIT_KEY);
    assert.equal(refused.status, 403);
    const inRoom = await api(broker, 'room_members', { ns: NS, room: 'lobby' }, READ_KEY);
    assert.equal(inRoom.status, 200);
    assert.deepEqual(inRoom.json.members.map((s) => s.id).sort(), [a.id, b.id].sort());
    // A gateway of a cluster serves no API: the brokers do.
    const gw = await fetch(`${g1.operatorUrl}/api/stats`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }, body: '{}' });
    assert.equal(gw.status, 404);
  });
});
