'use strict';
// Compression as Node's engine.io does it: permessage-deflate over WebSocket (off by default;
// negotiated when the client offers it; messages from the threshold on are compressed) and
// gzip/deflate polling responses per Accept-Encoding from a threshold (on by default).
//
// The wire is checked with a raw TCP client (the RSV1 bit of every frame, the 101's
// Sec-WebSocket-Extensions, Content-Encoding), and the hostile inputs of a compressed stream are
// sent the same way: a decompression bomb, RSV1 on control and continuation frames, RSV1 without
// negotiation, invalid deflate data. The official socket.io-client (Node, over `ws`, which offers
// permessage-deflate by default) round-trips large messages with it.
//
// Per-emit compression (socket.io's `compress(false)`): in a one-gateway cluster, the Node
// emitter sends the same large emit with compress(false) and with the default; on WebSocket the
// first arrives without RSV1 and the second with it, over polling the first without
// Content-Encoding and the second gzipped, and the client reads the same payload either way.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const http = require('node:http');
const net = require('node:net');
const zlib = require('node:zlib');
const { io } = require('socket.io-client');
const { connect } = require('nats');
const { startGateway } = require('../lib/server');
const { startCluster } = require('../lib/cluster');
const bus = require('../lib/bus');
const { within, upgraded } = require('../lib/client');
const { Emitter } = require('../../../emitters/node');

const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);
const WAIT_MS = 5000;

/** permessage-deflate compression of one message (no context takeover), tail removed. */
function deflate(data) {
  const z = zlib.deflateRawSync(Buffer.from(data), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
  assert.deepEqual(z.subarray(z.length - 4), TAIL);
  return z.subarray(0, z.length - 4);
}

function inflate(payload) {
  return zlib.inflateRawSync(Buffer.concat([payload, TAIL]), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
}

/** A client frame: masked, with the given first-byte bits. */
function frame({ fin = true, rsv1 = false, opcode, payload }) {
  const data = Buffer.from(payload);
  const mask = crypto.randomBytes(4);
  let head;
  if (data.length < 126) {
    head = Buffer.from([0, 0x80 | data.length]);
  } else if (data.length < 65536) {
    head = Buffer.alloc(4);
    head[1] = 0x80 | 126;
    head.writeUInt16BE(data.length, 2);
  } else {
    head = Buffer.alloc(10);
    head[1] = 0x80 | 127;
    head.writeBigUInt64BE(BigInt(data.length), 2);
  }
  head[0] = (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode;
  const masked = Buffer.from(data);
  for (let i = 0; i < masked.length; i++) masked[i] ^= mask[i % 4];
  return Buffer.concat([head, mask, masked]);
}

/**
 * A WebSocket over a raw TCP socket: the 101's headers as received, and every server frame with
 * its RSV1 bit, so that what is compressed on the wire can be asserted.
 */
class RawWs {
  static open(port, { extensions } = {}) {
    return new Promise((resolve, reject) => {
      const sock = net.connect(port, '127.0.0.1');
      const key = crypto.randomBytes(16).toString('base64');
      const lines = [
        'GET /socket.io/?EIO=4&transport=websocket HTTP/1.1',
        `Host: 127.0.0.1:${port}`,
        'Upgrade: websocket',
        'Connection: Upgrade',
        `Sec-WebSocket-Key: ${key}`,
        'Sec-WebSocket-Version: 13',
      ];
      if (extensions) lines.push(`Sec-WebSocket-Extensions: ${extensions}`);
      sock.write(`${lines.join('\r\n')}\r\n\r\n`);
      let buf = Buffer.alloc(0);
      const timer = setTimeout(() => reject(new Error('no 101 in time')), WAIT_MS);
      const onData = (chunk) => {
        buf = Buffer.concat([buf, chunk]);
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        clearTimeout(timer);
        sock.off('data', onData);
        const head = buf.subarray(0, end).toString('latin1').split('\r\n');
        const headers = {};
        for (const line of head.slice(1)) {
          const i = line.indexOf(':');
          headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
        }
        resolve(new RawWs(sock, head[0], headers, buf.subarray(end + 4)));
      };
      sock.on('data', onData);
      sock.once('error', reject);
    });
  }

  constructor(sock, status, headers, rest) {
    this.sock = sock;
    this.status = status;
    this.headers = headers;
    this.buf = Buffer.alloc(0);
    this.frames = [];
    this.waiters = [];
    this.ended = false;
    sock.on('data', (chunk) => this.onData(chunk));
    sock.on('close', () => {
      this.ended = true;
      this.wake();
    });
    sock.on('error', () => {});
    if (rest.length > 0) this.onData(rest);
  }

  onData(chunk) {
    this.buf = Buffer.concat([this.buf, chunk]);
    for (;;) {
      if (this.buf.length < 2) break;
      const b0 = this.buf[0];
      let len = this.buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (this.buf.length < 4) break;
        len = this.buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) break;
        len = Number(this.buf.readBigUInt64BE(2));
        off = 10;
      }
      if (this.buf.length < off + len) break;
      this.frames.push({
        fin: (b0 & 0x80) !== 0,
        rsv1: (b0 & 0x40) !== 0,
        rsv23: (b0 & 0x30) !== 0,
        opcode: b0 & 0x0f,
        payload: this.buf.subarray(off, off + len),
      });
      this.buf = this.buf.subarray(off + len);
    }
    this.wake();
  }

  wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  /** The next frame that is not an Engine.IO ping (pings are answered). */
  async next() {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      while (this.frames.length > 0) {
        const f = this.frames.shift();
        if (f.opcode === 1 && !f.rsv1 && f.payload.toString() === '2') {
          this.sendText('3');
          continue;
        }
        return f;
      }
      if (this.ended) throw new Error('connection ended while waiting for a frame');
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('no frame in time');
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** The text of the next data frame, inflated if RSV1; with whether it was compressed. */
  async nextMessage() {
    const f = await this.next();
    assert.equal(f.opcode, 1, `expected a text frame, got opcode ${f.opcode}`);
    assert.equal(f.rsv23, false);
    return { compressed: f.rsv1, text: (f.rsv1 ? inflate(f.payload) : f.payload).toString('utf8') };
  }

  /** The close frame's code (the server's answer to a protocol violation). */
  async closeCode() {
    for (;;) {
      const f = await this.next();
      if (f.opcode === 8) return f.payload.length >= 2 ? f.payload.readUInt16BE(0) : null;
    }
  }

  sendText(text, { compress = false } = {}) {
    const payload = compress ? deflate(text) : Buffer.from(text);
    this.sock.write(frame({ opcode: 1, rsv1: compress, payload }));
  }

  sendRaw(bytes) {
    this.sock.write(bytes);
  }

  close() {
    this.sock.destroy();
  }
}

/** Opens a session on `/` over a raw WebSocket and connects the namespace. */
async function rawSession(port, extensions = 'permessage-deflate; client_max_window_bits') {
  const ws = await RawWs.open(port, { extensions });
  assert.match(ws.status, /^HTTP\/1\.1 101/);
  const open = await ws.nextMessage();
  assert.match(open.text, /^0\{/);
  assert.equal(open.compressed, false, 'the open packet is under the threshold');
  ws.sendText('40');
  const reply = await ws.nextMessage();
  assert.match(reply.text, /^40\{"sid":/);
  ws.sid = JSON.parse(reply.text.slice(2)).sid;
  return ws;
}

/** A polling session on `/` of the gateway at `base`, connected: its URL and socket id. */
async function pollingSession(base) {
  const res = await rawGet(`${base}/socket.io/?EIO=4&transport=polling`);
  assert.equal(res.status, 200);
  const { sid } = JSON.parse(res.body.toString().slice(1));
  const url = `${base}/socket.io/?EIO=4&transport=polling&sid=${sid}`;
  assert.equal(await rawPost(url, '40'), 200);
  const reply = await rawGet(url);
  assert.match(reply.body.toString(), /^40\{"sid":/);
  return { url, sid: JSON.parse(reply.body.toString().slice(2)).sid };
}

/** A GET that returns the raw body bytes and the headers. */
function rawGet(url, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { headers, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(WAIT_MS, () => req.destroy(new Error('no response in time')));
    req.end();
  });
}

function rawPost(url, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', agent: false, headers: { 'content-type': 'text/plain;charset=UTF-8' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** A chat-like JSON message of about `bytes` bytes. */
function chatText(bytes) {
  const words = ['hello', 'world', 'switchboard', 'message', 'room', 'lunch', 'at', 'noon'];
  let out = '';
  for (let i = 0; out.length < bytes; i++) out += `${words[(i * 7) % words.length]} `;
  return out.slice(0, bytes);
}

describe('compression: permessage-deflate and polling responses', () => {
  let server;
  let port;
  before(async () => {
    server = await startGateway({ config: 'compression.toml' });
    port = Number(new URL(server.url).port);
  });
  after(() => server && server.stop());

  describe('negotiation', () => {
    it('agrees permessage-deflate without context takeover when offered', async () => {
      const ws = await RawWs.open(port, { extensions: 'permessage-deflate; client_max_window_bits' });
      assert.equal(
        ws.headers['sec-websocket-extensions'],
        'permessage-deflate; server_no_context_takeover; client_no_context_takeover',
      );
      ws.close();
    });

    it('honours server_max_window_bits and skips an offer it cannot take', async () => {
      const ws = await RawWs.open(port, {
        extensions: 'permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=10',
      });
      assert.equal(
        ws.headers['sec-websocket-extensions'],
        'permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10',
      );
      ws.close();
    });

    it('declines an invalid offer and sends plain frames', async () => {
      const ws = await rawSession(port, 'permessage-deflate; server_max_window_bits=99');
      assert.equal(ws.headers['sec-websocket-extensions'], undefined);
      ws.sendText(`42["echo",${JSON.stringify(chatText(4000))}]`);
      const m = await ws.nextMessage();
      assert.equal(m.compressed, false);
      ws.close();
    });
  });

  describe('the wire', () => {
    it('compresses messages from the threshold on, not below it', async () => {
      const ws = await rawSession(port);
      const big = chatText(2000);
      ws.sendText(`42["echo",${JSON.stringify(big)}]`);
      const m = await ws.nextMessage();
      assert.equal(m.compressed, true, 'a 2 KB message is compressed');
      assert.equal(m.text, `42["echo",${JSON.stringify(big)}]`);
      ws.sendText('42["echo","hi"]');
      const s = await ws.nextMessage();
      assert.deepEqual(s, { compressed: false, text: '42["echo","hi"]' });
      // Exactly at the threshold (1 024 bytes of frame payload): compressed.
      const at = `42["echo",${JSON.stringify('x'.repeat(1024 - 13))}]`;
      assert.equal(Buffer.byteLength(at), 1024);
      ws.sendText(at);
      assert.deepEqual(await ws.nextMessage(), { compressed: true, text: at });
      const under = `42["echo",${JSON.stringify('x'.repeat(1023 - 13))}]`;
      ws.sendText(under);
      assert.deepEqual(await ws.nextMessage(), { compressed: false, text: under });
      ws.close();
    });

    it('inflates compressed messages from the client, single and fragmented', async () => {
      const ws = await rawSession(port);
      const big = chatText(30000);
      const packet = `42["echo",${JSON.stringify(big)}]`;
      ws.sendText(packet, { compress: true });
      assert.deepEqual(await ws.nextMessage(), { compressed: true, text: packet });
      // A small message compressed by the client (its own threshold) is fine too.
      ws.sendText('42["echo","tiny"]', { compress: true });
      assert.deepEqual(await ws.nextMessage(), { compressed: false, text: '42["echo","tiny"]' });
      // Fragmented: RSV1 on the first frame only, a ping in between.
      const z = deflate(packet);
      const cut = Math.floor(z.length / 2);
      ws.sendRaw(frame({ fin: false, rsv1: true, opcode: 1, payload: z.subarray(0, cut) }));
      ws.sendRaw(frame({ opcode: 9, payload: 'p' }));
      ws.sendRaw(frame({ fin: true, opcode: 0, payload: z.subarray(cut) }));
      // The pong and the echo, in either order (the echo may be written by the pusher at once).
      const got = [await ws.next(), await ws.next()];
      const pong = got.find((f) => f.opcode === 10);
      const echo = got.find((f) => f.opcode === 1);
      assert.ok(pong && echo, `a pong and a text frame, got opcodes ${got.map((f) => f.opcode)}`);
      assert.equal(echo.rsv1, true);
      assert.equal(inflate(echo.payload).toString(), packet);
      ws.close();
    });

    it('sends plain frames to a client that did not offer it', async () => {
      const ws = await rawSession(port, null);
      assert.equal(ws.headers['sec-websocket-extensions'], undefined);
      ws.sendText(`42["echo",${JSON.stringify(chatText(5000))}]`);
      assert.equal((await ws.nextMessage()).compressed, false);
      ws.close();
    });
  });

  describe('hostile compressed input', () => {
    async function refused(send) {
      const ws = await rawSession(port);
      send(ws);
      const code = await ws.closeCode();
      ws.close();
      // The gateway still serves others.
      const other = await rawSession(port);
      other.sendText('42["echo","still here"]');
      assert.equal((await other.nextMessage()).text, '42["echo","still here"]');
      other.close();
      return code;
    }

    it('a decompression bomb is cut at max_payload_bytes: close 1009', async () => {
      // 10 MB of one byte deflates to about 10 KB: under the limit on the wire, 100× over inflated.
      const bomb = deflate(Buffer.alloc(10_000_000, 0x61));
      assert.ok(bomb.length < 100_000, `${bomb.length} bytes compressed`);
      const code = await refused((ws) => ws.sendRaw(frame({ rsv1: true, opcode: 1, payload: bomb })));
      assert.equal(code, 1009);
    });

    it('just over the limit when inflated: close 1009; at the limit: delivered', async () => {
      // max_payload_bytes is 100 000: a message of exactly that passes, one byte more does not.
      const ws = await rawSession(port);
      const fill = 100_000 - '42["echo",""]'.length;
      const exact = `42["echo","${'y'.repeat(fill)}"]`;
      assert.equal(exact.length, 100_000);
      ws.sendText(exact, { compress: true });
      assert.equal((await ws.nextMessage()).text, exact);
      ws.sendText(`42["echo","${'y'.repeat(fill + 1)}"]`, { compress: true });
      assert.equal(await ws.closeCode(), 1009);
      ws.close();
    });

    it('RSV1 on a control frame: close 1002', async () => {
      const code = await refused((ws) => ws.sendRaw(frame({ rsv1: true, opcode: 9, payload: '' })));
      assert.equal(code, 1002);
    });

    it('RSV1 on a continuation frame: close 1002', async () => {
      const z = deflate('42["echo","fragmented"]');
      const code = await refused((ws) => {
        ws.sendRaw(frame({ fin: false, rsv1: true, opcode: 1, payload: z.subarray(0, 3) }));
        ws.sendRaw(frame({ fin: true, rsv1: true, opcode: 0, payload: z.subarray(3) }));
      });
      assert.equal(code, 1002);
    });

    it('RSV1 without negotiation: close 1002', async () => {
      const ws = await rawSession(port, null);
      ws.sendText('42["echo","x"]', { compress: true });
      assert.equal(await ws.closeCode(), 1002);
      ws.close();
    });

    it('invalid deflate data: close 1007', async () => {
      const code = await refused((ws) => ws.sendRaw(frame({ rsv1: true, opcode: 1, payload: Buffer.from([0xff, 0xff, 0xff]) })));
      assert.equal(code, 1007);
    });

    it('deflate data that inflates to invalid UTF-8 in a text frame: close 1007', async () => {
      const code = await refused((ws) => ws.sendRaw(frame({ rsv1: true, opcode: 1, payload: deflate(Buffer.from([0x34, 0x32, 0xff])) })));
      assert.equal(code, 1007);
    });
  });

  describe('the official client (socket.io-client in Node, over ws)', () => {
    for (const transports of [['websocket'], ['polling', 'websocket']]) {
      it(`round-trips large messages with permessage-deflate (${transports.join(' → ')})`, async () => {
        const socket = io(server.url, { transports, forceNew: true, reconnection: false });
        try {
          await within(new Promise((resolve) => socket.on('connect', resolve)), 'connect');
          if (transports.length > 1) assert.equal(await upgraded(socket), 'websocket');
          // `ws` names the agreed extensions (it checked the parameters, or it would have failed
          // the handshake).
          assert.equal(socket.io.engine.transport.ws.extensions, 'permessage-deflate');
          const big = { text: chatText(20000), n: 1 };
          const back = await within(socket.emitWithAck('echo', big), 'echo ack');
          assert.deepEqual(back, big);
          const small = await within(socket.emitWithAck('echo', 'small'), 'small echo ack');
          assert.equal(small, 'small');
        } finally {
          socket.close();
        }
      });
    }

    it('a client that does not offer it gets no extension', async () => {
      const socket = io(server.url, {
        transports: ['websocket'],
        forceNew: true,
        reconnection: false,
        perMessageDeflate: false,
      });
      try {
        await within(new Promise((resolve) => socket.on('connect', resolve)), 'connect');
        assert.equal(socket.io.engine.transport.ws.extensions, '');
        const big = chatText(5000);
        assert.equal(await within(socket.emitWithAck('echo', big), 'echo ack'), big);
      } finally {
        socket.close();
      }
    });
  });

  describe('polling responses', () => {

    const decoders = { gzip: zlib.gunzipSync, deflate: zlib.inflateSync };
    for (const [accept, want] of [['gzip, deflate, br', 'gzip'], ['deflate', 'deflate'], ['gzip;q=0.5, deflate', 'deflate']]) {
      it(`Accept-Encoding: ${accept} → ${want} above the threshold, plain below`, async () => {
        const { url } = await pollingSession(server.url);
        const packet = `42["echo",${JSON.stringify(chatText(3000))}]`;
        assert.equal(await rawPost(url, packet), 200);
        const big = await rawGet(url, { 'accept-encoding': accept });
        assert.equal(big.status, 200);
        assert.equal(big.headers['content-encoding'], want);
        assert.ok(big.body.length < packet.length / 2, `${big.body.length} bytes on the wire for ${packet.length}`);
        assert.equal(decoders[want](big.body).toString(), packet);

        assert.equal(await rawPost(url, '42["echo","small"]'), 200);
        const small = await rawGet(url, { 'accept-encoding': accept });
        assert.equal(small.headers['content-encoding'], undefined);
        assert.equal(small.body.toString(), '42["echo","small"]');
      });
    }

    it('no Accept-Encoding: plain, whatever the size', async () => {
      const { url } = await pollingSession(server.url);
      const packet = `42["echo",${JSON.stringify(chatText(3000))}]`;
      assert.equal(await rawPost(url, packet), 200);
      const res = await rawGet(url);
      assert.equal(res.headers['content-encoding'], undefined);
      assert.equal(res.body.toString(), packet);
    });
  });
});

describe('per-emit compress(false) from the Node emitter (a one-gateway cluster)', () => {
  let cluster;
  let nc;
  let emitter;
  before(async () => {
    cluster = await startCluster({ config: 'compression.toml', gateways: 1 });
    const { user, pass } = bus.credentials(cluster.nats.url, 'emitter');
    nc = await connect({ servers: cluster.nats.url, user, pass, name: 'e2e-compress-emitter' });
    emitter = new Emitter(nc, { prefix: cluster.prefix, origin: 'e2e' });
  });
  after(async () => {
    if (nc) await nc.drain().catch(() => nc.close());
    if (cluster) await cluster.stop();
  });

  /** Emits `text` to socket `sid` (its node's subject), with `compress(false)` or the default. */
  async function emitTo(sid, text, compress) {
    let op = emitter.to(sid);
    if (!compress) op = op.compress(false);
    await op.emit('news', { text });
    await emitter.flush();
  }

  it('WebSocket: no RSV1 with compress(false), RSV1 without it; the same payload', async () => {
    const gw = cluster.gateways[0];
    const ws = await rawSession(Number(new URL(gw.url).port));
    try {
      const text = chatText(3000);
      const packet = `42["news",${JSON.stringify({ text })}]`;
      await emitTo(ws.sid, text, false);
      assert.deepEqual(await ws.nextMessage(), { compressed: false, text: packet }, 'compress(false)');
      await emitTo(ws.sid, text, true);
      assert.deepEqual(await ws.nextMessage(), { compressed: true, text: packet }, 'the default');
    } finally {
      ws.close();
    }
  });

  it('polling: no Content-Encoding with compress(false), gzip without it; the same payload', async () => {
    const { url, sid } = await pollingSession(cluster.gateways[0].url);
    const text = chatText(3000);
    const packet = `42["news",${JSON.stringify({ text })}]`;
    await emitTo(sid, text, false);
    const off = await rawGet(url, { 'accept-encoding': 'gzip' });
    assert.equal(off.status, 200);
    assert.equal(off.headers['content-encoding'], undefined, 'compress(false)');
    assert.equal(off.body.toString(), packet);
    await emitTo(sid, text, true);
    const on = await rawGet(url, { 'accept-encoding': 'gzip' });
    assert.equal(on.headers['content-encoding'], 'gzip', 'the default');
    assert.equal(zlib.gunzipSync(on.body).toString(), packet);
  });

  it('the official client receives both', async () => {
    const socket = io(cluster.gateways[0].url, { transports: ['websocket'], forceNew: true, reconnection: false });
    try {
      await within(new Promise((resolve) => socket.on('connect', resolve)), 'connect');
      assert.equal(socket.io.engine.transport.ws.extensions, 'permessage-deflate');
      const text = chatText(5000);
      const got = [];
      const both = new Promise((resolve) => {
        socket.on('news', (m) => {
          got.push(m);
          if (got.length === 2) resolve();
        });
      });
      await emitTo(socket.id, text, false);
      await emitTo(socket.id, text, true);
      await within(both, 'two news events');
      assert.deepEqual(got, [{ text }, { text }]);
    } finally {
      socket.close();
    }
  });
});

describe('compression defaults (the built-in configuration, as Node)', () => {
  let server;
  before(async () => {
    server = await startGateway();
  });
  after(() => server && server.stop());

  it('permessage-deflate is off: an offer is declined', async () => {
    const ws = await RawWs.open(Number(new URL(server.url).port), { extensions: 'permessage-deflate; client_max_window_bits' });
    assert.match(ws.status, /^HTTP\/1\.1 101/);
    assert.equal(ws.headers['sec-websocket-extensions'], undefined);
    ws.close();
  });

  it('polling compression is on from 1 024 bytes', async () => {
    const res = await rawGet(`${server.url}/socket.io/?EIO=4&transport=polling`);
    const { sid } = JSON.parse(res.body.toString().slice(1));
    const url = `${server.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`;
    // The built-in /chat: join a room, then a message to it comes back to a second member.
    assert.equal(await rawPost(url, '40/chat,'), 200);
    assert.match((await rawGet(url)).body.toString(), /^40\/chat,\{"sid":/);
    assert.equal(await rawPost(url, '42/chat,1["join","gz"]'), 200);
    assert.match((await rawGet(url)).body.toString(), /^43\/chat,1\[\{"ok":true\}\]/);
    const other = io(`${server.url}/chat`, { transports: ['websocket'], forceNew: true, reconnection: false });
    try {
      await within(new Promise((resolve) => other.on('connect', resolve)), 'connect');
      assert.deepEqual(await within(other.emitWithAck('join', 'gz'), 'join'), { ok: true });
      const text = chatText(2000);
      other.emit('say', { room: 'gz', text });
      const got = await rawGet(url, { 'accept-encoding': 'gzip' });
      assert.equal(got.headers['content-encoding'], 'gzip');
      assert.match(zlib.gunzipSync(got.body).toString(), new RegExp(text.slice(0, 50)));
    } finally {
      other.close();
    }
  });
});
