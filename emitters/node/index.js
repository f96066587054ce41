'use strict';
// @switchboard-io/emitter: emit to the Socket.IO clients of a Switchboard cluster from any Node
// service, over the cluster's NATS bus, with the API of @socket.io/redis-emitter. README.md says
// how; lib/wire.js holds the bus contract (subjects, frames, protobuf).

const wire = require('./lib/wire');

const DEFAULT_ORIGIN = 'emitter';

/** `nsp` with its leading `/` (as socket.io's `of()` adds it); a `,` cannot be in a frame's namespace. */
function namespaceName(nsp) {
  if (typeof nsp !== 'string') throw new TypeError(`namespace must be a string, got ${typeof nsp}`);
  const ns = nsp.startsWith('/') ? nsp : `/${nsp}`;
  if (ns.includes(',')) throw new Error(`invalid namespace ${JSON.stringify(ns)}: a namespace cannot contain ","`);
  return wire.bounded(ns, 'namespace');
}

/** A room or an array of rooms, as a list of bounded names. */
function roomList(rooms) {
  const list = Array.isArray(rooms) ? rooms : [rooms];
  return list.map((r) => wire.bounded(r, 'room'));
}

function checkEvent(ev) {
  if (typeof ev !== 'string') throw new TypeError(`event name must be a string, got ${typeof ev}`);
  if (wire.RESERVED_EVENTS.has(ev)) throw new Error(`"${ev}" is a reserved event name`);
}

/** Each name once, in first-seen order. */
function unique(names) {
  return [...new Set(names)];
}

/** The Target of rooms and exceptions: socket ids apart from rooms (lib/wire.js isSocketId). */
function targetOf(rooms, except) {
  const ids = unique(rooms.filter(wire.isSocketId));
  const exceptIds = unique(except.filter(wire.isSocketId));
  return {
    rooms: unique(rooms.filter((r) => !wire.isSocketId(r))),
    exceptRooms: unique(except.filter((r) => !wire.isSocketId(r))),
    exceptSockets: exceptIds,
    socketIds: ids,
  };
}

/**
 * Where an emit goes, as the gateways route their own: `[{ subject, jetstream, target }]`.
 * Logged (a recovery namespace, not volatile): one room, one socket or the namespace's log
 * subject. Else socket ids only: each owner's node subject; one room: the room's subject;
 * anything else: the namespace's subject.
 */
function route(subjects, ns, target, { volatile, recovery }) {
  const { rooms, socketIds } = target;
  if (recovery && !volatile) {
    let subject;
    if (rooms.length === 1 && socketIds.length === 0) subject = subjects.logRoom(ns, rooms[0]);
    else if (rooms.length === 0 && socketIds.length === 1) subject = subjects.logSocket(ns, socketIds[0]);
    else subject = subjects.logNamespace(ns);
    return [{ subject, jetstream: true, target }];
  }
  if (rooms.length === 0 && socketIds.length > 0) {
    const owners = new Map();
    for (const id of socketIds) {
      const owner = id.slice(0, id.indexOf('.'));
      if (!owners.has(owner)) owners.set(owner, []);
      owners.get(owner).push(id);
    }
    return [...owners].map(([owner, ids]) => ({
      subject: subjects.node(owner),
      jetstream: false,
      target: { ...target, socketIds: ids },
    }));
  }
  const subject = rooms.length === 1 ? subjects.room(ns, rooms[0]) : subjects.namespace(ns);
  return [{ subject, jetstream: false, target }];
}

/** What every operator of one emitter shares. */
class Bus {
  constructor(nc, opts) {
    if (!nc || typeof nc.publish !== 'function') throw new TypeError('Emitter needs a connected NATS client (from `connect` of the `nats` package)');
    this.nc = nc;
    this.subjects = new wire.Subjects(opts.prefix ?? 'sio');
    this.origin = opts.origin ?? DEFAULT_ORIGIN;
    if (typeof this.origin !== 'string') throw new TypeError('origin must be a string');
    this.recovery = new Set((opts.recovery ?? []).map(namespaceName));
    this.js = null;
  }

  /** The server's max_payload (1 MiB when the client has not heard it yet). */
  maxPayload() {
    return this.nc.info?.max_payload ?? 1024 * 1024;
  }

  checkSize(payload) {
    const max = this.maxPayload();
    if (payload.length > max) {
      throw new RangeError(`message too large: ${payload.length} bytes, the bus takes at most ${max} (NATS max_payload)`);
    }
  }

  /** Publishes every message or none: all are encoded and measured first. */
  async publish(messages) {
    for (const m of messages) this.checkSize(m.payload);
    const acks = [];
    for (const { subject, payload, jetstream } of messages) {
      if (jetstream) {
        this.js ??= this.nc.jetstream();
        acks.push(this.js.publish(subject, payload));
      } else {
        this.nc.publish(subject, payload);
      }
    }
    // A JetStream publish resolves once the log stored it and rejects when it did not.
    await Promise.all(acks);
  }
}

/** A selection of sockets (rooms, exceptions) and flags (volatile, compress) in one namespace. */
class BroadcastOperator {
  constructor(bus, ns, recovery, rooms = [], except = [], flags = {}) {
    this.bus = bus;
    this.ns = ns;
    this.recovery = recovery;
    this.rooms = rooms;
    this.exceptRooms = except;
    this.flags = { volatile: false, compress: true, ...flags };
  }

  /** A copy with other rooms, exceptions or flags. */
  with({ rooms = this.rooms, except = this.exceptRooms, flags = {} }) {
    return new BroadcastOperator(this.bus, this.ns, this.recovery, rooms, except, { ...this.flags, ...flags });
  }

  /** Targets a room (or a socket id, or several): the union of all `to`s. */
  to(room) {
    return this.with({ rooms: [...this.rooms, ...roomList(room)] });
  }

  /** Same as `to`. */
  in(room) {
    return this.to(room);
  }

  /** Leaves out the members of a room (or a socket id, or several). */
  except(room) {
    return this.with({ except: [...this.exceptRooms, ...roomList(room)] });
  }

  /** The emit may be dropped for clients that are not ready (never logged for recovery). */
  get volatile() {
    return this.with({ flags: { volatile: true } });
  }

  /**
   * Whether the gateways may compress the emit (permessage-deflate, gzip of a polling response),
   * as socket.io's `compress(bool)`; default `true`. `compress(false)`: sent uncompressed.
   */
  compress(compress) {
    return this.with({ flags: { compress: Boolean(compress) } });
  }

  /** Emits to the selected clients; Buffers and typed arrays anywhere in `args` travel as binary. */
  async emit(ev, ...args) {
    checkEvent(ev);
    const { packet, attachments } = wire.eventFrame(this.ns, ev, args);
    const target = targetOf(this.rooms, this.exceptRooms);
    const messages = route(this.bus.subjects, this.ns, target, { volatile: this.flags.volatile, recovery: this.recovery }).map((r) => ({
      subject: r.subject,
      jetstream: r.jetstream,
      payload: wire.encodeDelivery({
        origin: this.bus.origin,
        ns: this.ns,
        target: r.target,
        packet,
        attachments,
        volatile: this.flags.volatile,
        uncompressed: !this.flags.compress,
      }),
    }));
    await this.bus.publish(messages);
  }

  /** Makes the selected sockets join `rooms`. */
  socketsJoin(rooms) {
    return this.command({ join: roomList(rooms) });
  }

  /** Makes the selected sockets leave `rooms`. */
  socketsLeave(rooms) {
    return this.command({ leave: roomList(rooms) });
  }

  /** Disconnects the selected sockets from the namespace; with `close`, closes their connection. */
  disconnectSockets(close = false) {
    return this.command({ disconnect: Boolean(close) });
  }

  async command(action) {
    const payload = wire.encodeCommand({
      origin: this.bus.origin,
      ns: this.ns,
      target: targetOf(this.rooms, this.exceptRooms),
      action,
    });
    await this.bus.publish([{ subject: this.bus.subjects.commandNamespace(this.ns), payload, jetstream: false }]);
  }
}

/**
 * Emits to a Switchboard cluster's clients through its NATS bus.
 *
 *   const emitter = new Emitter(nc, { prefix: 'sio', recovery: ['/chat'] });
 *   await emitter.of('/chat').to('room').except('muted').emit('news', { text: 'hi' });
 */
class Emitter {
  /**
   * @param nc a connected client of the `nats` package (the `emitter` NATS user)
   * @param opts `{ prefix = 'sio', origin = 'emitter', recovery = [] }`: the cluster's subject
   *   prefix, the name this service publishes as, and the namespaces that have
   *   `[namespace.recovery]` in the gateways' configuration
   * @param nsp the namespace (default `/`)
   */
  constructor(nc, opts = {}, nsp = '/', recovery = undefined) {
    this.bus = opts instanceof Bus ? opts : new Bus(nc, opts);
    this.nsp = namespaceName(nsp);
    this.recovery = recovery ?? this.bus.recovery.has(this.nsp);
    this.operator = new BroadcastOperator(this.bus, this.nsp, this.recovery);
  }

  /** The same emitter for another namespace; `{ recovery }` overrides the `recovery` option. */
  of(nsp, { recovery } = {}) {
    return new Emitter(this.bus.nc, this.bus, nsp, recovery);
  }

  emit(ev, ...args) { return this.operator.emit(ev, ...args); }
  to(room) { return this.operator.to(room); }
  in(room) { return this.operator.in(room); }
  except(room) { return this.operator.except(room); }
  get volatile() { return this.operator.volatile; }
  compress(compress) { return this.operator.compress(compress); }
  socketsJoin(rooms) { return this.operator.socketsJoin(rooms); }
  socketsLeave(rooms) { return this.operator.socketsLeave(rooms); }
  disconnectSockets(close = false) { return this.operator.disconnectSockets(close); }

  /**
   * Emits an event to the namespace's backends (workers and other services subscribed to
   * `{prefix}.srv.{ns}.{event}`), never to clients. No acknowledgements.
   */
  async serverSideEmit(ev, ...args) {
    checkEvent(ev);
    const attachments = [];
    const data = wire.deconstruct(args, attachments);
    const payload = wire.encodeServerSideEmit({
      origin: this.bus.origin,
      ns: this.nsp,
      event: ev,
      argsJson: JSON.stringify(data),
      attachments,
    });
    await this.bus.publish([{ subject: this.bus.subjects.server(this.nsp, ev), payload, jetstream: false }]);
  }

  /** Resolves once the NATS server has every message published so far (a round trip). */
  flush() {
    return this.bus.nc.flush();
  }
}

module.exports = { Emitter, BroadcastOperator, RESERVED_EVENTS: wire.RESERVED_EVENTS };
