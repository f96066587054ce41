// The `/chat` contract that scripts/bench-compare.sh relies on, checked with the official client
// against every server it compares: Switchboard (loadtest/bench.toml), Node's socket.io
// (server.js) and socketioxide (socketioxide/). A peer that drifted from the contract (a refusal
// that joins anyway, a relay that drops arguments or echoes to the sender) would make the
// comparison unfair; this catches it.
//
//   CONTRACT_URLS=name=http://127.0.0.1:PORT[,name=URL...] node --test contract.test.js
//
// scripts/bench-compare.sh runs it against the servers it starts, before measuring.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { io } = require('socket.io-client');

const MAX_ROOMS = 50;

const targets = (process.env.CONTRACT_URLS || '')
  .split(',')
  .filter(Boolean)
  .map((entry) => {
    const at = entry.indexOf('=');
    return at > 0 ? [entry.slice(0, at), entry.slice(at + 1)] : [entry, entry];
  });
if (targets.length === 0) {
  throw new Error('CONTRACT_URLS is empty: name=http://127.0.0.1:PORT[,…]');
}

function connect(url, nsp = '/chat') {
  const socket = io(url + nsp, { transports: ['websocket'], forceNew: true, reconnection: false });
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });
}

function ask(socket, event, ...args) {
  return socket.timeout(10000).emitWithAck(event, ...args);
}

// The next `event` on `socket`, with all its arguments.
function next(socket, event) {
  return new Promise((resolve) => socket.once(event, (...args) => resolve(args)));
}

for (const [name, url] of targets) {
  test(`${name}: the /chat contract`, async (t) => {
    const sockets = [];
    const open = async (nsp) => {
      const s = await connect(url, nsp);
      sockets.push(s);
      return s;
    };
    t.after(() => sockets.forEach((s) => s.disconnect()));

    await t.test('/ accepts a connection', async () => {
      const root = await open('/');
      assert.ok(root.connected);
    });

    const [a, b, c] = [await open(), await open(), await open()];
    const room = `contract-${name}`;

    await t.test('join answers {ok:true}; refuses user:*, empty and non-string rooms', async () => {
      assert.deepEqual(await ask(a, 'join', room), { ok: true });
      assert.deepEqual(await ask(b, 'join', room), { ok: true });
      for (const bad of ['user:42', '', 42, { room }]) {
        const reply = await ask(c, 'join', bad);
        assert.equal(reply.ok, false, `join(${JSON.stringify(bad)}) → ${JSON.stringify(reply)}`);
      }
    });

    await t.test('say reaches the other members with all its arguments, not the sender', async () => {
      let echoed = 0;
      a.on('say', () => echoed++);
      const got = next(b, 'say');
      const args = [{ room, t: 1, p: 'x' }, 'second', 3, [4]];
      assert.deepEqual(await ask(a, 'say', ...args), { ok: true });
      assert.deepEqual(await got, args);
      // A second message after the first: had the sender got the first, it would have it by now.
      const second = next(b, 'say');
      await ask(a, 'say', { room, t: 2 });
      assert.deepEqual(await second, [{ room, t: 2 }]);
      assert.equal(echoed, 0);
      a.off('say');
    });

    await t.test('say from a non-member, or without a room, is refused and not relayed', async () => {
      let refusedArrived = false;
      b.on('say', (m) => {
        if (m && m.t === 'refused') refusedArrived = true;
      });
      assert.equal((await ask(c, 'say', { room, t: 'refused' })).ok, false);
      assert.equal((await ask(a, 'say', { t: 'refused' })).ok, false);
      assert.equal((await ask(a, 'say', 'no object')).ok, false);
      // Relayed after the refusals: b gets it, and nothing refused came first.
      const after = next(b, 'say');
      await ask(a, 'say', { room, t: 'after' });
      assert.deepEqual(await after, [{ room, t: 'after' }]);
      assert.equal(refusedArrived, false);
      b.off('say');
    });

    await t.test(`at most ${MAX_ROOMS} rooms; a room already joined is still accepted`, async () => {
      for (let i = 0; i < MAX_ROOMS; i++) {
        assert.deepEqual(await ask(c, 'join', `many-${i}`), { ok: true }, `room ${i}`);
      }
      assert.equal((await ask(c, 'join', 'one-too-many')).ok, false);
      assert.deepEqual(await ask(c, 'join', 'many-0'), { ok: true });
      // Leaving frees a place.
      assert.deepEqual(await ask(c, 'leave', 'many-1'), { ok: true });
      assert.deepEqual(await ask(c, 'join', 'one-too-many'), { ok: true });
    });

    await t.test('leave: a member that left can no longer say', async () => {
      assert.deepEqual(await ask(b, 'leave', room), { ok: true });
      assert.equal((await ask(b, 'say', { room, t: 3 })).ok, false);
    });

    await t.test('shout reaches every other socket of /chat with its arguments', async () => {
      let echoed = 0;
      a.on('shout', () => echoed++);
      const atB = next(b, 'shout');
      const atC = next(c, 'shout');
      assert.deepEqual(await ask(a, 'shout', 'hello', { n: 1 }), { ok: true });
      assert.deepEqual(await atB, ['hello', { n: 1 }]);
      assert.deepEqual(await atC, ['hello', { n: 1 }]);
      // As above: a later relay to a proves the shout was not echoed.
      const toA = next(a, 'shout');
      await ask(b, 'shout', 'back');
      assert.deepEqual(await toA, ['back']);
      assert.equal(echoed, 1);
    });
  });
}
