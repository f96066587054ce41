'use strict';
// Node's reference behaviour for Socket.IO connection state recovery, frame by frame.
//
// Starts socket.io 4.8 servers on 127.0.0.1 (port 0) with `connectionStateRecovery` on, drives
// them with a raw WebSocket client (Engine.IO v4 / Socket.IO v5 text frames, binary frames shown
// as hex) and with the official socket.io-client, and prints a Markdown transcript: one section
// per case, every frame in order, then the facts the case establishes.
//
//   cd tests/e2e && node tools/recovery-frames.js > /tmp/transcript.md
//   (without node_modules here: NODE_PATH=/path/to/tests/e2e/node_modules node tools/…)
//
// The transcript is the second half of docs/recovery-reference.md. Offsets, sids and pids are
// random or time-based, so two runs differ in those values only.
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { once } = require('node:events');
const { Server } = require('socket.io');
const { io: ioClient } = require('socket.io-client');
const WebSocket = require('ws');

const NS = '/chat';
const ROOM = 'room1';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- output -----------------------------------------------------------------------------------

const out = [];
const print = (line = '') => out.push(line);
let block = null; // lines of the current code block
function section(title, what) {
  flush();
  print(`## ${title}`);
  print();
  if (what) {
    print(what);
    print();
  }
  block = [];
}
function line(s) {
  if (!block) block = [];
  block.push(s);
}
function flush() {
  if (block && block.length) {
    print('```');
    for (const l of block) print(l);
    print('```');
    print();
  }
  block = null;
}
function fact(s) {
  flush();
  print(`- ${s}`);
  block = null;
}
function endFacts() {
  print();
}

// ---- server -----------------------------------------------------------------------------------

// A socket.io server with recovery on, a namespace `/chat` whose connection handler joins
// `room1` and sets `socket.data` on a fresh connection, and whose middleware is logged.
async function startServer(recovery, label = 'server') {
  const httpServer = http.createServer();
  const io = new Server(httpServer, { connectionStateRecovery: recovery, serveClient: false });
  const chat = io.of(NS);
  const sockets = new Map(); // sid -> latest Socket object
  let fresh = 0;
  chat.use((socket, next) => {
    line(`[${label}] middleware runs (auth=${JSON.stringify(socket.handshake.auth)})`);
    next();
  });
  chat.on('connection', (socket) => {
    sockets.set(socket.id, socket);
    if (!socket.recovered) {
      fresh += 1;
      socket.join(ROOM);
      socket.data = { user: 'alice', n: fresh };
    }
    line(
      `[${label}] connection sid=${socket.id} recovered=${socket.recovered} ` +
        `rooms=${JSON.stringify([...socket.rooms])} data=${JSON.stringify(socket.data)}`,
    );
    socket.on('disconnect', (reason) => line(`[${label}] disconnect sid=${socket.id} reason=${JSON.stringify(reason)}`));
    socket.on('ping-me', (...args) => {
      const ack = typeof args[args.length - 1] === 'function' ? args.pop() : null;
      line(`[${label}] got ping-me ${JSON.stringify(args)}`);
      if (ack) ack('pong', 42);
    });
  });
  httpServer.listen(0, '127.0.0.1');
  await once(httpServer, 'listening');
  const port = httpServer.address().port;
  const close = async () => {
    io.close();
    await sleep(20);
  };
  return { io, chat, port, sockets, close };
}

// ---- raw client -------------------------------------------------------------------------------

function show(data, isBinary) {
  if (isBinary) return `<binary ${data.length} bytes: ${Buffer.from(data).toString('hex')}>`;
  return data.toString();
}

// One Engine.IO v4 WebSocket connection; logs every frame; answers pings.
async function rawClient(port, name) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket`);
  const frames = [];
  const waiters = [];
  ws.on('message', (data, isBinary) => {
    const text = show(data, isBinary);
    line(`${name} <- ${text}`);
    if (!isBinary && text === '2') {
      ws.send('3');
      line(`${name} -> 3`);
    }
    frames.push(text);
    for (const w of [...waiters]) {
      if (w.pred(text)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(text);
      }
    }
  });
  const closed = once(ws, 'close');
  await once(ws, 'open');
  const c = {
    ws,
    frames,
    closed,
    send(text) {
      line(`${name} -> ${show(text, typeof text !== 'string')}`);
      ws.send(text);
    },
    // The first frame from index `from` on that matches `pred`, now or when it arrives.
    wait(pred, ms = 2000, from = 0) {
      const found = frames.slice(from).find(pred);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const w = { pred, resolve };
        waiters.push(w);
        setTimeout(() => {
          const i = waiters.indexOf(w);
          if (i >= 0) {
            waiters.splice(i, 1);
            reject(new Error(`${name}: timeout waiting`));
          }
        }, ms);
      });
    },
    // Drops the TCP connection without a close frame: the server sees "transport close".
    kill() {
      line(`${name} xx TCP connection destroyed (ws.terminate())`);
      ws.terminate();
      return closed;
    },
  };
  await c.wait((f) => f.startsWith('0{'));
  return c;
}

// CONNECT to /chat; returns { sid, pid, frame }.
async function connectChat(c, auth = {}) {
  const from = c.frames.length;
  c.send(`40${NS},${JSON.stringify(auth)}`);
  const frame = await c.wait((f) => f.startsWith(`40${NS},`) || f.startsWith(`44${NS},`), 2000, from);
  if (frame.startsWith('44')) return { frame };
  const data = JSON.parse(frame.slice(`40${NS},`.length));
  return { ...data, frame };
}

// The offset the client would keep: the last argument of the last EVENT it got (as
// socket.io-client's `emitEvent` does), text frames only.
function lastOffset(c) {
  for (let i = c.frames.length - 1; i >= 0; i--) {
    const f = c.frames[i];
    const m = /^4(?:2|5\d+-)\/chat,\d*(\[.*\])$/.exec(f);
    if (m) {
      const args = JSON.parse(m[1]);
      const last = args[args.length - 1];
      if (typeof last === 'string') return last;
    }
  }
  return undefined;
}

async function settle(ms = 100) {
  await sleep(ms);
}

// ---- cases ------------------------------------------------------------------------------------

async function caseConnect(s) {
  section('(a) CONNECT and its reply', 'A raw client opens a WebSocket and connects to `/chat` with an empty auth.');
  const c = await rawClient(s.port, 'A');
  const r = await connectChat(c, {});
  await settle();
  const keys = Object.keys(JSON.parse(r.frame.slice(`40${NS},`.length)));
  fact(`reply keys: \`${JSON.stringify(keys)}\`; pid present: **${typeof r.pid === 'string'}** (${r.pid && r.pid.length} characters), sid ${r.sid.length} characters`);
  endFacts();
  return { c, r };
}

async function caseEvents(s, c, r) {
  section(
    '(b) Server emits to the room, the socket, the namespace; volatile',
    'In order: `chat.to("room1").emit("news", 1, "two")`, `socket.emit("direct", {x: 1})`, ' +
      '`chat.emit("all", true)`, `chat.volatile.emit("vol", 1)` (50 ms later: Node drops a volatile packet while the transport is not writable), `chat.to(sid).emit("to-sid", "s")`, ' +
      '`chat.except("room1").emit("not-for-you")` (not delivered), ' +
      '`socket.emit("last-string")` (no arguments: only the offset).',
  );
  const sock = s.sockets.get(r.sid);
  s.chat.to(ROOM).emit('news', 1, 'two');
  sock.emit('direct', { x: 1 });
  s.chat.emit('all', true);
  await c.wait((f) => f.includes('"all"'));
  await settle(50); // a volatile packet is dropped while the WebSocket is still writing
  s.chat.volatile.emit('vol', 1);
  await c.wait((f) => f.includes('"vol"'));
  s.chat.to(r.sid).emit('to-sid', 's');
  s.chat.except(ROOM).emit('not-for-you');
  sock.emit('last-string');
  await c.wait((f) => f.includes('"last-string"'));
  await settle();
  const vol = c.frames.find((f) => f.includes('"vol"'));
  fact(`every stored EVENT ends with one extra string argument, the offset; the volatile one (\`${vol}\`) has none`);
  fact('offsets are yeast ids (`socket.io-adapter/dist/contrib/yeast.js`): base-64 milliseconds, `.N` appended within one millisecond');
  endFacts();
}

async function caseAcks(s, c, r) {
  section(
    '(c) Acks',
    'Server → client with an ack: `socket.emit("ask", "q", cb)`; the client answers. Client → server with an ack: ' +
      '`ping-me`, which the server acks with `("pong", 42)`. Then a broadcast with an ack: ' +
      '`chat.to("room1").timeout(500).emit("poll", "p", cb)`.',
  );
  const sock = s.sockets.get(r.sid);
  const got = new Promise((resolve) => sock.emit('ask', 'q', (...a) => resolve(a)));
  const ask = await c.wait((f) => f.includes('"ask"'));
  const id = /^42\/chat,(\d+)/.exec(ask)[1];
  c.send(`43${NS},${id}["answer"]`);
  line(`[server] ack callback got ${JSON.stringify(await got)}`);
  c.send(`42${NS},7["ping-me","hello"]`);
  await c.wait((f) => f.startsWith(`43${NS},7`));
  const pollDone = new Promise((resolve) =>
    s.chat.to(ROOM).timeout(500).emit('poll', 'p', (err, res) => resolve({ err: err && err.message, res })),
  );
  const poll = await c.wait((f) => f.includes('"poll"'));
  const pid = /^42\/chat,(\d+)/.exec(poll)[1];
  c.send(`43${NS},${pid}["vote"]`);
  line(`[server] broadcast ack callback got ${JSON.stringify(await pollDone)}`);
  await settle();
  fact('an emit that requests an ack carries an ack id and **no offset**, and is not stored (packets with an id are skipped by `SessionAwareAdapter.broadcast`)');
  fact('ACK packets (both directions) carry no offset');
  endFacts();
}

async function caseBinary(s, c, r) {
  section(
    '(d) Binary events',
    '`chat.to("room1").emit("bin", Buffer.from([1, 2, 3]), "tail")`, then `socket.emit("bin2", {b: Buffer.from([255])})`.',
  );
  const sock = s.sockets.get(r.sid);
  s.chat.to(ROOM).emit('bin', Buffer.from([1, 2, 3]), 'tail');
  sock.emit('bin2', { b: Buffer.from([255]) });
  await c.wait((f) => f.startsWith('<binary 1 bytes'));
  await settle();
  fact('binary events are stored and get the offset too: it is the last element of the BINARY_EVENT\'s JSON array, after the placeholders; the attachments follow as binary frames');
  endFacts();
}

async function caseRecover(s) {
  section(
    '(e) Transport closed, 3 emits to the room meanwhile, recovery',
    'Client B connects, gets one event (so it has an offset), and its TCP connection is destroyed ' +
      '(the server sees `transport close`). While it is away the server emits `m1`, `m2`, `m3` to `room1`, ' +
      '`to-old-sid` to its sid, one volatile `vol-missed` to the room, and one ack-requesting `ask-missed` to the room. ' +
      'A new WebSocket then sends CONNECT with `{"pid", "offset"}`. The recovered socket\'s `connection` handler emits ' +
      '`welcome-back` to it; 5 ms after the CONNECT is sent the server emits `live` to the room.',
  );
  s.chat.on('connection', (socket) => {
    if (socket.recovered) socket.emit('welcome-back');
  });
  const b = await rawClient(s.port, 'B');
  const r = await connectChat(b, {});
  s.chat.to(ROOM).emit('before', 0);
  await b.wait((f) => f.includes('"before"'));
  const offset = lastOffset(b);
  line(`(B's offset: ${JSON.stringify(offset)}, pid: ${JSON.stringify(r.pid)})`);
  await b.kill();
  await settle(50);
  s.chat.to(ROOM).emit('m1', 1);
  s.chat.to(ROOM).emit('m2', 2);
  s.chat.to(r.sid).emit('to-old-sid', 'x');
  s.chat.to(ROOM).emit('m3', 3);
  s.chat.volatile.to(ROOM).emit('vol-missed');
  s.chat.to(ROOM).timeout(100).emit('ask-missed', () => {});
  line('[server] emitted m1, m2, to-old-sid, m3, vol-missed (volatile), ask-missed (with ack) while B was away');
  const b2 = await rawClient(s.port, "B'");
  const p = connectChat(b2, { pid: r.pid, offset });
  setTimeout(() => s.chat.to(ROOM).emit('live', 'new'), 5);
  const r2 = await p;
  await b2.wait((f) => f.includes('"live"'));
  await b2.wait((f) => f.includes('"welcome-back"'));
  await settle();
  const order = b2.frames
    .filter((f) => f.startsWith('4'))
    .map((f) => (f.startsWith('40') ? 'CONNECT' : (/\["([^"]+)"/.exec(f) || [])[1]));
  fact(`same sid: **${r2.sid === r.sid}**, same pid: **${r2.pid === r.pid}**; the reply is \`${r2.frame}\`: no \`recovered\` flag on the wire (socket.io-client sets \`recovered\` when the reply's pid equals the pid it sent)`);
  fact(`order of Socket.IO packets on the new connection: ${order.join(' → ')}`);
  fact('the missed packets are written **before** the CONNECT reply (they are sent from the `Socket` constructor); the client buffers them until it is connected (`receiveBuffer`)');
  fact('missed volatile and ack-requesting emits are not replayed; the emit to the old sid is (it is an emit to the room named by the sid)');
  endFacts();
  return { b2, r2 };
}

async function caseFailures(s) {
  section('(f1) Unknown pid', 'CONNECT with `{"pid":"nope","offset":"x"}`.');
  const c1 = await rawClient(s.port, 'C');
  const r1 = await connectChat(c1, { pid: 'nope', offset: 'x' });
  await settle();
  fact(`a normal fresh connect: new sid, new pid (\`${r1.frame}\`); middleware ran`);
  endFacts();

  section(
    '(f2) Offset not in the buffer, then the right offset',
    'D connects, gets one event, its transport dies; `m` is emitted; CONNECT with its pid and the offset `"bogus"`; then, on another connection, with its real offset.',
  );
  const d = await rawClient(s.port, 'D');
  const rd = await connectChat(d, {});
  s.sockets.get(rd.sid).emit('one');
  await d.wait((f) => f.includes('"one"'));
  const off = lastOffset(d);
  await d.kill();
  await settle(50);
  s.chat.to(ROOM).emit('m');
  const d2 = await rawClient(s.port, "D'");
  const rd2 = await connectChat(d2, { pid: rd.pid, offset: 'bogus' });
  await settle();
  const d3 = await rawClient(s.port, "D''");
  const rd3 = await connectChat(d3, { pid: rd.pid, offset: off });
  await settle();
  fact(`bogus offset: fresh connect (same sid: ${rd2.sid === rd.sid})`);
  fact(`the session survives a failed attempt: the real offset afterwards recovers it (same sid: **${rd3.sid === rd.sid}**) — \`restoreSession\` returns \`null\` for an unknown offset without deleting the session`);
  fact(`so ${rd2.sid} (fresh, from the bogus attempt) and ${rd3.sid} (recovered) are both connected now`);
  endFacts();

  section(
    '(f3) pid without offset',
    'A client that got no event before it lost its transport has no offset; socket.io-client then sends `{"pid":…}` (`offset: undefined` is dropped by JSON).',
  );
  const e = await rawClient(s.port, 'E');
  const re = await connectChat(e, {});
  await e.kill();
  await settle(50);
  const e2 = await rawClient(s.port, "E'");
  const re2 = await connectChat(e2, { pid: re.pid });
  await settle();
  fact(`fresh connect (same sid: ${re2.sid === re.sid}): \`_createSocket\` tries recovery only when both \`pid\` and \`offset\` are strings`);
  endFacts();

  section(
    '(f4) The same session recovered twice',
    'F connects, gets an event, its transport dies; two new connections send the same `{pid, offset}` one after the other.',
  );
  const f = await rawClient(s.port, 'F');
  const rf = await connectChat(f, {});
  s.sockets.get(rf.sid).emit('one');
  await f.wait((x) => x.includes('"one"'));
  const offF = lastOffset(f);
  await f.kill();
  await settle(50);
  const f2 = await rawClient(s.port, "F'");
  const rf2 = await connectChat(f2, { pid: rf.pid, offset: offF });
  const f3 = await rawClient(s.port, "F''");
  const rf3 = await connectChat(f3, { pid: rf.pid, offset: offF });
  await settle();
  fact(`first: same sid ${rf2.sid === rf.sid}; second: same sid ${rf3.sid === rf.sid} — a session is not consumed by a recovery, only replaced when the socket disconnects again or dropped at expiry; Node lets two live sockets share one id`);
  fact('the second recovery replays what was sent to the first recovered socket since the offset (its `welcome-back`): packets to a live socket are in the same buffer');
  endFacts();

  section('(f5) Namespace DISCONNECT by the client', 'G connects, gets an event, sends `41/chat,`, then reconnects with its pid and offset.');
  const g = await rawClient(s.port, 'G');
  const rg = await connectChat(g, {});
  s.sockets.get(rg.sid).emit('one');
  await g.wait((x) => x.includes('"one"'));
  const offG = lastOffset(g);
  g.send(`41${NS},`);
  await settle(50);
  const rg2 = await connectChat(g, { pid: rg.pid, offset: offG });
  await settle();
  fact(`not recoverable (same sid: ${rg2.sid === rg.sid}): reason \`client namespace disconnect\` is not in \`RECOVERABLE_DISCONNECT_REASONS\`, so \`_onclose\` does not call \`persistSession\``);
  endFacts();

  section('(f6) Server-side `socket.disconnect()` and `socket.disconnect(true)`', 'H and I connect and get an event; the server calls `disconnect()` on H and `disconnect(true)` on I; each reconnects with its pid and offset.');
  const h = await rawClient(s.port, 'H');
  const rh = await connectChat(h, {});
  s.sockets.get(rh.sid).emit('one');
  await h.wait((x) => x.includes('"one"'));
  const offH = lastOffset(h);
  s.sockets.get(rh.sid).disconnect();
  await settle(50);
  const rh2 = await connectChat(h, { pid: rh.pid, offset: offH });
  const i = await rawClient(s.port, 'I');
  const ri = await connectChat(i, {});
  s.sockets.get(ri.sid).emit('one');
  await i.wait((x) => x.includes('"one"'));
  const offI = lastOffset(i);
  s.sockets.get(ri.sid).disconnect(true);
  await i.closed;
  const i2 = await rawClient(s.port, "I'");
  const ri2 = await connectChat(i2, { pid: ri.pid, offset: offI });
  await settle();
  fact(`disconnect(): not recoverable (same sid: ${rh2.sid === rh.sid}); disconnect(true): not recoverable (same sid: ${ri2.sid === ri.sid}); both close with \`server namespace disconnect\``);
  endFacts();
  for (const x of [c1, d2, d3, e2, f2, f3, g, h, i2]) x.ws.close();
  await settle();
  block = null; // the server's disconnect lines for these closes are not part of any case
}

async function caseWindow() {
  section(
    '(f7) The window passed',
    'A server with `maxDisconnectionDuration: 300`: J connects, gets an event, its transport dies, then after 500 ms reconnects with its pid and offset.',
  );
  const s = await startServer({ maxDisconnectionDuration: 300, skipMiddlewares: true }, 'server300');
  const j = await rawClient(s.port, 'J');
  const rj = await connectChat(j, {});
  s.sockets.get(rj.sid).emit('one');
  await j.wait((x) => x.includes('"one"'));
  const off = lastOffset(j);
  await j.kill();
  await sleep(500);
  const j2 = await rawClient(s.port, "J'");
  const rj2 = await connectChat(j2, { pid: rj.pid, offset: off });
  await settle();
  j2.ws.close();
  await s.close();
  flush();
  fact(`fresh connect (same sid: ${rj2.sid === rj.sid}): \`restoreSession\` checks \`disconnectedAt + maxDisconnectionDuration < Date.now()\` on each attempt (the 60 s sweep only frees memory)`);
  endFacts();
}

async function caseShutdown() {
  section(
    '(f8) Server shutting down',
    '`io.close()` on a server, then a new server with the same adapter is not possible in Node (the sessions live in the closed process\'s memory); shown here only: the reason is `server shutting down`, which *is* in `RECOVERABLE_DISCONNECT_REASONS`, so the session is persisted — in the memory of the process that is going away.',
  );
  const s = await startServer({ maxDisconnectionDuration: 60000, skipMiddlewares: true }, 'server-closing');
  const k = await rawClient(s.port, 'K');
  await connectChat(k, {});
  const adapter = s.chat.adapter;
  await s.close();
  await settle(50);
  line(`[server-closing] sessions kept by SessionAwareAdapter after io.close(): ${adapter.sessions.size}`);
  flush();
  fact('a drain (`server shutting down`) and a crash both lose the sessions in Node: the in-memory adapter keeps them in the dying process');
  endFacts();
}

async function caseOfficialClient(s, poison) {
  const title = poison
    ? '(h2) Official client: a volatile event whose last argument is a string'
    : '(h) Official socket.io-client: transport killed, reconnection, recovery';
  section(
    title,
    poison
      ? 'As (h), but before the kill the server sends `socket.volatile.emit("vol", "a string")` (not stored, so no offset appended). socket.io-client\'s `emitEvent` takes the last string argument of *any* event without an ack as the offset.'
      : 'socket.io-client 4.8 over WebSocket (`reconnectionDelay: 50`). It gets `hello`; `socket.io.engine.close()` kills the transport; while it is away the server emits `m1`, `m2`, `m3` to the room; it reconnects by itself. Frames are the Socket.IO packets the Manager encodes and decodes (the Engine.IO `4` prefix is added for reading).',
  );
  const label = poison ? 'client2' : 'client';
  const socket = ioClient(`http://127.0.0.1:${s.port}${NS}`, {
    transports: ['websocket'],
    reconnectionDelay: 50,
    reconnectionDelayMax: 50,
    auth: { token: 't' },
  });
  const mgr = socket.io;
  const encode = mgr.encoder.encode.bind(mgr.encoder);
  mgr.encoder.encode = (packet) => {
    const enc = encode(packet);
    for (const e of enc) line(`${label} -> ${typeof e === 'string' ? '4' + e : show(e, true)}`);
    return enc;
  };
  const ondata = mgr.ondata;
  mgr.ondata = function (data) {
    line(`${label} <- ${typeof data === 'string' ? '4' + data : show(data, true)}`);
    return ondata.call(this, data);
  };
  const received = [];
  socket.onAny((ev, ...args) => received.push([ev, ...args]));
  socket.on('ask', (...args) => {
    const ack = args.pop();
    ack('ok');
  });
  await once(socket, 'connect');
  const id1 = socket.id;
  line(`[${label}] connect: id=${id1} recovered=${socket.recovered} _pid=${socket._pid}`);
  s.sockets.get(id1).emit('hello', 'h');
  await sleep(50);
  if (poison) {
    s.sockets.get(id1).volatile.emit('vol', 'a string');
    await sleep(50);
  }
  line(`[${label}] _lastOffset=${JSON.stringify(socket._lastOffset)}`);
  socket.once('disconnect', (reason) => line(`[${label}] disconnect reason=${JSON.stringify(reason)}`));
  mgr.engine.close();
  await sleep(10);
  s.chat.to(ROOM).emit('m1', 1);
  s.chat.to(ROOM).emit('m2', 2);
  s.chat.to(ROOM).emit('m3', 3);
  line('[server] emitted m1, m2, m3 to room1');
  await once(socket, 'connect');
  await sleep(100);
  line(`[${label}] connect: id=${socket.id} recovered=${socket.recovered} (id before: ${id1})`);
  line(`[${label}] events seen by onAny, in order: ${JSON.stringify(received)}`);
  const recovered = socket.recovered;
  const sameId = socket.id === id1;
  socket.disconnect();
  await sleep(50);
  flush();
  if (poison) {
    fact(`recovered: **${recovered}**, same id: ${sameId}: the volatile event's last string argument became the client's offset, which the server does not know, so the session was lost although it was in the window`);
    fact('an event with an ack is not affected: its last argument is the ack function, not a string');
  } else {
    fact(`recovered: **${recovered}**, same id: **${sameId}**`);
    fact('the reconnecting CONNECT carries `pid` and `offset` **merged into the auth object** (`Object.assign({pid, offset}, auth)`); the application\'s auth is sent too');
    fact('the offset reaches the application as an extra last argument of every stored event (socket.io-client does not strip it)');
    fact('middleware did not run on the recovered connection (`skipMiddlewares: true`)');
  }
  endFacts();
}

async function main() {
  const s = await startServer({ maxDisconnectionDuration: 2 * 60 * 1000, skipMiddlewares: true });
  const pkg = (n) => {
    // Some packages do not export their package.json: walk up from the resolved entry point.
    let dir = path.dirname(require.resolve(n));
    for (;;) {
      const file = path.join(dir, 'package.json');
      if (fs.existsSync(file)) {
        const json = JSON.parse(fs.readFileSync(file, 'utf8'));
        if (json.name === n) return json.version;
      }
      dir = path.dirname(dir);
    }
  };
  print('<!-- generated by tests/e2e/tools/recovery-frames.js -->');
  print();
  print(
    `socket.io ${pkg('socket.io')}, socket.io-adapter ${pkg('socket.io-adapter')}, engine.io ${pkg('engine.io')}, ` +
      `socket.io-parser ${pkg('socket.io-parser')}, socket.io-client ${pkg('socket.io-client')}, ws ${pkg('ws')}, Node ${process.version}. ` +
      'Server: `connectionStateRecovery: { maxDisconnectionDuration: 120000, skipMiddlewares: true }`, ' +
      'namespace `/chat` whose middleware logs and whose `connection` handler, on a fresh socket, joins `room1` and sets ' +
      '`socket.data = {user: "alice", n}`. `->` is a frame the client sends, `<-` one it receives.',
  );
  print();
  const { c, r } = await caseConnect(s);
  await caseEvents(s, c, r);
  await caseAcks(s, c, r);
  await caseBinary(s, c, r);
  c.ws.close();
  await settle();
  block = null;
  const { b2 } = await caseRecover(s);
  section(
    '(g) `socket.data` and rooms on recovery',
    'From (e): the `connection` handler ran again for the recovered socket (the log line `recovered=true`), with the rooms and data of the session.',
  );
  fact('`socket.rooms` is restored from the session (the sid room included) in the `Socket` constructor, before the `connection` handler runs; `socket.data` is the object persisted at disconnect');
  fact('the `connection` event fires again for the recovered socket (applications test `socket.recovered`)');
  fact('middlewares are skipped only with `skipMiddlewares: true` **and** a successful recovery; `socket.handshake` is rebuilt from the new request');
  endFacts();
  b2.ws.close();
  await settle();
  block = null;
  await caseFailures(s);
  await caseWindow();
  await caseShutdown();
  await caseOfficialClient(s, false);
  await caseOfficialClient(s, true);
  flush();
  await s.close();
  process.stdout.write(out.join('\n') + '\n');
  process.exit(0);
}

main().catch((e) => {
  flush();
  process.stdout.write(out.join('\n') + '\n');
  console.error(e);
  process.exit(1);
});
