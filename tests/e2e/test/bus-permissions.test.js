'use strict';
// The bus is least-privileged (issue 12, point 5): a real nats-server running the shipped
// permissions (deploy/nats/nats-conf.sh, through lib/cluster.js), the broker and two gateways.
// Each attempt uses the credential of the role it impersonates and asserts what the server says
// (a permissions violation, never routed) and that nothing changed: the socket stays connected
// and still gets deliveries, and the broker's view still equals what the clients know.
// Without the permissions (no auth), the same kick disconnects the socket: it did before this
// file existed, which is why it exists.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { connect } = require('nats');
const YAML = require('yaml');
const { startCluster, waitFor, natsServerBin } = require('../lib/cluster');
const bus = require('../lib/bus');
const { Members, converged, CONFIG, ENV, NS, OK } = require('../lib/members');
const { REPO } = require('../lib/server');
// The emitter package's subject builder (it has `server`, the srv subjects, which lib/bus.js lacks).
const { Subjects } = require('../../../emitters/node/lib/wire');

const GENERATOR = path.join(REPO, 'deploy', 'nats', 'nats-conf.sh');

describe('the shipped NATS configurations', () => {
  const generated = (...args) => execFileSync('bash', [GENERATOR, ...args], { encoding: 'utf8' });
  const k8s = () => YAML.parseAllDocuments(fs.readFileSync(path.join(REPO, 'deploy', 'k8s', 'nats.yaml'), 'utf8'))
    .map((d) => d.toJS())
    .find((o) => o.kind === 'ConfigMap');

  it('are the output of deploy/nats/nats-conf.sh (compose and local: gw1..gw3; Kubernetes: gw0..gw2)', () => {
    assert.equal(fs.readFileSync(path.join(REPO, 'deploy', 'nats', 'auth.conf'), 'utf8'), generated());
    assert.equal(k8s().data['auth.conf'], generated('sio', 'gw0', 'gw1', 'gw2'));
  });

  it('are accepted by nats-server, with every password from the environment', () => {
    const bin = natsServerBin();
    assert.ok(bin, 'nats-server not found: apt-get install nats-server');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-nats-conf-'));
    try {
      const env = { ...process.env, NATS_BROKER_PASSWORD: 'sba', NATS_WORKER_PASSWORD: 'sbb', NATS_EMITTER_PASSWORD: 'sbc' };
      for (const n of [0, 1, 2, 3]) env[`NATS_PASSWORD_GW${n}`] = `sbgw${n}`;
      const check = (name, conf, auth) => {
        fs.writeFileSync(path.join(dir, 'auth.conf'), auth);
        fs.writeFileSync(path.join(dir, name), conf);
        const out = execFileSync(bin, ['-c', path.join(dir, name), '-t'], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
        return out;
      };
      check('nats.conf', fs.readFileSync(path.join(REPO, 'deploy', 'nats', 'nats.conf'), 'utf8'), generated());
      const cm = k8s();
      check('k8s.conf', cm.data['nats.conf'], cm.data['auth.conf']);
      // A password the environment does not give is an error, not an empty password.
      for (const variable of ['NATS_WORKER_PASSWORD', 'NATS_EMITTER_PASSWORD']) {
        const saved = env[variable];
        delete env[variable];
        assert.throws(() => check('nats.conf', fs.readFileSync(path.join(REPO, 'deploy', 'nats', 'nats.conf'), 'utf8'), generated()), variable);
        env[variable] = saved;
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * A raw NATS client as `role`, recording the server's permission violations:
 * { nc, s (subjects), publish(subject, bytes), refused(subject) → resolves on the violation }.
 */
async function as(cluster, role) {
  const nc = await connect({ servers: cluster.nats.url, name: `e2e-${role}`, ...bus.NATS_OPTIONS, ...bus.credentials(cluster.nats.url, role) });
  const violations = [];
  let waiters = [];
  (async () => {
    for await (const status of nc.status()) {
      if (status.type !== 'error' || status.data !== 'PERMISSIONS_VIOLATION') continue;
      violations.push(status.permissionContext);
      waiters = waiters.filter((w) => !(w.match(status.permissionContext) && (w.resolve(status.permissionContext), true)));
    }
  })();
  return {
    nc,
    s: bus.subjects(cluster.prefix),
    /** Publishes and flushes: a refused publish is reported (asynchronously) by the server. */
    async publish(subject, bytes) {
      nc.publish(subject, bytes);
      await nc.flush();
    },
    /**
     * Resolves once the server reported a permissions violation for publishing to `subject`
     * (`operation` 'subscription': for subscribing to it).
     */
    refused(subject, operation = 'publish') {
      const match = (ctx) => ctx && ctx.operation === operation && ctx.subject === subject;
      const seen = violations.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve) => waiters.push({ match, resolve }));
    },
    close: () => nc.drain().catch(() => nc.close()),
  };
}

const kick = (ns) => bus.encode('Envelope', { command: { origin: 'mallory', ns, target: {}, disconnect: { close_connection: true } } });
const delivery = (ns, room, event, payload) =>
  bus.encode('Envelope', { delivery: { origin: 'e2e', ns, target: { rooms: [room] }, packet: bus.eventPacket(ns, event, payload) } });

/** The value of a gateway counter series (0 when absent) from its metrics text. */
async function counter(gw, series) {
  const text = await (await fetch(`${gw.operatorUrl || gw.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.split(' ')[1]) : 0;
}

describe('bus permissions: the shipped NATS users, with a real nats-server', () => {
  let cluster;
  const members = new Members();
  const clients = [];
  let victim; // a socket on gw1, in room "lobby"
  let watcher; // a socket on gw2, in room "lobby"
  let worker;

  before(async () => {
    cluster = await startCluster({ config: CONFIG, env: ENV, gateways: 2 });
    const [g1, g2] = cluster.gateways;
    victim = await members.connect(g1);
    watcher = await members.connect(g2);
    for (const m of [victim, watcher]) assert.deepEqual(await m.join('lobby'), OK);
    await converged(() => cluster.broker.state(), members);
    worker = await as(cluster, 'worker');
    clients.push(worker);
  });

  after(async () => {
    members.closeAll();
    for (const c of clients) await c.close();
    if (cluster) await cluster.stop();
  });

  /** The socket is still connected and served: a worker emit to its room reaches it. */
  async function stillServed(tag) {
    assert.equal(victim.socket.connected, true, `${tag}: the socket is still connected`);
    await worker.publish(worker.s.room(NS, 'lobby'), delivery(NS, 'lobby', 'alive', { tag }));
    await victim.until('alive', (args) => args[0] && args[0].tag === tag);
    await converged(() => cluster.broker.state(), members, { what: `${tag}: the broker's view unchanged` });
  }

  it('a kick (Command) published with the worker credential is refused by the server and changes nothing', async () => {
    const before = await cluster.broker.state();
    // Without the permissions the kick goes through: the socket is disconnected at once.
    const kicked = new Promise((resolve) => victim.socket.once('disconnect', resolve)).then((reason) => {
      throw new Error(`the kick went through: the socket was disconnected (${reason})`);
    });
    for (const subject of [worker.s.commandNode('gw1'), worker.s.commandNamespace(NS), worker.s.node('gw1')]) {
      await worker.publish(subject, kick(NS));
      const ctx = await Promise.race([worker.refused(subject), kicked]);
      assert.equal(ctx.subject, subject);
    }
    await stillServed('after the refused kicks');
    assert.deepEqual((await cluster.broker.state()).sockets.map((s) => s.id).sort(), before.sockets.map((s) => s.id).sort());
  });

  it('a Command on a delivery subject the worker may publish to is refused by the gateway and counted', async () => {
    const [g1] = cluster.gateways;
    const series = 'switchboard_gateway_bus_refused_total{why="command_on_delivery_subject"}';
    const seen = await counter(g1, series);
    // The server lets the worker publish to room and namespace subjects: the gateway refuses it.
    await worker.publish(worker.s.namespace(NS), kick(NS));
    await worker.publish(worker.s.room(NS, 'lobby'), kick(NS));
    await waitFor(async () => (await counter(g1, series)) >= seen + 2, { what: `${series} counts both` });
    await stillServed('after the commands on delivery subjects');
  });

  it('heartbeats, membership, resync and snapshot requests with the worker credential are refused', async () => {
    const beat = bus.encode('Heartbeat', { node: 'gw1', address: '127.0.0.1:1' });
    const sync = worker.s.sync(worker.nc.info.server_id);
    const cases = [
      [worker.s.heartbeat('gw1'), beat],
      [worker.s.member('gw1'), bus.encode('MemberMessage', { node: 'gw1', leaving: {} })],
      [worker.s.resync(), bus.encode('ResyncRequest', { broker: 'mallory' })],
      [worker.s.snapshot('gw1'), bus.encode('SnapshotRequest', { broker: 'mallory' })],
      [sync, new Uint8Array(0)],
    ];
    for (const [subject, bytes] of cases) {
      await worker.publish(subject, bytes);
      await worker.refused(subject);
    }
    // Nor may it answer the gateways' join barrier in their place.
    const s = worker.nc.subscribe(sync);
    (async () => { for await (const _ of s) { /* nothing may arrive */ } })().catch(() => {});
    await worker.nc.flush();
    await worker.refused(sync, 'subscription');
    await stillServed('after the refused control messages');
  });

  it("a gateway credential cannot publish another node's heartbeat, and a body naming another node is not trusted", async () => {
    const gw1 = await as(cluster, 'gateway-gw1');
    clients.push(gw1);
    const liar = bus.encode('Heartbeat', { node: 'gw2', address: '127.0.0.1:1' });
    await gw1.publish(gw1.s.heartbeat('gw2'), liar);
    await gw1.refused(gw1.s.heartbeat('gw2'));
    await gw1.publish(gw1.s.member('gw2'), bus.encode('MemberMessage', { node: 'gw2', leaving: {} }));
    await gw1.refused(gw1.s.member('gw2'));
    // On its own subject, a heartbeat whose body names gw2 reaches gw2, which refuses it.
    const [, g2] = cluster.gateways;
    const series = 'switchboard_gateway_bus_refused_total{why="heartbeat_node"}';
    const seen = await counter(g2, series);
    await gw1.publish(gw1.s.heartbeat('gw1'), liar);
    await waitFor(async () => (await counter(g2, series)) > seen, { what: `${series} on gw2` });
    // A gateway credential asks the join barrier's sync subject of its NATS server, where a
    // gateway answers (at once, empty).
    const answer = await gw1.nc.request(gw1.s.sync(gw1.nc.info.server_id), new Uint8Array(0), { timeout: 5000 });
    assert.equal(answer.data.length, 0);
    // Nor may a gateway publish commands.
    await gw1.publish(gw1.s.commandNode('gw2'), kick(NS));
    await gw1.refused(gw1.s.commandNode('gw2'));
    assert.equal(watcher.socket.connected, true);
    await stillServed('after the gateway credential attempts');
  });

  it('the emitter credential: emits to rooms and sockets pass; control messages, node commands and reads are refused', async () => {
    const emitter = await as(cluster, 'emitter');
    clients.push(emitter);
    const srv = new Subjects(cluster.prefix);
    // Allowed: a room emit (a client on another gateway gets it), an emit to one socket on its
    // node's subject, and a server-side event, which the worker credential may read.
    await emitter.publish(emitter.s.room(NS, 'lobby'), delivery(NS, 'lobby', 'from-emitter', { n: 1 }));
    await watcher.until('from-emitter');
    const toVictim = bus.encode('Envelope', {
      delivery: { origin: 'e2e', ns: NS, target: { socket_ids: [victim.socket.id] }, packet: bus.eventPacket(NS, 'direct', 1) },
    });
    await emitter.publish(emitter.s.node('gw1'), toVictim);
    await victim.until('direct');
    const heard = [];
    const sub = worker.nc.subscribe(srv.server(NS, 'cache.flush'), { callback: (err, m) => err || heard.push(m.data) });
    await worker.nc.flush();
    const event = bus.encode('ServerSideEmit', { origin: 'e2e', ns: NS, event: 'cache.flush', args_json: '[]' });
    await emitter.publish(srv.server(NS, 'cache.flush'), event);
    await waitFor(() => heard.length === 1, { what: 'the worker credential reads the server-side event' });
    sub.unsubscribe();
    // Refused: what brokers and gateways must be trusted for, and commands to a node's subject.
    const beat = bus.encode('Heartbeat', { node: 'gw1', address: '127.0.0.1:1' });
    const refusedPublishes = [
      [emitter.s.heartbeat('gw1'), beat],
      [emitter.s.member('gw1'), bus.encode('MemberMessage', { node: 'gw1', leaving: {} })],
      [emitter.s.resync(), bus.encode('ResyncRequest', { broker: 'mallory' })],
      [emitter.s.snapshot('gw1'), bus.encode('SnapshotRequest', { broker: 'mallory' })],
      [emitter.s.commandNode('gw1'), kick(NS)],
      [emitter.s.reserve(), bus.encode('ReserveRequest', { ns: NS, room: 'lobby', socket_id: victim.socket.id, max_members: 1 })],
      [`${cluster.prefix}.broker.recover`, bus.encode('RecoverRequest', { ns: NS, node: 'gw1' })],
      [emitter.s.event(NS, 'say'), bus.encode('ClientEvent', { ns: NS, event: 'say' })],
      [emitter.s.connect(NS), bus.encode('LifeEvent', { node: 'gw1' })],
      [emitter.s.presence(NS), bus.encode('PresenceEvent', { ns: NS })],
    ];
    for (const [subject, bytes] of refusedPublishes) {
      await emitter.publish(subject, bytes);
      await emitter.refused(subject);
    }
    // It reads nothing of the cluster: deliveries, membership, forwarded events, server-side events.
    for (const subject of [emitter.s.room(NS, 'lobby'), emitter.s.allMembers(), emitter.s.allEvents(), srv.server(NS, 'cache.flush')]) {
      const s = emitter.nc.subscribe(subject);
      (async () => { for await (const _ of s) { /* nothing may arrive */ } })().catch(() => {});
      await emitter.nc.flush();
      await emitter.refused(subject, 'subscription');
    }
    await stillServed('after the emitter credential attempts');
  });

  it('a worker still emits to a room, and a client on another gateway receives it', async () => {
    await worker.publish(worker.s.room(NS, 'lobby'), delivery(NS, 'lobby', 'news', { from: 'worker' }));
    await watcher.until('news');
    assert.deepEqual(watcher.of('news'), [[{ from: 'worker' }]]);
  });
});
