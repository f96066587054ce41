'use strict';
// Connection state recovery across gateways (docs/recovery.md), with the official
// socket.io-client through nginx (round robin) in front of three gateways, a broker and
// nats-server with JetStream: /chat of fixtures/recovery.toml keeps a dropped client's session
// for 4 s.
//
// (a) a client's transport is killed while another gateway relays into its room: it comes back
//     with the same id, `recovered`, and every message once and in order;
// (b) the same after its gateway is killed with -9;
// (c) the same after its gateway drains;
// (d) after the window, the client gets a fresh session (new id, not recovered), and the room
//     sees it leave once, with its original reason;
// (e) acks and `data` work on a recovered socket;
// and after each case the broker's state equals what the clients know.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { io } = require('socket.io-client');
const { startCluster, startGateway, waitFor, brokerTruth } = require('../lib/cluster');
const { startNginx } = require('../lib/nginx');
const { Members, token, ENV, NS } = require('../lib/members');
const { within } = require('../lib/client');
const { adminClient } = require('../lib/admin');

const CONFIG = 'recovery.toml';
const TOKEN = 'e2e-admin-token-0123456789';
const CLUSTER_ENV = { ...ENV, SWITCHBOARD_ADMIN_TOKEN: TOKEN, SWITCHBOARD_GRPC_PORT: '0', SWITCHBOARD_DRAIN_MS: '500' };
const WINDOW_MS = 4000;
/** Upper bounds for convergence; nothing here asserts a duration. */
const SETTLE_MS = 15_000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** An official client through nginx that reconnects by itself and records what it gets. */
class Client {
  constructor(url, user, { reconnectionDelay = 300 } = {}) {
    this.user = user;
    this.connects = []; // { id, recovered } for every connect
    this.says = []; // the `n` of every `say`, in arrival order
    this.socket = io(`${url}${NS}`, {
      transports: ['websocket'],
      forceNew: true,
      reconnectionDelay,
      reconnectionDelayMax: reconnectionDelay,
      randomizationFactor: 0,
      timeout: 5000,
      auth: { token: token(user) },
    });
    this.socket.on('connect', () => this.connects.push({ id: this.socket.id, recovered: this.socket.recovered }));
    this.socket.on('say', (msg) => this.says.push(msg.n));
  }

  async connected(count = 1) {
    await waitFor(() => this.connects.length >= count && this.socket.connected, {
      timeoutMs: SETTLE_MS,
      what: `${this.user}: connect #${count}`,
    });
    return this.connects[count - 1];
  }

  ack(event, ...args) {
    return within(this.socket.timeout(5000).emitWithAck(event, ...args), `ack of ${event} from ${this.user}`, 6000);
  }

  close() {
    this.socket.disconnect();
  }
}

/** The broker's connected sockets of /chat as { id: [rooms] } (kept sessions left out). */
async function connectedTruth(broker) {
  const state = await broker.state();
  return brokerTruth({ sockets: state.sockets.filter((s) => !s.state || s.state === 'connected') }, { ns: NS });
}

/** The node the broker has socket `id` on. */
async function nodeOf(broker, id) {
  const state = await broker.state();
  const s = state.sockets.find((x) => x.id === id);
  return s && s.node;
}

describe('connection state recovery across three gateways behind nginx', () => {
  let cluster;
  let nginx;
  let members;
  let sender;
  let n = 0;
  const restarted = [];

  before(async () => {
    cluster = await startCluster({
      gateways: 3,
      config: CONFIG,
      env: CLUSTER_ENV,
    });
    nginx = await startNginx('switchboard-roundrobin.conf', cluster.gateways);
    members = new Members();
  });

  after(async () => {
    if (members) members.closeAll();
    if (nginx) await nginx.stop();
    await Promise.allSettled(restarted.map((gw) => gw.stop()));
    if (cluster) await cluster.stop();
  });

  /** A sender on a gateway that is alive, in `room`. */
  async function senderIn(room) {
    if (!sender || sender.gone) {
      const gw = cluster.gateways.find((g) => !g.dead);
      sender = await members.connect(gw, { user: 'sender' });
    }
    if (!sender.rooms.has(room)) assert.deepEqual(await sender.join(room), { ok: true });
    return sender;
  }

  /** Relays `count` numbered messages into `room`, acknowledged one by one. */
  async function say(room, count) {
    const s = await senderIn(room);
    const sent = [];
    for (let i = 0; i < count; i += 1) {
      n += 1;
      sent.push(n);
      assert.deepEqual(await s.ack('say', { room, n }), { ok: true });
    }
    return sent;
  }

  /** Drops `client` by `drop()`, relays while it is away, and checks what it got back. */
  async function dropAndRecover(client, room, drop) {
    const before = client.connects.length;
    const first = client.connects[0];
    const earlier = await say(room, 3);
    await waitFor(() => earlier.every((x) => client.says.includes(x)), { timeoutMs: SETTLE_MS, what: 'the first messages' });
    await drop();
    const missed = await say(room, 5);
    const back = await client.connected(before + 1);
    assert.equal(back.id, first.id, 'the same socket id');
    assert.equal(back.recovered, true, 'socket.recovered');
    const later = await say(room, 3);
    const expected = [...client.expected, ...earlier, ...missed, ...later];
    await waitFor(() => client.says.length >= expected.length, { timeoutMs: SETTLE_MS, what: 'every message' });
    await sleep(200);
    assert.deepEqual(client.says, expected, 'every message once, in order');
    client.expected = expected;
    const truth = { ...members.truth({ ns: NS }), [first.id]: [room].sort() };
    await waitFor(async () => JSON.stringify(await connectedTruth(cluster.broker)) === JSON.stringify(sortKeys(truth)), {
      timeoutMs: SETTLE_MS,
      what: 'the broker state to equal the truth',
    });
  }

  /** Starts a stopped gateway again on its port (nginx's upstream), for the next cases. */
  async function restart(gw) {
    const i = cluster.gateways.indexOf(gw);
    cluster.gateways[i] = await startGateway({
      natsUrl: cluster.nats.url,
      nodeId: gw.nodeId,
      prefix: cluster.prefix,
      config: CONFIG,
      env: { ...CLUSTER_ENV, SWITCHBOARD_PORT: String(gw.port), PORT: String(gw.port) },
    });
    restarted.push(cluster.gateways[i]);
  }

  function sortKeys(o) {
    return Object.fromEntries(Object.keys(o).sort().map((k) => [k, o[k]]));
  }

  async function joined(client, room) {
    await client.connected();
    assert.deepEqual(await client.ack('join', room), { ok: true });
    client.expected = [];
    return client;
  }

  it('(a) a killed transport: same id, recovered, every missed message once and in order', async () => {
    const alice = await joined(new Client(nginx.url, 'alice'), 'ra');
    await dropAndRecover(alice, 'ra', async () => alice.socket.io.engine.close());
    // And it is a full member again: a second drop recovers as well.
    await dropAndRecover(alice, 'ra', async () => alice.socket.io.engine.close());
    alice.close();
  });

  it('(b) its gateway killed with -9', async () => {
    const bob = await joined(new Client(nginx.url, 'bob'), 'rb');
    const node = await waitFor(() => nodeOf(cluster.broker, bob.connects[0].id), { what: "bob's node" });
    const gw = cluster.gateways.find((g) => g.nodeId === node);
    // No sender on the gateway about to go.
    gw.dead = true;
    if (sender && sender.gw === gw) sender.gone = true;
    await dropAndRecover(bob, 'rb', () => gw.kill());
    await restart(gw);
    bob.close();
  });

  it('(c) its gateway drains', async () => {
    const carol = await joined(new Client(nginx.url, 'carol'), 'rc');
    const node = await waitFor(() => nodeOf(cluster.broker, carol.connects[0].id), { what: "carol's node" });
    const gw = cluster.gateways.find((g) => g.nodeId === node);
    gw.dead = true;
    if (sender && sender.gw === gw) sender.gone = true;
    await dropAndRecover(carol, 'rc', () => gw.stop());
    await restart(gw);
    carol.close();
  });

  it('(d) after the window: a fresh session, and the room sees the old one leave once', async () => {
    const dave = await joined(new Client(nginx.url, 'dave', { reconnectionDelay: WINDOW_MS + 2000 }), 'rd');
    const watcher = await senderIn('rd');
    const first = dave.connects[0];
    dave.socket.io.engine.close();
    await say('rd', 2);
    const back = await dave.connected(2);
    assert.notEqual(back.id, first.id, 'a new socket id');
    assert.equal(back.recovered, false);
    await waitFor(
      () => watcher.of('presence', ([ev]) => ev.kind === 'member_left' && ev.socket === first.id).length === 1,
      { timeoutMs: SETTLE_MS, what: 'member_left for the expired session' },
    );
    const left = watcher.of('presence', ([ev]) => ev.kind === 'member_left' && ev.socket === first.id);
    assert.equal(left[0][0].reason, 'transport close');
    const state = await cluster.broker.state();
    assert.ok(!state.sockets.some((s) => s.id === first.id), 'the expired session is gone from the broker');
    dave.close();
  });

  it('(e) acks and data work on a recovered socket', async () => {
    const erin = await joined(new Client(nginx.url, 'erin'), 're');
    const id = erin.connects[0].id;
    const admin = adminClient(cluster.broker.grpcAddr, TOKEN);
    const fetched = async () => {
      const got = await admin.call('FetchSockets', { selector: { ns: NS, socket_ids: [id] } });
      return got.sockets[0];
    };
    try {
      const res = await admin.call('UpdateSocketData', { socket_id: id, data_json: JSON.stringify({ score: 7 }) });
      assert.equal(res.updated, true);
      await dropAndRecover(erin, 're', async () => erin.socket.io.engine.close());
      assert.deepEqual(await erin.ack('join', 're2'), { ok: true }, 'an ack on the recovered socket');
      const s = await waitFor(async () => {
        const x = await fetched();
        return x && x.rooms.includes('re2') && x;
      }, { timeoutMs: SETTLE_MS, what: 'the recovered socket in its new room' });
      assert.deepEqual(JSON.parse(s.data_json), { score: 7 }, 'data kept across the recovery');
    } finally {
      admin.close();
    }
    erin.close();
  });
});
