'use strict';
// Graceful drain and a rolling restart behind nginx: sid-routed (deploy/nginx/switchboard-sid.conf)
// and round robin (switchboard-roundrobin.conf, where most requests and WebSockets are passed on
// or relayed by a gateway that does not own the session, and a draining gateway also ends the
// connections it relays, spread over its window).
//
// Three gateways with a drain window; clients (polling-only and upgrading, official
// socket.io-client with its default reconnection) connect through nginx and, as application
// logic, join their room again on every `connect`. A sender keeps relaying messages into the
// rooms. Each gateway in turn gets SIGTERM, drains (its sessions are closed one by one over the
// window; new handshakes are refused with 503 and nginx retries them on another gateway) and
// exits 0; it is started again on the same port before the next one goes. The test checks that
// every client ends up connected and back in its room (the broker's view equals the clients'
// truth, and a last relay reaches every room mate), that the drained gateway's room mates saw its
// sockets leave cleanly rather than through the lease, and that no session was opened on a
// gateway while it was draining.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { io } = require('socket.io-client');
const { startCluster, startGateway, waitFor, brokerTruth } = require('../lib/cluster');
const { startNginx } = require('../lib/nginx');
const { token, CONFIG, ENV, NS, OK } = require('../lib/members');
const { within } = require('../lib/client');

const DRAIN_MS = 1500;
const CLIENTS = 18;
const ROOMS = 3;
/** Upper bounds for convergence; nothing here asserts a duration. */
const SETTLE_MS = 20_000;

/** A client that rejoins its room on every connect and records every session it had. */
class Client {
  constructor(url, i) {
    this.room = `rolling-${i % ROOMS}`;
    this.user = `user${i}`;
    this.sessions = []; // { id, node, at } for each connect
    this.joinedId = null; // the socket id whose join was acknowledged
    this.says = [];
    this.presence = [];
    this.socket = io(`${url}${NS}`, {
      transports: i % 2 ? ['polling'] : ['polling', 'websocket'],
      forceNew: true,
      reconnectionDelay: 100,
      reconnectionDelayMax: 500,
      randomizationFactor: 0.5,
      timeout: 5000,
      auth: { token: token(this.user) },
    });
    this.socket.on('connect', () => {
      const id = this.socket.id;
      this.sessions.push({ id, node: id.split('.')[0], at: Date.now() });
      this.socket
        .timeout(5000)
        .emitWithAck('join', this.room)
        .then((res) => {
          if (res && res.ok && this.socket.id === id) this.joinedId = id;
        })
        .catch(() => {
          // the connection went away before the ack; the next connect joins again
        });
    });
    this.socket.on('say', (msg) => this.says.push(msg));
    this.socket.on('presence', (ev) => this.presence.push(ev));
  }

  get ready() {
    return this.socket.connected && this.joinedId === this.socket.id;
  }

  close() {
    this.socket.disconnect();
  }
}

function rollingRestart(conf) {
  describe(`graceful drain: a rolling restart of every gateway behind nginx (${conf})`, () => {
    let cluster;
    let nginx;
    const clients = [];
    const env = { ...ENV, SWITCHBOARD_DRAIN_MS: String(DRAIN_MS) };
    before(async () => {
      cluster = await startCluster({ config: CONFIG, env, gateways: 3 });
      nginx = await startNginx(conf, cluster.gateways);
    });
    after(async () => {
      for (const c of clients) c.close();
      if (nginx) await nginx.stop();
      if (cluster) {
        await Promise.allSettled(cluster.gateways.map((g) => g.stop()));
        await cluster.stop();
      }
    });

    const settled = (what) => waitFor(() => clients.every((c) => c.ready), { timeoutMs: SETTLE_MS, what });

    const brokerAgrees = (what) =>
      waitFor(
        async () => {
          const got = brokerTruth(await cluster.broker.state(), { ns: NS });
          const want = Object.fromEntries(
            clients
              .map((c) => [c.socket.id, [c.room]])
              .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
          );
          return JSON.stringify(got) === JSON.stringify(want);
        },
        { timeoutMs: SETTLE_MS, what },
      );

    it('every client reconnects and rejoins, nobody lands on a draining gateway, each exits 0', async () => {
      for (let i = 0; i < CLIENTS; i++) clients.push(new Client(nginx.url, i));
      await settled('every client connected and in its room');
      const firstNodes = new Set(clients.map((c) => c.sessions[0].node));
      assert.ok(firstNodes.size >= 2, `handshakes spread over the gateways: ${[...firstNodes]}`);

      // Load: one relay into each room every 50 ms from one of its members, all along.
      let round = 0;
      const load = setInterval(() => {
        for (let r = 0; r < ROOMS; r++) {
          const sender = clients.find((c) => c.room === `rolling-${r}` && c.ready);
          if (sender) sender.socket.emit('say', { room: sender.room, text: `load ${round}` });
        }
        round += 1;
      }, 50);

      const draining = []; // { node, from, to }
      try {
        for (let g = 0; g < cluster.gateways.length; g++) {
          const gw = cluster.gateways[g];
          await settled(`every client settled before ${gw.nodeId} is restarted`);
          const onIt = clients.filter((c) => c.socket.id.startsWith(`${gw.nodeId}.`)).length;
          const window = { node: gw.nodeId, from: Date.now(), to: null };
          draining.push(window);
          // SIGTERM: the gateway drains over DRAIN_MS and exits on its own (SIGKILL only if it hangs).
          await gw.stop(DRAIN_MS + 10_000);
          window.to = Date.now();
          const status = await gw.exitStatus();
          assert.deepEqual(status, { code: 0, signal: null }, `${gw.nodeId} exit status (it held ${onIt} clients)`);
          assert.match(gw.logs(), /closing sessions over the drain window/);
          cluster.gateways[g] = await startGateway({
            natsUrl: cluster.nats.url,
            nodeId: gw.nodeId,
            prefix: cluster.prefix,
            config: CONFIG,
            env: { ...env, SWITCHBOARD_PORT: String(gw.port), PORT: String(gw.port) },
          });
        }
        await settled('every client connected and back in its room after the rolling restart');
      } finally {
        clearInterval(load);
      }

      // No session was opened on a gateway between its SIGTERM and its exit.
      for (const w of draining) {
        const opened = clients.flatMap((c) => c.sessions).filter((s) => s.node === w.node && s.at > w.from && s.at <= w.to);
        assert.deepEqual(opened, [], `sessions opened on ${w.node} while it drained`);
      }
      // Every client was moved at least once (each gateway was restarted) and is connected now.
      for (const c of clients) {
        assert.ok(c.sessions.length >= 2, `${c.user} reconnected: ${JSON.stringify(c.sessions)}`);
        assert.ok(c.socket.connected, `${c.user} connected at the end`);
      }
      // Room mates saw the drained sockets leave with their disconnect reason, never by lease expiry.
      const left = clients.flatMap((c) => c.presence).filter((ev) => ev.kind === 'member_left');
      assert.ok(left.length > 0, 'room mates were told about sockets leaving');
      const lost = left.filter((ev) => ev.reason === 'node_lost');
      assert.deepEqual(lost, [], 'no socket was purged through the lease');
      // The broker's view is the clients' truth: the latest session of each, in its room.
      await brokerAgrees('the broker state to equal the clients after the rolling restart');
      // A last relay from one member of each room reaches every other member.
      for (let r = 0; r < ROOMS; r++) {
        const room = clients.filter((c) => c.room === `rolling-${r}`);
        const text = `final ${r}`;
        assert.deepEqual(await room[0].socket.timeout(5000).emitWithAck('say', { room: room[0].room, text }), OK);
        await within(
          waitFor(() => room.slice(1).every((c) => c.says.some((m) => m.text === text)), {
            timeoutMs: SETTLE_MS,
            what: `${text} at every member of ${room[0].room}`,
          }),
          `${text} delivered`,
          SETTLE_MS + 1000,
        );
      }
    });
  });
}

rollingRestart('switchboard-sid.conf');
rollingRestart('switchboard-roundrobin.conf');
