'use strict';
// Engine.IO v4 conformance, raw HTTP and WebSocket exchanges against the conformance example's
// bare Engine.IO endpoint (/engine.io/), which echoes every message. The expected frames are
// those of the Node reference (engine.io 6.6); `npm run test:reference` runs this file against it.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startConformance } = require('../lib/server');
const { request, partialRequest, Polling, Ws, wsUrl, wsHandshake, sleep, SEP } = require('../lib/raw');

const PATH = '/engine.io/';
const MAX_PAYLOAD = 1_000_000;
const HANDSHAKE_KEYS = ['maxPayload', 'pingInterval', 'pingTimeout', 'sid', 'upgrades'];

let server;
let base;
before(async () => {
  server = await startConformance();
  base = server.url;
});
after(() => server && server.stop());

function errorBody(code, message) {
  return JSON.stringify({ code, message });
}

async function assertError(res, code, message) {
  assert.equal(res.status, 400, `status of ${JSON.stringify(res.body)}`);
  assert.match(res.headers['content-type'] || '', /^application\/json/);
  assert.equal(res.body, errorBody(code, message));
}

/** GETs (answering pings) until the session is gone (400); fails if it is still there at the deadline. */
async function assertSessionGone(session, { timeout = 3000 } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const res = await session.get();
    if (res.status === 400) {
      assert.equal(res.body, errorBody(1, 'Session ID unknown'));
      return;
    }
    assert.equal(res.status, 200);
    if (Date.now() > deadline) assert.fail(`session ${session.sid} still open after ${timeout} ms (last GET: ${JSON.stringify(res.body)})`);
    if (res.body.split(SEP).includes('2')) await session.post('3');
  }
}

describe('handshake', () => {
  it('over polling: open packet with exactly sid, upgrades, pingInterval, pingTimeout, maxPayload', async () => {
    const session = await Polling.handshake(base, PATH);
    const res = session.handshakeResponse;
    assert.equal(res.body.includes(SEP), false, 'the handshake body holds only the open packet');
    assert.match(res.headers['content-type'], /^text\/plain; ?charset=UTF-8$/i);
    const open = session.open;
    assert.deepEqual(Object.keys(open).sort(), HANDSHAKE_KEYS);
    assert.equal(typeof open.sid, 'string');
    assert.match(open.sid, /^[A-Za-z0-9._~-]+$/, 'sid is made of URL-safe (RFC 3986 unreserved) characters');
    assert.deepEqual(open.upgrades, ['websocket']);
    assert.equal(open.pingInterval, 300);
    assert.equal(open.pingTimeout, 200);
    assert.equal(open.maxPayload, MAX_PAYLOAD);
  });

  it('over websocket: open packet with upgrades []', async () => {
    const [ws, open] = await wsHandshake(base, PATH);
    try {
      assert.deepEqual(Object.keys(open).sort(), HANDSHAKE_KEYS);
      assert.deepEqual(open.upgrades, []);
      assert.equal(open.pingInterval, 300);
      assert.equal(open.pingTimeout, 200);
      assert.equal(open.maxPayload, MAX_PAYLOAD);
    } finally {
      ws.close();
    }
  });

  it('gives every session a distinct sid', async () => {
    const a = await Polling.handshake(base, PATH);
    const b = await Polling.handshake(base, PATH);
    assert.notEqual(a.sid, b.sid);
  });
});

describe('errors', () => {
  it('EIO=3 → 400 {"code":5,"message":"Unsupported protocol version"}', async () => {
    await assertError(await request(`${base}${PATH}?EIO=3&transport=polling`), 5, 'Unsupported protocol version');
  });

  it('EIO missing → 400 code 5', async () => {
    await assertError(await request(`${base}${PATH}?transport=polling`), 5, 'Unsupported protocol version');
  });

  it('unknown transport → 400 {"code":0,"message":"Transport unknown"}', async () => {
    await assertError(await request(`${base}${PATH}?EIO=4&transport=carrier-pigeon`), 0, 'Transport unknown');
  });

  it('transport missing → 400 code 0', async () => {
    await assertError(await request(`${base}${PATH}?EIO=4`), 0, 'Transport unknown');
  });

  it('unknown sid → 400 {"code":1,"message":"Session ID unknown"}', async () => {
    await assertError(await request(`${base}${PATH}?EIO=4&transport=polling&sid=nope`), 1, 'Session ID unknown');
  });

  it('POST without sid → 400 {"code":2,"message":"Bad handshake method"}', async () => {
    const res = await request(`${base}${PATH}?EIO=4&transport=polling`, { method: 'POST', body: '4hello' });
    await assertError(res, 2, 'Bad handshake method');
  });

  it('PUT without sid → 400 code 2', async () => {
    await assertError(await request(`${base}${PATH}?EIO=4&transport=polling`, { method: 'PUT' }), 2, 'Bad handshake method');
  });

  it('websocket upgrade with EIO=3 is refused (HTTP 400, or closed with no open packet)', async () => {
    const ws = new Ws(`${base.replace(/^http/, 'ws')}${PATH}?EIO=3&transport=websocket`);
    const err = await ws.opened.then(() => null, (e) => e);
    try {
      if (err) {
        assert.equal(err.status, 400);
      } else {
        await ws.waitClose();
        assert.deepEqual(ws.queue, [], 'no open packet before the close');
      }
    } finally {
      ws.close();
    }
  });

  it('websocket upgrade to a polling-only transport name is refused with HTTP 400', async () => {
    const ws = new Ws(`${base.replace(/^http/, 'ws')}${PATH}?EIO=4&transport=carrier-pigeon`);
    const err = await ws.opened.then(() => null, (e) => e);
    ws.close();
    assert.ok(err, 'the upgrade was accepted');
    assert.equal(err.status, 400);
  });
});

describe('polling', () => {
  it('echoes messages, several packets batched in one response with \\x1e, binary as b<base64>', async () => {
    const session = await Polling.handshake(base, PATH);
    const post = await session.post(`4hello${SEP}4wörld €${SEP}bAQIDBA==`);
    assert.equal(post.status, 200);
    assert.equal(post.body, 'ok');
    const res = await session.get();
    assert.equal(res.status, 200);
    assert.match(res.headers['content-type'], /^text\/plain; ?charset=UTF-8$/i);
    assert.equal(res.body, `4hello${SEP}4wörld €${SEP}bAQIDBA==`);
  });

  it('an empty binary message round-trips as "b"', async () => {
    const session = await Polling.handshake(base, PATH);
    assert.equal((await session.post('b')).status, 200);
    assert.deepEqual(await session.collect(1), ['b']);
  });

  it('responses carry cache-control: no-store', async () => {
    const session = await Polling.handshake(base, PATH);
    assert.equal(session.handshakeResponse.headers['cache-control'], 'no-store');
    const post = await session.post('4x');
    assert.equal(post.headers['cache-control'], 'no-store');
    const get = await session.get();
    assert.equal(get.headers['cache-control'], 'no-store');
  });

  it('an undecodable packet closes the session (next GET → 400 code 1)', async () => {
    const session = await Polling.handshake(base, PATH);
    await session.post('abc');
    const res = await session.get();
    await assertError(res, 1, 'Session ID unknown');
  });

  it('two concurrent GETs: one gets 400, the other "1", then the session is gone', async () => {
    const session = await Polling.handshake(base, PATH);
    const first = session.get();
    await sleep(100); // let the first GET reach the server
    const second = session.get();
    const results = await Promise.all([first, second]);
    const statuses = results.map((r) => r.status).sort();
    assert.deepEqual(statuses, [200, 400], JSON.stringify(results.map((r) => [r.status, r.body])));
    assert.equal(results.find((r) => r.status === 200).body, '1');
    // Node answers an overlap with an empty 400 ("overlap from client"), not an error JSON.
    assert.equal(results.find((r) => r.status === 400).body, '');
    await assertError(await session.get(), 1, 'Session ID unknown');
  });

  it('two concurrent POSTs: the later one gets 400, then the session is gone', async () => {
    const session = await Polling.handshake(base, PATH);
    const body = '4hello';
    const headers = { 'content-type': 'text/plain;charset=UTF-8' };
    // Both bodies are held unfinished, so they overlap whichever reaches the server first.
    const posts = [0, 1].map(() => partialRequest(session.url(), { length: body.length, first: body.slice(0, 1), headers }));
    const refused = await Promise.any(posts.map((p, i) => p.response.then((res) => ({ res, i }))));
    assert.equal(refused.res.status, 400, JSON.stringify(refused.res));
    // Node answers an overlap with an empty 400, not an error JSON.
    assert.equal(refused.res.body, '');
    // The earlier one delivers nothing either: Node drops its connection, Switchboard answers it
    // 400 code 1 (the session it posted to is gone).
    const other = posts[1 - refused.i];
    other.end(body.slice(1));
    const res = await other.response.catch((err) => ({ dropped: err.code }));
    assert.ok(res.dropped === 'ECONNRESET' || (res.status === 400 && res.body === errorBody(1, 'Session ID unknown')), JSON.stringify(res));
    await assertError(await session.get(), 1, 'Session ID unknown');
  });

  it('a GET whose connection the client drops closes the session', async () => {
    const session = await Polling.handshake(base, PATH);
    let pending;
    const aborted = session.get({ onRequest: (req) => { pending = req; } }).catch(() => 'aborted');
    await sleep(100);
    pending.destroy();
    assert.equal(await aborted, 'aborted');
    await sleep(50);
    await assertSessionGone(session);
  });

  it('client close "1" while a GET is pending: the GET gets "6", later requests 400', async () => {
    const session = await Polling.handshake(base, PATH);
    const pending = session.get();
    await sleep(100);
    const post = await session.post('1');
    assert.equal(post.status, 200);
    const res = await pending;
    assert.equal(res.status, 200);
    assert.equal(res.body, '6');
    await assertError(await session.get(), 1, 'Session ID unknown');
  });

  it('server pings over polling; answered pings keep the session open', async () => {
    const session = await Polling.handshake(base, PATH);
    for (let i = 0; i < 3; i++) {
      assert.deepEqual(await session.packets(), ['2']);
      assert.equal((await session.post('3')).status, 200);
    }
    // still open: a message is echoed
    await session.post('4still here');
    assert.deepEqual(await session.collect(1), ['4still here']);
  });

  it('ping timeout over polling closes the session', async () => {
    const session = await Polling.handshake(base, PATH);
    assert.deepEqual(await session.packets(), ['2']);
    // no pong: the session must go; a pending GET may see "1" before the 400s
    const deadline = Date.now() + 3000;
    for (;;) {
      const res = await session.get();
      if (res.status === 400) {
        assert.equal(res.body, errorBody(1, 'Session ID unknown'));
        break;
      }
      assert.ok(['1', '6'].includes(res.body), `unexpected ${JSON.stringify(res.body)}`);
      if (Date.now() > deadline) assert.fail('session still open without pongs');
    }
  });

  it('POST over maxPayload → 413', async () => {
    const session = await Polling.handshake(base, PATH);
    const res = await session.post(`4${'a'.repeat(MAX_PAYLOAD)}`);
    assert.equal(res.status, 413);
  });

  it('POST of exactly maxPayload bytes is accepted and echoed', async () => {
    const session = await Polling.handshake(base, PATH);
    const body = `4${'a'.repeat(MAX_PAYLOAD - 1)}`;
    const res = await session.post(body);
    assert.equal(res.status, 200);
    const [echo] = await session.collect(1);
    assert.equal(echo.length, body.length);
    assert.equal(echo, body);
  });
});

describe('websocket', () => {
  it('echoes text as text and binary as raw binary frames', async () => {
    const [ws] = await wsHandshake(base, PATH, { autoPong: true });
    try {
      ws.send('4hello');
      assert.equal(await ws.nextText(), '4hello');
      ws.send('4ünïcödé 😀');
      assert.equal(await ws.nextText(), '4ünïcödé 😀');
      ws.send(Buffer.from([1, 2, 3, 4]));
      assert.deepEqual(await ws.nextBinary(), Buffer.from([1, 2, 3, 4]));
      ws.send(Buffer.alloc(0));
      assert.deepEqual(await ws.nextBinary(), Buffer.alloc(0));
    } finally {
      ws.close();
    }
  });

  it('server pings; answered pings keep the connection open', async () => {
    const [ws] = await wsHandshake(base, PATH);
    try {
      for (let i = 0; i < 3; i++) {
        assert.equal(await ws.nextText(), '2');
        ws.send('3');
      }
      ws.send('4alive');
      assert.equal(await ws.nextText(), '4alive');
    } finally {
      ws.close();
    }
  });

  it('ping timeout closes the connection', async () => {
    const [ws] = await wsHandshake(base, PATH);
    assert.equal(await ws.nextText(), '2');
    await ws.waitClose();
  });

  it('an undecodable packet closes the connection', async () => {
    const [ws] = await wsHandshake(base, PATH, { autoPong: true });
    ws.send('abc');
    await ws.waitClose();
  });

  it('a message over maxPayload closes with 1009', async () => {
    const [ws] = await wsHandshake(base, PATH, { autoPong: true });
    ws.send(`4${'a'.repeat(MAX_PAYLOAD)}`);
    const { code } = await ws.waitClose();
    assert.equal(code, 1009);
  });
});

describe('upgrade', () => {
  it('polling → websocket: 2probe/3probe, GET during upgrade gets "6", after "5" GET → 400, echo over ws', async () => {
    const session = await Polling.handshake(base, PATH);
    const ws = new Ws(wsUrl(base, PATH, `&sid=${encodeURIComponent(session.sid)}`));
    try {
      await ws.opened;
      ws.send('2probe');
      assert.equal(await ws.nextText(), '3probe');
      const during = await session.get();
      assert.equal(during.status, 200);
      assert.equal(during.body, '6');
      ws.send('5');
      await sleep(50);
      const after = await session.get();
      assert.equal(after.status, 400);
      ws.send('4upgraded');
      let frame = await ws.nextText();
      if (frame === '2') {
        ws.send('3');
        frame = await ws.nextText();
      }
      assert.equal(frame, '4upgraded');
    } finally {
      ws.close();
    }
  });

  it('messages queued for polling before the upgrade are delivered', async () => {
    const session = await Polling.handshake(base, PATH);
    const ws = new Ws(wsUrl(base, PATH, `&sid=${encodeURIComponent(session.sid)}`), { autoPong: true });
    try {
      await ws.opened;
      ws.send('2probe');
      assert.equal(await ws.nextText(), '3probe');
      await session.post('4before upgrade');
      ws.send('5');
      const got = [];
      const deadline = Date.now() + 3000;
      while (!got.includes('4before upgrade')) {
        if (Date.now() > deadline) assert.fail(`not delivered: ${JSON.stringify(got)}`);
        // delivered over the pending poll window or over the websocket: either is fine
        const frame = await ws.next(1000).catch(() => null);
        if (frame !== null) got.push(frame);
        else {
          const res = await session.get();
          if (res.status === 200) got.push(...res.body.split(SEP));
        }
      }
    } finally {
      ws.close();
    }
  });

  it('a second websocket for an upgraded sid is closed', async () => {
    const session = await Polling.handshake(base, PATH);
    const ws = new Ws(wsUrl(base, PATH, `&sid=${encodeURIComponent(session.sid)}`), { autoPong: true });
    try {
      await ws.opened;
      ws.send('2probe');
      assert.equal(await ws.nextText(), '3probe');
      ws.send('5');
      await sleep(50);
      const second = new Ws(wsUrl(base, PATH, `&sid=${encodeURIComponent(session.sid)}`));
      const refused = await second.opened.then(() => null, (e) => e);
      if (!refused) await second.waitClose();
      second.close();
      // the first one still works
      ws.send('4first');
      assert.equal(await ws.nextText(), '4first');
    } finally {
      ws.close();
    }
  });
});
