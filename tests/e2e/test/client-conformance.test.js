'use strict';
// The official socket.io-client (Node) against the conformance example, over polling only,
// WebSocket only, and polling upgraded to WebSocket: CONNECT payloads, namespaces multiplexed
// on one connection, events and acks with binary arguments in both directions of the echo.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { startConformance } = require('../lib/server');
const { TRANSPORTS, Clients, Recorder, connected, upgraded, within, normalize } = require('../lib/client');

let server;
before(async () => {
  server = await startConformance();
});
after(() => server && server.stop());

/** Emits with an ack and resolves to all the ack's arguments. */
function emitAck(socket, event, ...args) {
  return within(
    new Promise((resolve, reject) => {
      socket.timeout(5000).emit(event, ...args, (err, ...res) => (err ? reject(err) : resolve(res)));
    }),
    `the ack of "${event}"`,
    6000,
  );
}

for (const transport of Object.keys(TRANSPORTS)) {
  describe(`socket.io-client over ${transport} → conformance example`, () => {
    let clients;
    before(() => {
      clients = new Clients(server.url, transport);
    });
    afterEach(() => clients.closeAll());

    it('connects; the CONNECT payload comes back as the auth event', async () => {
      const socket = clients.socket('/', { auth: { token: 'abc', n: [1, 2] } });
      const rec = new Recorder(socket);
      await connected(socket);
      assert.equal(typeof socket.id, 'string');
      const [auth] = await rec.wait('auth');
      assert.deepEqual(auth, { token: 'abc', n: [1, 2] });
      if (transport === 'upgrade') assert.equal(await upgraded(socket), 'websocket');
      assert.equal(socket.io.engine.transport.name, transport === 'polling' ? 'polling' : 'websocket');
    });

    it('multiplexes / and /custom on one Engine.IO connection', async () => {
      const manager = clients.manager();
      const root = manager.socket('/', { auth: { ns: 'root' } });
      const custom = manager.socket('/custom', { auth: { ns: 'custom' } });
      const recRoot = new Recorder(root);
      const recCustom = new Recorder(custom);
      await Promise.all([connected(root), connected(custom)]);
      assert.notEqual(root.id, custom.id);
      assert.deepEqual(await recRoot.wait('auth'), [{ ns: 'root' }]);
      assert.deepEqual(await recCustom.wait('auth'), [{ ns: 'custom' }]);
      root.emit('message', 'to root');
      custom.emit('message', 'to custom');
      assert.deepEqual(await recRoot.wait('message-back'), ['to root']);
      assert.deepEqual(await recCustom.wait('message-back'), ['to custom']);
      assert.deepEqual(recRoot.of('message-back'), [['to root']], 'no cross-talk between namespaces');
      if (transport === 'upgrade') assert.equal(await upgraded(root), 'websocket');
      // leaving one namespace keeps the other
      custom.disconnect();
      root.emit('message', 'after custom left');
      assert.deepEqual(await recRoot.wait('message-back', (a) => a[0] === 'after custom left'), ['after custom left']);
      root.disconnect();
    });

    it('echoes plain and binary arguments', async () => {
      const socket = await clients.connect('/');
      const rec = new Recorder(socket);
      const args = [
        1,
        'two',
        null,
        { three: [true, false], nested: { bytes: Buffer.from([0, 1, 2, 255]) } },
        Buffer.from('raw bytes'),
        [Buffer.alloc(0), 'x'],
      ];
      socket.emit('message', ...args);
      const back = await rec.wait('message-back');
      assert.deepEqual(normalize(back), normalize(args));
    });

    it('a large binary argument round-trips', async () => {
      const socket = await clients.connect('/');
      const rec = new Recorder(socket);
      const big = Buffer.alloc(200_000);
      for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
      socket.emit('message', big);
      const [back] = await rec.wait('message-back');
      assert.ok(Buffer.from(back).equals(big));
    });

    it('acks client → server with plain and binary arguments', async () => {
      const socket = await clients.connect('/custom');
      assert.deepEqual(await emitAck(socket, 'message-with-ack', 'a', { b: 1 }), ['a', { b: 1 }]);
      const res = await emitAck(socket, 'message-with-ack', Buffer.from([9, 8, 7]), { inner: Buffer.from('x') });
      assert.deepEqual(normalize(res), normalize([Buffer.from([9, 8, 7]), { inner: Buffer.from('x') }]));
      assert.equal(await socket.emitWithAck('message-with-ack', 42), 42);
    });

    it('acks server → client: the answer, binary included, comes back to the server', async () => {
      const socket = clients.socket('/custom');
      const rec = new Recorder(socket);
      socket.on('ack-request', (...args) => {
        const ack = args.pop();
        ack('got', ...args);
      });
      await connected(socket);
      socket.emit('request-ack', 1, { two: Buffer.from([2]) });
      const res = await rec.wait('ack-response');
      assert.deepEqual(normalize(res), normalize(['got', 1, { two: Buffer.from([2]) }]));
      // Server-side ack ids count from 0 and do not collide: a second request works too.
      socket.emit('request-ack', 'again');
      assert.deepEqual(await rec.wait('ack-response', (a) => a[1] === 'again'), ['got', 'again']);
    });

    it('acks server → client: a client that never answers times out on the server', async () => {
      const socket = clients.socket('/');
      const rec = new Recorder(socket);
      socket.on('ack-request', () => {});
      await connected(socket);
      socket.emit('request-ack', 'silent');
      assert.deepEqual(await rec.wait('ack-error'), ['operation has timed out']);
      assert.equal(rec.of('ack-response').length, 0);
    });

    it('many acks in flight are matched to their calls', async () => {
      const socket = await clients.connect('/');
      const results = await Promise.all(Array.from({ length: 50 }, (_, i) => socket.emitWithAck('message-with-ack', i)));
      assert.deepEqual(results, Array.from({ length: 50 }, (_, i) => i));
    });

    it('an unknown namespace gets connect_error "Invalid namespace"', async () => {
      const socket = clients.socket('/nope');
      const err = await within(new Promise((resolve) => socket.once('connect_error', resolve)), 'connect_error');
      assert.equal(err.message, 'Invalid namespace');
    });
  });
}
