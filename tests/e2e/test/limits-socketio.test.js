'use strict';
// Socket.IO-level limits of the standalone gateway (docs/security.md "Limits", issue 12): names,
// namespaces and CONNECTs per connection, binary attachments (count, bytes, time), a rate limit
// that survives leaving and re-entering its namespace, max_rooms under a batch of joins that wait
// for the broker, dynamic namespaces that a flood of refused connects does not create, and (on a
// gateway with NATS and a worker) pending acks of events forwarded to workers.
// Limits are small in fixtures/limits-socketio.toml so that each is reached in a few packets.

const fs = require('node:fs');
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway } = require('../lib/server');
const { Polling, wsHandshake, SEP } = require('../lib/raw');
const { Clients, connectError, hs256, now } = require('../lib/client');
const { startCluster } = require('../lib/cluster');
const { startWorker } = require('../lib/worker');
const { CONFIG: CLUSTER_CONFIG, ENV: CLUSTER_ENV } = require('../lib/members');

const SECRET = 'limits-e2e-secret-0123456789abcdef';
const ENV = { SWITCHBOARD_JWT_SECRET: SECRET };
const token = () => hs256({ sub: 'u1', exp: now() + 600 }, SECRET);

const placeholders = (n) => Array.from({ length: n }, (_, i) => `{"_placeholder":true,"num":${i}}`).join(',');

/** Opens a WebSocket session on /socket.io/ (pings answered) without connecting a namespace. */
async function session(url) {
  const [ws] = await wsHandshake(url, '/socket.io/', { autoPong: true });
  return ws;
}

/** Sends CONNECT for `nsp` on `ws` and resolves to the answer (a CONNECT or CONNECT_ERROR). */
async function connectRaw(ws, nsp, auth) {
  ws.send(`40${nsp === '/' ? '' : `${nsp},`}${auth ? JSON.stringify(auth) : ''}`);
  return ws.nextText();
}

/** A WebSocket session connected to `nsp`; resolves to the Ws. */
async function connected(url, nsp = '/', auth) {
  const ws = await session(url);
  const reply = await connectRaw(ws, nsp, auth);
  assert.match(reply, /^40(\/[^,]*,)?\{"sid":/);
  return ws;
}

/** Resident set size of a process, in bytes (Linux). */
function rss(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m[1]) * 1024;
}

describe('Socket.IO limits', () => {
  let server;
  before(async () => {
    server = await startGateway({ config: 'limits-socketio.toml', env: ENV });
  });
  after(() => server && server.stop());

  it('refuses a namespace name over max_name_bytes at CONNECT, and the connection goes on', async () => {
    const ws = await session(server.url);
    try {
      const long = `/tenant-${'a'.repeat(5000)}`;
      assert.equal(await connectRaw(ws, long, { token: token() }), `44${long},{"message":"namespace name too long"}`);
      assert.match(await connectRaw(ws, '/'), /^40\{"sid":/);
    } finally {
      ws.close();
    }
  });

  it('answers an event name over max_name_bytes with an error ack, and drops it without ack', async () => {
    const ws = await connected(server.url);
    try {
      const long = 'e'.repeat(65);
      ws.send(`42["${long}"]`);
      ws.send(`427["${long}"]`);
      ws.send('428["echo","x"]');
      assert.equal(await ws.nextText(), '437[{"ok":false,"error":"event name too long"}]');
      assert.equal(await ws.nextText(), '438["x"]');
    } finally {
      ws.close();
    }
  });

  it('refuses a namespace past max_namespaces and a CONNECT past connects_per_interval', async () => {
    const ws = await session(server.url);
    try {
      assert.match(await connectRaw(ws, '/'), /^40\{"sid":/);
      assert.match(await connectRaw(ws, '/chat'), /^40\/chat,\{"sid":/);
      assert.match(await connectRaw(ws, '/tenant-a', { token: token() }), /^40\/tenant-a,\{"sid":/);
      assert.equal(await connectRaw(ws, '/tenant-b', { token: token() }), '44/tenant-b,{"message":"too many namespaces"}');
      // Leaving one makes room again (5 CONNECTs so far).
      ws.send('41/tenant-a,');
      assert.match(await connectRaw(ws, '/tenant-b', { token: token() }), /^40\/tenant-b,\{"sid":/);
      // The 6th CONNECT in the window is still answered, the 7th is refused whatever it asks for.
      ws.send('41/tenant-b,');
      assert.equal(await connectRaw(ws, '/nope'), '44/nope,{"message":"Invalid namespace"}');
      assert.equal(await connectRaw(ws, '/tenant-c', { token: token() }), '44/tenant-c,{"message":"too many connects"}');
    } finally {
      ws.close();
    }
  });

  it('gives socket.io-client a connect_error for a namespace name that is too long', async () => {
    const clients = new Clients(server.url, 'websocket');
    try {
      const err = await connectError(clients.socket(`/tenant-${'b'.repeat(300)}`, { auth: { token: token() } }));
      assert.equal(err.message, 'namespace name too long');
    } finally {
      clients.closeAll();
    }
  });

  it('closes a WebSocket whose binary packet announces too many attachments (1008)', async () => {
    const ws = await connected(server.url);
    ws.send(`459-["echo",${placeholders(9)}]`);
    assert.deepEqual(await ws.waitClose(), { code: 1008, reason: 'too many attachments' });
  });

  it('closes a WebSocket whose attachments exceed max_attachment_bytes (1009)', async () => {
    const ws = await connected(server.url);
    ws.send(`453-["echo",${placeholders(3)}]`);
    ws.send(Buffer.alloc(60_000, 1));
    ws.send(Buffer.alloc(60_000, 2));
    assert.deepEqual(await ws.waitClose(), { code: 1009, reason: 'attachments too large' });
  });

  it('closes a WebSocket whose binary packet is not completed within binary_timeout_ms (1008)', async () => {
    const ws = await connected(server.url);
    ws.send(`452-["echo",${placeholders(2)}]`);
    ws.send(Buffer.from([1, 2, 3]));
    // Nothing more is sent: the gateway's timer ends the session (binary_timeout_ms = 1000).
    assert.deepEqual(await ws.waitClose(5000), { code: 1008, reason: 'binary packet timeout' });
  });

  it('closes a polling session whose binary packet announces too many attachments', async () => {
    const s = await Polling.handshake(server.url, '/socket.io/');
    assert.equal((await s.post('40')).status, 200);
    assert.match((await s.packets())[0], /^40\{"sid":/);
    assert.equal((await s.post(`459-["echo",${placeholders(9)}]`)).status, 200);
    const after = await s.get();
    assert.equal(after.status, 400, after.body);
  });

  it('keeps a namespace rate limit across leaving and re-entering it', async () => {
    const ws = await connected(server.url, '/chat');
    try {
      // 25 events at once against burst = 20, per_second = 1; each one asks for an ack.
      const round = async (first) => {
        for (let i = 0; i < 25; i++) ws.send(`42/chat,${first + i}["echo"]`);
        let ok = 0;
        for (let i = 0; i < 25; i++) {
          const ack = await ws.nextText();
          if (ack === `43/chat,${first + i}[]`) ok += 1;
          else assert.equal(ack, `43/chat,${first + i}[{"ok":false,"error":"rate limited"}]`);
        }
        return ok;
      };
      assert.ok((await round(0)) >= 20, 'the burst is allowed');
      ws.send('41/chat,');
      assert.match(await connectRaw(ws, '/chat'), /^40\/chat,\{"sid":/);
      // A fresh bucket would let another 20 through; the kept one only what refilled since.
      const again = await round(100);
      assert.ok(again < 10, `${again} of 25 accepted after re-entering`);
    } finally {
      ws.close();
    }
  });

  it('holds max_rooms for a batch of joins in one polling POST', async () => {
    const s = await Polling.handshake(server.url, '/socket.io/');
    assert.equal((await s.post('40/chat,')).status, 200);
    assert.match((await s.packets())[0], /^40\/chat,\{"sid":/);
    const joins = Array.from({ length: 12 }, (_, i) => `42/chat,${i}["join","room-${i}"]`);
    assert.equal((await s.post(joins.join(SEP))).status, 200);
    const acks = await s.collect(12);
    const ok = acks.filter((a) => /^43\/chat,\d+\[\{"ok":true\}\]$/.test(a)).length;
    const refused = acks.filter((a) => /^43\/chat,\d+\[\{"ok":false,"error":"too many rooms"\}\]$/.test(a)).length;
    assert.deepEqual({ ok, refused }, { ok: 5, refused: 7 }, JSON.stringify(acks));
  });
});

describe('dynamic namespaces under a flood of refused connects', () => {
  let server;
  before(async () => {
    server = await startGateway({ config: 'limits-socketio-flood.toml', env: ENV });
  });
  after(() => server && server.stop());

  /** Sends `count` token-less CONNECTs to distinct tenants over one polling session. */
  async function flood(first, count) {
    const s = await Polling.handshake(server.url, '/socket.io/');
    const batch = 1000;
    for (let i = 0; i < count; i += batch) {
      const packets = Array.from({ length: batch }, (_, j) => `40/tenant-${first + i + j},`);
      assert.equal((await s.post(packets.join(SEP))).status, 200);
      const answers = await s.collect(batch);
      assert.equal(answers[0], `44/tenant-${first + i},{"message":"missing token","data":{"code":"missing_token"}}`);
    }
  }

  it('creates no namespace for them: the gateway does not grow', async () => {
    // Warm up (allocator arenas, metric handles), then measure.
    await flood(0, 5000);
    const before = rss(server.pid);
    await flood(1_000_000, 100_000);
    const grown = rss(server.pid) - before;
    assert.ok(grown < 8 * 1024 * 1024, `RSS grew by ${(grown / 1048576).toFixed(1)} MiB over 100 000 refused connects`);
    // A valid token still gets in.
    (await connected(server.url, '/tenant-ok', { token: token() })).close();
  });
});

describe('pending acks of events forwarded to workers', () => {
  let cluster;
  let worker;
  before(async () => {
    cluster = await startCluster({ gateways: 1, config: CLUSTER_CONFIG, env: CLUSTER_ENV });
    worker = await startWorker({ url: cluster.nats.url, prefix: cluster.prefix });
  });
  after(async () => {
    if (worker) await worker.stop();
    if (cluster) await cluster.stop();
  });

  it('answers events past max_pending_acks (128) at once with an error ack', async () => {
    const s = await Polling.handshake(cluster.gateways[0].url, '/socket.io/');
    assert.equal((await s.post('40/chat,')).status, 200);
    assert.match((await s.packets())[0], /^40\/chat,\{"sid":/);
    // One POST, handled in order: the worker never answers `slow`, so the first 128 wait (for
    // its 300 ms timeout) and the last two find no place.
    const events = Array.from({ length: 130 }, (_, i) => `42/chat,${i}["slow",${i}]`);
    assert.equal((await s.post(events.join(SEP))).status, 200);
    const acks = await s.collect(130, { timeout: 10_000 });
    const refused = acks.filter((a) => a.endsWith('[{"ok":false,"error":"too many pending acks"}]'));
    assert.deepEqual(refused, [128, 129].map((i) => `43/chat,${i}[{"ok":false,"error":"too many pending acks"}]`));
    // Answered or timed out, the places are free again.
    assert.equal((await s.post('42/chat,200["ask","hi"]')).status, 200);
    const [answer] = await s.collect(1, { timeout: 5000 });
    assert.match(answer, /^43\/chat,200\[\{"ok":true,/);
  });
});
