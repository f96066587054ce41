'use strict';
// The cluster end to end: a nats-server, the broker and three gateways (lib/cluster.js) with
// fixtures/cluster.toml, driven by the official socket.io-client, the bus itself (lib/bus.js:
// deliveries, commands and notices in protobuf on NATS subjects) and a worker (lib/worker.js).
// Each suite starts its own cluster and stops it in `after`. Nothing sleeps: every wait is on
// received events or on the broker's /v1/state (waitFor).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startCluster, startBroker, startGateway, waitFor } = require('../lib/cluster');
const bus = require('../lib/bus');
const { startWorker } = require('../lib/worker');

const { Members, converged, CONFIG, ENV, NS, OK, SIGTERM_REASON, CONVERGE_MS } = require('../lib/members');
const { within } = require('../lib/client');

describe('escape() of lib/bus.js matches proto/src/subject.rs', () => {
  it('escapes the vectors of subject.rs', () => {
    const vectors = [
      ['a.b', 'a_2Eb'],
      ['', '_'],
      ['*', '_2A'],
      ['>', '_3E'],
      ['x y', 'x_20y'],
      ['_', '_5F'],
      ['ünï', '_C3_BCn_C3_AF'],
      ['/chat', '_2Fchat'],
      ['/', '_2F'],
      ['room-1', 'room-1'],
      ['Ab9', 'Ab9'],
      ['\t\n', '_09_0A'],
      ['\0', '_00'],
      ['\u007f', '_7F'],
      ['🎉', '_F0_9F_8E_89'],
      ['_2E', '_5F2E'],
      ['a..b', 'a_2E_2Eb'],
      ['%41', '_2541'],
      ['user:42', 'user_3A42'],
    ];
    for (const [name, token] of vectors) assert.equal(bus.escape(name), token, `escape(${JSON.stringify(name)})`);
  });

  it('builds the subjects of subject.rs', () => {
    const s = bus.subjects('sio');
    assert.equal(s.room('/chat', 'a.b'), 'sio.room._2Fchat.a_2Eb');
    assert.equal(s.room('/', ''), 'sio.room._2F._');
    assert.equal(s.namespace('/'), 'sio.ns._2F');
    assert.equal(s.node('k3x9q2'), 'sio.node.k3x9q2');
    assert.equal(s.event('/', 'a b'), 'sio.event._2F.a_20b');
    assert.equal(s.connect('/chat'), 'sio.life._2Fchat.connect');
    assert.equal(s.allLife(), 'sio.life.>');
    assert.equal(s.member('gw1'), 'sio.member.gw1');
    assert.equal(s.node('a.*'), 'sio.node.a_2E_2A');
    assert.equal(s.commandNamespace('/chat'), 'sio.cmd.ns._2Fchat');
    assert.equal(s.commandNode('gw1'), 'sio.cmd.node.gw1');
    assert.equal(s.room('/', 'x'.repeat(bus.MAX_NAME_BYTES)).length, 'sio.room._2F.'.length + bus.MAX_NAME_BYTES);
    assert.throws(() => s.room('/', 'é'.repeat(bus.MAX_NAME_BYTES / 2 + 1)), /name too long/);
    assert.equal(bus.subjects('prod.eu-1').room('/', 'r'), 'prod.eu-1.room._2F.r');
  });

  it('builds packets as clients receive them', () => {
    assert.equal(bus.eventPacket('/chat', 'direct', { x: 1 }).toString(), '42/chat,["direct",{"x":1}]');
    assert.equal(bus.eventPacket('/', 'direct', 1).toString(), '42["direct",1]');
  });
});

/**
 * One cluster per suite: started before its tests, stopped after them with the clients the tests
 * opened (`members`), the bus client (`client`, when `bus` is set) and any extra process the
 * tests pushed on `stopLater`.
 */
function clusterSuite({ gateways, bus: withBus = false } = {}) {
  const s = { cluster: null, client: null, members: new Members(), stopLater: [] };
  before(async () => {
    s.cluster = await startCluster({ config: CONFIG, env: ENV, gateways });
    if (withBus) s.client = await bus.open({ url: s.cluster.nats.url, prefix: s.cluster.prefix });
  });
  after(async () => {
    s.members.closeAll();
    if (s.client) await s.client.close();
    for (const p of s.stopLater) await p.stop();
    if (s.cluster) await s.cluster.stop();
  });
  return s;
}

describe('cluster: relays, broadcasts and order across gateways', () => {
  const ctx = clusterSuite();

  it('every other member gets each relay exactly once; the sender gets none of its own', async () => {
    const [g1, g2, g3] = ctx.cluster.gateways;
    const ms = [await ctx.members.connect(g1), await ctx.members.connect(g2, { transports: ['polling'] }), await ctx.members.connect(g3)];
    for (const m of ms) assert.deepEqual(await m.join('r1'), OK);
    await converged(() => ctx.cluster.broker.state(), ctx.members);

    const PER_SENDER = 20;
    for (let n = 0; n < PER_SENDER; n += 1) {
      for (const m of ms) m.socket.emit('say', { room: 'r1', from: m.id, n });
    }
    const fromOthers = (m) => (args) => args[0] && args[0].from !== m.id && typeof args[0].n === 'number';
    await Promise.all(ms.map((m) => m.until('say', fromOthers(m), PER_SENDER * (ms.length - 1))));

    // A fence: each sender sends one last relay; once every fence has arrived everywhere, any
    // duplicate of the earlier relays sent on the same paths would have arrived too.
    for (const m of ms) m.socket.emit('say', { room: 'r1', from: m.id, fence: true });
    await Promise.all(ms.map((m) => m.until('say', (a) => a[0].fence && a[0].from !== m.id, ms.length - 1)));
    await converged(() => ctx.cluster.broker.state(), ctx.members);

    for (const m of ms) {
      const got = m.of('say').map((a) => a[0]);
      assert.equal(got.filter((x) => x.from === m.id).length, 0, `${m.id} got its own relays back`);
      const seen = new Map();
      for (const x of got.filter((y) => !y.fence)) {
        const key = `${x.from}#${x.n}`;
        seen.set(key, (seen.get(key) || 0) + 1);
      }
      for (const other of ms.filter((o) => o !== m)) {
        for (let n = 0; n < PER_SENDER; n += 1) {
          assert.equal(seen.get(`${other.id}#${n}`), 1, `${m.id} (${m.gw.nodeId}) got ${other.id}'s relay #${n} ${seen.get(`${other.id}#${n}`) || 0} times`);
        }
      }
      assert.equal(got.length, PER_SENDER * (ms.length - 1) + ms.length - 1, `${m.id}: nothing else arrived`);
    }
  });

  it('a namespace-wide broadcast reaches every gateway once, not the sender', async () => {
    const [g1, g2, g3] = ctx.cluster.gateways;
    // Outside any room, on every gateway (plus two on one gateway).
    const ms = [await ctx.members.connect(g1), await ctx.members.connect(g2), await ctx.members.connect(g3), await ctx.members.connect(g3)];
    const everyone = ctx.members.all.filter((m) => !m.gone);
    await converged(() => ctx.cluster.broker.state(), ctx.members);
    ms[0].socket.emit('shout', { from: ms[0].id, text: 'hello all' });
    const others = everyone.filter((m) => m !== ms[0]);
    await Promise.all(others.map((m) => m.until('shout', (a) => a[0].from === ms[0].id)));
    // Fence through the same path: a second broadcast.
    ms[0].socket.emit('shout', { from: ms[0].id, fence: true });
    await Promise.all(others.map((m) => m.until('shout', (a) => a[0].fence)));
    for (const m of others) {
      assert.equal(m.of('shout', (a) => a[0].text === 'hello all').length, 1, `${m.id} (${m.gw.nodeId}) got the broadcast once`);
    }
    assert.equal(ms[0].of('shout').length, 0, 'the sender does not get its own broadcast');
  });

  // A join acked on gw2, then a relay from gw1 into that room: the relay must reach the new
  // member. The gateway acks a join only once its subscription to the room's subject is in
  // effect at the NATS server (a round trip, `Bus::barrier`; a buffer flush left about 1 relay
  // in 20 lost). Many rounds, so that the test fails whenever such a window exists.
  it('a relay sent right after a remote member\'s join ack reaches it', async () => {
    const [g1, g2] = ctx.cluster.gateways;
    const sender = await ctx.members.connect(g1);
    const joiner = await ctx.members.connect(g2);
    const ROUNDS = 300;
    const lost = [];
    for (let i = 0; i < ROUNDS; i += 1) {
      const room = `fresh-${i}`;
      assert.deepEqual(await sender.join(room), OK);
      assert.deepEqual(await joiner.join(room), OK);
      sender.socket.emit('say', { room, i });
      try {
        await joiner.until('say', (a) => a[0].room === room, 1, 500);
      } catch {
        lost.push(i);
      }
      assert.deepEqual(await joiner.leave(room), OK);
      assert.deepEqual(await sender.leave(room), OK);
    }
    assert.deepEqual(lost, [], `relays lost right after the join ack, in rounds ${JSON.stringify(lost)} of ${ROUNDS}`);
  });

  it('keeps per-room order: 200 numbered relays arrive in order on another gateway', async () => {
    const [g1, g2] = ctx.cluster.gateways;
    const sender = await ctx.members.connect(g1);
    const receiver = await ctx.members.connect(g2);
    assert.deepEqual(await sender.join('ordered'), OK);
    assert.deepEqual(await receiver.join('ordered'), OK);
    await converged(() => ctx.cluster.broker.state(), ctx.members);
    const COUNT = 200;
    for (let n = 0; n < COUNT; n += 1) sender.socket.emit('say', { room: 'ordered', n });
    await receiver.until('say', (a) => a[0].room === 'ordered', COUNT);
    const got = receiver.of('say', (a) => a[0].room === 'ordered').map((a) => a[0].n);
    assert.deepEqual(got, Array.from({ length: COUNT }, (_, n) => n));
  });
});

describe('cluster: deliveries and commands published on the bus', () => {
  const ctx = clusterSuite({ bus: true });

  it('a Delivery for one socket id on its node subject reaches it, and not a room mate elsewhere', async () => {
    const [g1, g2, g3] = ctx.cluster.gateways;
    const a = await ctx.members.connect(g1);
    const b = await ctx.members.connect(g2);
    const c = await ctx.members.connect(g3);
    for (const m of [a, b, c]) assert.deepEqual(await m.join('r2'), OK);
    await converged(() => ctx.cluster.broker.state(), ctx.members);
    assert.equal(b.id.split('.')[0], 'gw2', `the socket id ${b.id} names its node`);

    const s = ctx.client.subjects;
    await ctx.client.deliver(s.node('gw2'), { ns: NS, target: { socket_ids: [b.id] }, packet: bus.eventPacket(NS, 'direct', { x: 1 }) });
    await b.until('direct');
    assert.deepEqual(b.of('direct'), [[{ x: 1 }]]);

    // A fence for c on its own node subject: had c been given the first delivery, it came first.
    await ctx.client.deliver(s.node('gw3'), { ns: NS, target: { socket_ids: [c.id] }, packet: bus.eventPacket(NS, 'fence') });
    await c.until('fence');
    assert.equal(c.of('direct').length, 0, 'the room mate on gw3 did not get the targeted emit');
    assert.equal(a.of('direct').length, 0, 'the room mate on gw1 did not get the targeted emit');
  });

  it('a Delivery on a room subject reaches every member once; on the namespace subject, every socket', async () => {
    const [g1, g2, g3] = ctx.cluster.gateways;
    const a = await ctx.members.connect(g1);
    const b = await ctx.members.connect(g2);
    const c = await ctx.members.connect(g3);
    const outsider = await ctx.members.connect(g3);
    for (const m of [a, b, c]) assert.deepEqual(await m.join('r3'), OK);
    await converged(() => ctx.cluster.broker.state(), ctx.members);
    const s = ctx.client.subjects;
    await ctx.client.deliver(s.room(NS, 'r3'), { ns: NS, target: { rooms: ['r3'] }, packet: bus.eventPacket(NS, 'to-room', 3) });
    await Promise.all([a, b, c].map((m) => m.until('to-room')));
    await ctx.client.deliver(s.namespace(NS), { ns: NS, target: {}, packet: bus.eventPacket(NS, 'to-all', 'x') });
    await Promise.all([a, b, c, outsider].map((m) => m.until('to-all')));
    for (const m of [a, b, c]) assert.deepEqual(m.of('to-room'), [[3]], `${m.id} got the room delivery once`);
    assert.equal(outsider.of('to-room').length, 0, 'a non-member did not get the room delivery');
    for (const m of [a, b, c, outsider]) assert.equal(m.of('to-all').length, 1);
  });

  it('a Delivery to the main namespace carries 42[...] frames', async () => {
    const [, g2] = ctx.cluster.gateways;
    const m = await ctx.members.connect(g2, { ns: '/' });
    await ctx.client.deliver(ctx.client.subjects.node('gw2'), { ns: '/', target: { socket_ids: [m.id] }, packet: bus.eventPacket('/', 'direct', { root: true }) });
    await m.until('direct');
    assert.deepEqual(m.of('direct'), [[{ root: true }]]);
  });

  it('Commands join, leave and disconnect sockets of another gateway', async () => {
    const [, , g3] = ctx.cluster.gateways;
    const m = await ctx.members.connect(g3);
    const s = ctx.client.subjects;
    await ctx.client.command(s.commandNode('gw3'), { ns: NS, target: { socket_ids: [m.id] }, join: { rooms: ['by-command'] } });
    m.rooms.add('by-command');
    await converged(() => ctx.cluster.broker.state(), ctx.members, { what: 'the joined room in the broker state' });
    // The joined room works for deliveries too. A command has no ack: gw3 subscribes to the room's
    // subject after the join, asynchronously (the broker may see the join first), so the delivery
    // is repeated until one arrives.
    const deadline = Date.now() + 8000;
    for (;;) {
      await ctx.client.deliver(s.room(NS, 'by-command'), { ns: NS, target: { rooms: ['by-command'] }, packet: bus.eventPacket(NS, 'cmd-room') });
      try {
        await m.until('cmd-room', undefined, 1, 250);
        break;
      } catch (e) {
        if (Date.now() > deadline) throw e;
      }
    }

    await ctx.client.command(s.commandNode('gw3'), { ns: NS, target: { socket_ids: [m.id] }, leave: { rooms: ['by-command'] } });
    m.rooms.delete('by-command');
    await converged(() => ctx.cluster.broker.state(), ctx.members, { what: 'the left room gone from the broker state' });

    const gone = new Promise((resolve) => m.socket.once('disconnect', resolve));
    await ctx.client.command(s.commandNode('gw3'), { ns: NS, target: { socket_ids: [m.id] }, disconnect: { close_connection: false } });
    assert.equal(await within(gone, 'the kicked socket to disconnect'), 'io server disconnect');
    await converged(() => ctx.cluster.broker.state(), ctx.members, { what: 'the kicked socket gone from the broker state' });
  });
});

describe('cluster: forward to workers, connect and disconnect notices', () => {
  const ctx = clusterSuite({ bus: true });
  // The workers the tests start, stopped with the cluster unless a test stopped them before.
  const workers = ctx.stopLater;

  it('an acked forward round-trips through a worker: args, user, claims, socket id and node', async () => {
    const w = await startWorker({ url: ctx.cluster.nats.url, prefix: ctx.cluster.prefix });
    workers.push(w);
    const [, g2] = ctx.cluster.gateways;
    const m = await ctx.members.connect(g2, { user: 'alice' });
    assert.deepEqual(await m.join('lobby'), OK);
    const res = await m.ack('ask', { q: 'hi' }, [1, 2]);
    assert.deepEqual(res, {
      ok: true,
      echo: [{ q: 'hi' }, [1, 2]],
      user: 'alice',
      socket: m.id,
      node: 'gw2',
      claims: res.claims,
    });
    assert.equal(res.claims.sub, 'alice');
    assert.equal(res.claims.iss, 'switchboard-e2e');
    const ev = w.events.find((e) => e.event === 'ask');
    assert.equal(ev.ns, NS);
    assert.equal(ev.wants_ack, true);
    assert.equal(ev.subject, `${ctx.cluster.prefix}.event._2Fchat.ask`);
    assert.deepEqual(ev.rooms.filter((r) => r === 'lobby'), ['lobby'], `the rooms are carried: ${JSON.stringify(ev.rooms)}`);

    // Anonymous: no user.
    const anon = await ctx.members.connect(ctx.cluster.gateways[0]);
    const res2 = await anon.ack('ask', 'x');
    assert.equal(res2.user, null);
    assert.equal(res2.node, 'gw1');
    assert.equal(res2.socket, anon.id);
  });

  it('a forward without an ack reaches exactly one worker of the queue group, once', async () => {
    const second = await startWorker({ url: ctx.cluster.nats.url, prefix: ctx.cluster.prefix, name: 'e2e-worker-2' });
    workers.push(second);
    const [, , g3] = ctx.cluster.gateways;
    const m = await ctx.members.connect(g3);
    m.socket.emit('note', { id: 'n-1' });
    const noted = (e) => e.event === 'note' && JSON.parse(e.args_json)[0].id === 'n-1';
    await waitFor(() => workers.some((w) => w.events.some(noted)), { what: 'the note at a worker' });
    // A fence on the same path: an acked forward after it, answered by either worker.
    assert.equal((await m.ack('ask', 'fence')).ok, true);
    const copies = workers.flatMap((w) => w.events.filter(noted));
    assert.equal(copies.length, 1, `the note reached the workers ${copies.length} times`);
    assert.equal(copies[0].wants_ack, false);
    assert.equal(copies[0].replied, false, 'a forward without ack is a publish, not a request');
    assert.equal(copies[0].socket_id, m.id);
  });

  it('a worker error and a worker that never answers become error acks', async () => {
    const m = await ctx.members.connect(ctx.cluster.gateways[0]);
    assert.deepEqual(await m.ack('refuse', 1), { ok: false, error: 'refused' });
    assert.deepEqual(await m.ack('slow', 1), { ok: false, error: 'worker timeout' });
  });

  it('with no worker running, an acked forward answers "no worker"', async () => {
    await Promise.all(workers.splice(0).map((w) => w.stop()));
    const m = await ctx.members.connect(ctx.cluster.gateways[1]);
    assert.deepEqual(await m.ack('ask', 1), { ok: false, error: 'no worker' });
  });

  it('connect and disconnect notices reach a subscriber on p.life.>', async () => {
    const life = await ctx.client.listen(ctx.client.subjects.allLife(), 'LifeEvent');
    const m = await ctx.members.connect(ctx.cluster.gateways[1], { user: 'bob' });
    assert.deepEqual(await m.join('life-room'), OK);
    const isMine = (x) => x.msg.socket && x.msg.socket.id === m.id;
    await waitFor(() => life.messages.some((x) => isMine(x) && x.subject.endsWith('.connect')), { what: 'the connect notice' });
    m.socket.disconnect();
    m.gone = true;
    await waitFor(() => life.messages.some((x) => isMine(x) && x.subject.endsWith('.disconnect')), { what: 'the disconnect notice' });
    const connects = life.messages.filter((x) => isMine(x) && x.subject === `${ctx.cluster.prefix}.life._2Fchat.connect`);
    const disconnects = life.messages.filter((x) => isMine(x) && x.subject === `${ctx.cluster.prefix}.life._2Fchat.disconnect`);
    assert.equal(connects.length, 1);
    assert.equal(disconnects.length, 1);
    assert.equal(connects[0].msg.node, 'gw2');
    assert.equal(connects[0].msg.socket.ns, NS);
    assert.equal(connects[0].msg.socket.user, 'bob');
    assert.equal(disconnects[0].msg.reason, 'client namespace disconnect');
    assert.ok(disconnects[0].msg.socket.rooms.includes('life-room'), `the disconnect notice lists the rooms left: ${JSON.stringify(disconnects[0].msg.socket.rooms)}`);
    life.unsubscribe();
  });
});

describe('cluster: a gateway killed with -9', () => {
  const ctx = clusterSuite();

  it('is purged by the broker after the lease; its room mates get presence with reason node_lost, once with two brokers', async () => {
    const [g1, g2, g3] = ctx.cluster.gateways;
    // A second broker on the same NATS and prefix: both purge, only the KV-lease leader announces.
    const broker2 = await startBroker({ natsUrl: ctx.cluster.nats.url, prefix: ctx.cluster.prefix });
    ctx.stopLater.push(broker2);
    const a = await ctx.members.connect(g1, { user: 'alice' });
    const b = await ctx.members.connect(g2);
    const doomed = await ctx.members.connect(g3, { user: 'carol' });
    const doomed2 = await ctx.members.connect(g3);
    for (const m of [a, b, doomed, doomed2]) assert.deepEqual(await m.join('doomed-room'), OK);
    await converged(() => ctx.cluster.broker.state(), ctx.members);
    await converged(() => broker2.state(), ctx.members, { what: 'the second broker to equal the truth' });

    await g3.kill();
    doomed.gone = true;
    doomed2.gone = true;
    const state = await converged(() => ctx.cluster.broker.state(), ctx.members, { what: 'gw3 and its sockets gone from the broker state' });
    assert.deepEqual(
      state.nodes.map((n) => n.id).sort(),
      ['gw1', 'gw2'],
      `the lost node is no longer listed: ${JSON.stringify(state.nodes)}`,
    );
    assert.equal(state.sockets.filter((s) => s.node === 'gw3').length, 0);
    await converged(() => broker2.state(), ctx.members, { what: 'gw3 gone from the second broker too' });

    const left = (who) => (args) => args[0] && args[0].kind === 'member_left' && args[0].socket === who.id;
    await Promise.all([a, b].flatMap((m) => [m.until('presence', left(doomed)), m.until('presence', left(doomed2))]));
    for (const m of [a, b]) {
      for (const who of [doomed, doomed2]) {
        const got = m.of('presence', left(who));
        assert.equal(got.length, 1, `${m.id} got member_left of ${who.id} once: ${JSON.stringify(got)}`);
        assert.deepEqual(got[0][0], { kind: 'member_left', room: 'doomed-room', user: who === doomed ? 'carol' : null, socket: who.id, reason: 'node_lost' });
      }
    }
    // carol's only socket is gone: her room mates see her leave the room, the namespace sees her go offline.
    await Promise.all([a, b].map((m) => m.until('presence', (x) => x[0].kind === 'user_offline' && x[0].user === 'carol')));
    for (const m of [a, b]) {
      assert.deepEqual(m.of('presence', (x) => x[0].kind === 'user_left' && x[0].user === 'carol').map((x) => x[0]), [
        { kind: 'user_left', room: 'doomed-room', user: 'carol', socket: doomed.id, reason: 'node_lost' },
      ]);
      assert.deepEqual(m.of('presence', (x) => x[0].kind === 'user_offline' && x[0].user === 'carol').map((x) => x[0]), [
        { kind: 'user_offline', room: null, user: 'carol', socket: doomed.id, reason: 'node_lost' },
      ]);
      // Still once each, now that the later announcements arrived too.
      for (const who of [doomed, doomed2]) assert.equal(m.of('presence', left(who)).length, 1);
    }
  });

  it('a gateway stopped with SIGTERM takes its sockets along at once, not through the lease', async () => {
    const [g1, g2] = ctx.cluster.gateways;
    const stay = await ctx.members.connect(g1, { user: 'dan' });
    const going = await ctx.members.connect(g2, { user: 'erin' });
    for (const m of [stay, going]) assert.deepEqual(await m.join('sigterm-room'), OK);
    await converged(() => ctx.cluster.broker.state(), ctx.members);

    await g2.stop();
    for (const m of ctx.members.all) if (m.gw === g2) m.gone = true;
    await converged(() => ctx.cluster.broker.state(), ctx.members, { what: 'gw2 and its sockets gone from the broker state' });
    // The node's Leaving message follows its sockets' disconnects, so it may land a moment after
    // the sockets are gone. (That they left cleanly, not by lease expiry, is the reason check below.)
    await waitFor(async () => !(await ctx.cluster.broker.state()).nodes.some((n) => n.id === 'gw2'), {
      what: 'gw2 to leave the node list',
    });
    const left = (args) => args[0] && args[0].kind === 'member_left' && args[0].socket === going.id;
    await stay.until('presence', left);
    const got = stay.of('presence', left).map((x) => x[0]);
    assert.equal(got.length, 1, JSON.stringify(got));
    assert.equal(got[0].reason, SIGTERM_REASON, 'the socket left with its disconnect reason, not node_lost after the lease');
  });
});

describe('cluster: the broker restarted', () => {
  const ctx = clusterSuite();

  it('a new broker on the same NATS and prefix rebuilds the state without any client action', async () => {
    const [g1, g2, g3] = ctx.cluster.gateways;
    const plan = [
      [g1, ['a', 'b']],
      [g1, ['b']],
      [g2, ['a', 'c']],
      [g3, []],
      [g3, ['a', 'b', 'c', 'd']],
    ];
    for (const [gw, rooms] of plan) {
      const m = await ctx.members.connect(gw, { user: gw === g2 ? 'dave' : undefined });
      for (const room of rooms) assert.deepEqual(await m.join(room), OK);
    }
    await converged(() => ctx.cluster.broker.state(), ctx.members);
    await ctx.cluster.broker.stop();
    const broker2 = await startBroker({ natsUrl: ctx.cluster.nats.url, prefix: ctx.cluster.prefix });
    ctx.stopLater.push(broker2);
    const state = await converged(() => broker2.state(), ctx.members, { what: 'the new broker state to equal the truth' });
    assert.deepEqual(state.nodes.map((n) => n.id).sort(), ['gw1', 'gw2', 'gw3']);
    const dave = state.sockets.filter((s) => s.user === 'dave');
    assert.equal(dave.length, 1);
    assert.equal(dave[0].node, 'gw2');
  });
});

describe('cluster: a dropped membership message', () => {
  const ctx = clusterSuite({ gateways: 2, bus: true });

  it('is healed through a snapshot: the broker state equals the truth', async () => {
    const watch = await ctx.client.listen(ctx.client.subjects.member('gw4'), 'MemberMessage');
    const gw4 = await startGateway({
      natsUrl: ctx.cluster.nats.url,
      nodeId: 'gw4',
      prefix: ctx.cluster.prefix,
      config: CONFIG,
      env: { ...ENV, SWITCHBOARD_FAULT_DROP_MEMBER_SEQ: '3' },
    });
    ctx.stopLater.push(gw4);
    const other = await ctx.members.connect(ctx.cluster.gateways[0]);
    assert.deepEqual(await other.join('x'), OK);
    const m = await ctx.members.connect(gw4); // seq 1: connect
    assert.deepEqual(await m.join('x'), OK); // seq 2
    assert.deepEqual(await m.join('y'), OK); // seq 3: never published
    await converged(() => ctx.cluster.broker.state(), ctx.members, { what: 'the broker to heal gw4 through a snapshot', timeoutMs: 10_000 });

    // The messages as published alone, batches taken apart (docs/cluster.md, "Membership in batches").
    const published = watch.messages.flatMap((x) => (x.msg.body === 'batch' ? x.msg.batch.messages : [x.msg]));
    const events = published.filter((msg) => msg.body !== 'snapshot');
    const seqs = events.map((msg) => Number(msg.seq));
    assert.ok(seqs.includes(1) && seqs.includes(2), `seq 1 and 2 published: ${JSON.stringify(seqs)}`);
    assert.ok(!seqs.includes(3), `seq 3 (the join of y) was dropped by the fault injection: ${JSON.stringify(events)}`);
    const snapshots = published.filter((msg) => msg.body === 'snapshot' && Number(msg.seq) >= 3);
    assert.ok(snapshots.length >= 1, 'a snapshot as of seq 3 or later was published');
    // And the node keeps working after the heal.
    assert.deepEqual(await m.leave('x'), OK);
    assert.deepEqual(await m.join('z'), OK);
    await converged(() => ctx.cluster.broker.state(), ctx.members);
  });
});

describe('cluster: NATS restarted', () => {
  const ctx = clusterSuite({ gateways: 2 });
  // GET /ready with its body: 200 "ready", or 200 "ready (degraded: cluster bus down)" once the
  // gateway has lost a bus it had reached (503 only while draining or before the bus was reached).
  const readiness = async (gw) => {
    const res = await fetch(`${gw.url}/ready`);
    return `${res.status} ${await res.text()}`;
  };

  it('degraded, not dark: /ready stays 200, new clients and local delivery go on, everything heals afterwards', async () => {
    const [g1, g2] = ctx.cluster.gateways;
    assert.equal(await readiness(g1), '200 ready');
    const a1 = await ctx.members.connect(g1);
    const a2 = await ctx.members.connect(g1);
    const b = await ctx.members.connect(g2);
    for (const m of [a1, a2, b]) assert.deepEqual(await m.join('local'), OK);
    await converged(() => ctx.cluster.broker.state(), ctx.members);

    await ctx.cluster.nats.kill();
    const degraded = '200 ready (degraded: cluster bus down)';
    await waitFor(async () => (await readiness(g1)) === degraded && (await readiness(g2)) === degraded, {
      what: 'both gateways ready but degraded',
    });

    // New clients are accepted on every gateway during the outage, and local delivery goes on.
    const c1 = await ctx.members.connect(g1);
    const c2 = await ctx.members.connect(g2);
    assert.deepEqual(await c1.join('local'), OK);
    assert.deepEqual(await c2.join('local'), OK);
    a1.socket.emit('say', { room: 'local', text: 'while down' });
    await Promise.all([a2, c1].map((m) => m.until('say', (x) => x[0].text === 'while down')));
    c2.socket.emit('say', { room: 'local', text: 'on gw2 while down' });
    await b.until('say', (x) => x[0].text === 'on gw2 while down');
    // A membership change while down, for the broker to learn afterwards.
    assert.deepEqual(await a2.join('during-outage'), OK);
    const gone = ctx.members.all.find((m) => m === a1);
    gone.socket.disconnect();
    gone.gone = true;

    await ctx.cluster.nats.restart();
    await waitFor(async () => (await readiness(g1)) === '200 ready' && (await readiness(g2)) === '200 ready', {
      what: '/ready without "degraded" again',
      timeoutMs: CONVERGE_MS,
    });

    // Cross-gateway relays work again (each try is a new message: core NATS is at-most-once while
    // subscriptions are being restored).
    let n = 0;
    await waitFor(
      () => {
        n += 1;
        b.socket.emit('say', { room: 'local', text: 'after', n });
        return a2.of('say', (x) => x[0].text === 'after').length > 0 && c1.of('say', (x) => x[0].text === 'after').length > 0;
      },
      { intervalMs: 200, timeoutMs: CONVERGE_MS, what: 'a relay gw2 → gw1 after the restart' },
    );
    // (The relays sent while NATS was down may or may not reach the other gateway afterwards: the
    // gateway's NATS client buffers what it publishes while reconnecting. Nothing is asserted.)
    // The clients that arrived during the outage are in the broker's state too (resync snapshot).
    await converged(() => ctx.cluster.broker.state(), ctx.members, { what: 'the broker state after the NATS restart', timeoutMs: 10_000 });
  });
});

describe('cluster: room capacity', () => {
  const ctx = clusterSuite();

  it('max_members = 2: of three clients on three gateways, exactly two get in', async () => {
    const ms = [];
    for (const gw of ctx.cluster.gateways) ms.push(await ctx.members.connect(gw));
    await converged(() => ctx.cluster.broker.state(), ctx.members);
    const results = await Promise.all(ms.map((m) => m.join('small-1', 'join-small')));
    const ok = results.filter((r) => r && r.ok === true);
    const full = results.filter((r) => r && r.ok === false);
    assert.equal(ok.length, 2, `two joins succeed: ${JSON.stringify(results)}`);
    assert.deepEqual(full, [{ ok: false, error: 'room full' }]);
    const state = await converged(() => ctx.cluster.broker.state(), ctx.members);
    assert.equal(state.sockets.filter((s) => s.rooms.includes('small-1')).length, 2);

    // A place freed is a place to take.
    const inside = ms.filter((m) => m.rooms.has('small-1'));
    const outside = ms.find((m) => !m.rooms.has('small-1'));
    assert.deepEqual(await inside[0].leave('small-1'), OK);
    await converged(() => ctx.cluster.broker.state(), ctx.members);
    assert.deepEqual(await outside.join('small-1', 'join-small'), OK);
    assert.deepEqual(await inside[0].join('small-1', 'join-small'), { ok: false, error: 'room full' });
    // Joining again is fine for a member.
    assert.deepEqual(await outside.join('small-1', 'join-small'), OK);
    await converged(() => ctx.cluster.broker.state(), ctx.members);
  });
});

describe('standalone: one gateway with its embedded broker, no NATS', () => {
  let gw;
  const members = new Members();
  before(async () => {
    gw = await startGateway({ nodeId: 'solo', config: CONFIG, env: ENV });
  });
  after(async () => {
    members.closeAll();
    if (gw) await gw.stop();
  });

  it('relays within a room, /v1/state equals the truth', async () => {
    assert.equal(await gw.ready(), 200);
    const a = await members.connect(gw);
    const b = await members.connect(gw, { transports: ['polling'] });
    const c = await members.connect(gw);
    for (const m of [a, b]) assert.deepEqual(await m.join('solo-room'), OK);
    await converged(() => gw.state(), members);
    a.socket.emit('say', { room: 'solo-room', text: 'hi' });
    a.socket.emit('say', { room: 'solo-room', fence: true });
    await b.until('say', (x) => x[0].fence);
    assert.deepEqual(b.of('say'), [[{ room: 'solo-room', text: 'hi' }], [{ room: 'solo-room', fence: true }]]);
    assert.equal(a.of('say').length, 0);
    assert.equal(c.of('say').length, 0);
    assert.deepEqual(await c.ack('ask', 1), { ok: false, error: 'no worker' });
  });

  it('announces presence: member_joined and member_left (reason leave), user_online', async () => {
    const a = await members.connect(gw);
    assert.deepEqual(await a.join('seen'), OK);
    const b = await members.connect(gw, { user: 'erin' });
    await a.until('presence', (x) => x[0].kind === 'user_online' && x[0].user === 'erin');
    assert.deepEqual(await b.join('seen'), OK);
    await a.until('presence', (x) => x[0].kind === 'member_joined' && x[0].socket === b.id);
    assert.deepEqual(await b.leave('seen'), OK);
    await a.until('presence', (x) => x[0].kind === 'member_left' && x[0].socket === b.id);
    const [left] = a.of('presence', (x) => x[0].kind === 'member_left' && x[0].socket === b.id);
    assert.deepEqual(left[0], { kind: 'member_left', room: 'seen', user: 'erin', socket: b.id, reason: 'leave' });
    assert.deepEqual(a.of('presence', (x) => x[0].kind === 'member_joined' && x[0].socket === b.id)[0][0], {
      kind: 'member_joined',
      room: 'seen',
      user: 'erin',
      socket: b.id,
      reason: a.of('presence', (x) => x[0].kind === 'member_joined' && x[0].socket === b.id)[0][0].reason,
    });
    assert.equal(b.of('presence', (x) => x[0].socket === b.id && x[0].kind.startsWith('member')).length, 0, 'no news about oneself');
    await converged(() => gw.state(), members);
  });

  it('max_members = 2: of three clients, exactly two get in', async () => {
    const ms = [await members.connect(gw), await members.connect(gw), await members.connect(gw)];
    const results = await Promise.all(ms.map((m) => m.join('small-solo', 'join-small')));
    assert.equal(results.filter((r) => r.ok === true).length, 2, JSON.stringify(results));
    assert.deepEqual(results.filter((r) => r.ok !== true), [{ ok: false, error: 'room full' }]);
    await converged(() => gw.state(), members);
  });
});
