'use strict';
// The broker's gRPC Admin API end to end: a nats-server, the broker (serving gRPC with a bearer
// token) and two gateways (lib/cluster.js), official socket.io-clients on both gateways, and the
// official @grpc/grpc-js client (lib/admin.js). Every RPC's answer is checked against what the
// clients are and what they actually receive. Then the same API in-process on a standalone
// gateway.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const { startCluster, startGateway, waitFor, adminBin } = require('../lib/cluster');
const { Members, converged, CONFIG, ENV, NS, OK } = require('../lib/members');
const { adminClient, failsWith, status } = require('../lib/admin');
const { within } = require('../lib/client');

const TOKEN = 'e2e-admin-token-0123456789';
const GRPC_ENV = { ...ENV, SWITCHBOARD_ADMIN_TOKEN: TOKEN, SWITCHBOARD_GRPC_PORT: '0' };

const sel = (extra = {}) => ({ ns: NS, ...extra });
const ids = (sockets) => sockets.map((s) => s.id).sort();
const byId = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * Runs the operators' CLI against `addr` with `args`; resolves to { code, stdout, stderr } (a
 * non-zero exit is a result, not a rejection). The token comes from the environment, as an
 * operator would set it, unless the args name one.
 */
function cli(addr, args, { token = TOKEN } = {}) {
  const env = { ...process.env, SWITCHBOARD_ADMIN_TOKEN: token };
  return new Promise((resolve) => {
    execFile(adminBin(), ['--addr', `http://${addr}`, ...args], { env, timeout: 20000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

/** The CLI's --json output, one object per line. */
const jsonLines = (out) => out.split('\n').filter(Boolean).map((line) => JSON.parse(line));

describe('gRPC admin API on a cluster of two gateways', () => {
  let cluster;
  let admin;
  const members = new Members();
  // alice: two sockets (gw1, gw2) in lobby; bob: gw2, in lobby and vip; anon: gw1, in vip only.
  let alice1;
  let alice2;
  let bob;
  let anon;

  before(async () => {
    cluster = await startCluster({ config: CONFIG, env: GRPC_ENV, gateways: 2 });
    assert.ok(cluster.broker.grpcAddr, 'the broker printed its gRPC address');
    admin = adminClient(cluster.broker.grpcAddr, TOKEN);
    const [g1, g2] = cluster.gateways;
    alice1 = await members.connect(g1, { user: 'alice' });
    alice2 = await members.connect(g2, { user: 'alice' });
    bob = await members.connect(g2, { user: 'bob' });
    anon = await members.connect(g1);
    for (const m of [alice1, alice2, bob]) assert.deepEqual(await m.join('lobby'), OK);
    for (const m of [bob, anon]) assert.deepEqual(await m.join('vip'), OK);
    await converged(() => cluster.broker.state(), members);
  });
  after(async () => {
    members.closeAll();
    if (admin) admin.close();
    if (cluster) await cluster.stop();
  });

  it('refuses calls without the bearer token or with a wrong one: UNAUTHENTICATED', async () => {
    await failsWith(admin.call('Stats', {}, { token: null }), status.UNAUTHENTICATED);
    const err = await failsWith(admin.call('Stats', {}, { token: 'wrong-token-0123456789' }), status.UNAUTHENTICATED);
    assert.match(err.details, /token/);
    await failsWith(admin.stream(sel(), { token: null }), status.UNAUTHENTICATED);
  });

  it('refuses malformed requests with INVALID_ARGUMENT saying what is wrong', async () => {
    const cases = [
      ['FetchSockets', {}, /selector: required/],
      ['FetchSockets', { selector: { ns: 'chat' } }, /start with '\/'/],
      ['FetchSockets', { selector: sel(), page_size: 20000 }, /page_size/],
      ['FetchSockets', { selector: sel(), page_token: 'garbage' }, /page_token/],
      ['Broadcast', { selector: sel(), event: 'x', args_json: '[' }, /args_json/],
      ['Broadcast', { selector: sel(), event: 'x', args_json: '{"a":1}' }, /JSON array/],
      ['Broadcast', { selector: sel(), event: 'disconnect' }, /reserved/],
      ['Broadcast', { selector: sel(), event: '' }, /event: required/],
      ['Broadcast', { selector: sel(), event: 'x', args_json: '[]', attachments: [Buffer.from('z')] }, /attachment 0/],
      ['SocketsJoin', { selector: sel(), rooms: [] }, /rooms/],
      ['UpdateSocketData', { socket_id: alice1.id, data_json: '{nope' }, /data_json/],
      ['UserSockets', { user: '' }, /user: required/],
      ['Presence', { ns: NS, room: '' }, /room: required/],
      ['RoomMembers', { ns: NS, room: '' }, /room: required/],
    ];
    for (const [method, req, message] of cases) {
      const err = await failsWith(admin.call(method, req), status.INVALID_ARGUMENT);
      assert.match(err.details, message, `${method} ${JSON.stringify(req)}`);
    }
  });

  it('FetchSockets and StreamSockets return what the clients are: ids, nodes, users, rooms, handshake', async () => {
    const res = await admin.call('FetchSockets', { selector: sel() });
    assert.equal(res.total, 4);
    assert.equal(res.next_page_token, '');
    assert.deepEqual(ids(res.sockets), [alice1, alice2, bob, anon].map((m) => m.id).sort());
    for (const m of [alice1, alice2, bob, anon]) {
      const s = res.sockets.find((x) => x.id === m.id);
      assert.equal(s.node, m.gw.nodeId);
      assert.equal(s.ns, NS);
      assert.deepEqual([...s.rooms].sort(), [...m.rooms].sort());
      assert.match(s.handshake.address, /^127\.0\.0\.1:\d+$/);
      if (m === anon) {
        assert.equal(s.user, undefined);
      } else {
        assert.equal(s.user, m === bob ? 'bob' : 'alice');
        assert.equal(JSON.parse(s.handshake.claims_json).sub, s.user);
      }
    }
    const streamed = await admin.stream(sel({ rooms: ['lobby'] }));
    assert.deepEqual(streamed.map((s) => s.id), [alice1, alice2, bob].map((m) => m.id).sort(byId));
    // Restrictions intersect: lobby members of user alice, not in vip.
    const narrowed = await admin.call('FetchSockets', { selector: sel({ rooms: ['lobby', 'vip'], except_rooms: ['vip'], user_ids: ['alice'] }) });
    assert.deepEqual(ids(narrowed.sockets), [alice1.id, alice2.id].sort());
    const two = await admin.call('FetchSockets', { selector: sel({ socket_ids: [bob.id, anon.id, 'gw9.nobody'] }) });
    assert.deepEqual(ids(two.sockets), [bob.id, anon.id].sort());
  });

  it('Rooms, RoomMembers, Presence, UserSockets and Stats', async () => {
    const rooms = await admin.call('Rooms', { ns: NS });
    const lobby = rooms.rooms.find((r) => r.name === 'lobby');
    const vip = rooms.rooms.find((r) => r.name === 'vip');
    assert.deepEqual({ members: lobby.members, users: lobby.users }, { members: 3, users: 2 });
    assert.deepEqual({ members: vip.members, users: vip.users }, { members: 2, users: 1 });
    const prefixed = await admin.call('Rooms', { ns: NS, prefix: 'vi' });
    assert.ok(prefixed.rooms.every((r) => r.name.startsWith('vi')) && prefixed.rooms.some((r) => r.name === 'vip'));
    const roomMembers = await admin.call('RoomMembers', { ns: NS, room: 'lobby' });
    assert.deepEqual(ids(roomMembers.members), [alice1.id, alice2.id, bob.id].sort());
    const presence = await admin.call('Presence', { ns: NS, room: 'lobby' });
    assert.deepEqual(presence.users, [{ user: 'alice', sockets: 2 }, { user: 'bob', sockets: 1 }]);
    const userSockets = await admin.call('UserSockets', { user: 'alice', ns: NS });
    assert.deepEqual(userSockets.sockets.map((s) => [s.id, s.node]).sort(), [[alice1.id, 'gw1'], [alice2.id, 'gw2']].sort());
    const stats = await admin.call('Stats', {});
    assert.deepEqual(stats.nodes.map((n) => [n.id, n.sockets]).sort(), [['gw1', 2], ['gw2', 2]]);
    const chat = stats.namespaces.find((n) => n.ns === NS);
    assert.equal(chat.sockets, 4);
    assert.equal(chat.users, 2);
    assert.ok(stats.rooms >= 2);
    for (const n of stats.nodes) assert.ok(n.last_heartbeat_ms_ago < 60000, `heartbeat age ${n.last_heartbeat_ms_ago}`);
  });

  it('Broadcast reaches each targeted socket exactly once, on both gateways, and nobody else', async () => {
    const res = await admin.call('Broadcast', { selector: sel({ rooms: ['lobby'] }), event: 'news', args_json: '[{"n":1},"two"]' });
    assert.equal(res.targeted, 3);
    await Promise.all([alice1, alice2, bob].map((m) => m.until('news')));
    // A fence: a later broadcast to everyone, once it arrived anything earlier did too.
    await admin.call('Broadcast', { selector: sel(), event: 'fence', args_json: '[1]' });
    await Promise.all([alice1, alice2, bob, anon].map((m) => m.until('fence')));
    for (const m of [alice1, alice2, bob]) assert.deepEqual(m.of('news'), [[{ n: 1 }, 'two']]);
    assert.deepEqual(anon.of('news'), []);
    // Binary attachments arrive as binary.
    const bin = await admin.call('Broadcast', {
      selector: sel({ socket_ids: [anon.id] }),
      event: 'blob',
      args_json: '[{"_placeholder":true,"num":0}]',
      attachments: [Buffer.from([1, 2, 3])],
    });
    assert.equal(bin.targeted, 1);
    await anon.until('blob');
    assert.deepEqual([...anon.of('blob')[0][0]], [1, 2, 3]);
  });

  it('Broadcast with acks returns every socket\'s ack, and a timeout marker for a socket that never answers', async () => {
    for (const m of [alice1, alice2, bob]) m.socket.on('poll', (q, cb) => cb({ from: m.id, q }));
    // anon has no handler for `poll`: its ack never comes.
    const res = await admin.call('Broadcast', { selector: sel(), event: 'poll', args_json: '["q1"]', ack_timeout_ms: 1000 });
    assert.equal(res.targeted, 4);
    assert.deepEqual(res.acks.map((a) => a.socket_id), [alice1, alice2, bob, anon].map((m) => m.id).sort(byId));
    for (const a of res.acks) {
      if (a.socket_id === anon.id) {
        assert.equal(a.timed_out, true);
      } else {
        assert.equal(a.timed_out, false);
        assert.deepEqual(JSON.parse(a.args_json), [{ from: a.socket_id, q: 'q1' }]);
      }
    }
    // A selector that matches nobody: nothing targeted, no acks.
    const none = await admin.call('Broadcast', { selector: sel({ rooms: ['nobody-here'] }), event: 'poll', args_json: '[]', ack_timeout_ms: 1000 });
    assert.equal(Number(none.targeted), 0);
    assert.deepEqual(none.acks, []);
  });

  it('EmitToSocket delivers to one socket on another gateway and returns its ack; an unknown socket is not found', async () => {
    bob.socket.on('direct', (x, cb) => cb(x * 2));
    const res = await admin.call('EmitToSocket', { ns: NS, socket_id: bob.id, event: 'direct', args_json: '[21]', ack_timeout_ms: 3000 });
    assert.equal(res.found, true);
    assert.deepEqual(JSON.parse(res.ack.args_json), [42]);
    const plain = await admin.call('EmitToSocket', { ns: NS, socket_id: alice1.id, event: 'hello', args_json: '["there"]' });
    assert.equal(plain.found, true);
    await alice1.until('hello');
    assert.deepEqual(alice1.of('hello'), [['there']]);
    const missing = await admin.call('EmitToSocket', { ns: NS, socket_id: 'gw1.nobody', event: 'hello' });
    assert.equal(missing.found, false);
  });

  it('honours the deadline: an ack wait longer than the call\'s deadline ends in DEADLINE_EXCEEDED', async () => {
    await failsWith(
      admin.call('Broadcast', { selector: sel({ socket_ids: [anon.id] }), event: 'poll', args_json: '[]', ack_timeout_ms: 10000 }, { deadlineMs: 300 }),
      status.DEADLINE_EXCEEDED,
    );
  });

  it('SocketsJoin makes later room emits arrive; SocketsLeave stops them; the counts are the matched sockets', async () => {
    const joined = await admin.call('SocketsJoin', { selector: sel({ user_ids: ['bob'] }), rooms: ['granted'] });
    assert.equal(joined.sockets, 1);
    bob.rooms.add('granted');
    await converged(() => cluster.broker.state(), members);
    assert.deepEqual(await alice1.join('granted'), OK);
    await converged(() => cluster.broker.state(), members);
    alice1.socket.emit('say', { room: 'granted', text: 'welcome' });
    await bob.until('say', (a) => a[0].text === 'welcome');
    const left = await admin.call('SocketsLeave', { selector: sel({ socket_ids: [bob.id] }), rooms: ['granted'] });
    assert.equal(left.sockets, 1);
    bob.rooms.delete('granted');
    await converged(() => cluster.broker.state(), members);
    alice1.socket.emit('say', { room: 'granted', text: 'after leave' });
    // A fence from the same sender to a room bob is still in: it arrives after anything earlier.
    alice1.socket.emit('say', { room: 'lobby', text: 'fence' });
    await bob.until('say', (a) => a[0].text === 'fence');
    assert.equal(bob.of('say', (a) => a[0].text === 'after leave').length, 0);
  });

  it('UpdateSocketData sets data that later queries show', async () => {
    const res = await admin.call('UpdateSocketData', { socket_id: bob.id, data_json: '{"tier":"gold","n":[1,2]}' });
    assert.equal(res.updated, true);
    const got = await admin.call('FetchSockets', { selector: sel({ socket_ids: [bob.id] }) });
    assert.deepEqual(JSON.parse(got.sockets[0].data_json), { tier: 'gold', n: [1, 2] });
    const missing = await admin.call('UpdateSocketData', { socket_id: 'gw1.nobody', data_json: '1' });
    assert.equal(missing.updated, false);
  });

  it('switchboard-admin (the CLI) lists, counts, broadcasts and kicks like the API, with exit codes', async () => {
    const addr = cluster.broker.grpcAddr;
    const ok = async (args) => {
      const res = await cli(addr, args);
      assert.equal(res.code, 0, `switchboard-admin ${args.join(' ')}: ${res.stderr}`);
      return res.stdout;
    };
    // sockets: one JSON line per socket, equal to what the API returns (and to who is connected).
    const api = (await admin.call('FetchSockets', { selector: sel() })).sockets.sort((a, b) => byId(a.id, b.id));
    const listed = jsonLines(await ok(['sockets', '--ns', NS, '--json'])).sort((a, b) => byId(a.id, b.id));
    assert.deepEqual(listed.map((s) => s.id), ids(api));
    assert.deepEqual(listed.map((s) => s.id), members.all.filter((m) => !m.gone).map((m) => m.id).sort());
    for (const s of listed) {
      const want = api.find((x) => x.id === s.id);
      assert.equal(s.node, want.node);
      assert.equal(s.user || null, want.user || null); // no user: null in the CLI's JSON, unset in the API's
      assert.deepEqual([...s.rooms].sort(), [...want.rooms].sort());
    }
    const lobbyIds = jsonLines(await ok(['sockets', '--ns', NS, '--room', 'lobby', '--json'])).map((s) => s.id).sort();
    assert.deepEqual(lobbyIds, [alice1.id, alice2.id, bob.id].sort());
    // The table form ends with the count.
    assert.match(await ok(['sockets', '--ns', NS, '--room', 'vip']), /^2 sockets$/m);
    // rooms and presence.
    const rooms = jsonLines(await ok(['rooms', '--ns', NS, '--json']));
    assert.deepEqual(rooms.find((r) => r.name === 'lobby'), { name: 'lobby', members: 3, users: 2 });
    assert.deepEqual(rooms.find((r) => r.name === 'vip'), { name: 'vip', members: 2, users: 1 });
    const presence = jsonLines(await ok(['presence', '--ns', NS, '--room', 'lobby', '--json']));
    assert.deepEqual(presence.sort((a, b) => byId(a.user, b.user)), [{ user: 'alice', sockets: 2 }, { user: 'bob', sockets: 1 }]);
    // stats: the nodes and their connections.
    const [stats] = jsonLines(await ok(['stats', '--json']));
    const apiStats = await admin.call('Stats', {});
    assert.deepEqual(stats.nodes.map((n) => [n.id, n.sockets]).sort(), apiStats.nodes.map((n) => [n.id, n.sockets]).sort());
    assert.equal(stats.sockets, listed.length);
    assert.match(await ok(['stats']), /^NODE\s+CONNECTIONS\s+SOCKETS/m);
    // broadcast: "targeted N", and it arrives once at each targeted client.
    assert.equal((await ok(['broadcast', '--ns', NS, '--room', 'vip', '--event', 'cli-news', '--args', '[{"from":"cli"}]'])).trim(), 'targeted 2');
    await Promise.all([bob, anon].map((m) => m.until('cli-news')));
    await admin.call('Broadcast', { selector: sel(), event: 'cli-fence', args_json: '[]' });
    await Promise.all([alice1, alice2, bob, anon].map((m) => m.until('cli-fence')));
    for (const m of [bob, anon]) assert.deepEqual(m.of('cli-news'), [[{ from: 'cli' }]]);
    for (const m of [alice1, alice2]) assert.deepEqual(m.of('cli-news'), []);
    // kick: "disconnected 1", and the client hears the reason and its disconnect.
    const victim = await members.connect(cluster.gateways[1], { user: 'trudy' });
    await converged(() => cluster.broker.state(), members);
    const gone = new Promise((resolve) => victim.socket.once('disconnect', resolve));
    assert.equal((await ok(['kick', '--ns', NS, '--socket', victim.id, '--reason', 'cli says bye'])).trim(), 'disconnected 1');
    assert.equal(await within(gone, 'the kicked client to disconnect'), 'io server disconnect');
    assert.deepEqual(victim.of('kicked'), [[{ reason: 'cli says bye' }]]);
    victim.gone = true;
    await converged(() => cluster.broker.state(), members);
    // Failures: a wrong token exits 1 naming the status; a usage error exits 2.
    const denied = await cli(addr, ['stats'], { token: 'wrong-token-0123456789' });
    assert.equal(denied.code, 1, denied.stderr);
    assert.match(denied.stderr, /Unauthenticated/i);
    const usage = await cli(addr, ['frobnicate']);
    assert.equal(usage.code, 2, usage.stderr);
    assert.match(usage.stderr, /--help/);
    const missing = await cli(addr, ['presence', '--ns', NS]);
    assert.equal(missing.code, 2, missing.stderr);
  });

  it('Disconnect kicks across gateways: the client gets `kicked` with the reason, then its disconnect', async () => {
    const [g1] = cluster.gateways;
    const victim = await members.connect(g1, { user: 'mallory' });
    const victim2 = await members.connect(cluster.gateways[1], { user: 'mallory' });
    await converged(() => cluster.broker.state(), members);
    const gone = (m) => new Promise((resolve) => m.socket.once('disconnect', resolve));
    const reasons = Promise.all([gone(victim), gone(victim2)]);
    const res = await admin.call('Disconnect', { selector: sel({ user_ids: ['mallory'] }), reason: 'spam' });
    assert.equal(res.disconnected, 2);
    assert.deepEqual(await within(reasons, 'both mallory sockets to disconnect'), ['io server disconnect', 'io server disconnect']);
    for (const m of [victim, victim2]) assert.deepEqual(m.of('kicked'), [[{ reason: 'spam' }]]);
    await converged(() => cluster.broker.state(), members);
    // close_connection closes the whole Engine.IO connection.
    const whole = await members.connect(g1);
    await converged(() => cluster.broker.state(), members); // the broker knows it before the kick
    const closed = gone(whole);
    assert.equal((await admin.call('Disconnect', { selector: sel({ socket_ids: [whole.id] }), close_connection: true })).disconnected, 1);
    assert.equal(await within(closed, 'the connection to close'), 'transport close');
  });
});

describe('gRPC admin API in-process on a standalone gateway', () => {
  let gw;
  let admin;
  const members = new Members();
  before(async () => {
    gw = await startGateway({ nodeId: 'solo', config: CONFIG, env: GRPC_ENV });
    assert.ok(gw.grpcAddr, 'the standalone gateway printed its gRPC address');
    admin = adminClient(gw.grpcAddr, TOKEN);
  });
  after(async () => {
    members.closeAll();
    if (admin) admin.close();
    if (gw) await gw.stop();
  });

  it('answers queries from the embedded broker and carries out actions', async () => {
    const a = await members.connect(gw, { user: 'zoe' });
    const b = await members.connect(gw);
    assert.deepEqual(await a.join('room1'), OK);
    await converged(() => gw.state(), members);
    const res = await admin.call('FetchSockets', { selector: sel() });
    assert.deepEqual(ids(res.sockets), [a.id, b.id].sort());
    assert.equal(res.sockets.find((s) => s.id === a.id).user, 'zoe');
    const sent = await admin.call('Broadcast', { selector: sel({ rooms: ['room1'] }), event: 'solo-news', args_json: '[7]' });
    assert.equal(sent.targeted, 1);
    await a.until('solo-news');
    assert.deepEqual(a.of('solo-news'), [[7]]);
    const gone = new Promise((resolve) => b.socket.once('disconnect', resolve));
    assert.equal((await admin.call('Disconnect', { selector: sel({ socket_ids: [b.id] }), reason: 'bye' })).disconnected, 1);
    assert.equal(await within(gone, 'the kicked socket to disconnect'), 'io server disconnect');
    await waitFor(async () => (await admin.call('FetchSockets', { selector: sel() })).total === 1, { what: 'the kicked socket gone from queries' });
    await failsWith(admin.call('Stats', {}, { token: null }), status.UNAUTHENTICATED);
  });
});
