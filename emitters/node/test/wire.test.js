'use strict';
// The emitter against emitters/vectors.json (made by the Rust code the gateways run): subjects,
// frames and protobuf bytes must match exactly. Publishing goes to a recording stand-in for the
// NATS client; tests/e2e/test/emitters.test.js runs the real thing against a cluster.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const fs = require('node:fs');
const { Emitter, RESERVED_EVENTS } = require('..');
const wire = require('../lib/wire');

const VECTORS = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'vectors.json'), 'utf8'));

/** The vectors' `{"$bin": base64}` markers as Buffers. */
function revive(v) {
  if (Array.isArray(v)) return v.map(revive);
  if (v && typeof v === 'object') {
    const keys = Object.keys(v);
    if (keys.length === 1 && keys[0] === '$bin') return Buffer.from(v.$bin, 'base64');
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, revive(x)]));
  }
  return v;
}

/** A stand-in for a `nats` connection that records what is published. */
function recorder({ maxPayload = 1024 * 1024, jetstreamFails = false } = {}) {
  const out = [];
  return {
    out,
    info: { max_payload: maxPayload },
    publish(subject, data) {
      out.push({ subject, jetstream: false, payload: Buffer.from(data).toString('base64') });
    },
    jetstream() {
      return {
        async publish(subject, data) {
          if (jetstreamFails) throw new Error('503 no responders');
          out.push({ subject, jetstream: true, payload: Buffer.from(data).toString('base64') });
          return { seq: 1 };
        },
      };
    },
    async flush() {},
  };
}

test('escapes match', () => {
  for (const { name, token } of VECTORS.escapes) assert.equal(wire.escape(name), token, JSON.stringify(name));
});

test('subjects match, and over-long names are refused', () => {
  const fns = {
    room: 'room',
    namespace: 'namespace',
    node: 'node',
    command_namespace: 'commandNamespace',
    server: 'server',
    log_room: 'logRoom',
    log_namespace: 'logNamespace',
    log_socket: 'logSocket',
    log_stream: 'logStream',
  };
  for (const v of VECTORS.subjects) {
    const s = new wire.Subjects(v.prefix);
    const build = () => s[fns[v.kind]](...v.names);
    if (v.too_long) assert.throws(build, new RegExp(`${v.too_long} bytes`), v.kind);
    else assert.equal(build(), v.subject, `${v.kind} ${JSON.stringify(v.names)}`);
  }
});

test('the reserved event names are the server\'s', () => {
  assert.deepEqual([...RESERVED_EVENTS].sort(), [...VECTORS.reserved_events].sort());
});

test('emits: frames, subjects and envelopes match', async () => {
  for (const v of VECTORS.emits) {
    const { packet, attachments } = wire.eventFrame(v.ns, v.event, revive(v.args));
    assert.equal(packet.toString('utf8'), v.packet, v.name);
    assert.deepEqual(attachments.map((a) => a.toString('base64')), v.attachments, v.name);

    const nc = recorder();
    const emitter = new Emitter(nc, { prefix: v.prefix, origin: v.origin, recovery: v.recovery ? [v.ns] : [] });
    let op = emitter.of(v.ns);
    for (const r of v.to) op = op.to(r);
    if (v.except.length) op = op.except(v.except);
    if (v.volatile) op = op.volatile;
    if (!v.compress) op = op.compress(false);
    await op.emit(v.event, ...revive(v.args));
    assert.deepEqual(nc.out, v.publish, v.name);
  }
});

test('commands match', async () => {
  for (const v of VECTORS.commands) {
    const nc = recorder();
    let op = new Emitter(nc, { prefix: v.prefix, origin: v.origin }).of(v.ns).to(v.to);
    if (v.except.length) op = op.except(v.except);
    if ('join' in v.action) await op.socketsJoin(v.action.join);
    else if ('leave' in v.action) await op.socketsLeave(v.action.leave);
    else await op.disconnectSockets(v.action.disconnect);
    assert.deepEqual(nc.out, [{ subject: v.subject, jetstream: false, payload: v.payload }], v.name);
  }
});

test('serverSideEmit matches', async () => {
  for (const v of VECTORS.server_side_emits) {
    const nc = recorder();
    await new Emitter(nc, { prefix: v.prefix, origin: v.origin }).of(v.ns).serverSideEmit(v.event, ...revive(v.args));
    assert.deepEqual(nc.out, [{ subject: v.subject, jetstream: false, payload: v.payload }], v.event);
  }
});

test('refusals: reserved events, long names, bad namespaces, oversized messages', async () => {
  const nc = recorder({ maxPayload: 100 });
  const e = new Emitter(nc);
  for (const ev of VECTORS.reserved_events) {
    await assert.rejects(e.emit(ev), /reserved event name/);
    await assert.rejects(e.serverSideEmit(ev), /reserved event name/);
  }
  assert.throws(() => e.to('x'.repeat(VECTORS.max_name_bytes + 1)), /too long/);
  assert.throws(() => e.of('/a,b'), /cannot contain/);
  assert.throws(() => e.to(42), /must be a string/);
  await assert.rejects(e.emit('big', 'x'.repeat(200)), /message too large: \d+ bytes, the bus takes at most 100/);
  await assert.rejects(e.serverSideEmit('x'.repeat(VECTORS.max_name_bytes + 1)), /too long/);
  assert.deepEqual(nc.out, []);
  assert.throws(() => new Emitter(nc, { prefix: 'a..b' }), /invalid subject prefix/);
  assert.equal(new Emitter(nc).of('chat').nsp, '/chat');
});

test('a logged emit rejects when the log did not store it', async () => {
  const nc = recorder({ jetstreamFails: true });
  await assert.rejects(new Emitter(nc, { recovery: ['/chat'] }).of('/chat').emit('news'), /no responders/);
  // `of(ns, { recovery })` overrides the option both ways.
  await new Emitter(nc, { recovery: ['/chat'] }).of('/chat', { recovery: false }).emit('news');
  assert.equal(nc.out.length, 1);
  assert.equal(nc.out[0].jetstream, false);
});
