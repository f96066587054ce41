'use strict';
// Raw Engine.IO / Socket.IO exchanges: plain HTTP requests (one TCP connection each, so that a
// request can be aborted by closing its connection) and a WebSocket with a queue of the frames
// received, read one at a time with a timeout.

const http = require('node:http');
const WebSocket = require('ws');

const DEFAULT_WAIT_MS = 3000;
const SEP = '\x1e';

/**
 * A request whose body is sent in parts, on its own connection: `length` bytes are announced,
 * `first` is written at once, `more(chunk)` writes the next part and `end(rest)` the last.
 * `response` resolves to { status, headers, body } when the answer is complete (it may come before
 * the body is), or rejects if the connection ends without one.
 */
function partialRequest(url, { method = 'POST', length, first = '', headers = {} } = {}) {
  let req;
  const response = new Promise((resolve, reject) => {
    req = http.request(url, { method, headers: { 'content-length': String(length), ...headers }, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
  // a write after the server closed the connection is expected in these tests: not an error
  response.catch(() => {});
  req.write(first);
  return {
    response,
    more: (chunk) => req.write(chunk),
    end: (rest = '') => req.end(rest),
    destroy: () => req.destroy(),
  };
}

/** One HTTP request on its own connection. Resolves to { status, headers, body (string) }. */
function request(url, { method = 'GET', headers = {}, body, timeout = 10_000, onRequest } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') });
      });
      res.on('error', reject);
    });
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`${method} ${url}: no response within ${timeout} ms`));
    }, timeout);
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    if (onRequest) onRequest(req);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** Parses an Engine.IO open packet (`0{...}`) and returns the object. */
function parseOpen(text) {
  if (typeof text !== 'string' || text[0] !== '0') {
    throw new Error(`expected an open packet, got ${JSON.stringify(text)}`);
  }
  return JSON.parse(text.slice(1));
}

/** An Engine.IO session over HTTP long-polling. */
class Polling {
  constructor(base, path, sid, open) {
    this.base = base;
    this.path = path;
    this.sid = sid;
    this.open = open;
  }

  /** GET handshake; asserts 200 and returns the session. */
  static async handshake(base, path = '/engine.io/', { headers } = {}) {
    const res = await request(`${base}${path}?EIO=4&transport=polling`, { headers });
    if (res.status !== 200) throw new Error(`handshake: HTTP ${res.status} ${res.body}`);
    const open = parseOpen(res.body);
    const session = new Polling(base, path, open.sid, open);
    session.handshakeResponse = res;
    return session;
  }

  url(extra = '') {
    return `${this.base}${this.path}?EIO=4&transport=polling&sid=${encodeURIComponent(this.sid)}${extra}`;
  }

  get(options = {}) {
    return request(this.url(), { timeout: 5000, ...options });
  }

  post(body, options = {}) {
    return request(this.url(), {
      method: 'POST',
      body,
      headers: { 'content-type': 'text/plain;charset=UTF-8' },
      ...options,
    });
  }

  /** GET that must succeed; returns the packets of its body. */
  async packets() {
    const res = await this.get();
    if (res.status !== 200) throw new Error(`GET: HTTP ${res.status} ${res.body}`);
    return res.body.split(SEP);
  }

  /** GETs (answering pings) until `count` packets other than pings arrived; returns them. */
  async collect(count, { timeout = DEFAULT_WAIT_MS } = {}) {
    const deadline = Date.now() + timeout;
    const got = [];
    while (got.length < count) {
      if (Date.now() > deadline) throw new Error(`only ${JSON.stringify(got)} after ${timeout} ms`);
      for (const p of await this.packets()) {
        if (p === '2') await this.post('3');
        else got.push(p);
      }
    }
    return got;
  }
}

/**
 * A WebSocket whose frames are queued: text frames as strings, binary frames as Buffers.
 * With `autoPong`, Engine.IO pings (`2`) are answered with `3` and not queued.
 */
class Ws {
  constructor(url, { autoPong = false, headers, maxPayload } = {}) {
    this.autoPong = autoPong;
    this.queue = [];
    this.waiters = [];
    this.ws = new WebSocket(url, { headers, maxPayload: maxPayload ?? 100 * 1024 * 1024 });
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('unexpected-response', (_req, res) => {
        const err = new Error(`WebSocket refused with HTTP ${res.statusCode}`);
        err.status = res.statusCode;
        res.resume();
        reject(err);
      });
      this.ws.once('error', reject);
    });
    this.opened.catch(() => {});
    this.closed = new Promise((resolve) => {
      this.ws.once('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        resolve(this.closeInfo);
        this.flushWaiters();
      });
    });
    this.ws.on('error', () => {});
    this.ws.on('message', (data, isBinary) => {
      const frame = isBinary ? Buffer.from(data) : data.toString('utf8');
      if (this.autoPong && frame === '2') {
        this.send('3');
        return;
      }
      this.queue.push(frame);
      this.flushWaiters();
    });
  }

  flushWaiters() {
    while (this.waiters.length > 0 && (this.queue.length > 0 || this.closeInfo)) {
      const w = this.waiters.shift();
      clearTimeout(w.timer);
      if (this.queue.length > 0) w.resolve(this.queue.shift());
      else w.reject(new Error(`connection closed (code ${this.closeInfo.code}) while waiting for a frame`));
    }
  }

  /** The next frame (string or Buffer); rejects after `timeout` ms or when the socket closes. */
  next(timeout = DEFAULT_WAIT_MS) {
    return new Promise((resolve, reject) => {
      const w = { resolve, reject };
      w.timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`no frame within ${timeout} ms`));
      }, timeout);
      this.waiters.push(w);
      this.flushWaiters();
    });
  }

  /** The next frame, asserted to be text. */
  async nextText(timeout) {
    const f = await this.next(timeout);
    if (typeof f !== 'string') throw new Error(`expected a text frame, got binary ${f.toString('hex')}`);
    return f;
  }

  /** The next frame, asserted to be binary. */
  async nextBinary(timeout) {
    const f = await this.next(timeout);
    if (typeof f === 'string') throw new Error(`expected a binary frame, got text ${JSON.stringify(f)}`);
    return f;
  }

  send(data) {
    this.ws.send(data);
  }

  /** Resolves to { code, reason } when the server closes; rejects after `timeout` ms. */
  waitClose(timeout = DEFAULT_WAIT_MS) {
    let timer;
    return Promise.race([
      this.closed.finally(() => clearTimeout(timer)),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`still open after ${timeout} ms; queued: ${JSON.stringify(this.queue)}`)), timeout);
      }),
    ]);
  }

  close() {
    this.ws.terminate();
  }
}

/** WebSocket URL of an Engine.IO endpoint. */
function wsUrl(base, path, query = '') {
  return `${base.replace(/^http/, 'ws')}${path}?EIO=4&transport=websocket${query}`;
}

/** Opens a WebSocket-only Engine.IO session; resolves to [ws, openPacket]. */
async function wsHandshake(base, path = '/engine.io/', options = {}) {
  const ws = new Ws(wsUrl(base, path), options);
  await ws.opened;
  const open = parseOpen(await ws.nextText());
  return [ws, open];
}

/**
 * Opens a WebSocket-only session on /socket.io/ and connects namespace `nsp` (default `/`),
 * pings answered. Resolves to { ws, sid } after the CONNECT reply and the `auth` event.
 */
async function sioConnect(base, { nsp = '/', auth, autoPong = true } = {}) {
  const [ws] = await wsHandshake(base, '/socket.io/', { autoPong });
  const prefix = nsp === '/' ? '' : `${nsp},`;
  ws.send(`40${prefix}${auth === undefined ? '' : JSON.stringify(auth)}`);
  const reply = await ws.nextText();
  const m = /^40(\/[^,]*,)?(\{.*\})$/.exec(reply);
  if (!m || (m[1] || '') !== prefix) throw new Error(`expected a CONNECT reply for ${nsp}, got ${JSON.stringify(reply)}`);
  const { sid } = JSON.parse(m[2]);
  const authEvent = await ws.nextText();
  return { ws, sid, authEvent };
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

module.exports = { request, partialRequest, parseOpen, Polling, Ws, wsUrl, wsHandshake, sioConnect, sleep, SEP, DEFAULT_WAIT_MS };
