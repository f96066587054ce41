'use strict';
// Helpers around the official socket.io-client: the three ways of connecting under test,
// promises for connection and events, a recorder of everything a socket receives, and HS256
// tokens made with node's crypto.

const crypto = require('node:crypto');
const { io, Manager } = require('socket.io-client');

const WAIT_MS = 5000;

/** The transport setups every client test runs under. */
const TRANSPORTS = {
  polling: { transports: ['polling'] },
  websocket: { transports: ['websocket'] },
  upgrade: { transports: ['polling', 'websocket'], upgrade: true },
};

/** Rejects after `ms` with `what` in the message, unless `promise` settles first. */
function within(promise, what, ms = WAIT_MS) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]);
}

/** Resolves to the arguments of the next `event` on `emitter`. */
function once(emitter, event, ms = WAIT_MS) {
  return within(new Promise((resolve) => emitter.once(event, (...args) => resolve(args))), `"${event}"`, ms);
}

/** Resolves when `socket` is connected; rejects with the connect_error. */
function connected(socket, ms = WAIT_MS) {
  if (socket.connected) return Promise.resolve(socket);
  return within(
    new Promise((resolve, reject) => {
      const onConnect = () => {
        socket.off('connect_error', onError);
        resolve(socket);
      };
      const onError = (err) => {
        socket.off('connect', onConnect);
        reject(err);
      };
      socket.once('connect', onConnect);
      socket.once('connect_error', onError);
    }),
    `connection of ${socket.nsp}`,
    ms,
  );
}

/** Resolves to the Error of the connect_error that `socket` gets; rejects if it connects. */
function connectError(socket, ms = WAIT_MS) {
  return within(
    new Promise((resolve, reject) => {
      socket.once('connect', () => reject(new Error(`${socket.nsp} connected; a connect_error was expected`)));
      socket.once('connect_error', resolve);
    }),
    `connect_error on ${socket.nsp}`,
    ms,
  );
}

/**
 * Clients for one transport setup; each keeps the sockets it made and closes them in `closeAll`.
 */
class Clients {
  constructor(url, transport) {
    this.url = url;
    this.transport = transport;
    this.sockets = [];
  }

  options(extra = {}) {
    return { ...TRANSPORTS[this.transport], forceNew: true, reconnection: false, timeout: WAIT_MS, ...extra };
  }

  /** A new connection (its own Manager) to namespace `nsp`, not awaited. */
  socket(nsp, extra) {
    const s = io(`${this.url}${nsp}`, this.options(extra));
    this.sockets.push(s);
    return s;
  }

  /** A new connection to `nsp`, awaited (and upgraded, for the upgrade setup). */
  async connect(nsp, extra) {
    const s = this.socket(nsp, extra);
    await connected(s);
    if (this.transport === 'upgrade') await upgraded(s);
    return s;
  }

  /** A Manager (one Engine.IO connection) for multiplexing namespaces. */
  manager(extra) {
    const m = new Manager(this.url, this.options(extra));
    this.sockets.push({ disconnect: () => m.engine && m.engine.close() });
    return m;
  }

  closeAll() {
    for (const s of this.sockets) s.disconnect();
    this.sockets = [];
  }
}

/** Resolves once the socket's Engine.IO connection runs over WebSocket. */
async function upgraded(socket) {
  const engine = socket.io.engine;
  if (engine.transport.name !== 'websocket') await once(engine, 'upgrade');
  return engine.transport.name;
}

/** Records every event a socket receives, to look at later without racing. */
class Recorder {
  constructor(socket) {
    this.events = [];
    this.waiters = [];
    socket.onAny((event, ...args) => {
      this.events.push({ event, args });
      this.waiters = this.waiters.filter((w) => {
        if (w.event !== event || !w.match(args)) return true;
        w.resolve(args);
        return false;
      });
    });
  }

  /** All arguments lists received for `event`. */
  of(event) {
    return this.events.filter((e) => e.event === event).map((e) => e.args);
  }

  /** Resolves to the args of the first `event` (received already or later) that `match`es. */
  wait(event, match = () => true, ms = WAIT_MS) {
    const seen = this.events.find((e) => e.event === event && match(e.args));
    if (seen) return Promise.resolve(seen.args);
    return within(new Promise((resolve) => this.waiters.push({ event, match, resolve })), `"${event}"`, ms);
  }
}

function base64url(data) {
  return Buffer.from(data).toString('base64url');
}

/** An HS256 JSON Web Token of `claims` signed with `secret`. */
function hs256(claims, secret) {
  const head = base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = base64url(JSON.stringify(claims));
  const sig = crypto.createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

/** Seconds since the epoch. */
function now() {
  return Math.floor(Date.now() / 1000);
}

/** Decoded arguments with binary as byte arrays, whatever the transport gave. */
function normalize(value) {
  if (Buffer.isBuffer(value)) return { buffer: [...value] };
  if (value instanceof ArrayBuffer) return { buffer: [...new Uint8Array(value)] };
  if (ArrayBuffer.isView(value)) return { buffer: [...new Uint8Array(value.buffer, value.byteOffset, value.byteLength)] };
  if (Array.isArray(value)) return value.map(normalize);
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalize(v)]));
  return value;
}

module.exports = { normalize, TRANSPORTS, WAIT_MS, within, once, connected, connectError, upgraded, Clients, Recorder, hs256, now };
