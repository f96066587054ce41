'use strict';
// Socket.IO clients of the cluster tests (test/cluster.test.js, test/grpc.test.js): each a
// `Member` that records what it receives and which rooms it joined — the truth the broker's view
// is compared with (`converged`). Clients use fixtures/cluster.toml's /chat and its JWT secret.

const assert = require('node:assert/strict');
const { io } = require('socket.io-client');
const { waitFor, brokerTruth } = require('./cluster');
const { hs256, now, within } = require('./client');

const CONFIG = 'cluster.toml';
const SECRET = 'e2e-secret-0123456789abcdef0123456789abcdef';
const ENV = { SWITCHBOARD_JWT_SECRET: SECRET };
const NS = '/chat';
// The disconnect reason of a socket whose gateway shuts down (gateway/src/engine.rs CloseReason::Shutdown).
const SIGTERM_REASON = 'server shutting down';
const OK = { ok: true };
/** Generous upper bounds for convergence (the lease is 1.2 s); no test asserts a timing. */
const CONVERGE_MS = 8000;

/** A token for `sub`, valid for /chat of cluster.toml. */
function token(sub) {
  return hs256({ sub, iss: 'switchboard-e2e', aud: 'switchboard', iat: now(), exp: now() + 600 }, SECRET);
}

/**
 * Socket.IO clients of one suite: each one a `Member` that records what it receives and which
 * rooms it joined (the truth the broker's view is compared with).
 */
class Members {
  constructor() {
    this.all = [];
  }

  /** Connects to `gw` (a harness gateway) on namespace `ns`; `user` adds a token for that sub. */
  async connect(gw, { ns = NS, user, transports = ['websocket'] } = {}) {
    const socket = io(`${gw.url}${ns}`, {
      transports,
      forceNew: true,
      reconnection: false,
      timeout: 5000,
      ...(user ? { auth: { token: token(user) } } : {}),
    });
    const m = new Member(socket, gw, ns);
    this.all.push(m);
    await within(
      new Promise((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('connect_error', reject);
      }),
      `connection to ${gw.nodeId || gw.url}${ns}`,
    );
    m.id = socket.id;
    return m;
  }

  /** The clients' view in brokerTruth's form, for sockets still connected (optionally of `ns`). */
  truth({ ns } = {}) {
    const live = this.all.filter((m) => !m.gone && m.id && (ns === undefined || m.ns === ns));
    live.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return Object.fromEntries(live.map((m) => [m.id, [...m.rooms].sort()]));
  }

  closeAll() {
    for (const m of this.all) m.socket.disconnect();
    this.all = [];
  }
}

class Member {
  constructor(socket, gw, ns) {
    this.socket = socket;
    this.gw = gw;
    this.ns = ns;
    this.id = null;
    this.rooms = new Set();
    this.gone = false;
    this.events = [];
    this.waiters = [];
    socket.onAny((event, ...args) => {
      this.events.push({ event, args });
      this.waiters = this.waiters.filter((w) => {
        if (!w.check()) return true;
        w.resolve();
        return false;
      });
    });
    socket.on('disconnect', () => {
      this.gone = true;
    });
  }

  /** Arguments lists of every `event` received, optionally filtered. */
  of(event, match = () => true) {
    return this.events.filter((e) => e.event === event && match(e.args)).map((e) => e.args);
  }

  /** Resolves once `count` events `event` matching `match` have been received. */
  until(event, match = () => true, count = 1, ms = CONVERGE_MS) {
    const check = () => this.of(event, match).length >= count;
    if (check()) return Promise.resolve();
    return within(
      new Promise((resolve) => this.waiters.push({ check, resolve })),
      `${count} × "${event}" on ${this.id} (${this.gw.nodeId}); got ${this.of(event, match).length}: ` +
        JSON.stringify(this.of(event).slice(-5)),
      ms,
    );
  }

  ack(event, ...args) {
    return within(this.socket.timeout(5000).emitWithAck(event, ...args), `ack of ${event} from ${this.id}`, 6000);
  }

  async join(room, event = 'join') {
    const res = await this.ack(event, room);
    if (res && res.ok) this.rooms.add(room);
    return res;
  }

  async leave(room) {
    const res = await this.ack('leave', room);
    if (res && res.ok) this.rooms.delete(room);
    return res;
  }
}

/** Waits until `fetchState()`'s socket map equals `members.truth()`; resolves to the state. */
async function converged(fetchState, members, { ns = NS, what = 'the broker state to equal the truth', timeoutMs = CONVERGE_MS } = {}) {
  let state = null;
  try {
    await waitFor(
      async () => {
        state = await fetchState();
        const got = brokerTruth(state, { ns });
        const want = members.truth({ ns });
        return JSON.stringify(got) === JSON.stringify(want);
      },
      { timeoutMs, what },
    );
  } catch (err) {
    err.message += `\n  want: ${JSON.stringify(members.truth({ ns }))}\n  got:  ${state ? JSON.stringify(brokerTruth(state, { ns })) : '(no state)'}`;
    throw err;
  }
  assert.deepStrictEqual(brokerTruth(state, { ns }), members.truth({ ns }));
  return state;
}

module.exports = { Members, Member, converged, token, CONFIG, SECRET, ENV, NS, OK, CONVERGE_MS, SIGTERM_REASON };
