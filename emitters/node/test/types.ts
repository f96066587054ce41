// Compiled (never run) by `tsc --noEmit`: the declared API takes what the README shows and
// refuses what it should.
import { connect } from 'nats';
import { Emitter, BroadcastOperator, RESERVED_EVENTS } from '..';

export async function usage(): Promise<void> {
  const nc = await connect({ servers: 'nats://127.0.0.1:4222', user: 'emitter', pass: 'secret' });
  const emitter = new Emitter(nc, { prefix: 'sio', origin: 'billing', recovery: ['/chat'] });
  const chat: Emitter = emitter.of('/chat');
  const op: BroadcastOperator = chat.to('room').to(['a', 'b']).in('c').except('muted').volatile.compress(false);
  await op.emit('news', { text: 'hi' }, Buffer.from([1, 2]), new Uint8Array(3));
  await chat.emit('plain');
  await chat.to('r').socketsJoin('vip');
  await chat.socketsLeave(['a', 'b']);
  await chat.in('spam').disconnectSockets(true);
  await chat.serverSideEmit('cache.flush', 1);
  await emitter.of('/x', { recovery: false }).flush();
  const reserved: boolean = RESERVED_EVENTS.has('connect');
  void reserved;
  // @ts-expect-error rooms are strings
  chat.to(42);
  // @ts-expect-error unknown option
  new Emitter(nc, { prefx: 'sio' });
  // @ts-expect-error emit needs an event name
  await chat.emit();
}
