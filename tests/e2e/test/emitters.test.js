'use strict';
// The emitter packages (emitters/node, emitters/python) against a real cluster: nats-server with
// the shipped permissions (the emitters connect as the `emitter` user), the broker and two
// gateways running fixtures/recovery.toml (`/` plain, `/chat` with connection state recovery),
// and official socket.io-clients. For each package:
//
// - text and binary emits to a room reach its members on both gateways, and not the others;
// - `except` leaves a room's members out; a namespace-wide emit reaches everyone; an emit to a
//   socket id reaches that socket (its node's subject);
// - socketsJoin makes a client receive a room's emits; socketsLeave takes it out again (the
//   broker sees both); disconnectSockets kicks;
// - serverSideEmit reaches a NATS subscriber with the `worker` credential, never a client;
// - an emit into the recovery namespace while a client is away is replayed to it when it comes
//   back (same id, recovered, the emit's offset as the last argument).
//
// The Python package runs in the venv scripts/test.sh makes (emitters/python/.venv, or
// $SWITCHBOARD_EMITTER_PYTHON), through emitters/python/tests/driver.py.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');
const { connect } = require('nats');
const { io } = require('socket.io-client');
const { startCluster, waitFor } = require('../lib/cluster');
const bus = require('../lib/bus');
const { Members, token, ENV } = require('../lib/members');
const { REPO } = require('../lib/server');
const { Emitter } = require('../../../emitters/node');

const CONFIG = 'recovery.toml';
const MAIN = '/';
const RECOVERY_NS = '/chat';
const PYTHON = process.env.SWITCHBOARD_EMITTER_PYTHON || path.join(REPO, 'emitters', 'python', '.venv', 'bin', 'python');
const DRIVER = path.join(REPO, 'emitters', 'python', 'tests', 'driver.py');

/** The vectors' binary marker, understood by both drivers. */
const bin = (bytes) => ({ $bin: Buffer.from(bytes).toString('base64') });
const revive = (v) => {
  if (Array.isArray(v)) return v.map(revive);
  if (v && typeof v === 'object') {
    if (Object.keys(v).length === 1 && '$bin' in v) return Buffer.from(v.$bin, 'base64');
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, revive(x)]));
  }
  return v;
};

/**
 * Both packages behind one interface: `run(req)` performs a request of driver.py's form
 * ({ verb, ns, recovery?, to?, except?, volatile?, compress?, event?, args?, rooms?, close? }).
 */
async function nodeEmitter(cluster) {
  const { user, pass } = bus.credentials(cluster.nats.url, 'emitter');
  const nc = await connect({ servers: cluster.nats.url, user, pass, name: 'e2e-node-emitter' });
  const emitter = new Emitter(nc, { prefix: cluster.prefix, origin: 'node', recovery: [RECOVERY_NS] });
  return {
    async run(req) {
      const ns = emitter.of(req.ns, req.recovery === undefined ? {} : { recovery: req.recovery });
      let op = ns;
      for (const room of req.to || []) op = op.to(room);
      if (req.except) op = op.except(req.except);
      if (req.volatile) op = op.volatile;
      if (req.compress === false) op = op.compress(false);
      const args = revive(req.args || []);
      if (req.verb === 'emit') await op.emit(req.event, ...args);
      else if (req.verb === 'sockets_join') await op.socketsJoin(req.rooms);
      else if (req.verb === 'sockets_leave') await op.socketsLeave(req.rooms);
      else if (req.verb === 'disconnect_sockets') await op.disconnectSockets(Boolean(req.close));
      else if (req.verb === 'server_side_emit') await ns.serverSideEmit(req.event, ...args);
      else throw new Error(`unknown verb ${req.verb}`);
      await emitter.flush();
    },
    close: () => nc.drain().catch(() => nc.close()),
  };
}

async function pythonEmitter(cluster) {
  assert.ok(
    fs.existsSync(PYTHON),
    `no Python venv at ${PYTHON}: run scripts/test.sh, or python3 -m venv emitters/python/.venv && emitters/python/.venv/bin/pip install -e 'emitters/python[test]'`,
  );
  const { user, pass } = bus.credentials(cluster.nats.url, 'emitter');
  const child = spawn(PYTHON, [DRIVER, cluster.nats.url, user, pass, cluster.prefix, JSON.stringify([RECOVERY_NS])], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = readline.createInterface({ input: child.stdout });
  const pending = new Map();
  let ready;
  const started = new Promise((resolve, reject) => {
    ready = resolve;
    child.once('exit', (code) => reject(new Error(`driver.py exited with ${code}`)));
  });
  lines.on('line', (line) => {
    const msg = JSON.parse(line);
    if (msg.ready) return ready();
    const p = pending.get(msg.id);
    pending.delete(msg.id);
    if (msg.ok) p.resolve();
    else p.reject(new Error(msg.error));
  });
  await started;
  let next = 0;
  return {
    run(req) {
      next += 1;
      const id = next;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        child.stdin.write(`${JSON.stringify({ id, ...req })}\n`);
      });
    },
    close() {
      child.stdin.end();
      return new Promise((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', resolve)));
    },
  };
}

/** A Buffer of whatever socket.io-client handed over for a binary argument. */
const bytes = (x) => Buffer.from(x instanceof ArrayBuffer ? new Uint8Array(x) : x);

describe('the emitter packages against a cluster, as the emitter NATS user', () => {
  let cluster;
  const members = new Members();
  let worker; // a NATS client with the worker credential (server-side events)

  before(async () => {
    cluster = await startCluster({ config: CONFIG, env: ENV, gateways: 2 });
    const { user, pass } = bus.credentials(cluster.nats.url, 'worker');
    worker = await connect({ servers: cluster.nats.url, user, pass, name: 'e2e-worker' });
  });

  after(async () => {
    members.closeAll();
    if (worker) await worker.drain().catch(() => {});
    if (cluster) await cluster.stop();
  });

  for (const [name, make] of [['node', nodeEmitter], ['python', pythonEmitter]]) {
    describe(`the ${name} package`, () => {
      let emitter;
      let a; // gw1, in `${name}-r`
      let b; // gw2, in `${name}-r` and `${name}-muted`
      let c; // gw2, in no room
      const room = `${name}-r`;
      const muted = `${name}-muted`;

      before(async () => {
        emitter = await make(cluster);
        const [g1, g2] = cluster.gateways;
        a = await members.connect(g1, { ns: MAIN });
        b = await members.connect(g2, { ns: MAIN });
        c = await members.connect(g2, { ns: MAIN });
        for (const [m, r] of [[a, room], [b, room], [b, muted]]) assert.deepEqual(await m.join(r), { ok: true });
        // The room's subscriptions are in place once an emit reaches both members.
        await waitFor(async () => {
          await emitter.run({ verb: 'emit', ns: MAIN, to: [room], event: 'warm-up' });
          return a.of('warm-up').length > 0 && b.of('warm-up').length > 0;
        }, { what: 'a room emit to reach both gateways' });
      });

      after(async () => {
        if (emitter) await emitter.close();
      });

      it('text and binary emits to a room reach its members on both gateways, and no one else', async () => {
        await emitter.run({ verb: 'emit', ns: MAIN, to: [room], event: 'text', args: [{ n: 1, s: 'é 😀' }, [1, 2]] });
        const blob = [0, 1, 2, 254, 255];
        await emitter.run({
          verb: 'emit',
          ns: MAIN,
          to: [room],
          event: 'binary',
          args: ['head', bin(blob), { nested: [bin([7]), { deep: bin([]) }] }],
        });
        for (const m of [a, b]) {
          await m.until('text');
          assert.deepEqual(m.of('text'), [[{ n: 1, s: 'é 😀' }, [1, 2]]]);
          await m.until('binary');
          const [[head, buf, nested]] = m.of('binary');
          assert.equal(head, 'head');
          assert.deepEqual(bytes(buf), Buffer.from(blob));
          assert.deepEqual(bytes(nested.nested[0]), Buffer.from([7]));
          assert.deepEqual(bytes(nested.nested[1].deep), Buffer.alloc(0));
        }
        // c is in no room: a namespace-wide emit after those reaches it, the room emits did not.
        await emitter.run({ verb: 'emit', ns: MAIN, event: 'everyone', args: [name] });
        for (const m of [a, b, c]) await m.until('everyone');
        assert.deepEqual(c.of('everyone'), [[name]]);
        assert.equal(c.of('text').length + c.of('binary').length, 0, 'the room emits reached a non-member');
      });

      it('except leaves a room out; an emit to a socket id reaches that socket', async () => {
        await emitter.run({ verb: 'emit', ns: MAIN, to: [room], except: [muted], event: 'quiet' });
        await a.until('quiet');
        await emitter.run({ verb: 'emit', ns: MAIN, to: [b.id], event: 'direct', args: ['to b'] });
        await b.until('direct');
        assert.deepEqual(b.of('direct'), [['to b']]);
        assert.equal(b.of('quiet').length, 0, 'a member of the excepted room got the emit');
        assert.equal(a.of('direct').length + c.of('direct').length, 0, 'the emit to b reached another socket');
      });

      it('socketsJoin makes a client receive a room emit; socketsLeave takes it out; the broker sees both', async () => {
        const vip = `${name}-vip`;
        await emitter.run({ verb: 'sockets_join', ns: MAIN, to: [c.id], rooms: [vip] });
        await waitFor(async () => {
          await emitter.run({ verb: 'emit', ns: MAIN, to: [vip], event: 'vip-news' });
          return c.of('vip-news').length > 0;
        }, { what: 'c to receive the room it was joined to' });
        const rooms = async (id) => ((await cluster.broker.state()).sockets.find((s) => s.id === id) || {}).rooms || [];
        await waitFor(async () => (await rooms(c.id)).includes(vip), { what: 'the broker to see the join' });
        // By room: every member of `room` (a and b) joins another room too.
        const more = `${name}-more`;
        await emitter.run({ verb: 'sockets_join', ns: MAIN, to: [room], rooms: [more] });
        await waitFor(async () => (await rooms(a.id)).includes(more) && (await rooms(b.id)).includes(more), { what: 'a and b in the second room' });
        assert.ok(!(await rooms(c.id)).includes(more), 'c is not in `room`: it did not join');
        await emitter.run({ verb: 'sockets_leave', ns: MAIN, to: [c.id], rooms: [vip] });
        await waitFor(async () => !(await rooms(c.id)).includes(vip), { what: 'the broker to see the leave' });
      });

      it('disconnectSockets kicks the selected sockets only', async () => {
        const [g1] = cluster.gateways;
        const victim = await members.connect(g1, { ns: MAIN });
        const gone = new Promise((resolve) => victim.socket.once('disconnect', resolve));
        await emitter.run({ verb: 'disconnect_sockets', ns: MAIN, to: [victim.id] });
        assert.equal(await gone, 'io server disconnect');
        assert.equal(a.socket.connected, true);
      });

      it('serverSideEmit reaches a backend subscribed with the worker credential', async () => {
        const s = bus.subjects(cluster.prefix);
        const heard = [];
        const subject = `${s.prefix}.srv.${bus.escape(MAIN)}.${bus.escape(`${name}.flush`)}`;
        const sub = worker.subscribe(subject, { callback: (err, m) => err || heard.push(bus.decode('ServerSideEmit', m.data)) });
        await worker.flush();
        await emitter.run({ verb: 'server_side_emit', ns: MAIN, event: `${name}.flush`, args: [1, bin([9, 8])] });
        await waitFor(() => heard.length > 0, { what: 'the server-side event' });
        sub.unsubscribe();
        const [msg] = heard;
        assert.equal(msg.origin, name);
        assert.equal(msg.ns, MAIN);
        assert.equal(msg.event, `${name}.flush`);
        assert.deepEqual(JSON.parse(msg.args_json), [1, { _placeholder: true, num: 0 }]);
        assert.deepEqual(msg.attachments.map((x) => Buffer.from(x)), [Buffer.from([9, 8])]);
        assert.equal(a.of(`${name}.flush`).length, 0, 'a server-side event reached a client');
      });

      it('an emit into the recovery namespace while a client is away is replayed when it comes back', async () => {
        const [g1] = cluster.gateways;
        const user = `${name}-rec`;
        const recRoom = `${name}-rec`;
        const connects = [];
        const news = [];
        const socket = io(`${g1.url}${RECOVERY_NS}`, {
          transports: ['websocket'],
          forceNew: true,
          // Long enough for the emit below to be stored before the client is back (checked).
          reconnectionDelay: 2000,
          reconnectionDelayMax: 2000,
          randomizationFactor: 0,
          auth: { token: token(user) },
        });
        socket.on('connect', () => connects.push({ id: socket.id, recovered: socket.recovered }));
        socket.on('news', (...args) => news.push(args));
        try {
          await waitFor(() => connects.length === 1, { what: 'the recovery client to connect' });
          assert.deepEqual(await socket.timeout(5000).emitWithAck('join', recRoom), { ok: true });
          // A logged emit while connected arrives with its offset as the last argument.
          await emitter.run({ verb: 'emit', ns: RECOVERY_NS, to: [recRoom], event: 'news', args: ['live'] });
          await waitFor(() => news.length === 1, { what: 'the live logged emit' });
          assert.equal(news[0][0], 'live');
          assert.match(news[0][1], /^[0-9a-z]+\.\d+$/, 'the offset as the last argument');
          socket.io.engine.close();
          await waitFor(() => !socket.connected, { what: 'the transport to close' });
          await emitter.run({ verb: 'emit', ns: RECOVERY_NS, to: [recRoom], event: 'news', args: ['missed', bin([1, 2, 3])] });
          assert.equal(connects.length, 1, 'the emit was stored while the client was away');
          await waitFor(() => connects.length === 2, { what: 'the client to come back' });
          assert.deepEqual(connects[1], { id: connects[0].id, recovered: true });
          await waitFor(() => news.length === 2, { what: 'the missed emit, replayed' });
          const [missed, blob, offset] = news[1];
          assert.equal(missed, 'missed');
          assert.deepEqual(bytes(blob), Buffer.from([1, 2, 3]));
          assert.match(offset, /^[0-9a-z]+\.\d+$/);
          assert.notEqual(offset, news[0][1]);
        } finally {
          socket.disconnect();
        }
      });
    });
  }
});
