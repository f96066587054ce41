'use strict';
// The bus contract as the emitter writes it, with no I/O: NATS subjects (a port of the Switchboard
// repository's proto/src/subject.rs), Socket.IO frames (as the gateways' encoder writes them) and
// the few protobuf messages of proto/proto/bus.proto an emitter sends. Checked byte for byte
// against emitters/vectors.json, which the Rust code produces (test/wire.test.js).

/** Longest namespace, room or event name a subject takes, in UTF-8 bytes. */
const MAX_NAME_BYTES = 256;

/** Event names Socket.IO keeps for itself (proto/src/lib.rs RESERVED_EVENTS). */
const RESERVED_EVENTS = new Set([
  'connect',
  'connect_error',
  'disconnect',
  'disconnecting',
  'newListener',
  'removeListener',
]);

/** ASCII letters, digits and `-` stay as they are in a subject token. */
function isLiteral(b) {
  return (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x2d;
}

/**
 * One NATS subject token for any name, injectively: ASCII letters, digits and `-` kept, every
 * other byte of the UTF-8 encoding as `_` and two uppercase hex digits, the empty name as `_`.
 */
function escape(name) {
  if (name === '') return '_';
  let out = '';
  for (const b of Buffer.from(name, 'utf8')) {
    out += isLiteral(b) ? String.fromCharCode(b) : `_${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** `name` if a subject takes it (a string of at most MAX_NAME_BYTES UTF-8 bytes); else throws. */
function bounded(name, what = 'name') {
  if (typeof name !== 'string') throw new TypeError(`${what} must be a string, got ${typeof name}`);
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes > MAX_NAME_BYTES) {
    throw new RangeError(`${what} too long for a subject: ${bytes} bytes (at most ${MAX_NAME_BYTES})`);
  }
  return name;
}

const PREFIX = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;

/** The subjects of one cluster, as proto/src/subject.rs `Subjects` builds them. */
class Subjects {
  constructor(prefix = 'sio') {
    if (typeof prefix !== 'string' || !PREFIX.test(prefix) || prefix.length > 128 || prefix.split('.')[0] === '_INBOX') {
      throw new Error(`invalid subject prefix ${JSON.stringify(prefix)}: expected dot-separated tokens of A-Z a-z 0-9 _ -, at most 128 bytes`);
    }
    this.prefix = prefix;
  }

  build(kind, names, suffix = []) {
    for (const n of names) bounded(n);
    return [this.prefix, ...kind, ...names.map(escape), ...suffix].join('.');
  }

  room(ns, room) { return this.build(['room'], [ns, room]); }
  namespace(ns) { return this.build(['ns'], [ns]); }
  node(node) { return this.build(['node'], [node]); }
  commandNamespace(ns) { return this.build(['cmd', 'ns'], [ns]); }
  server(ns, event) { return this.build(['srv'], [ns, event]); }
  logRoom(ns, room) { bounded(room); return `${this.build(['log'], [ns], ['r'])}.${escape(room)}`; }
  logNamespace(ns) { return this.build(['log'], [ns], ['n']); }
  logSocket(ns, id) { bounded(id); return `${this.build(['log'], [ns], ['s'])}.${escape(id)}`; }
  /** The JetStream stream of the recovery log: the prefix with `.` as `_`, then `_log`. */
  logStream() { return `${this.prefix.replace(/\./g, '_')}_log`; }
}

/**
 * Whether a name given to `to()` / `except()` is a socket id rather than a room: the shape every
 * gateway issues, `{node}.{random}` (node: 1 to 32 of a-z 0-9; random: 16 URL-safe base64).
 */
function isSocketId(name) {
  return /^[a-z0-9]{1,32}\.[A-Za-z0-9_-]{16}$/.test(name);
}

// ---- Socket.IO frames ---------------------------------------------------------------------------

function isBinary(v) {
  return Buffer.isBuffer(v) || v instanceof Uint8Array || v instanceof ArrayBuffer || ArrayBuffer.isView(v);
}

function toBuffer(v) {
  if (Buffer.isBuffer(v)) return v;
  if (v instanceof ArrayBuffer) return Buffer.from(v);
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

/**
 * `value` with every binary value (Buffer, typed array, ArrayBuffer) replaced by its placeholder
 * `{"_placeholder":true,"num":N}` and pushed onto `out`, in socket.io-parser's order (arrays in
 * order, objects in key order).
 */
function deconstruct(value, out) {
  if (isBinary(value)) {
    out.push(toBuffer(value));
    return { _placeholder: true, num: out.length - 1 };
  }
  if (Array.isArray(value)) return value.map((v) => deconstruct(v, out));
  if (value && typeof value === 'object' && !(value instanceof Date) && typeof value.toJSON !== 'function') {
    const copy = {};
    for (const [k, v] of Object.entries(value)) copy[k] = deconstruct(v, out);
    return copy;
  }
  return value;
}

/**
 * The Engine.IO text frame of a Socket.IO EVENT as clients receive it, and its attachments:
 * `42/chat,["ev",...]`, `451-/chat,["ev",{"_placeholder":true,"num":0}]`, `42["ev"]` in `/`.
 */
function eventFrame(ns, event, args) {
  const attachments = [];
  const data = deconstruct([event, ...args], attachments);
  const nsp = ns === '/' ? '' : `${ns},`;
  const head = attachments.length ? `45${attachments.length}-` : '42';
  return { packet: Buffer.from(`${head}${nsp}${JSON.stringify(data)}`, 'utf8'), attachments };
}

// ---- protobuf (proto3: defaults are not written, fields in number order) -----------------------

function varint(out, n) {
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
}

/** A length-delimited field, written even when empty (repeated elements, sub-messages). */
function lenField(parts, field, bytes) {
  const head = [];
  varint(head, (field << 3) | 2);
  varint(head, bytes.length);
  parts.push(Buffer.from(head), bytes);
}

/** A string or bytes field: left out when empty. */
function optField(parts, field, bytes) {
  if (bytes.length) lenField(parts, field, typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes);
}

function str(s) {
  return Buffer.from(s, 'utf8');
}

function boolField(parts, field, b) {
  if (b) parts.push(Buffer.from([field << 3, 1]));
}

function repeated(parts, field, items) {
  for (const it of items) lenField(parts, field, typeof it === 'string' ? str(it) : it);
}

/** Target { rooms = 1; except_rooms = 2; except_sockets = 3; socket_ids = 4; } */
function encodeTarget(t) {
  const p = [];
  repeated(p, 1, t.rooms);
  repeated(p, 2, t.exceptRooms);
  repeated(p, 3, t.exceptSockets);
  repeated(p, 4, t.socketIds);
  return Buffer.concat(p);
}

/**
 * Envelope { delivery = 1: Delivery { origin, ns, target, packet, attachments, volatile,
 * uncompressed = 8 } }
 */
function encodeDelivery({ origin, ns, target, packet, attachments, volatile, uncompressed }) {
  const d = [];
  optField(d, 1, str(origin));
  optField(d, 2, str(ns));
  lenField(d, 3, encodeTarget(target));
  optField(d, 4, packet);
  repeated(d, 5, attachments);
  boolField(d, 6, volatile);
  boolField(d, 8, uncompressed);
  const env = [];
  lenField(env, 1, Buffer.concat(d));
  return Buffer.concat(env);
}

/**
 * Envelope { command = 2: Command { origin, ns, target, join = 10 | leave = 11 | disconnect = 12 } }.
 * `action` is { join: [rooms] } | { leave: [rooms] } | { disconnect: close }.
 */
function encodeCommand({ origin, ns, target, action }) {
  const c = [];
  optField(c, 1, str(origin));
  optField(c, 2, str(ns));
  lenField(c, 3, encodeTarget(target));
  const body = [];
  if ('join' in action || 'leave' in action) {
    repeated(body, 1, action.join ?? action.leave);
    lenField(c, 'join' in action ? 10 : 11, Buffer.concat(body));
  } else {
    boolField(body, 1, action.disconnect);
    lenField(c, 12, Buffer.concat(body));
  }
  const env = [];
  lenField(env, 2, Buffer.concat(c));
  return Buffer.concat(env);
}

/** ServerSideEmit { origin = 1; ns = 2; event = 3; args_json = 4; attachments = 5; } */
function encodeServerSideEmit({ origin, ns, event, argsJson, attachments }) {
  const p = [];
  optField(p, 1, str(origin));
  optField(p, 2, str(ns));
  optField(p, 3, str(event));
  optField(p, 4, str(argsJson));
  repeated(p, 5, attachments);
  return Buffer.concat(p);
}

module.exports = {
  MAX_NAME_BYTES,
  RESERVED_EVENTS,
  escape,
  bounded,
  Subjects,
  isSocketId,
  deconstruct,
  eventFrame,
  encodeDelivery,
  encodeCommand,
  encodeServerSideEmit,
};
