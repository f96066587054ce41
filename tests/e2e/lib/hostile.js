'use strict';
// The hostile-client suites (test/hostile-*.test.js, issue 12 point 9): what every attack asserts
// and reports, and the attacks themselves, written once and run against a standalone gateway and
// against one gateway of a three-gateway cluster.
//
// `attack(t, target, spec, run)` runs one attack and asserts the four things of point 9:
//   (a) the refusal: `run` asserts it, and calls `mark(saw)` at the first refusal it sees;
//   (b) memory: the attacked gateway's RSS (VmRSS of /proc/<pid>/status) is read before, its peak
//       during (VmHWM, reset through /proc/<pid>/clear_refs; sampled if that is not allowed) and
//       after; peak − baseline must stay within `spec.boundMb`;
//   (c) afterwards, relays between the target's sentinel clients still arrive (on different
//       gateways in a cluster) and the NATS links stayed up (`target.check`);
//   (d) the broker's state equals what the clients see (`target.check`).
// All four are evaluated and reported together. Each attack also reports its measured outcome —
// RSS delta, time to the refusal, what the client saw — as a test diagnostic, for the closing
// note of the issue. Nothing here asserts a timing: the waits have generous caps only so that a
// gateway that never refuses fails instead of hanging.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const http = require('node:http');
const net = require('node:net');
const WebSocket = require('ws');
const { request, Polling, Ws, wsUrl, wsHandshake } = require('./raw');
const { hs256, now, within, connectError } = require('./client');
const { SECRET } = require('./members');
const { waitFor, brokerTruth } = require('./cluster');
const { REPO } = require('./server');

const PATH = '/socket.io/';
/** fixtures/hostile.toml: `max_payload_bytes`, `/chat`'s rate limit, `max_connections_per_ip`. */
const MAX_PAYLOAD = 1_000_000;
const RATE = { perSecond: 20, burst: 40, maxViolations: 20 };
const PER_IP = 256;
/** The defaults of `[limits]` the attacks count on (the suites run with the defaults). */
const LIMITS = { maxNamespaces: 16 };
const ISSUER = 'switchboard-e2e';
const AUDIENCE = 'switchboard';
const MB = 1024 * 1024;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- memory of a process ---------------------------------------------------------------------

/** A field of /proc/<pid>/status in bytes (`VmRSS`, `VmHWM`). */
function procBytes(pid, field) {
  const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(text);
  if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

/**
 * Watches the RSS of `pid` from now on: resolves `stop()` to { baseline, peak, after } in bytes.
 * The peak is the kernel's high-water mark after resetting it (clear_refs 5), or the largest of
 * samples taken every 20 ms if the reset is refused.
 */
function watchMemory(pid) {
  const baseline = procBytes(pid, 'VmRSS');
  let kernelPeak = false;
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
    kernelPeak = true;
  } catch {
    // not ours to reset: sample instead
  }
  let sampled = baseline;
  const timer = setInterval(() => {
    try {
      sampled = Math.max(sampled, procBytes(pid, 'VmRSS'));
    } catch {
      // exited: the checks say so
    }
  }, 20);
  return {
    stop() {
      clearInterval(timer);
      const after = procBytes(pid, 'VmRSS');
      const peak = Math.max(sampled, after, kernelPeak ? procBytes(pid, 'VmHWM') : 0);
      return { baseline, peak, after };
    },
  };
}

const mb = (bytes) => Math.round((bytes / MB) * 10) / 10;

// ---- metrics -------------------------------------------------------------------------------------

/** The URL of a gateway's operator surface (the client port until the operator listener exists). */
function operatorUrl(gw) {
  return gw.operatorUrl || gw.url;
}

/** `switchboard_gateway_limited_total` of a gateway by `limit` label: { name: count }. */
async function limitedCounts(gw) {
  const res = await fetch(`${operatorUrl(gw)}/metrics`);
  const text = await res.text();
  const counts = {};
  for (const m of text.matchAll(/^switchboard_gateway_limited_total\{([^}]*)\} (\d+)/gm)) {
    const label = /limit="([^"]*)"/.exec(m[1]);
    if (label) counts[label[1]] = (counts[label[1]] || 0) + Number(m[2]);
  }
  return counts;
}

// ---- the four assertions -------------------------------------------------------------------------

/**
 * Runs one attack against `target.gw` (see the file comment). `spec`: { name, boundMb, limit }
 * where `limit` names the `switchboard_gateway_limited_total` label the refusal must be counted
 * under (omit it for refusals that are not a limit; a list for several). `run(ctx)` gets
 * { gw, url, target, mark(saw), hold(fn), keep(fn) }: it performs the attack, asserts the refusal, calls
 * `mark` at the first refusal with a short description of what the client saw, and registers the
 * closers of the connections it opened: `hold`-ed ones are called before the checks, `keep`-ed
 * ones after them (connections that must stay open while relays are checked). Both are called
 * whatever happened.
 */
async function attack(t, target, spec, run) {
  const { gw } = target;
  const held = [];
  const kept = [];
  const failures = [];
  const closeAll = async (closers) => {
    for (const close of closers.splice(0)) {
      try {
        await close();
      } catch {
        // already gone
      }
    }
  };
  const outcome = { attack: spec.name, refusedMs: null, saw: null };
  const started = Date.now();
  const mark = (saw) => {
    if (outcome.refusedMs !== null) return;
    outcome.refusedMs = Date.now() - started;
    outcome.saw = saw;
  };
  const countsBefore = spec.limit ? await limitedCounts(gw).catch(() => null) : null;
  const anchor = target.anchor ? target.anchor() : null;
  const memory = watchMemory(gw.pid);
  let mem = null;
  try {
    try {
      const extra = await run({ gw, url: gw.url, target, mark, hold: (fn) => held.push(fn), keep: (fn) => kept.push(fn) });
      if (extra) Object.assign(outcome, extra);
      if (outcome.refusedMs === null) mark(outcome.saw || '(refusal not marked)');
    } catch (err) {
      failures.push(`(a) refusal: ${err.message}`);
    }
    await closeAll(held);
    try {
      mem = memory.stop();
    } catch (err) {
      failures.push(`(b) memory: ${err.message} (did the gateway exit?)`);
    }
    if (mem) {
      outcome.rssDeltaMb = mb(mem.after - mem.baseline);
      outcome.peakDeltaMb = mb(mem.peak - mem.baseline);
      outcome.boundMb = spec.boundMb;
      if (mem.peak - mem.baseline > spec.boundMb * MB) {
        failures.push(`(b) memory: RSS grew by ${outcome.peakDeltaMb} MB at its peak (${outcome.rssDeltaMb} MB after), over the bound of ${spec.boundMb} MB`);
      }
    }
    if (spec.limit) {
      try {
        const after = await limitedCounts(gw);
        const counted = [];
        for (const limit of [spec.limit].flat()) {
          const delta = (after[limit] || 0) - ((countsBefore && countsBefore[limit]) || 0);
          counted.push(`${limit} +${delta}`);
          if (delta <= 0) failures.push(`(a) refusal not counted: switchboard_gateway_limited_total{limit="${limit}"} did not grow`);
        }
        outcome.counted = counted.join(', ');
      } catch (err) {
        failures.push(`(a) refusal not counted: ${err.message}`);
      }
    }
    try {
      await target.check(anchor);
    } catch (err) {
      failures.push(`(c/d) afterwards: ${err.message}`);
    }
  } finally {
    await closeAll(held);
    await closeAll(kept);
  }
  t.diagnostic(describeOutcome(outcome));
  if (failures.length > 0) assert.fail(`${spec.name}:\n  ${failures.join('\n  ')}`);
  return outcome;
}

function describeOutcome(o) {
  const parts = [`[hostile] ${o.attack}`];
  if (o.boundMb !== undefined) parts.push(`RSS +${o.rssDeltaMb} MB after, +${o.peakDeltaMb} MB peak (bound ${o.boundMb} MB)`);
  parts.push(`refused after ${o.refusedMs} ms`);
  parts.push(`client saw: ${o.saw}`);
  if (o.counted) parts.push(`counted: ${o.counted}`);
  if (o.note) parts.push(o.note);
  return parts.join(' | ');
}

// ---- targets: the sentinels whose relays and state are checked after each attack -----------------

/**
 * Sentinel clients: two on /chat and two on a tenant namespace per pair of gateways, all in room
 * `sentinel`. `check()` sends one relay each way between the two gateways of each pair and waits
 * for it, then compares the state (`fetchState`) with the clients' truth. `gateways` are the
 * gateways clients connect to (one for standalone: both ends on it).
 */
async function sentinels(members, gateways) {
  const pairs = [];
  const ends = gateways.length === 1 ? [[gateways[0], gateways[0]]] : gateways.map((g, i) => [g, gateways[(i + 1) % gateways.length]]);
  for (const [a, b] of ends) {
    for (const ns of ['/chat', '/tenant-sentinel']) {
      const user = ns === '/chat' ? undefined : 'sentinel';
      const x = await members.connect(a, { ns, user });
      const y = await members.connect(b, { ns, user });
      for (const m of [x, y]) assert.deepEqual(await m.join('sentinel'), { ok: true });
      pairs.push([x, y]);
    }
  }
  let round = 0;
  return async function relays() {
    round += 1;
    for (const [x, y] of pairs) {
      for (const [from, to] of [[x, y], [y, x]]) {
        const text = `check ${round} ${from.id}`;
        from.socket.emit('say', { room: 'sentinel', text });
        await to.until('say', (args) => args[0] && args[0].text === text);
      }
    }
  };
}

/** Waits until brokerTruth(state) equals the truth of `members` plus `extra()` (sockets the tests opened raw). */
async function stateEquals(fetchState, members, { extra = () => ({}), timeoutMs = 8000 } = {}) {
  const want = () => {
    const all = { ...members.truth(), ...extra() };
    return Object.fromEntries(Object.keys(all).sort().map((k) => [k, all[k]]));
  };
  let got = null;
  try {
    await waitFor(async () => {
      got = brokerTruth(await fetchState());
      return JSON.stringify(got) === JSON.stringify(want());
    }, { timeoutMs, what: 'the state to equal what the clients see' });
  } catch (err) {
    throw new Error(`${err.message}\n    want: ${JSON.stringify(want())}\n    got:  ${JSON.stringify(got)}`);
  }
}

/** Where the logs of `procs` (handles with logs()) end now, for `linkLosses`. */
function logAnchor(procs) {
  return procs.map((p) => p.logs().slice(-200));
}

/**
 * The processes of `procs` that lost their NATS link since `anchor` (what `logAnchor` returned):
 * those that logged "NATS connection lost" (bus/src/lib.rs) after it. The logs kept are the last
 * 64 KiB: an anchor that scrolled out means the whole log is searched.
 */
function linkLosses(procs, anchor) {
  const lost = [];
  procs.forEach((p, i) => {
    const logs = p.logs();
    const at = anchor && anchor[i] ? logs.lastIndexOf(anchor[i]) : -1;
    const since = at >= 0 ? logs.slice(at + anchor[i].length) : logs;
    const n = (since.match(/NATS connection lost/g) || []).length;
    if (n > 0) lost.push(`${p.name}: "NATS connection lost" ×${n}`);
  });
  return lost;
}

/** A standalone target: sentinels on the one gateway, its /v1/state as the broker's view. */
async function standaloneTarget(gw, members) {
  const relays = await sentinels(members, [gw]);
  const target = {
    gw,
    members,
    extra: {},
    async check() {
      const health = await fetch(`${gw.url}/health`);
      if (health.status !== 200) throw new Error(`/health answered ${health.status}`);
      await relays();
      await stateEquals(() => gw.state(), members, { extra: () => target.extra });
    },
  };
  await target.check();
  return target;
}

/**
 * A cluster target: attacks hit gw1; sentinels on every pair of neighbouring gateways; after each
 * attack relays cross every gateway boundary, no process logged a lost NATS link, every gateway
 * is ready, and the broker's state equals the clients' truth.
 */
async function clusterTarget(cluster, members) {
  const relays = await sentinels(members, cluster.gateways);
  const procs = [...cluster.gateways, cluster.broker];
  const target = {
    gw: cluster.gateways[0],
    cluster,
    members,
    extra: {},
    anchor: () => logAnchor(procs),
    async check(anchor) {
      for (const g of cluster.gateways) {
        const status = await g.ready();
        if (status !== 200) throw new Error(`${g.nodeId} /ready answered ${status}`);
      }
      if (cluster.nats.exited()) throw new Error('nats-server exited');
      await relays();
      const lost = linkLosses(procs, anchor);
      if (lost.length > 0) throw new Error(`NATS links went down: ${lost.join('; ')}`);
      await stateEquals(() => cluster.broker.state(), members, { extra: () => target.extra });
    },
  };
  await target.check(target.anchor());
  return target;
}

// ---- tokens ----------------------------------------------------------------------------------------

/** A valid token of fixtures/hostile.toml for `sub`, with extra claims. */
function token(sub, extra = {}) {
  return hs256({ sub, iss: ISSUER, aud: AUDIENCE, iat: now(), exp: now() + 600, ...extra }, SECRET);
}

/** An unsigned token (`alg: none`) with otherwise valid claims. */
function unsignedToken(sub) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${part({ alg: 'none', typ: 'JWT' })}.${part({ sub, iss: ISSUER, aud: AUDIENCE, exp: now() + 600 })}.`;
}

// ---- raw tools -------------------------------------------------------------------------------------

/** A WebSocket session on the Socket.IO path, pings answered: resolves to a raw.Ws. */
async function socket(url, options = {}) {
  const [ws] = await wsHandshake(url, PATH, { autoPong: true, ...options });
  return ws;
}

/** Sends `data` on a ws WebSocket and resolves once it is written (or rejects when closed). */
function sendAwait(ws, data) {
  return new Promise((resolve, reject) => {
    if (ws.readyState !== WebSocket.OPEN) {
      reject(new Error('closed'));
      return;
    }
    ws.send(data, (err) => (err ? reject(err) : resolve()));
  });
}

/**
 * A raw TCP connection that records what the server sends and when it closes: { socket, received(),
 * closed (promise of { ms, bytes }) }.
 */
function tcp(port) {
  const socket = net.connect({ port, host: '127.0.0.1' });
  socket.setNoDelay(true);
  let data = '';
  const opened = Date.now();
  socket.on('data', (d) => {
    data += d.toString('latin1');
  });
  const closed = new Promise((resolve) => {
    socket.on('close', () => resolve({ ms: Date.now() - opened, data }));
  });
  socket.on('error', () => {});
  const connected = new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return { socket, connected, closed, received: () => data };
}

/** Writes `text` one byte every `everyMs` until the connection closes or `text` is exhausted. */
async function dribble(conn, text, everyMs) {
  for (const ch of text) {
    if (conn.socket.destroyed) return;
    conn.socket.write(ch);
    await Promise.race([sleep(everyMs), conn.closed]);
  }
}

/** Resolves to the close of a tcp() connection, rejecting after `ms`. */
function closedWithin(conn, ms, what) {
  return within(conn.closed, what, ms);
}

/** A polling session; `close()` ends it with an Engine.IO close packet. */
async function pollingSession(url, options) {
  const session = await Polling.handshake(url, PATH, options);
  session.close = () => session.post('1').catch(() => {});
  return session;
}

/** The first line of an HTTP response (`HTTP/1.1 408 Request Timeout`), or `(nothing)`. */
function statusLine(data) {
  return data ? data.split('\r\n')[0] : '(nothing)';
}

/**
 * An attack: a function (t, target) running `body` through `attack` with `spec`, titled
 * `spec.name` (`.title`).
 */
function define(spec, body) {
  const run = (t, target) => attack(t, target, spec, body);
  run.title = spec.name;
  return run;
}

// ---- the attacks --------------------------------------------------------------------------------
// Each takes (t, target) and runs through `attack`. Loads are bounded in count and time, on
// loopback; every connection an attack opens is closed before the checks (or `hold`-ed).

/**
 * Opens a raw WebSocket session, hands its closer to `hold` and connects namespace `nsp` (with
 * `auth`); resolves to the Ws.
 */
async function connectRaw(url, nsp, hold, auth) {
  const ws = await socket(url);
  hold(() => ws.close());
  const prefix = nsp === '/' ? '' : `${nsp},`;
  ws.send(`40${prefix}${auth === undefined ? '' : JSON.stringify(auth)}`);
  const reply = await ws.nextText(10_000);
  if (!reply.startsWith(`40${prefix}{`)) throw new Error(`CONNECT ${nsp}: expected 40${prefix}{"sid":…}, got ${JSON.stringify(reply.slice(0, 200))}`);
  return ws;
}

/** 1. Eight connections each announce 64 attachments and send 63 frames of ~1 MB. */
const attachmentBomb = define({ name: '1. binary attachment bomb: 8 × (64 attachments announced, 63 frames of ~1 MB)', boundMb: 64, limit: 'attachment_bytes' }, async ({ url, mark, hold }) => {
  const frame = Buffer.alloc(MAX_PAYLOAD - 1000, 0x61);
  const placeholders = Array.from({ length: 64 }, (_, num) => ({ _placeholder: true, num }));
  const one = async () => {
    const ws = await connectRaw(url, '/', hold);
    ws.send(`4564-${JSON.stringify(['upload', ...placeholders])}`);
    let sent = 0;
    // a close frame from the server makes the socket CLOSING: stop sending there
    while (sent < 63 && ws.ws.readyState === WebSocket.OPEN) {
      try {
        await sendAwait(ws.ws, frame);
      } catch {
        break;
      }
      sent += 1;
    }
    const close = await ws.waitClose(15_000).catch(() => ({ code: null, reason: `still open after all ${sent} frames` }));
    if (close.code !== null) mark(`close ${close.code} "${close.reason}"`);
    return { ...close, sent };
  };
  const results = await Promise.all(Array.from({ length: 8 }, one));
  const sent = results.map((r) => r.sent);
  for (const r of results) assert.deepEqual([r.code, r.reason], [1009, 'attachments too large'], `close of a bomb connection (frames sent: ${sent})`);
  return { note: `frames written before the close: ${sent.join(', ')}` };
});

/**
 * 1b. The bomb over polling: two sessions each announce 64 attachments and POST them as
 * `b<base64>` packets of ~700 KB (one per POST, each under max_payload_bytes): the session is
 * closed once the attachments pass their byte bound.
 */
const attachmentBombPolling = define({ name: '1b. binary attachment bomb over polling: 2 × (64 announced, POSTs of ~700 KB)', boundMb: 32, limit: 'attachment_bytes' }, async ({ url, mark, hold }) => {
  const packet = `b${Buffer.alloc(700_000, 0x61).toString('base64')}`;
  const placeholders = Array.from({ length: 64 }, (_, num) => ({ _placeholder: true, num }));
  const one = async () => {
    const session = await pollingSession(url);
    hold(() => session.close());
    await session.post('40');
    await session.get();
    await session.post(`4564-${JSON.stringify(['upload', ...placeholders])}`);
    let sent = 0;
    let refused = null;
    while (sent < 63) {
      // Once the session is closed, the gateway may answer 400 before it has read the body and
      // close the connection: the client then sees EPIPE or ECONNRESET mid-write, which is
      // the same refusal.
      let res;
      try {
        res = await session.post(packet);
      } catch (err) {
        if (err.code !== 'EPIPE' && err.code !== 'ECONNRESET') throw err;
        refused = `connection closed mid-POST (${err.code})`;
        break;
      }
      if (res.status !== 200) {
        refused = `POST ${res.status} ${res.body}`;
        break;
      }
      sent += 1;
    }
    if (refused) mark(`after ${sent} attachments: ${refused}`);
    return { refused, sent };
  };
  const results = await Promise.all([one(), one()]);
  for (const r of results) assert.ok(r.refused, `the session was still open after all ${r.sent} attachments`);
  assert.ok(results.every((r) => r.sent < 63), 'refused before all attachments were taken');
  return { note: `attachments taken before the refusal: ${results.map((r) => r.sent).join(', ')}` };
});

/**
 * 1c. Attachment count and time: 65 attachments announced (over max_attachments, 64) closes with
 * 1008 "too many attachments"; a binary packet whose second attachment never comes closes with
 * 1008 "binary packet timeout" after binary_timeout_ms (10 s).
 */
const attachmentLimits = define({ name: '1c. 65 attachments announced; a binary packet never completed', boundMb: 16, limit: ['attachments', 'attachment_time'] }, async ({ url, mark, hold }) => {
  const many = await connectRaw(url, '/', hold);
  many.send(`4565-${JSON.stringify(['upload', ...Array.from({ length: 65 }, (_, num) => ({ _placeholder: true, num }))])}`);
  const tooMany = await many.waitClose(5000).catch(() => ({ code: null, reason: 'still open' }));
  mark(`close ${tooMany.code} "${tooMany.reason}"`);
  const slow = await connectRaw(url, '/', hold);
  slow.send(`452-${JSON.stringify(['upload', { _placeholder: true, num: 0 }, { _placeholder: true, num: 1 }])}`);
  slow.send(Buffer.from([1, 2, 3]));
  const started = Date.now();
  const timedOut = await slow.waitClose(20_000).catch(() => ({ code: null, reason: 'still open after 20 s' }));
  const ms = Date.now() - started;
  assert.deepEqual([tooMany.code, tooMany.reason], [1008, 'too many attachments'], '65 attachments announced');
  assert.deepEqual([timedOut.code, timedOut.reason], [1008, 'binary packet timeout'], 'a binary packet never completed');
  return { saw: `65 announced: close ${tooMany.code} "${tooMany.reason}"; incomplete: close ${timedOut.code} "${timedOut.reason}" after ${ms} ms` };
});

/** 2. Leaving and re-entering /chat (`41/chat,` then `40/chat,`) must not refill its bucket. */
const rateLimitReentry = define({ name: '2. rate-limit reset by 41/chat, + 40/chat, (30 rounds of 14 events)', boundMb: 16, limit: 'rate_limit' }, async ({ url, mark, hold }) => {
  const ws = await socket(url);
  hold(() => ws.close());
  let accepted = 0;
  let limited = 0;
  let connectRefused = 0;
  let id = 0;
  let first = null;
  let last = null;
  for (let round = 0; round < 30; round += 1) {
    ws.send('40/chat,');
    const reply = await ws.nextText();
    if (reply.startsWith('44/chat,')) {
      connectRefused += 1;
      continue;
    }
    assert.match(reply, /^40\/chat,\{"sid":"[^"]+"\}$/);
    first = first ?? Date.now();
    for (let i = 0; i < 14; i += 1) ws.send(`42/chat,${(id += 1)}["say",{"room":"nowhere","text":"x"}]`);
    let answered = 0;
    while (answered < 14) {
      const frame = await ws.nextText(5000);
      if (frame === '41/chat,') break; // disconnected for max_violations
      const m = /^43\/chat,\d+\[(.*)\]$/.exec(frame);
      if (!m) continue;
      answered += 1;
      if (JSON.parse(m[1]).error === 'rate limited') {
        limited += 1;
        mark('error ack {"ok":false,"error":"rate limited"}');
      } else {
        accepted += 1;
      }
    }
    last = Date.now();
    ws.send('41/chat,');
  }
  const elapsed = (last - first) / 1000;
  const allowed = RATE.burst + RATE.perSecond * elapsed;
  assert.ok(accepted <= Math.floor(allowed) + 1, `${accepted} of ${id} events accepted in ${elapsed.toFixed(2)} s across re-entries; the bucket allows ${allowed.toFixed(1)}`);
  return { note: `${accepted} accepted, ${limited} rate limited of ${id} in ${elapsed.toFixed(2)} s (allowed ≤ ${allowed.toFixed(1)}); re-CONNECTs refused: ${connectRefused}` };
});

/** 3. A 5 000-character dynamic namespace name with a valid token; the socket stays connected. */
const longNamespace = define({ name: '3. 5 000-character /tenant-… name with a valid token', boundMb: 16, limit: 'name_bytes' }, async ({ url, mark, keep }) => {
  const ns = `/tenant-${'a'.repeat(5000 - '/tenant-'.length)}`;
  const ws = await socket(url);
  // kept open through the checks: the relays must arrive while this socket is connected
  keep(() => ws.close());
  ws.send(`40${ns},${JSON.stringify({ token: token('mallory') })}`);
  const reply = await ws.nextText();
  const short = reply.replace(ns, `/tenant-a…(${ns.length} characters)`);
  mark(short);
  assert.equal(short, `44/tenant-a…(${ns.length} characters),{"message":"namespace name too long"}`);
});

/** 4. 200 000 `40/tenant-…,` packets without a token, over 8 connections, at most ~20 s. */
const tenantFlood = define({ name: '4. 200 000 × 40/tenant-…, without a token (8 connections)', boundMb: 16, limit: 'connect_rate' }, async ({ url, mark, hold }) => {
  const CONNECTIONS = 8;
  const EACH = 25_000;
  const WINDOW = 500;
  const deadline = Date.now() + 20_000;
  const messages = new Map();
  let accepted = 0;
  const one = (c) =>
    new Promise((resolve, reject) => {
      const ws = new WebSocket(wsUrl(url, PATH));
      hold(() => ws.terminate());
      let sent = 0;
      let replies = 0;
      let wake = null;
      ws.on('error', reject);
      ws.on('close', (code) => {
        if (wake) wake();
        if (sent < EACH && Date.now() < deadline) reject(new Error(`connection ${c} closed (${code}) after ${sent} packets`));
      });
      ws.on('message', (data) => {
        const text = data.toString();
        if (text === '2') return ws.send('3');
        // connected to `/` first, so that the connect timeout of a session without any
        // namespace (Node's connectTimeout) does not end the flood
        if (text[0] === '0') return ws.send('40');
        if (text.startsWith('40{')) return pump();
        if (text.startsWith('40/tenant-')) accepted += 1;
        if (text.startsWith('44/tenant-')) {
          const { message } = JSON.parse(text.slice(text.indexOf(',{') + 1));
          messages.set(message, (messages.get(message) || 0) + 1);
          mark(`connect_error "${message}"`);
        }
        replies += 1;
        if (wake && replies >= sent) wake();
        return undefined;
      });
      const pump = async () => {
        try {
          while (sent < EACH && Date.now() < deadline) {
            for (let i = 0; i < WINDOW; i += 1) ws.send(`40/tenant-c${c}n${(sent += 1)},`);
            await within(new Promise((r) => (wake = r)), `replies to ${sent} CONNECTs on connection ${c} (got ${replies})`, 10_000);
            wake = null;
            if (ws.readyState !== WebSocket.OPEN) break;
          }
          ws.close();
          resolve({ sent, replies });
        } catch (err) {
          reject(err);
        }
      };
    });
  const results = await Promise.all(Array.from({ length: CONNECTIONS }, (_, c) => one(c)));
  const sent = results.reduce((n, r) => n + r.sent, 0);
  const replies = results.reduce((n, r) => n + r.replies, 0);
  const seen = [...messages].map(([m, n]) => `${m} ×${n}`).join(', ');
  assert.equal(accepted, 0, 'no CONNECT without a token was accepted');
  assert.equal(replies, sent, 'every CONNECT was answered');
  assert.ok(messages.has('too many connects'), `CONNECTs past the rate refused with "too many connects"; saw ${seen}`);
  return { note: `${sent} CONNECTs sent, answered: ${seen}` };
});

/**
 * 4b. Seventeen dynamic namespaces with a valid token on one connection: the 17th is refused
 * (max_namespaces, 16); once the sockets leave, the namespaces are gone from the state.
 */
const tenantNamespaces = define({ name: '4b. 17 /tenant-… namespaces with a valid token on one connection', boundMb: 16, limit: 'namespaces' }, async ({ url, mark, hold }) => {
  const ws = await socket(url);
  hold(() => ws.close());
  const auth = JSON.stringify({ token: token('tenant-hopper') });
  const replies = [];
  for (let i = 1; i <= LIMITS.maxNamespaces + 1; i += 1) {
    ws.send(`40/tenant-hop${i},${auth}`);
    replies.push(await ws.nextText(5000));
  }
  const last = replies.pop();
  mark(last);
  replies.forEach((r, i) => assert.match(r, new RegExp(`^40/tenant-hop${i + 1},\\{"sid":`), `namespace ${i + 1} of ${LIMITS.maxNamespaces}`));
  assert.equal(last, `44/tenant-hop${LIMITS.maxNamespaces + 1},{"message":"too many namespaces"}`);
  for (let i = 1; i <= LIMITS.maxNamespaces; i += 1) ws.send(`41/tenant-hop${i},`);
});

/** 5. The operator surface is not on the client port. */
const operatorOnClientPort = define({ name: '5. GET /v1/state and /metrics on the client port', boundMb: 8 }, async ({ url, mark }) => {
  const seen = [];
  for (const path of ['/v1/state', '/metrics']) {
    const res = await request(`${url}${path}`);
    seen.push(`${path} → ${res.status}`);
    assert.equal(res.status, 404, `GET ${path} on the client port: ${res.status} ${res.body.slice(0, 120)}`);
  }
  mark(seen.join(', '));
});

/** 6. Slowloris: 20 request heads and 20 POST bodies, one byte every 2 s each. */
const slowloris = define({ name: '6. slowloris: 20 heads and 20 POST bodies at one byte every 2 s', boundMb: 16, limit: 'body_time' }, async ({ gw, mark, hold }) => {
  const port = Number(new URL(gw.url).port);
  const heads = Array.from({ length: 20 }, async () => {
    const conn = tcp(port);
    hold(() => conn.socket.destroy());
    await conn.connected;
    conn.socket.write(`GET ${PATH}?EIO=4&transport=polling HTTP/1.1\r\nHost: 127.0.0.1\r\n`);
    dribble(conn, `X-Slow: ${'a'.repeat(100)}\r\n\r\n`, 2000);
    const end = await closedWithin(conn, 25_000, 'the server to close a slow request head');
    mark(`head: ${statusLine(end.data)} then closed`);
    return end;
  });
  const bodies = Array.from({ length: 20 }, async () => {
    const session = await pollingSession(gw.url);
    hold(() => session.close());
    const conn = tcp(port);
    hold(() => conn.socket.destroy());
    await conn.connected;
    const body = `4${'x'.repeat(63)}`;
    conn.socket.write(
      `POST ${PATH}?EIO=4&transport=polling&sid=${encodeURIComponent(session.sid)} HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
        `Content-Type: text/plain;charset=UTF-8\r\nContent-Length: ${body.length}\r\n\r\n`,
    );
    dribble(conn, body, 2000);
    const end = await closedWithin(conn, 25_000, 'the server to cut off a slow POST body');
    mark(`body: ${statusLine(end.data)} then closed`);
    return end;
  });
  const h = await Promise.all(heads);
  const b = await Promise.all(bodies);
  for (const end of b) assert.match(statusLine(end.data), /^HTTP\/1\.1 408 /, 'a slow POST body is answered 408');
  const ms = (ends) => `${Math.min(...ends.map((e) => e.ms))}–${Math.max(...ends.map((e) => e.ms))} ms`;
  return {
    saw: `head: ${statusLine(h[0].data)}, closed after ${ms(h)}; body: ${statusLine(b[0].data)}, closed after ${ms(b)}`,
  };
});

/** 7. Frames and POST bodies one byte over max_payload_bytes. */
const oversized = define({ name: '7. oversized WebSocket frames (×4) and POSTs (×4)', boundMb: 32, limit: 'body_bytes' }, async ({ url, mark, hold }) => {
  const big = `4${'a'.repeat(MAX_PAYLOAD)}`;
  const frames = Array.from({ length: 4 }, async () => {
    const ws = await socket(url);
    hold(() => ws.close());
    ws.send(big);
    const close = await ws.waitClose(10_000);
    mark(`frame: close ${close.code}`);
    return close.code;
  });
  const posts = Array.from({ length: 4 }, async () => {
    const session = await pollingSession(url);
    hold(() => session.close());
    const res = await session.post(big);
    mark(`POST: ${res.status}`);
    return res.status;
  });
  const codes = await Promise.all(frames);
  const statuses = await Promise.all(posts);
  assert.deepEqual(codes, [1009, 1009, 1009, 1009], 'an oversized frame closes with 1009');
  assert.deepEqual(statuses, [413, 413, 413, 413], 'an oversized POST is answered 413');
  return { saw: `frames: close ${codes[0]}; POSTs: ${statuses[0]}` };
});

/**
 * 8. Invalid packets of every Engine.IO and Socket.IO type. Each closes the connection, as
 * Node's engine.io 6 / socket.io 4.8 do (checked against tests/e2e/reference/conformance.js).
 */
const INVALID = [
  ['empty Engine.IO packet', ''],
  ['unknown Engine.IO type', 'x'],
  ['Engine.IO type 7', '7'],
  ['client ping (v4 pings go server → client)', '2'],
  ['binary frame with no attachment announced', Buffer.from([1, 2, 3])],
  ['empty Socket.IO packet', '4'],
  ['CONNECT with invalid JSON', '40{'],
  ['CONNECT with an array payload', '40[1]'],
  ['DISCONNECT with a payload', '41{"a":1}'],
  ['EVENT whose payload is an object', '42{}'],
  ['EVENT with an empty array', '42[]'],
  ['EVENT whose name is not a string', '42[true]'],
  ['EVENT with a reserved name', '42["connect"]'],
  ['EVENT with a non-numeric ack id', '42abc["x"]'],
  ['ACK whose payload is not an array', '43{}'],
  ['CONNECT_ERROR from a client', '44{"message":"x"}'],
  ['CONNECT_ERROR with a number', '441'],
  ['BINARY_EVENT without an attachment count', '45["x"]'],
  ['BINARY_EVENT without "-"', '451["x"]'],
  ['BINARY_ACK without an attachment count', '46["x"]'],
  ['unknown Socket.IO type 7', '47'],
  ['unknown Socket.IO type 8', '48'],
];

const invalidPackets = define({ name: `8. invalid packets of every type (${INVALID.length + 2} kinds)`, boundMb: 16 }, async ({ url, mark, hold }) => {
  const open = [];
  for (const [what, frame] of INVALID) {
    const ws = await connectRaw(url, '/', hold);
    ws.send(frame);
    const close = await ws.waitClose(5000).catch(() => null);
    if (!close) open.push(`${what} (${JSON.stringify(typeof frame === 'string' ? frame : 'binary')})`);
    else mark(`close ${close.code}`);
  }
  // over polling: an undecodable POST closes the session; a binary packet with no attachments too
  for (const [what, body] of [['undecodable POST', 'abc'], ['attachment with nothing announced', 'bAQID']]) {
    const session = await pollingSession(url);
    hold(() => session.close());
    await session.post('40');
    await session.get();
    await session.post(body);
    const res = await session.get();
    if (res.status !== 400) open.push(`polling: ${what} (next GET ${res.status} ${res.body})`);
  }
  assert.deepEqual(open, [], 'each invalid packet closes its session');
  const health = await request(`${url}/health`);
  assert.equal(health.status, 200);
});

/** 9. Bad tokens for the dynamic namespace: alg none, wrong key, expired, 1 MB long. */
const badTokens = define({ name: '9. JWT: alg none, wrong key, expired, 1 MB long', boundMb: 32, limit: ['body_bytes', 'handshake'] }, async ({ url, mark, hold }) => {
  const { io } = require('socket.io-client');
  const cases = [
    ['alg none', unsignedToken('mallory'), 'invalid token'],
    ['wrong key', hs256({ sub: 'mallory', iss: ISSUER, aud: AUDIENCE, exp: now() + 600 }, `${SECRET}-wrong`), 'invalid token'],
    ['expired', token('mallory', { exp: now() - 60 }), 'token expired'],
  ];
  const saw = [];
  for (const [what, tok, message] of cases) {
    const s = io(`${url}/tenant-jwt`, { transports: ['websocket'], forceNew: true, reconnection: false, auth: { token: tok } });
    hold(() => s.disconnect());
    const err = await connectError(s);
    mark(`connect_error "${err.message}"`);
    saw.push(`${what}: "${err.message}"`);
    assert.equal(err.message, message, what);
    s.disconnect();
  }
  const huge = 'a'.repeat(1024 * 1024);
  // in the CONNECT payload over WebSocket: a frame over max_payload_bytes
  const ws = await socket(url);
  hold(() => ws.close());
  ws.send(`40/tenant-jwt,{"token":"${huge}"}`);
  const close = await ws.waitClose(10_000);
  saw.push(`1 MB in auth over WebSocket: close ${close.code}`);
  assert.equal(close.code, 1009, '1 MB token in a WebSocket CONNECT');
  // in the CONNECT payload over polling: a POST over max_payload_bytes
  const session = await pollingSession(url);
  hold(() => session.close());
  const post = await session.post(`40/tenant-jwt,{"token":"${huge}"}`);
  saw.push(`over polling: ${post.status}`);
  assert.equal(post.status, 413, '1 MB token in a polling CONNECT');
  // a 16 KB token in the Authorization header of the handshake: over the kept-header limit
  // (4096 bytes), under hyper's own header limit, so the refusal is the gateway's
  const kept = await request(`${url}${PATH}?EIO=4&transport=polling`, { headers: { authorization: `Bearer ${huge.slice(0, 16 * 1024)}` } });
  if (kept.status === 200) hold(() => request(`${url}${PATH}?EIO=4&transport=polling&sid=${JSON.parse(kept.body.slice(1)).sid}`, { method: 'POST', body: '1' }));
  saw.push(`16 KB Authorization header: ${kept.status}`);
  assert.equal(kept.status, 431, '16 KB Authorization header on the handshake');
  // 1 MB in the Authorization header: over any header limit
  const res = await request(`${url}${PATH}?EIO=4&transport=polling`, { headers: { authorization: `Bearer ${huge}` } }).catch((err) => ({ status: `error ${err.code || err.message}` }));
  saw.push(`as Authorization header: ${res.status}`);
  assert.equal(res.status, 431, '1 MB Authorization header on the handshake');
  return { saw: saw.join('; ') };
});

/** 10. Floods past /chat's rate limit: error acks, then a disconnect after max_violations. */
const rateFlood = define({ name: '10. flood of 100 acked events on /chat', boundMb: 16, limit: 'rate_limit' }, async ({ url, mark, hold }) => {
  const ws = await connectRaw(url, '/chat', hold);
  for (let id = 1; id <= 100; id += 1) ws.send(`42/chat,${id}["say",{"room":"nowhere","text":"flood"}]`);
  let accepted = 0;
  let limited = 0;
  let disconnected = false;
  while (!disconnected && accepted + limited < 100) {
    const frame = await ws.nextText(5000);
    if (frame === '41/chat,') {
      disconnected = true;
      mark(`${limited} error acks "rate limited", then 41/chat,`);
    }
    const m = /^43\/chat,\d+\[(.*)\]$/.exec(frame);
    if (!m) continue;
    if (JSON.parse(m[1]).error === 'rate limited') limited += 1;
    else accepted += 1;
  }
  assert.ok(accepted <= RATE.burst + 5, `${accepted} accepted: about the burst (${RATE.burst})`);
  assert.equal(limited, RATE.maxViolations, `error acks "rate limited" before the disconnect`);
  assert.ok(disconnected, 'the socket is disconnected from /chat after max_violations');
  return { note: `${accepted} accepted, ${limited} refused, then disconnected` };
});

/** 11. 10 000 handshakes from one address against max_connections_per_ip. */
const perIp = define({ name: `11. 10 000 sessions from one address (max_connections_per_ip = ${PER_IP})`, boundMb: 32, limit: 'connections_per_ip' }, async ({ url, mark }) => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  const statuses = new Map();
  const open = [];
  let next = 0;
  const deadline = Date.now() + 30_000;
  const worker = async () => {
    while (next < 10_000 && Date.now() < deadline) {
      next += 1;
      const res = await new Promise((resolve, reject) => {
        http
          .get(`${url}${PATH}?EIO=4&transport=polling`, { agent }, (r) => {
            let body = '';
            r.on('data', (d) => (body += d));
            r.on('end', () => resolve({ status: r.statusCode, body }));
          })
          .on('error', reject);
      });
      statuses.set(res.status, (statuses.get(res.status) || 0) + 1);
      if (res.status === 200) open.push(JSON.parse(res.body.slice(1)).sid);
      else if (res.status === 429) mark(`429 ${res.body}`);
    }
  };
  try {
    await Promise.all(Array.from({ length: 16 }, worker));
  } finally {
    agent.destroy();
    await Promise.all(open.map((sid) => request(`${url}${PATH}?EIO=4&transport=polling&sid=${sid}`, { method: 'POST', body: '1' }).catch(() => {})));
  }
  const seen = [...statuses].map(([s, n]) => `${s} ×${n}`).join(', ');
  assert.ok(open.length <= PER_IP, `${open.length} sessions admitted, at most ${PER_IP}`);
  assert.equal((statuses.get(429) || 0) + open.length, next, `every handshake admitted or refused with 429: ${seen}`);
  // the slots are free again once the sessions are closed
  await waitFor(async () => {
    const res = await request(`${url}${PATH}?EIO=4&transport=polling`);
    if (res.status !== 200) return false;
    await request(`${url}${PATH}?EIO=4&transport=polling&sid=${JSON.parse(res.body.slice(1)).sid}`, { method: 'POST', body: '1' });
    return true;
  }, { timeoutMs: 10_000, what: 'a handshake to be admitted again' });
  return { note: `${next} handshakes: ${seen}` };
});

/** A WebSocket upgrade request for `sid`, resolved to 'refused <status>', 'closed' or the Ws once open. */
async function upgradeFor(url, sid) {
  const ws = new Ws(wsUrl(url, PATH, `&sid=${encodeURIComponent(sid)}`));
  try {
    await ws.opened;
    return ws;
  } catch (err) {
    ws.close();
    return `refused ${err.status || err.message}`;
  }
}

/**
 * 12. Upgrade abuse. The expected results are engine.io 6's (checked against it): an unknown sid
 * is refused with 400; a second WebSocket for an upgraded sid is closed; a probe never followed
 * by "5", or followed by garbage, is dropped and the polling session goes on; polling a WebSocket
 * session's sid is refused with 400.
 */
const upgradeAbuse = define({ name: '12. upgrade abuse: unknown sid, double upgrade, probe without upgrade, upgrade of a WebSocket sid, garbage after 2probe', boundMb: 16 }, async ({ url, mark, hold }) => {
  const saw = [];
  // unknown sid
  const unknown = await upgradeFor(url, 'AAAAAAAAAAAAAAAAAAAA');
  if (typeof unknown !== 'string') hold(() => unknown.close());
  saw.push(`unknown sid: ${typeof unknown === 'string' ? unknown : 'opened'}`);
  mark(saw[0]);
  assert.equal(unknown, 'refused 400', 'upgrade with an unknown sid');

  // probe without upgrade: the probe transport is dropped after upgrade_timeout, polling goes on
  const idle = await pollingSession(url);
  hold(() => idle.close());
  // Connected to a namespace, so that the session outlives connect_timeout_ms (5 s) while the
  // probe waits out upgrade_timeout_ms (10 s): what ends the probe is the upgrade deadline.
  assert.equal((await idle.post('40')).status, 200, 'namespace connect of the idle session');
  const prober = await upgradeFor(url, idle.sid);
  assert.notEqual(typeof prober, 'string', `probe transport refused: ${prober}`);
  hold(() => prober.close());
  prober.send('2probe');
  assert.equal(await prober.nextText(), '3probe');
  const abandoned = prober.waitClose(15_000).then(
    () => 'closed',
    () => 'still open after 15 s',
  );

  // garbage after 2probe: the probe transport is closed, the polling session goes on
  const victim = await pollingSession(url);
  hold(() => victim.close());
  const garbage = await upgradeFor(url, victim.sid);
  assert.notEqual(typeof garbage, 'string', `probe transport refused: ${garbage}`);
  hold(() => garbage.close());
  garbage.send('2probe');
  assert.equal(await garbage.nextText(), '3probe');
  garbage.send('garbage');
  const g = await garbage.waitClose(5000).then(() => 'closed', () => 'still open');
  saw.push(`garbage after 2probe: ${g}`);
  assert.equal(g, 'closed', 'garbage after 2probe closes the probe transport');
  const still = await victim.post('40');
  assert.equal(still.status, 200, 'the polling session survives the failed upgrade');

  // double upgrade: a second WebSocket for an upgraded sid
  const upgraded = await pollingSession(url);
  hold(() => upgraded.close());
  const first = await upgradeFor(url, upgraded.sid);
  assert.notEqual(typeof first, 'string', `upgrade refused: ${first}`);
  hold(() => first.close());
  first.send('2probe');
  assert.equal(await first.nextText(), '3probe');
  first.send('5');
  await waitFor(async () => (await upgraded.get()).status === 400, { what: 'the polling transport to be gone after "5"' });
  const second = await upgradeFor(url, upgraded.sid);
  if (typeof second !== 'string') {
    hold(() => second.close());
    await second.waitClose(5000);
  }
  saw.push(`second upgrade: ${typeof second === 'string' ? second : 'closed'}`);
  first.send('40');
  assert.match(await first.nextText(), /^40\{"sid":/, 'the first WebSocket still works');

  // a WebSocket session's sid, upgraded again and polled
  const [plain, open] = await wsHandshake(url, PATH, { autoPong: true });
  hold(() => plain.close());
  // Node lets it open as a probe (dropped after upgrade_timeout); refusing it is fine too
  const again = await upgradeFor(url, open.sid);
  if (typeof again !== 'string') hold(() => again.close());
  saw.push(`upgrade of a WebSocket sid: ${typeof again === 'string' ? again : 'opened as a probe'}`);
  const poll = await request(`${url}${PATH}?EIO=4&transport=polling&sid=${encodeURIComponent(open.sid)}`);
  saw.push(`polling GET of a WebSocket sid: ${poll.status}`);
  assert.equal(poll.status, 400, 'polling a WebSocket session');
  plain.send('40');
  assert.match(await plain.nextText(), /^40\{"sid":/, 'the WebSocket session still works');

  const a = await abandoned;
  saw.push(`probe without upgrade: ${a}`);
  assert.equal(a, 'closed', 'a probe never followed by "5" is dropped');
  const alive = await idle.post('42["still here"]');
  assert.equal(alive.status, 200, 'the polling session survives the abandoned probe');
  return { saw: saw.join('; ') };
});

/** 13. CORS and Origin: nothing for an unlisted origin; its WebSocket upgrade refused with 403. */
const origins = define({ name: '13. CORS and Origin mismatches', boundMb: 8 }, async ({ url, mark, hold }) => {
  const evil = 'http://evil.example';
  const handshake = await request(`${url}${PATH}?EIO=4&transport=polling`, { headers: { origin: evil } });
  if (handshake.status === 200) {
    const sid = JSON.parse(handshake.body.slice(1)).sid;
    hold(() => request(`${url}${PATH}?EIO=4&transport=polling&sid=${sid}`, { method: 'POST', body: '1' }));
  }
  assert.equal(handshake.headers['access-control-allow-origin'], undefined, 'no CORS header for an unlisted origin');
  const preflight = await request(`${url}${PATH}?EIO=4&transport=polling`, {
    method: 'OPTIONS',
    headers: { origin: evil, 'access-control-request-method': 'POST' },
  });
  assert.equal(preflight.headers['access-control-allow-origin'], undefined, 'no CORS header on a preflight from an unlisted origin');
  const refused = new Ws(wsUrl(url, PATH), { headers: { origin: evil } });
  hold(() => refused.close());
  const err = await refused.opened.then(() => null, (e) => e);
  mark(`WebSocket from ${evil}: ${err ? err.status : 'opened'}`);
  assert.equal(err && err.status, 403, 'a WebSocket upgrade from an unlisted Origin');
  const allowed = new Ws(wsUrl(url, PATH), { headers: { origin: 'http://allowed.example' }, autoPong: true });
  hold(() => allowed.close());
  await allowed.opened;
  return { saw: `no CORS headers (handshake ${handshake.status}, preflight ${preflight.status}); WebSocket 403` };
});

/**
 * 17. Requests in flight on one polling session: a second GET while one is pending, a second
 * POST while one is still sending its body: 400 and the session is closed (Node's "overlap from
 * client"; Node's 400 has an empty body, the helpers' contract a JSON one: either is accepted,
 * the diagnostic shows which).
 */
const pollingOverlap = define({ name: '17. a second GET and a second POST in flight on one polling session', boundMb: 16, limit: 'polling_in_flight' }, async ({ gw, url, mark, hold }) => {
  const saw = [];
  const gets = await pollingSession(url);
  hold(() => gets.close());
  await gets.post('40');
  await gets.get();
  // both at once: whichever arrives second overlaps the one parked at the server
  const pair = await Promise.all([gets.get(), gets.get()]);
  const overlap = pair.find((r) => r.status === 400);
  mark(`second GET: ${overlap ? `${overlap.status} ${overlap.body}` : 'not refused'}`);
  saw.push(`two GETs: ${pair.map((r) => `${r.status} ${JSON.stringify(r.body)}`).join(', ')}`);
  assert.deepEqual(pair.map((r) => r.status).sort(), [200, 400], 'two concurrent GETs');
  const after = await gets.get();
  assert.equal(after.status, 400, 'the session is closed after the overlap');

  const posts = await pollingSession(url);
  hold(() => posts.close());
  const conn = tcp(Number(new URL(gw.url).port));
  hold(() => conn.socket.destroy());
  await conn.connected;
  conn.socket.write(
    `POST ${PATH}?EIO=4&transport=polling&sid=${encodeURIComponent(posts.sid)} HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
      'Content-Type: text/plain;charset=UTF-8\r\nContent-Length: 64\r\n\r\n4',
  );
  // the slow POST stays in flight until its deadline; a POST sent while it is overlaps it (one
  // that reaches the server before it is simply answered, so try again)
  let secondPost = null;
  for (let i = 0; i < 20 && !(secondPost && secondPost.status !== 200); i += 1) secondPost = await posts.post('6');
  saw.push(`second POST: ${secondPost.status} ${secondPost.body}`);
  assert.equal(secondPost.status, 400, 'a second concurrent POST');
  return { saw: saw.join('; ') };
});

// ---- cluster-only attacks ----------------------------------------------------------------------

/** 5b. The operator paths through each shipped nginx config (deploy/nginx/) in front of the cluster. */
const operatorThroughNginx = define({ name: '5b. GET /v1/state and /metrics through each shipped nginx config', boundMb: 8 }, async ({ target, mark }) => {
  const { startNginx } = require('./nginx');
  const files = fs.readdirSync(path.join(REPO, 'deploy', 'nginx')).filter((f) => f.endsWith('.conf')).sort();
  assert.ok(files.length > 0, 'deploy/nginx/ ships configs');
  const seen = [];
  const exposed = [];
  for (const file of files) {
    const nginx = await startNginx(file, target.cluster.gateways);
    try {
      for (const p of ['/v1/state', '/metrics']) {
        const res = await request(`${nginx.url}${p}`);
        seen.push(`${file} ${p} → ${res.status}`);
        mark(`${p} → ${res.status}`);
        if (res.status !== 404) exposed.push(`${file}: ${p} → ${res.status} ${res.body.slice(0, 80)}`);
      }
    } finally {
      await nginx.stop();
    }
  }
  assert.deepEqual(exposed, [], 'no shipped nginx config reaches the operator surface');
  return { saw: seen.join(', ') };
});

/**
 * The worker credential of the cluster's NATS (lib/cluster.js, once the bus has users): options
 * for nats.js `connect`, or null while NATS runs without authentication.
 */
function workerLogin(cluster) {
  const creds = cluster.credentials || cluster.nats.credentials || cluster.nats.users || null;
  const w = creds && creds.worker;
  if (!w) return null;
  return { user: w.user, pass: w.pass ?? w.password, ...(w.token ? { token: w.token } : {}) };
}

/**
 * 14. A kick (Command{disconnect}) published by a worker for a socket of gw2, on its command
 * subject and on its delivery subject: NATS refuses the first (permissions), gw2 ignores the
 * second, and the socket stays connected.
 */
const workerKick = define({ name: '14. a kick published on the bus with a worker credential', boundMb: 8 }, async ({ target, mark, hold }) => {
  const { connect } = require('nats');
  const bus = require('./bus');
  const { cluster, members } = target;
  const login = workerLogin(cluster);
  const victim = await members.connect(cluster.gateways[1]);
  const witness = await members.connect(cluster.gateways[2]);
  for (const m of [victim, witness]) {
    hold(() => {
      m.socket.disconnect();
      m.gone = true;
    });
    assert.deepEqual(await m.join('kick-victim'), { ok: true });
  }
  const nc = await connect({ servers: cluster.nats.url, name: 'e2e-hostile-worker', ...(login || {}) });
  hold(() => nc.close());
  const violations = [];
  (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'error' || /permission/i.test(String(s.data))) {
        violations.push(String(s.data));
        mark(`NATS: ${s.data}`);
      }
    }
  })();
  const command = bus.encode('Envelope', {
    command: { origin: 'mallory', ns: '/chat', target: { socket_ids: [victim.id] }, disconnect: { close_connection: true, reason: 'kicked by a worker' } },
  });
  const p = cluster.prefix;
  for (const subject of [`${p}.cmd.node.gw2`, `${p}.cmd.ns._2Fchat`, `${p}.node.gw2`, `${p}.ns._2Fchat`]) nc.publish(subject, command);
  await nc.flush().catch(() => {});
  // a fence: a relay sent after the kick reached the server arrives, so the kick was handled first
  witness.socket.emit('say', { room: 'kick-victim', text: 'after the kick' });
  await victim.until('say', (a) => a[0] && a[0].text === 'after the kick').catch(() => {});
  assert.equal(victim.gone, false, `the victim was kicked by a worker${login ? '' : ' (NATS runs without credentials: lib/cluster.js gives no worker credential)'}`);
  assert.ok(login, 'lib/cluster.js gives a worker credential (NATS authentication on)');
  assert.ok(violations.length > 0, 'NATS reported a permissions violation to the worker');
  return { saw: `victim still connected; NATS: ${violations[0]}` };
});

/**
 * 15. Sessions with big handshake headers (a kept one: user-agent) — three of ~400 KB, as in the
 * issue, and three of 60 KB, under the 64 KiB request-head bound so that the kept-header limit
 * itself refuses them — then a second broker, whose resync must rebuild every gateway: the
 * handshakes are refused (431), or snapshot parts are split by bytes.
 */
const snapshotOversize = define({ name: '15. snapshot oversize: sessions with 400 KB and 60 KB handshake headers, then a resync', boundMb: 32, limit: 'handshake' }, async ({ url, target, mark, hold }) => {
  const { startBroker } = require('./cluster');
  const { cluster, members } = target;
  const statuses = [];
  for (const kb of [400, 400, 400, 60, 60, 60]) {
    const ua = `hostile/${'x'.repeat(kb * 1024)}`;
    const res = await request(`${url}${PATH}?EIO=4&transport=polling`, { headers: { 'user-agent': ua } }).catch((err) => ({ status: `error ${err.code || err.message}` }));
    statuses.push(`${kb} KB: ${res.status}`);
    mark(`handshake ${res.status}`);
    if (res.status !== 200) continue;
    const session = new Polling(url, PATH, JSON.parse(res.body.slice(1)).sid, null);
    hold(() => session.post('1').catch(() => {}));
    await session.post('40/chat,');
    const reply = (await session.collect(1, { timeout: 5000 }))[0];
    const sid = JSON.parse(reply.slice(reply.indexOf('{'))).sid;
    target.extra[sid] = [];
    hold(() => delete target.extra[sid]);
  }
  const broker2 = await startBroker({ natsUrl: cluster.nats.url, prefix: cluster.prefix, env: cluster.brokerEnv || {} });
  try {
    await stateEquals(() => broker2.state(), members, { extra: () => target.extra });
  } finally {
    await broker2.stop();
  }
  return { saw: `handshakes: ${statuses.join(', ')}; a new broker rebuilt every gateway` };
});

/**
 * 16. A relay whose attachments and arguments exceed the bus payload (NATS max_payload, 1 MiB).
 * Either it is refused — the sender gets {"ok":false,"error":"message too large"} and no member,
 * local or remote, receives it — or it is split over several bus messages and every member
 * receives it whole, once. Never the local members only (the issue's bug).
 */
const busPayload = define({ name: '16. relay over the bus payload (990 KB attachment + 100 KB text)', boundMb: 32 }, async ({ target, mark, hold }) => {
  const { cluster, members } = target;
  const [gw1, gw2] = cluster.gateways;
  const sender = await members.connect(gw1);
  const local = await members.connect(gw1);
  const remote = await members.connect(gw2);
  for (const m of [sender, local, remote]) {
    hold(() => {
      m.socket.disconnect();
      m.gone = true;
    });
    assert.deepEqual(await m.join('big-room'), { ok: true });
  }
  const text = 'x'.repeat(100_000);
  const attachment = Buffer.alloc(990_000, 7);
  const ack = await sender.ack('say', { room: 'big-room', text }, attachment);
  mark(`ack ${JSON.stringify(ack)}`);
  sender.socket.emit('say', { room: 'big-room', text: 'fence' });
  await Promise.all([local, remote].map((m) => m.until('say', (a) => a[0] && a[0].text === 'fence')));
  const got = (m) => m.of('say', (a) => a[0] && a[0].text !== 'fence');
  const whole = (m) => got(m).filter((a) => a[0].text === text && Buffer.isBuffer(a[1]) && a[1].equals(attachment)).length;
  const counts = [got(local).length, got(remote).length];
  const saw = `ack ${JSON.stringify(ack)}; local got ${counts[0]}, remote got ${counts[1]}`;
  if (ack && ack.ok === false) {
    assert.deepEqual(ack, { ok: false, error: 'message too large' }, 'a refused relay tells the sender why');
    assert.deepEqual(counts, [0, 0], `a refused relay reaches nobody: ${saw}`);
    const limited = await limitedCounts(cluster.gateways[0]);
    assert.ok((limited.bus_payload || 0) > 0, 'the refusal is counted under bus_payload');
    return { saw: `refused: ${saw}` };
  }
  assert.deepEqual(ack, { ok: true }, 'the relay was accepted');
  assert.deepEqual([whole(local), whole(remote)], [1, 1], `a relay over the payload, split, reaches every member whole and once: ${saw}`);
  return { saw: `split and delivered: ${saw}` };
});

// ---- suites -------------------------------------------------------------------------------------
// One gateway (or one cluster) per suite file, started once and stopped at the end; node's test
// runner gives each file 60 s (scripts/test.sh's --test-timeout), so the attacks are spread over
// several files.

/** A suite of `attacks` against a standalone gateway with fixtures/hostile.toml. */
function standaloneSuite(title, attacks) {
  const { describe, it, before, after } = require('node:test');
  const { startGateway } = require('./cluster');
  const { Members, ENV } = require('./members');
  describe(title, () => {
    let gw;
    let target;
    const members = new Members();
    before(async () => {
      gw = await startGateway({ config: 'hostile.toml', env: ENV });
      target = await standaloneTarget(gw, members);
    });
    after(async () => {
      members.closeAll();
      if (gw) await gw.stop();
    });
    for (const run of attacks) it(run.title, (t) => run(t, target));
  });
}

/**
 * A suite against a cluster (nats-server, broker, 3 gateways with fixtures/hostile.toml); the
 * attacks hit gw1. `attacks` are lib/hostile.js attacks or [title, fn(t, target)] pairs.
 */
function clusterSuite(title, attacks) {
  const { describe, it, before, after } = require('node:test');
  const { startCluster } = require('./cluster');
  const { Members, ENV } = require('./members');
  describe(title, () => {
    let cluster;
    let target;
    const members = new Members();
    before(async () => {
      cluster = await startCluster({ config: 'hostile.toml', env: ENV, gateways: 3 });
      target = await clusterTarget(cluster, members);
    });
    after(async () => {
      members.closeAll();
      if (cluster) await cluster.stop();
    });
    for (const a of attacks) {
      const [name, run] = Array.isArray(a) ? a : [a.title, a];
      it(name, (t) => run(t, target));
    }
  });
}

module.exports = {
  standaloneSuite,
  clusterSuite,
  define,
  attack,
  standaloneTarget,
  clusterTarget,
  watchMemory,
  limitedCounts,
  operatorUrl,
  stateEquals,
  attachmentBomb,
  attachmentBombPolling,
  attachmentLimits,
  rateLimitReentry,
  longNamespace,
  tenantFlood,
  tenantNamespaces,
  operatorOnClientPort,
  slowloris,
  oversized,
  invalidPackets,
  badTokens,
  rateFlood,
  perIp,
  upgradeAbuse,
  origins,
  pollingOverlap,
  operatorThroughNginx,
  workerKick,
  snapshotOversize,
  busPayload,
};
