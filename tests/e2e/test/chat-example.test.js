'use strict';
// The worked example end to end: nats-server, the broker, two gateways running deploy/chat.toml
// and the chat worker (worker/examples/chat_worker.rs), with official socket.io-client users on
// both gateways: private messages by user id, rooms with a password and a member limit, speech
// in rooms, and the worker's notices from the broker's presence stream.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { io } = require('socket.io-client');
const { startNats, startBroker, startGateway, uniquePrefix, waitFor } = require('../lib/cluster');
const { hs256, now } = require('../lib/client');
const { REPO } = require('../lib/server');

const SECRET = 'chat-example-secret-0123456789abcdef';
const CONFIG = path.join(REPO, 'deploy', 'chat.toml');
const TARGET = process.env.CARGO_TARGET_DIR ? path.resolve(REPO, process.env.CARGO_TARGET_DIR) : path.join(REPO, 'target');
const WORKER = process.env.SWITCHBOARD_CHAT_WORKER_BIN || path.join(TARGET, 'release', 'examples', 'chat_worker');

/** Starts the worker; resolves once it says it is ready. */
function startWorker(env) {
  return new Promise((resolve, reject) => {
    const child = spawn(WORKER, [], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const timer = setTimeout(() => reject(new Error(`chat worker not ready within 15 s:\n${out}`)), 15_000);
    const onData = (chunk) => {
      out += chunk;
      if (out.includes('chat worker ready')) {
        clearTimeout(timer);
        resolve({
          stop: () =>
            new Promise((done) => {
              if (child.exitCode !== null) return done();
              child.once('exit', done);
              child.kill('SIGKILL');
            }),
        });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`chat worker exited (${code}):\n${out}`));
    });
    process.once('exit', () => child.kill('SIGKILL'));
  });
}

/** A user's socket on `gateway`, connected; records every event it gets. */
async function user(gateway, sub) {
  const socket = io(`${gateway.url}/chat`, {
    transports: ['websocket'],
    auth: { token: hs256({ sub, iat: now(), exp: now() + 600 }, SECRET) },
    reconnection: false,
  });
  socket.got = [];
  socket.onAny((event, ...args) => socket.got.push({ event, args }));
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
  return socket;
}

const received = (socket, event) => socket.got.filter((g) => g.event === event).map((g) => g.args[0]);

describe('worked example: chat worker behind two gateways', () => {
  let nats;
  let broker;
  let gw1;
  let gw2;
  let worker;
  const sockets = [];

  before(async () => {
    const prefix = uniquePrefix();
    // The shipped NATS permissions: the worker acts only through its replies, deliveries to rooms
    // and reservations, never with commands.
    nats = await startNats({ auth: { prefix, nodes: ['chat1', 'chat2'] } });
    broker = await startBroker({ natsUrl: nats.url, prefix, env: { SWITCHBOARD_BROKER_LEADER: 'always' } });
    const env = { CHAT_JWT_SECRET: SECRET };
    [gw1, gw2] = await Promise.all([
      startGateway({ natsUrl: nats.url, nodeId: 'chat1', prefix, config: CONFIG, env }),
      startGateway({ natsUrl: nats.url, nodeId: 'chat2', prefix, config: CONFIG, env }),
    ]);
    worker = await startWorker({
      SWITCHBOARD_NATS_URL: nats.url,
      SWITCHBOARD_NATS_USER: nats.users.worker.user,
      SWITCHBOARD_NATS_PASSWORD: nats.users.worker.pass,
      SWITCHBOARD_SUBJECT_PREFIX: prefix,
      CHAT_MAX_MEMBERS: '10',
    });
  });

  after(async () => {
    for (const s of sockets) s.close();
    if (worker) await worker.stop();
    await Promise.allSettled([gw1, gw2].filter(Boolean).map((g) => g.stop()));
    if (broker) await broker.stop();
    if (nats) await nats.stop();
  });

  it('a private message reaches every socket of the user, on both gateways, once', async () => {
    const aliceTab1 = await user(gw1, 'alice');
    const aliceTab2 = await user(gw2, 'alice');
    const bob = await user(gw2, 'bob');
    sockets.push(aliceTab1, aliceTab2, bob);
    // The room subscriptions follow the broker-visible membership: wait until both tabs count.
    await waitFor(async () => (await broker.state()).sockets.filter((s) => s.user === 'alice').length === 2, { what: 'alice twice in the broker' });
    const ack = await bob.timeout(5000).emitWithAck('pm', { to: 'alice', text: 'hello alice' });
    assert.deepEqual(ack, { ok: true });
    for (const tab of [aliceTab1, aliceTab2]) {
      await waitFor(() => received(tab, 'pm').length > 0, { what: 'the pm on each tab' });
    }
    await new Promise((r) => setTimeout(r, 300));
    for (const tab of [aliceTab1, aliceTab2]) {
      assert.deepEqual(received(tab, 'pm'), [{ from: 'bob', text: 'hello alice' }]);
    }
    assert.deepEqual(received(bob, 'pm'), [], 'the sender is not a recipient');
    const bad = await bob.timeout(5000).emitWithAck('pm', { to: 'alice' });
    assert.deepEqual(bad, { ok: false, error: 'bad request' });
  });

  it('rooms keep their password and member limit across gateways; members speak, others not', async () => {
    const ann = await user(gw1, 'ann');
    const ben = await user(gw2, 'ben');
    const cat = await user(gw1, 'cat');
    sockets.push(ann, ben, cat);
    await waitFor(async () => (await broker.state()).sockets.filter((s) => ['ann', 'ben', 'cat'].includes(s.user)).length === 3, {
      what: 'ann, ben and cat in the broker',
    });
    assert.deepEqual(await ann.timeout(5000).emitWithAck('join', { room: 'den', password: 'pw', limit: 2 }), { ok: true, room: 'den' });
    assert.deepEqual(await ben.timeout(5000).emitWithAck('join', { room: 'den', password: 'nope' }), { ok: false, error: 'wrong password' });
    assert.deepEqual(await ben.timeout(5000).emitWithAck('join', { room: 'den', password: 'pw' }), { ok: true, room: 'den' });
    assert.deepEqual(await cat.timeout(5000).emitWithAck('join', { room: 'den', password: 'pw' }), { ok: false, error: 'room full' });
    await waitFor(
      async () => {
        const den = (await broker.state()).sockets.filter((s) => s.rooms.includes('den')).map((s) => s.user);
        return den.sort().join() === 'ann,ben';
      },
      { what: 'ann and ben (only) in den' },
    );
    // ann hears that ben joined (the worker's notice from the broker's presence stream).
    await waitFor(() => received(ann, 'notice').some((n) => n.kind === 'user_joined' && n.user === 'ben' && n.room === 'den'), {
      what: 'notice: ben joined #den',
    });
    assert.deepEqual(await ben.timeout(5000).emitWithAck('say', { room: 'den', text: 'hi den' }), { ok: true });
    await waitFor(() => received(ann, 'say').length === 1, { what: 'ann hears ben' });
    assert.deepEqual(received(ann, 'say'), [{ from: 'ben', room: 'den', text: 'hi den' }]);
    assert.deepEqual(await cat.timeout(5000).emitWithAck('say', { room: 'den', text: 'let me in' }), { ok: false, error: 'not a member' });
    // ben leaves: ann is told, with the reason.
    ben.close();
    await waitFor(() => received(ann, 'notice').some((n) => n.kind === 'user_left' && n.user === 'ben' && n.room === 'den'), {
      what: 'notice: ben left #den',
    });
    await waitFor(() => received(ann, 'notice').some((n) => n.kind === 'user_offline' && n.user === 'ben'), { what: 'notice: ben is offline' });
    assert.deepEqual(received(ben, 'say'), [], 'the speaker does not hear itself');
  });

  it('a user coming online is announced to the namespace', async () => {
    const dan = await user(gw1, 'dan');
    sockets.push(dan);
    const eve = await user(gw2, 'eve');
    sockets.push(eve);
    await waitFor(() => received(dan, 'notice').some((n) => n.kind === 'user_online' && n.user === 'eve'), { what: 'notice: eve is online' });
  });
});
