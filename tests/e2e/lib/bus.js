'use strict';
// The NATS side of the cluster for the tests: the subject builder (proto/src/subject.rs's kinds, on
// the Node emitter's escaping), the protobuf messages of proto/proto/bus.proto
// (loaded at runtime with protobufjs, field names as in the .proto file), and a small client
// that publishes deliveries and commands, subscribes to notices and decodes what it receives.
//
// NATS credentials: a nats-server started by cluster.js with the shipped permissions registers
// its users here by URL (`registerAuth`); `open` and worker.js then connect with the role they
// play (`e2e`, the tests' own probe allowed everything; `worker`, the shipped worker user)
// without each test passing credentials around.

const path = require('node:path');
const protobuf = require('protobufjs');
const { connect } = require('nats');
const { REPO } = require('./server');

const PROTO = path.join(REPO, 'proto', 'proto', 'bus.proto');
const PACKAGE = 'switchboard.bus.v1';

let root = null;
/** The protobuf Root of bus.proto (loaded once, snake_case field names kept). */
function proto() {
  if (!root) root = new protobuf.Root().loadSync(PROTO, { keepCase: true });
  return root;
}

/** The message type `name` of the package, e.g. `Envelope`. */
function type(name) {
  return proto().lookupType(`${PACKAGE}.${name}`);
}

/** Encodes a plain object as message `name`; throws on a field the schema does not have. */
function encode(name, object) {
  const T = type(name);
  const problem = T.verify(object);
  if (problem) throw new Error(`${name}: ${problem}`);
  return T.encode(T.fromObject(object)).finish();
}

/** Decodes message `name` to a plain object: defaults filled in, oneofs named, longs as strings. */
function decode(name, bytes) {
  const T = type(name);
  return T.toObject(T.decode(bytes), { longs: String, defaults: true, oneofs: true, bytes: Buffer });
}

// The escaping and its bound are the Node emitter's (emitters/node/lib/wire.js, tested against
// the vectors proto/src/subject.rs writes): one copy in JavaScript, not one per user.
const { escape, bounded, MAX_NAME_BYTES } = require(path.join(REPO, 'emitters', 'node', 'lib', 'wire.js'));

/**
 * The subjects of one cluster (prefix `p`), as built by proto/src/subject.rs `Subjects`: a name
 * over MAX_NAME_BYTES throws, as the Rust builders refuse it.
 */
function subjects(prefix) {
  const build = (kind, names, suffix = []) => {
    for (const name of names) bounded(name);
    return [prefix, ...kind.split(' '), ...names.map(escape), ...suffix].join('.');
  };
  return {
    prefix,
    member: (node) => build('member', [node]),
    allMembers: () => build('member', [], ['*']),
    heartbeat: (node) => build('heartbeat', [node]),
    room: (ns, room) => build('room', [ns, room]),
    namespace: (ns) => build('ns', [ns]),
    node: (node) => build('node', [node]),
    commandNamespace: (ns) => build('cmd ns', [ns]),
    commandNode: (node) => build('cmd node', [node]),
    event: (ns, event) => build('event', [ns, event]),
    allEventsIn: (ns) => build('event', [ns], ['*']),
    allEvents: () => build('event', [], ['>']),
    connect: (ns) => build('life', [ns], ['connect']),
    disconnect: (ns) => build('life', [ns], ['disconnect']),
    allLife: () => build('life', [], ['>']),
    resync: () => build('resync', []),
    snapshot: (node) => build('snapshot', [node]),
    presence: (ns) => build('presence', [ns]),
    allPresence: () => build('presence', [], ['*']),
    reserve: () => build('broker', [], ['reserve']),
    sync: (server) => build('sync', [server]),
    server: (ns, event) => build('srv', [ns, event]),
  };
}

/**
 * The Engine.IO text frame of a Socket.IO EVENT packet as a client receives it:
 * `42/chat,["event",...args]`, or `42["event",...]` for the main namespace.
 */
function eventPacket(ns, event, ...args) {
  const nsp = ns === '/' ? '' : `${ns},`;
  return Buffer.from(`42${nsp}${JSON.stringify([event, ...args])}`, 'utf8');
}

/** Options for NATS clients of the tests: reconnect forever, quickly (NATS restarts). */
const NATS_OPTIONS = { reconnect: true, maxReconnectAttempts: -1, reconnectTimeWait: 200, waitOnFirstConnect: true };

/** Users of the nats-servers started with permissions: url → { role: { user, pass } }. */
const AUTH = new Map();

/** Records the users of the nats-server at `url` (cluster.js). */
function registerAuth(url, users) {
  AUTH.set(url, users);
}

/** `{ user, pass }` of `role` at the nats-server at `url`, or {} when it runs without auth. */
function credentials(url, role) {
  const users = AUTH.get(url);
  if (!users) return {};
  if (!users[role]) throw new Error(`no NATS user for ${role} at ${url}`);
  return users[role];
}

/**
 * A NATS client on the cluster's bus. `open({ url, prefix })` resolves to
 * { nc, subjects, deliver(), command(), listen(), close() }.
 */
async function open({ url, prefix, name = 'e2e-bus', role = 'e2e' }) {
  const nc = await connect({ servers: url, name, ...NATS_OPTIONS, ...credentials(url, role) });
  const s = subjects(prefix);
  const subs = [];
  return {
    nc,
    subjects: s,
    /** Publishes `Envelope{delivery}` on `subject`; resolves once the server has it. */
    async deliver(subject, { origin = 'e2e', ns, target = {}, packet, attachments = [], volatile = false }) {
      nc.publish(subject, encode('Envelope', { delivery: { origin, ns, target, packet, attachments, volatile } }));
      await nc.flush();
    },
    /** Publishes `Envelope{command}` (`action` is { join } | { leave } | { disconnect }). */
    async command(subject, { origin = 'e2e', ns, target = {}, ...action }) {
      nc.publish(subject, encode('Envelope', { command: { origin, ns, target, ...action } }));
      await nc.flush();
    },
    /**
     * Subscribes to `subject` and records every message decoded as `typeName`:
     * resolves to { messages: [{ subject, msg }], unsubscribe() } once the server has the
     * subscription.
     */
    async listen(subject, typeName, opts = {}) {
      const messages = [];
      const sub = nc.subscribe(subject, {
        ...opts,
        callback: (err, m) => {
          if (err) return;
          let msg;
          try {
            msg = decode(typeName, m.data);
          } catch (e) {
            msg = { undecodable: e.message };
          }
          messages.push({ subject: m.subject, msg });
        },
      });
      subs.push(sub);
      await nc.flush();
      return { messages, unsubscribe: () => sub.unsubscribe() };
    },
    async close() {
      for (const sub of subs) sub.unsubscribe();
      await nc.drain().catch(() => nc.close());
    },
  };
}

module.exports = {
  PROTO,
  proto,
  type,
  encode,
  decode,
  escape,
  subjects,
  eventPacket,
  open,
  NATS_OPTIONS,
  MAX_NAME_BYTES,
  registerAuth,
  credentials,
};
