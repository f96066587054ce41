'use strict';
// The official socket.io-client (Node) against the standalone gateway binary with
// fixtures/gateway.toml, over polling only, WebSocket only, and polling upgraded to WebSocket:
// namespaces multiplexed on one Manager, acks, binary, JWT auth, rate limiting and the /chat
// rooms. Plus the HTTP surface (CORS, cache-control, /health) with raw requests.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway } = require('../lib/server');
const { request, Polling, wsHandshake } = require('../lib/raw');
const { TRANSPORTS, Clients, Recorder, connected, connectError, upgraded, within, once, hs256, now, normalize } = require('../lib/client');

const SECRET = 'e2e-secret-0123456789abcdef0123456789abcdef';
const ISSUER = 'switchboard-e2e';
const AUDIENCE = 'switchboard';
const ALLOWED_ORIGIN = 'http://allowed.example';

let server;
before(async () => {
  server = await startGateway({ config: 'gateway.toml', env: { SWITCHBOARD_JWT_SECRET: SECRET } });
});
after(() => server && server.stop());

/** A valid token for `sub` with extra claims, signed with the test secret. */
function token(sub, extra = {}) {
  return hs256({ sub, iss: ISSUER, aud: AUDIENCE, iat: now(), exp: now() + 600, ...extra }, SECRET);
}

const OK = { ok: true };

/** Asserts an error ack: exactly {"ok":false,"error":<error>} (the policy's reasons). */
function assertErrorAck(res, error, what) {
  assert.deepEqual(res, { ok: false, error }, `${what}: expected an error ack ${JSON.stringify(error)}, got ${JSON.stringify(res)}`);
}

for (const transport of Object.keys(TRANSPORTS)) {
  describe(`socket.io-client over ${transport} → gateway`, () => {
    let clients;
    before(() => {
      clients = new Clients(server.url, transport);
    });
    afterEach(() => clients.closeAll());

    /** Connects to /chat and joins `rooms`; returns [socket, recorder]. */
    async function chatter(...rooms) {
      const socket = await clients.connect('/chat');
      const rec = new Recorder(socket);
      for (const room of rooms) assert.deepEqual(await socket.emitWithAck('join', room), OK);
      return [socket, rec];
    }

    describe('namespaces and acks', () => {
      it('multiplexes / and /chat on one Manager (one Engine.IO connection)', async () => {
        const manager = clients.manager();
        const root = manager.socket('/');
        const chat = manager.socket('/chat');
        await Promise.all([connected(root), connected(chat)]);
        assert.equal(root.io, chat.io);
        assert.notEqual(root.id, chat.id);
        assert.equal(await root.emitWithAck('echo', 'via root'), 'via root');
        assert.deepEqual(await chat.emitWithAck('join', 'multiplexed'), OK);
        if (transport === 'upgrade') assert.equal(await upgraded(root), 'websocket');
        assert.equal(root.io.engine.transport.name, transport === 'polling' ? 'polling' : 'websocket');
        // both namespaces still work after the upgrade, on the same engine
        assert.equal(await root.emitWithAck('echo', 'after upgrade'), 'after upgrade');
        assert.deepEqual(await chat.emitWithAck('leave', 'multiplexed'), OK);
        root.disconnect();
        chat.disconnect();
      });

      it('client → server acks: echo acks with its arguments, rules ack {"ok":true}', async () => {
        const root = await clients.connect('/');
        const res = await within(
          new Promise((resolve) => root.emit('echo', 1, 'two', { three: [3] }, (...args) => resolve(args))),
          'echo ack',
        );
        assert.deepEqual(res, [1, 'two', { three: [3] }]);
        const chat = await clients.connect('/chat');
        assert.deepEqual(await chat.emitWithAck('join', 'acks'), OK);
        assert.deepEqual(await chat.emitWithAck('say', { room: 'acks', text: 'x' }), OK);
        assert.deepEqual(await chat.emitWithAck('shout', 'hey'), OK);
        assert.deepEqual(await chat.emitWithAck('leave', 'acks'), OK);
      });

      it('an event without a rule gets an error ack', async () => {
        const chat = await clients.connect('/chat');
        assertErrorAck(await chat.emitWithAck('no-such-event', 1), 'unknown event', 'event without rule');
        const root = await clients.connect('/');
        assertErrorAck(await root.emitWithAck('no-such-event'), 'unknown event', 'event without rule on /');
        // the connection survives
        assert.equal(await root.emitWithAck('echo', 'still here'), 'still here');
      });

      it('echo without ack comes back to the sender; as_event renames it', async () => {
        const root = await clients.connect('/');
        const rec = new Recorder(root);
        root.emit('echo', 1, { a: [true, null] });
        assert.deepEqual(await rec.wait('echo'), [1, { a: [true, null] }]);
        root.emit('echo-as', 'renamed');
        assert.deepEqual(await rec.wait('echoed'), ['renamed']);
      });

      it('binary arguments round-trip through an ack and a relay', async () => {
        const root = await clients.connect('/');
        const bytes = Buffer.from([0, 1, 2, 253, 254, 255]);
        const res = await within(
          new Promise((resolve) => root.emit('echo', bytes, { nested: Buffer.from('nested') }, (...a) => resolve(a))),
          'binary echo ack',
        );
        assert.deepEqual(normalize(res), normalize([bytes, { nested: Buffer.from('nested') }]));

        const [ada] = await chatter('binary-room');
        const [bob, bobRec] = await chatter('binary-room');
        const msg = { room: 'binary-room', blob: Buffer.from('hello bytes'), list: [Buffer.alloc(3, 7)] };
        assert.deepEqual(await ada.emitWithAck('say', msg, Buffer.from([42])), OK);
        const got = await bobRec.wait('say');
        assert.deepEqual(normalize(got), normalize([msg, Buffer.from([42])]));
        bob.disconnect();
      });

      it('an unknown namespace gets connect_error "Invalid namespace"', async () => {
        const err = await connectError(clients.socket('/nowhere'));
        assert.equal(err.message, 'Invalid namespace');
      });
    });

    describe('/chat rooms', () => {
      it('say reaches the other members of the room only, never the sender', async () => {
        const room = `r-${transport}-say`;
        const [ada, adaRec] = await chatter(room);
        const [bob, bobRec] = await chatter(room);
        const [cid, cidRec] = await chatter('elsewhere');
        assert.deepEqual(await ada.emitWithAck('say', { room, text: 'hi room' }, 'extra'), OK);
        assert.deepEqual(await bobRec.wait('say'), [{ room, text: 'hi room' }, 'extra']);
        // markers: ada's shout after her say reaches cid; bob's shout reaches ada. Events from one
        // sender arrive in order, so a say that had reached them would be recorded already.
        assert.deepEqual(await ada.emitWithAck('shout', 'marker-1'), OK);
        await cidRec.wait('shout', (a) => a[0] === 'marker-1');
        assert.deepEqual(cidRec.of('say'), [], 'a non-member got the say');
        assert.deepEqual(await bob.emitWithAck('shout', 'marker-2'), OK);
        await adaRec.wait('shout', (a) => a[0] === 'marker-2');
        assert.deepEqual(adaRec.of('say'), [], 'the sender got its own say');
        assert.deepEqual(bobRec.of('say').length, 1);
        cid.disconnect();
      });

      it('say from a non-member gets an error ack and reaches nobody', async () => {
        const room = `r-${transport}-members`;
        const [, bobRec] = await chatter(room);
        const [eve] = await chatter();
        assertErrorAck(await eve.emitWithAck('say', { room, text: 'intruder' }), 'not a member of the room', 'non-member say');
        assert.deepEqual(await eve.emitWithAck('shout', 'marker'), OK);
        await bobRec.wait('shout', (a) => a[0] === 'marker');
        assert.deepEqual(bobRec.of('say'), []);
      });

      it('say without a room argument gets an error ack', async () => {
        const [ada] = await chatter(`r-${transport}-noroom`);
        assertErrorAck(await ada.emitWithAck('say', { text: 'where?' }), 'missing room argument', 'say without room');
        assertErrorAck(await ada.emitWithAck('say', 'not an object'), 'missing room argument', 'say with a string');
      });

      it('leave stops delivery', async () => {
        const room = `r-${transport}-leave`;
        const [ada] = await chatter(room);
        const [bob, bobRec] = await chatter(room);
        assert.deepEqual(await ada.emitWithAck('say', { room, n: 1 }), OK);
        await bobRec.wait('say');
        assert.deepEqual(await bob.emitWithAck('leave', room), OK);
        assert.deepEqual(await ada.emitWithAck('say', { room, n: 2 }), OK);
        assert.deepEqual(await ada.emitWithAck('shout', 'marker'), OK);
        await bobRec.wait('shout', (a) => a[0] === 'marker');
        assert.deepEqual(bobRec.of('say'), [[{ room, n: 1 }]]);
        // and bob, no longer a member, may not say there
        assertErrorAck(await bob.emitWithAck('say', { room, n: 3 }), 'not a member of the room', 'say after leave');
      });

      it('user: rooms cannot be joined', async () => {
        const [ada] = await chatter();
        assertErrorAck(await ada.emitWithAck('join', 'user:bob'), 'room not allowed', 'join user:bob');
        assertErrorAck(await ada.emitWithAck('say', { room: 'user:bob', text: 'x' }), 'not a member of the room', 'say to user:bob');
      });

      it('join without a room name string gets an error ack', async () => {
        const [ada] = await chatter();
        assertErrorAck(await ada.emitWithAck('join', 42), 'room must be a string', 'join 42');
        assertErrorAck(await ada.emitWithAck('join'), 'missing room argument', 'join without argument');
      });

      it('shout reaches every other socket of /chat, not the sender, not other namespaces', async () => {
        const [ada, adaRec] = await chatter();
        const [bob, bobRec] = await chatter();
        const [, cidRec] = await chatter('some-room');
        const root = await clients.connect('/');
        const rootRec = new Recorder(root);
        assert.deepEqual(await ada.emitWithAck('shout', { text: 'everyone!' }), OK);
        assert.deepEqual(await bobRec.wait('shout'), [{ text: 'everyone!' }]);
        assert.deepEqual(await cidRec.wait('shout'), [{ text: 'everyone!' }]);
        // bob's shout, sent after ada's was delivered to him, reaches ada: had hers come back
        // to her, it would be recorded before his
        assert.deepEqual(await bob.emitWithAck('shout', 'marker'), OK);
        await adaRec.wait('shout', (a) => a[0] === 'marker');
        assert.deepEqual(adaRec.of('shout'), [['marker']]);
        root.emit('echo', 'root marker');
        await rootRec.wait('echo');
        assert.deepEqual(rootRec.of('shout'), []);
      });

      it('a disconnected member no longer receives; the others still do', async () => {
        const room = `r-${transport}-gone`;
        const [ada] = await chatter(room);
        const [bob] = await chatter(room);
        const [, cidRec] = await chatter(room);
        bob.disconnect();
        assert.deepEqual(await ada.emitWithAck('say', { room, text: 'after bob left' }), OK);
        assert.deepEqual(await cidRec.wait('say'), [{ room, text: 'after bob left' }]);
      });
    });

    describe('authentication (JWT HS256)', () => {
      for (const [what, auth, message] of [
        ['no token', undefined, 'missing token'],
        ['an expired token', () => ({ token: token('ada', { exp: now() - 60 }) }), 'token expired'],
        ['a token signed with another secret', () => ({ token: hs256({ sub: 'ada', iss: ISSUER, aud: AUDIENCE, exp: now() + 600 }, `${SECRET}-wrong`) }), 'invalid token'],
        ['a token that is not a JWT', () => ({ token: 'not.a.jwt' }), 'invalid token'],
        ['a token with another algorithm', () => ({ token: `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub: 'ada', exp: now() + 600 })).toString('base64url')}.` }), 'invalid token'],
        ['a token from another issuer', () => ({ token: token('ada', { iss: 'someone-else' }) }), 'token issuer not accepted'],
        ['a token for another audience', () => ({ token: token('ada', { aud: 'other' }) }), 'token audience not accepted'],
        ['a token without exp', () => ({ token: hs256({ sub: 'ada', iss: ISSUER, aud: AUDIENCE }, SECRET) }), 'token has no expiry'],
      ]) {
        it(`${what} → connect_error "${message}"`, async () => {
          const socket = clients.socket('/secure', auth ? { auth: auth() } : {});
          const err = await connectError(socket);
          assert.equal(err.message, message);
          assert.equal(typeof (err.data && err.data.code), 'string', 'connect_error data carries a code');
          assert.equal(socket.connected, false);
        });
      }

      it('a valid token in auth.token connects', async () => {
        const socket = clients.socket('/secure', { auth: { token: token('ada') } });
        await connected(socket);
        assert.equal(await socket.emitWithAck('echo', 'authed'), 'authed');
      });

      it('a valid token in an Authorization: Bearer header connects', async () => {
        const socket = clients.socket('/secure', { extraHeaders: { authorization: `Bearer ${token('ada')}` } });
        await connected(socket);
        assert.equal(await socket.emitWithAck('echo', 'header'), 'header');
      });

      it('required claims: role must be admin', async () => {
        assert.equal((await connectError(clients.socket('/admin', { auth: { token: token('ada') } }))).message, 'claim role missing');
        assert.equal((await connectError(clients.socket('/admin', { auth: { token: token('ada', { role: 'user' }) } }))).message, 'claim role not allowed');
        const admin = clients.socket('/admin', { auth: { token: token('root', { role: 'admin' }) } });
        await connected(admin);
        assert.equal(await admin.emitWithAck('echo', 1), 1);
      });

      it('auth of one namespace does not leak into another on the same Manager', async () => {
        const manager = clients.manager();
        const chat = manager.socket('/chat');
        const secure = manager.socket('/secure');
        const refused = connectError(secure);
        await connected(chat);
        assert.equal((await refused).message, 'missing token');
        assert.deepEqual(await chat.emitWithAck('join', 'still-fine'), OK);
        chat.disconnect();
      });

      it('sockets auto-join user:{sub}: two connections of one user reach each other', async () => {
        const sub = `user-${transport}`;
        const a = clients.socket('/secure', { auth: { token: token(sub) } });
        const b = clients.socket('/secure', { auth: { token: token(sub) } });
        const other = clients.socket('/secure', { auth: { token: token(`${sub}-other`) } });
        const bRec = new Recorder(b);
        await Promise.all([connected(a), connected(b), connected(other)]);
        assert.deepEqual(await a.emitWithAck('say', { room: `user:${sub}`, text: 'to my other tab' }), OK);
        assert.deepEqual(await bRec.wait('say'), [{ room: `user:${sub}`, text: 'to my other tab' }]);
        assertErrorAck(await other.emitWithAck('say', { room: `user:${sub}`, text: 'not mine' }), 'not a member of the room', 'say to another user room');
      });

      it('join patterns are filled from claims: team:{team}', async () => {
        const socket = clients.socket('/secure', { auth: { token: token('ada', { team: 'blue' }) } });
        await connected(socket);
        assert.deepEqual(await socket.emitWithAck('join', 'team:blue'), OK);
        assertErrorAck(await socket.emitWithAck('join', 'team:red'), 'room not allowed', 'join another team');
        assertErrorAck(await socket.emitWithAck('join', 'lobby'), 'room not allowed', 'join a room outside the patterns');
      });
    });

    describe('rate limiting (/limited: burst 3, 1/s, 5 violations disconnect)', () => {
      it('events past the burst get an error ack', async () => {
        const socket = await clients.connect('/limited');
        const results = await Promise.all([1, 2, 3, 4].map((i) => socket.emitWithAck('echo', i)));
        assert.deepEqual(results.slice(0, 3), [1, 2, 3]);
        assertErrorAck(results[3], 'rate limited', 'fourth event within a second');
      });

      it('persistent abuse disconnects the socket', async () => {
        const socket = await clients.connect('/limited');
        const disconnected = once(socket, 'disconnect', 10_000);
        const rec = new Recorder(socket);
        for (let i = 0; i < 20; i++) socket.emit('echo', i);
        const [reason] = await disconnected;
        // the server disconnects the namespace (a DISCONNECT packet), as socket.disconnect() does
        assert.equal(reason, 'io server disconnect');
        // events without ack that were refused are reported with the error event
        assert.deepEqual(rec.of('echo').slice(0, 3), [[0], [1], [2]]);
        assert.deepEqual(rec.of('error')[0], [{ error: 'rate limited', event: 'echo' }]);
      });
    });
  });
}

describe('gateway HTTP surface', () => {
  it('GET /health → 200', async () => {
    const res = await request(`${server.url}/health`);
    assert.equal(res.status, 200);
  });

  it('polling from an allowed Origin: access-control-allow-origin echoes it, with credentials', async () => {
    const session = await Polling.handshake(server.url, '/socket.io/', { headers: { origin: ALLOWED_ORIGIN } });
    const h = session.handshakeResponse.headers;
    assert.equal(h['access-control-allow-origin'], ALLOWED_ORIGIN);
    assert.equal(h['access-control-allow-credentials'], 'true');
    assert.match(h.vary || '', /origin/i);
    assert.equal(h['cache-control'], 'no-store');
    const post = await session.post('40', { headers: { origin: ALLOWED_ORIGIN, 'content-type': 'text/plain;charset=UTF-8' } });
    assert.equal(post.status, 200);
    assert.equal(post.headers['access-control-allow-origin'], ALLOWED_ORIGIN);
    assert.equal(post.headers['cache-control'], 'no-store');
    const get = await session.get({ headers: { origin: ALLOWED_ORIGIN } });
    assert.equal(get.status, 200);
    assert.match(get.body, /^40\{"sid":"[^"]+"\}$/);
    assert.equal(get.headers['access-control-allow-origin'], ALLOWED_ORIGIN);
    assert.equal(get.headers['cache-control'], 'no-store');
  });

  it('preflight from an allowed Origin', async () => {
    const res = await request(`${server.url}/socket.io/?EIO=4&transport=polling`, {
      method: 'OPTIONS',
      headers: {
        origin: ALLOWED_ORIGIN,
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'content-type',
      },
    });
    assert.ok(res.status === 200 || res.status === 204, `status ${res.status}`);
    assert.equal(res.headers['access-control-allow-origin'], ALLOWED_ORIGIN);
    assert.equal(res.headers['access-control-allow-credentials'], 'true');
    assert.match(res.headers['access-control-allow-methods'] || '', /POST/);
    assert.match(res.headers['access-control-allow-headers'] || '', /content-type/i);
  });

  it('no CORS headers for an Origin that is not allowed', async () => {
    const res = await request(`${server.url}/socket.io/?EIO=4&transport=polling`, { headers: { origin: 'http://evil.example' } });
    assert.equal(res.headers['access-control-allow-origin'], undefined);
    assert.equal(res.headers['access-control-allow-credentials'], undefined);
  });

  it('raw frames of a rate-limit disconnect: echoes, error events, then 41/limited, and the connection stays', async () => {
    const [ws] = await wsHandshake(server.url, '/socket.io/', { autoPong: true });
    try {
      ws.send('40/limited,');
      assert.match(await ws.nextText(), /^40\/limited,\{"sid":"[^"]+"\}$/);
      for (let i = 0; i < 8; i++) ws.send(`42/limited,["echo",${i}]`);
      for (let i = 0; i < 3; i++) assert.equal(await ws.nextText(), `42/limited,["echo",${i}]`);
      for (let i = 0; i < 5; i++) assert.equal(await ws.nextText(), '42/limited,["error",{"error":"rate limited","event":"echo"}]');
      // socket.io-parser writes the namespace of a DISCONNECT with its comma
      assert.equal(await ws.nextText(), '41/limited,');
      ws.send('40');
      assert.match(await ws.nextText(), /^40\{"sid":"[^"]+"\}$/);
    } finally {
      ws.close();
    }
  });

  it('Engine.IO errors use the reference bodies', async () => {
    const res = await request(`${server.url}/socket.io/?EIO=4&transport=polling&sid=unknown`);
    assert.equal(res.status, 400);
    assert.equal(res.body, '{"code":1,"message":"Session ID unknown"}');
  });
});
