'use strict';
// The bus on a 3-node NATS cluster (lib/cluster.js `startCluster({ natsNodes: 3 })`): three
// nats-servers joined by routes, with clustered JetStream and the shipped permissions; gateway gwK
// is given the node list starting at node K, the broker the list starting at n2, and the streams
// and buckets they make are R3 (SWITCHBOARD_NATS_REPLICAS=3). One node is killed with -9 while
// official socket.io-client members relay to a room on every gateway:
//
// - the processes whose node died fail over to another (their NATS client's server list), and
//   relays between every pair of gateways resume;
// - the broker's state equals what the clients know, including membership changes made after
//   the kill;
// - the brokers' leader lease (a JetStream KV bucket) survives the loss of the node leading its
//   stream: renewals go on and the broker stays the leader. With one replica (the old default)
//   the bucket dies with its node and the broker steps down for good: this suite fails.
//
// Messages in flight when a node dies are lost (core NATS is at most once); the suite counts them
// (a test diagnostic) and asserts only that nothing arrives twice. Nothing sleeps: every wait is
// on received events, the broker's /v1/state or nats-server's monitoring endpoints, with caps
// only so that a failure fails instead of hanging.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startCluster, startNatsCluster, uniquePrefix, waitFor } = require('../lib/cluster');
const { Members, converged, CONFIG, ENV, OK } = require('../lib/members');

/** Caps (not timings): failover takes well under a second on loopback. */
const FAILOVER_MS = 30_000;
const STATE_MS = 20_000;
/** Members per gateway in the loaded room (the first of each is also a sender). */
const PER_GATEWAY = 4;
/** Each sender relays one message per this many ms while the load runs. */
const EVERY_MS = 25;
const ROOM = 'load';

/** A member still connected and in the loaded room (a receiver the load is due to). */
const inRoom = (m) => !m.gone && m.rooms.has(ROOM);

const leaseStream = (prefix) => `KV_${prefix.replace(/\./g, '_')}_broker_leader`;

/** The index of the running node whose clients include one named `name` (prefix match), or -1. */
async function nodeOf(nats, name) {
  for (let i = 0; i < nats.nodes.length; i += 1) {
    if (nats.nodes[i].exited()) continue;
    if ((await nats.clients(i)).some((c) => c.startsWith(name))) return i;
  }
  return -1;
}

/** The lease bucket's stream as the first running node that holds a copy reports it, or null. */
async function leaseInfo(nats, prefix) {
  for (let i = 0; i < nats.nodes.length; i += 1) {
    if (nats.nodes[i].exited()) continue;
    const found = (await nats.streams(i)).find((s) => s.name === leaseStream(prefix));
    if (found) return found;
  }
  return null;
}

/**
 * Relays under load: every sender emits `say` { room, from, n } every EVERY_MS; every receiver
 * records, per sender, how often each n arrived. `mark()` is the last n each sender has sent.
 */
function relayLoad(members, senders) {
  const got = new Map(members.map((m) => [m, new Map()]));
  for (const m of members) {
    m.socket.on('say', (x) => {
      if (!x || x.room !== ROOM || typeof x.n !== 'number') return;
      const per = got.get(m);
      if (!per.has(x.from)) per.set(x.from, new Map());
      const seen = per.get(x.from);
      seen.set(x.n, (seen.get(x.n) || 0) + 1);
    });
  }
  const sent = new Map(senders.map((s) => [s.id, 0]));
  const timer = setInterval(() => {
    for (const s of senders) {
      if (s.gone) continue;
      const n = sent.get(s.id) + 1;
      sent.set(s.id, n);
      s.socket.emit('say', { room: ROOM, from: s.id, n });
    }
  }, EVERY_MS);
  const latest = (m, s) => {
    const seen = got.get(m).get(s.id);
    return seen ? Math.max(...seen.keys()) : 0;
  };
  return {
    mark: () => new Map(sent),
    stop: () => clearInterval(timer),
    /**
     * Whether every receiver still in the room has a relay of every other sender sent after
     * `mark` (false, not a truthy description, while one is missing: waitFor resolves on truthy).
     */
    resumedAfter(mark) {
      for (const m of members.filter(inRoom)) {
        for (const s of senders) {
          if (s === m || s.gone) continue;
          if (latest(m, s) <= mark.get(s.id)) return false;
        }
      }
      return true;
    },
    /** Per receiver and sender: how many of the sent relays never arrived, and any duplicate. */
    tally() {
      let lost = 0;
      const duplicates = [];
      const lostByPath = {};
      for (const m of members.filter(inRoom)) {
        for (const s of senders) {
          if (s === m) continue;
          const seen = got.get(m).get(s.id) || new Map();
          const missing = sent.get(s.id) - [...seen.keys()].filter((n) => n <= sent.get(s.id)).length;
          lost += missing;
          const path = `${s.gw.nodeId}→${m.gw.nodeId}`;
          lostByPath[path] = (lostByPath[path] || 0) + missing;
          for (const [n, count] of seen) if (count > 1) duplicates.push(`${path} #${n} ×${count}`);
        }
      }
      return { lost, lostByPath, duplicates };
    },
  };
}

describe('startNatsCluster (lib/cluster.js)', () => {
  let nats = null;
  after(async () => {
    if (nats) await nats.stop();
  });

  it('three nodes with routes, one meta leader, per-node kill and restart on the same ports', async () => {
    nats = await startNatsCluster({ nodes: 3, auth: { prefix: uniquePrefix(), nodes: ['gw1', 'gw2', 'gw3'] } });
    assert.equal(nats.urls.length, 3);
    assert.equal(new Set(nats.urls).size, 3, 'three distinct client URLs');
    assert.equal(nats.urlFor(0), nats.urls.join(','));
    assert.equal(nats.urlFor(1), [nats.urls[1], nats.urls[2], nats.urls[0]].join(','));
    assert.equal(nats.urlFor(5), nats.urlFor(2));
    for (let i = 0; i < 3; i += 1) {
      const routez = await nats.routez(i);
      assert.equal(new Set(routez.routes.map((r) => r.remote_id)).size, 2, `n${i + 1} routes to both others`);
      assert.equal((await nats.jsz(i)).meta_cluster.cluster_size, 3);
    }
    const { port, clusterPort } = nats.nodes[1];
    await nats.nodes[1].kill();
    assert.ok(nats.nodes[1].exited());
    await nats.formed();
    await nats.nodes[1].restart();
    assert.equal(nats.nodes[1].port, port, 'the same client port after the restart');
    assert.equal(nats.nodes[1].clusterPort, clusterPort, 'the same route port after the restart');
    await nats.formed();
    assert.equal(new Set((await nats.routez(1)).routes.map((r) => r.remote_id)).size, 2, 'n2 rejoined both others');
  });
});

describe("NATS cluster: a join's ack covers every node", () => {
  const members = new Members();
  let cluster = null;

  before(async () => {
    cluster = await startCluster({ config: CONFIG, env: ENV, gateways: 3, natsNodes: 3 });
  });
  after(async () => {
    members.closeAll();
    if (cluster) await cluster.stop();
  });

  // The joiner's gateway acks the join once its NATS node has the room's subscription and every
  // other node hosting a gateway has learnt it over the routes (the sync barrier, docs/cluster.md).
  // Without the second half, the relay below can reach the sender's node before the route's
  // RS+ and be dropped there. Whether a relay was lost is decided by a fence, not a timeout: the
  // sender relays fences to the room until one arrives; relays from one socket arrive in order,
  // so a relay missing once a later fence is in never arrives.
  it("a relay sent right after a remote member's join ack reaches it: 300 rounds across nodes, 0 lost", async (t) => {
    const { nats } = cluster;
    for (const [i, gw] of cluster.gateways.entries()) {
      assert.equal(await nodeOf(nats, `switchboard-gateway ${gw.nodeId}`), i, `${gw.nodeId} is on n${i + 1}, its own node`);
    }
    const gws = cluster.gateways;
    // No wait for heartbeats here: a gateway learns which NATS servers host the others from their
    // heartbeats, and answers news of a node with a heartbeat at once (docs/cluster.md), so the
    // gateway started last knows every other server a round trip after it listens. Before that,
    // a first CI run lost 1 of 300 (round 16, ~70 ms in) to a heartbeat interval of not knowing.
    // (sender, joiner) on every pair of nodes, both ways.
    const pairs = [];
    for (const [a, b] of [[0, 1], [1, 2], [2, 0], [1, 0], [2, 1], [0, 2]]) {
      pairs.push([await members.connect(gws[a]), await members.connect(gws[b])]);
    }
    const ROUNDS = 300;
    const lost = [];
    for (let i = 0; i < ROUNDS; i += 1) {
      const [sender, joiner] = pairs[i % pairs.length];
      const room = `ack-${i}`;
      assert.deepEqual(await sender.join(room), OK);
      assert.deepEqual(await joiner.join(room), OK);
      sender.socket.emit('say', { room, i });
      const fenced = (a) => a[0].room === room && a[0].fence !== undefined;
      for (let k = 0; !joiner.of('say', fenced).length; k += 1) {
        assert.ok(k < 100, `a fence of round ${i} reached ${joiner.gw.nodeId}`);
        sender.socket.emit('say', { room, fence: k });
        await joiner.until('say', fenced, 1, 100).catch(() => {});
      }
      if (!joiner.of('say', (a) => a[0].room === room && a[0].i === i).length) {
        lost.push(`${i} (${sender.gw.nodeId}→${joiner.gw.nodeId})`);
      }
      assert.deepEqual(await joiner.leave(room), OK);
      assert.deepEqual(await sender.leave(room), OK);
    }
    t.diagnostic(`relays lost right after a remote join ack: ${lost.length} of ${ROUNDS}`);
    assert.deepEqual(lost, [], `relays lost right after the join ack, in rounds ${JSON.stringify(lost)} of ${ROUNDS}`);
    // Every gateway's barriers went through the routes (answered sync round trips), none failed.
    for (const gw of gws) {
      const text = await (await fetch(`${gw.operatorUrl || gw.url}/metrics`)).text();
      const sync = text.split('\n').filter((l) => l.includes('op="sync"'));
      t.diagnostic(`${gw.nodeId}: ${sync.filter((l) => /_count|_errors_total/.test(l)).join('; ')}`);
      const answered = sync.find((l) => l.startsWith('switchboard_gateway_bus_request_seconds_count{'));
      assert.ok(answered && Number(answered.split(' ').pop()) > 0, `${gw.nodeId} made sync round trips`);
      assert.equal(sync.filter((l) => l.startsWith('switchboard_gateway_bus_errors_total')).length, 0, `${gw.nodeId}: no sync failed`);
    }
  });
});

describe('NATS cluster: a node killed with -9 under load', () => {
  const members = new Members();
  let cluster = null;
  let load = null;
  let all = [];
  let senders = [];

  before(async () => {
    cluster = await startCluster({ config: CONFIG, env: ENV, gateways: 3, natsNodes: 3 });
    for (const gw of cluster.gateways) {
      for (let k = 0; k < PER_GATEWAY; k += 1) {
        const m = await members.connect(gw);
        assert.deepEqual(await m.join(ROOM), OK);
        all.push(m);
      }
    }
    senders = cluster.gateways.map((gw) => all.find((m) => m.gw === gw));
    await converged(() => cluster.broker.state(), members, { timeoutMs: STATE_MS });
    load = relayLoad(all, senders);
  });
  after(async () => {
    if (load) load.stop();
    members.closeAll();
    if (cluster) await cluster.stop();
  });

  it('runs spread over the nodes, the lease bucket on three of them', async () => {
    const { nats, prefix } = cluster;
    for (const [i, gw] of cluster.gateways.entries()) {
      assert.equal(await nodeOf(nats, `switchboard-gateway ${gw.nodeId}`), i, `${gw.nodeId} is on n${i + 1}, its own node`);
    }
    assert.equal(await nodeOf(nats, 'switchboard-broker '), 1, 'the broker is on n2');
    const lease = await waitFor(() => leaseInfo(nats, prefix), { timeoutMs: STATE_MS, what: 'the lease bucket' });
    assert.equal(lease.config.num_replicas, 3, 'the lease bucket has three replicas');
    await waitFor(async () => (await cluster.broker.state()).leader === true, { timeoutMs: STATE_MS, what: 'the broker leads' });
    // Warm: every receiver has relays from every other sender, across every gateway pair.
    await waitFor(() => load.resumedAfter(new Map(senders.map((s) => [s.id, 0]))), {
      timeoutMs: STATE_MS,
      what: 'relays between every pair of gateways',
    });
  });

  it("gw1's node dies: gw1 fails over, relays resume on every path, the broker equals the truth", async (t) => {
    const { nats } = cluster;
    const mark = load.mark();
    await nats.nodes[0].kill();
    const moved = await waitFor(
      async () => {
        const at = await nodeOf(nats, 'switchboard-gateway gw1');
        return at > 0 ? at : false;
      },
      { timeoutMs: FAILOVER_MS, what: 'gw1 connected to another node' },
    );
    t.diagnostic(`gw1 failed over to n${moved + 1}`);
    await waitFor(() => load.resumedAfter(mark), { timeoutMs: FAILOVER_MS, intervalMs: 20, what: 'relays sent after the kill arriving on every path' });

    // Membership changes after the kill, on the gateway that lost its node and on the others.
    const [g1, g2, g3] = cluster.gateways;
    const quiet = all.filter((m) => !senders.includes(m));
    const leaver = quiet.find((m) => m.gw === g1);
    assert.deepEqual(await leaver.leave(ROOM), OK);
    assert.deepEqual(await leaver.join('after-kill'), OK);
    const gone = quiet.find((m) => m.gw === g1 && m !== leaver);
    gone.socket.disconnect();
    gone.gone = true;
    for (const gw of [g1, g2, g3]) {
      const m = await members.connect(gw);
      assert.deepEqual(await m.join('after-kill'), OK);
    }
    await converged(() => cluster.broker.state(), members, { what: 'the broker state after the node loss', timeoutMs: STATE_MS });
  });

  it('the node leading the lease bucket dies: renewals go on, the broker stays the leader', async (t) => {
    const { nats, prefix } = cluster;
    await nats.nodes[0].restart();
    await nats.formed();
    const before = await waitFor(
      async () => {
        const info = await leaseInfo(nats, prefix);
        return info && info.cluster && info.cluster.leader ? info : false;
      },
      { timeoutMs: STATE_MS, what: "the lease bucket's stream leader" },
    );
    const victim = nats.nodes.findIndex((n) => n.name === before.cluster.leader);
    assert.ok(victim >= 0, `the stream leader ${before.cluster.leader} is one of ours`);
    t.diagnostic(`killing n${victim + 1}, the lease bucket's stream leader (lease revision ${before.state.last_seq})`);
    const mark = load.mark();
    await nats.nodes[victim].kill();
    // Renewed at least twice since (every lease/3): the lease lives on the surviving copies.
    await waitFor(
      async () => {
        const info = await leaseInfo(nats, prefix);
        return info && info.state.last_seq >= before.state.last_seq + 2;
      },
      { timeoutMs: STATE_MS, what: 'lease renewals after the kill' },
    );
    await waitFor(async () => (await cluster.broker.state()).leader === true, { timeoutMs: STATE_MS, what: 'the broker still leads' });
    await waitFor(() => load.resumedAfter(mark), { timeoutMs: FAILOVER_MS, intervalMs: 20, what: 'relays sent after the second kill arriving on every path' });
    for (const gw of cluster.gateways) {
      const m = await members.connect(gw);
      assert.deepEqual(await m.join('after-second-kill'), OK);
    }
    await converged(() => cluster.broker.state(), members, { what: 'the broker state after the second node loss', timeoutMs: STATE_MS });
  });

  it('nothing arrived twice; what was lost is counted', async (t) => {
    load.stop();
    // A fence per sender on the same path: once each has arrived everywhere, so has every
    // earlier relay that is going to.
    for (const s of senders) s.socket.emit('say', { room: ROOM, from: s.id, fence: true });
    const receivers = all.filter(inRoom);
    await Promise.all(receivers.map((m) => m.until('say', (a) => a[0] && a[0].fence, senders.filter((s) => s !== m).length, FAILOVER_MS)));
    const { lost, lostByPath, duplicates } = load.tally();
    const sent = [...load.mark().values()].reduce((a, b) => a + b, 0);
    t.diagnostic(`relays sent ${sent} (${senders.length} senders), lost deliveries ${lost}: ${JSON.stringify(lostByPath)}`);
    assert.deepEqual(duplicates, [], 'no relay arrived twice');
  });
});
