// Types of @switchboard-io/emitter (checked by `tsc --noEmit` in `npm test`: test/types.ts).
import type { NatsConnection } from 'nats';

/** What the emitter needs of a NATS connection (a `NatsConnection` of the `nats` package). */
export type Connection = Pick<NatsConnection, 'publish' | 'jetstream' | 'flush' | 'info'>;

export interface EmitterOptions {
  /** The cluster's subject prefix (`[cluster] subject_prefix` of the gateways). Default `sio`. */
  prefix?: string;
  /** The name this service publishes as (`origin` of its messages). Default `emitter`. */
  origin?: string;
  /**
   * The namespaces with connection state recovery (`[namespace.recovery]` in the gateways'
   * configuration): their emits go into the recovery log. Must match the gateways.
   */
  recovery?: string[];
}

export type Room = string;

/** Event names Socket.IO keeps for itself; emitting one is refused. */
export declare const RESERVED_EVENTS: ReadonlySet<string>;

export declare class BroadcastOperator {
  /** Targets a room or a socket id (or several); the union of every `to`. */
  to(room: Room | Room[]): BroadcastOperator;
  /** Same as `to`. */
  in(room: Room | Room[]): BroadcastOperator;
  /** Leaves out the members of a room, or a socket (or several). */
  except(room: Room | Room[]): BroadcastOperator;
  /** The emit may be dropped for clients that are not ready; never logged for recovery. */
  readonly volatile: BroadcastOperator;
  /**
   * Whether the gateways may compress the emit (permessage-deflate, gzip of a polling
   * response), as socket.io's `compress(bool)`; default `true`.
   */
  compress(compress: boolean): BroadcastOperator;
  /**
   * Emits to the selected clients. Buffers, typed arrays and ArrayBuffers anywhere in `args` are
   * sent as binary attachments. Resolves once published (a logged emit: once the log stored it).
   */
  emit(ev: string, ...args: unknown[]): Promise<void>;
  /** Makes the selected sockets join the rooms. */
  socketsJoin(rooms: Room | Room[]): Promise<void>;
  /** Makes the selected sockets leave the rooms. */
  socketsLeave(rooms: Room | Room[]): Promise<void>;
  /** Disconnects the selected sockets; with `close`, closes their whole connection. */
  disconnectSockets(close?: boolean): Promise<void>;
}

export declare class Emitter {
  constructor(nc: Connection, opts?: EmitterOptions, nsp?: string);
  /** The namespace this emitter targets (with its leading `/`). */
  readonly nsp: string;
  /** The same emitter for another namespace; `recovery` overrides the option for it. */
  of(nsp: string, opts?: { recovery?: boolean }): Emitter;
  emit(ev: string, ...args: unknown[]): Promise<void>;
  to(room: Room | Room[]): BroadcastOperator;
  in(room: Room | Room[]): BroadcastOperator;
  except(room: Room | Room[]): BroadcastOperator;
  readonly volatile: BroadcastOperator;
  compress(compress: boolean): BroadcastOperator;
  socketsJoin(rooms: Room | Room[]): Promise<void>;
  socketsLeave(rooms: Room | Room[]): Promise<void>;
  disconnectSockets(close?: boolean): Promise<void>;
  /** An event for the namespace's backends (`{prefix}.srv.{ns}.{event}`), never for clients. */
  serverSideEmit(ev: string, ...args: unknown[]): Promise<void>;
  /** Resolves once the NATS server has everything published so far. */
  flush(): Promise<void>;
}
