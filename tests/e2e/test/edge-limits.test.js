'use strict';
// HTTP-level limits of the gateway's client port and its trust boundary (docs/security.md),
// against a standalone gateway (fixtures/edge-limits.toml):
//
// - a polling POST whose body trickles in is cut off at `body_timeout_ms`: 408, connection closed;
// - two concurrent POSTs on one session: the later gets 400 (empty, as Node) and the session ends;
// - a handshake query over `max_query_bytes`: 400 code 3; kept headers over
//   `max_kept_header_bytes`: 431 (polling and WebSocket alike); headers not kept do not count;
// - a request head over 64 KiB: 431;
// - /metrics and /v1/state answer on the operator port only; the client port 404s them.
//
// Each refusal is also read back from switchboard_gateway_limited_total{limit} on the operator
// port.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const { startGateway } = require('../lib/server');
const { request, partialRequest, Polling, Ws, wsUrl } = require('../lib/raw');

const PATH = '/socket.io/';
const MAX_QUERY = 2048;
const MAX_KEPT_HEADERS = 4096;
const BAD_REQUEST = JSON.stringify({ code: 3, message: 'Bad request' });

let gw;
before(async () => {
  gw = await startGateway({ config: 'edge-limits.toml' });
  assert.ok(gw.operatorUrl, 'the gateway printed its operator address');
});
after(() => gw && gw.stop());

/** switchboard_gateway_limited_total{limit=`limit`} on the operator port (0 before the first). */
async function limited(limit) {
  const text = await (await fetch(`${gw.operatorUrl}/metrics`)).text();
  const m = new RegExp(`^switchboard_gateway_limited_total\\{limit="${limit}"\\} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

/** A polling handshake URL with a query of exactly `bytes` bytes. */
function queryOf(bytes) {
  const base = 'EIO=4&transport=polling&pad=';
  return `${PATH}?${base}${'a'.repeat(bytes - base.length)}`;
}

describe('POST body deadline', () => {
  it('a body trickled one byte at a time is cut off with 408 and its connection closed', async () => {
    const before = await limited('body_time');
    const session = await Polling.handshake(gw.url, PATH);
    const closed = new Promise((resolve) => {
      const post = partialRequest(session.url(), { length: 1000, first: '4', headers: { 'content-type': 'text/plain;charset=UTF-8' } });
      // The attack: one more byte every 100 ms, for as long as the server takes it.
      const trickle = setInterval(() => post.more('x'), 100);
      post.response.then(
        (res) => {
          clearInterval(trickle);
          resolve(res);
        },
        (err) => {
          clearInterval(trickle);
          resolve({ error: err });
        },
      );
    });
    const res = await closed;
    assert.equal(res.status, 408, JSON.stringify(res));
    assert.equal(res.headers.connection, 'close');
    assert.equal(await limited('body_time'), before + 1);
  });

  it('a body sent at once is not affected', async () => {
    const session = await Polling.handshake(gw.url, PATH);
    const res = await session.post('40');
    assert.deepEqual([res.status, res.body], [200, 'ok']);
  });
});

describe('requests in flight per polling session', () => {
  it('a second concurrent POST gets 400 (empty body, as Node) and ends the session', async () => {
    const before = await limited('polling_in_flight');
    const session = await Polling.handshake(gw.url, PATH);
    const body = '40';
    const headers = { 'content-type': 'text/plain;charset=UTF-8' };
    const posts = [0, 1].map(() => partialRequest(session.url(), { length: body.length, first: body.slice(0, 1), headers }));
    const refused = await Promise.any(posts.map((p, i) => p.response.then((res) => ({ res, i }))));
    assert.deepEqual([refused.res.status, refused.res.body], [400, '']);
    const other = posts[1 - refused.i];
    other.end(body.slice(1));
    const res = await other.response;
    assert.deepEqual([res.status, res.body], [400, JSON.stringify({ code: 1, message: 'Session ID unknown' })]);
    const get = await session.get();
    assert.deepEqual([get.status, get.body], [400, JSON.stringify({ code: 1, message: 'Session ID unknown' })]);
    assert.equal(await limited('polling_in_flight'), before + 1);
  });
});

describe('handshake: what a session keeps is bounded', () => {
  it(`a query of ${MAX_QUERY} bytes is kept; one byte more is refused with 400 code 3`, async () => {
    const before = await limited('handshake');
    const fits = await request(`${gw.url}${queryOf(MAX_QUERY)}`);
    assert.equal(fits.status, 200, fits.body);
    const over = await request(`${gw.url}${queryOf(MAX_QUERY + 1)}`);
    assert.deepEqual([over.status, over.body], [400, BAD_REQUEST]);
    // The same over WebSocket (through hyper: the direct path hands refusals over to it).
    const ws = new Ws(wsUrl(gw.url, PATH, `&pad=${'a'.repeat(MAX_QUERY)}`));
    await assert.rejects(ws.opened, (err) => err.status === 400);
    assert.equal(await limited('handshake'), before + 2);
  });

  it(`kept headers of ${MAX_KEPT_HEADERS} bytes together are kept; more is refused with 431`, async () => {
    const before = await limited('handshake');
    const half = MAX_KEPT_HEADERS / 2;
    const fits = await request(`${gw.url}${PATH}?EIO=4&transport=polling`, {
      headers: { 'user-agent': 'u'.repeat(half), authorization: 'a'.repeat(half) },
    });
    assert.equal(fits.status, 200, fits.body);
    const over = await request(`${gw.url}${PATH}?EIO=4&transport=polling`, {
      headers: { 'user-agent': 'u'.repeat(half), authorization: 'a'.repeat(half + 1) },
    });
    assert.deepEqual([over.status, over.body], [431, BAD_REQUEST]);
    // A header the session does not keep is not counted.
    const cookie = await request(`${gw.url}${PATH}?EIO=4&transport=polling`, { headers: { cookie: 'c'.repeat(4 * MAX_KEPT_HEADERS) } });
    assert.equal(cookie.status, 200, cookie.body);
    const ws = new Ws(wsUrl(gw.url, PATH), { headers: { 'user-agent': 'u'.repeat(MAX_KEPT_HEADERS + 1) } });
    await assert.rejects(ws.opened, (err) => err.status === 431);
    assert.equal(await limited('handshake'), before + 2);
  });

  it('a request head over 64 KiB is refused with 431 before it is read whole', async () => {
    const { port } = new URL(gw.url);
    const socket = net.connect({ port: Number(port), host: '127.0.0.1' });
    let got = '';
    socket.setEncoding('utf8');
    socket.on('data', (d) => (got += d));
    const ended = new Promise((resolve) => socket.once('close', resolve));
    socket.on('error', () => {});
    socket.write(`GET ${PATH}?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nX-Pad: ${'p'.repeat(80 * 1024)}\r\n\r\n`);
    await ended;
    assert.match(got, /^HTTP\/1\.1 431 /);
  });
});

describe('trust boundary: the operator surfaces are not on the client port', () => {
  it('the operator port serves /metrics and /v1/state; the client port answers 404 for both', async () => {
    const metrics = await fetch(`${gw.operatorUrl}/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(await metrics.text(), /^# (TYPE|HELP) switchboard_/m);
    const state = await fetch(`${gw.operatorUrl}/v1/state`);
    assert.equal(state.status, 200);
    assert.ok(Array.isArray((await state.json()).sockets), 'the embedded broker state');
    for (const p of ['/metrics', '/v1/state']) {
      const res = await fetch(`${gw.url}${p}`);
      await res.arrayBuffer();
      assert.equal(res.status, 404, `client port ${p}`);
    }
    // And the operator port is no second way in for clients.
    for (const p of [`${PATH}?EIO=4&transport=polling`, '/health', '/']) {
      const res = await fetch(`${gw.operatorUrl}${p}`);
      await res.arrayBuffer();
      assert.equal(res.status, 404, `operator port ${p}`);
    }
  });
});
