'use strict';
// The shipped nginx configs (deploy/nginx/) in front of a real cluster: a nats-server, the broker
// and three gateways (lib/cluster.js), a real nginx (lib/nginx.js) running the file as shipped
// but for its addresses, and official socket.io-clients, polling-only and upgrading, all through
// nginx. Each client must keep its session (every polling request reaching the gateway that owns
// the sid, directly or passed on by the gateway it reached) and get a room's relays exactly once.
// Variant (c), plain round robin, works only because gateways pass requests for other gateways'
// sessions to their owner: the control at the end turns that off and sees sessions break.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startCluster, waitFor } = require('../lib/cluster');
const { startNginx } = require('../lib/nginx');
const { Members, converged, CONFIG, ENV, OK } = require('../lib/members');
const { within } = require('../lib/client');

const POLLING = ['polling'];
const UPGRADING = ['polling', 'websocket'];

/** Sum over the gateways of `switchboard_gateway_forwarded_requests_total` with result `ok`. */
async function forwardedOk(gateways) {
  let total = 0;
  for (const gw of gateways) {
    const text = await gw.metrics();
    for (const m of text.matchAll(/^switchboard_gateway_forwarded_requests_total\{([^}]*)\} (\d+)$/gm)) {
      if (/result="ok"/.test(m[1])) total += Number(m[2]);
    }
  }
  return total;
}

function throughNginx(file, { spread, forwards = false }) {
  describe(`nginx: deploy/nginx/${file}`, () => {
    let cluster;
    let nginx;
    const members = new Members();
    before(async () => {
      cluster = await startCluster({ config: CONFIG, env: ENV, gateways: 3 });
      nginx = await startNginx(file, cluster.gateways);
    });
    after(async () => {
      members.closeAll();
      if (nginx) await nginx.stop();
      if (cluster) await cluster.stop();
    });

    it('passes the client surface on and never the operator surfaces', async () => {
      for (const [p, want] of [['/health', 200], ['/ready', 200], ['/metrics', 404], ['/v1/state', 404], ['/metrics/', 404], ['/v1/state?x=1', 404], ['/anything', 404]]) {
        const res = await fetch(`${nginx.url}${p}`);
        await res.arrayBuffer();
        assert.equal(res.status, want, `GET ${p} through nginx`);
      }
      // The gateways do serve them, on their operator ports, which nginx is never told about.
      assert.equal((await fetch(`${cluster.gateways[0].operatorUrl}/metrics`)).status, 200);
    });

    it('polling-only and upgrading clients keep their sessions and get each relay once', async () => {
      const lb = { url: nginx.url };
      const polling = [];
      const upgrading = [];
      for (let i = 0; i < 6; i++) {
        polling.push(await members.connect(lb, { transports: POLLING }));
        upgrading.push(await members.connect(lb, { transports: UPGRADING }));
      }
      const everyone = [...polling, ...upgrading];
      for (const m of everyone) assert.deepEqual(await m.join('lb-room'), OK);
      await converged(() => cluster.broker.state(), members);
      // The upgrading clients are on WebSocket now; the polling ones stayed on polling.
      await waitFor(() => upgrading.every((m) => m.socket.io.engine.transport.name === 'websocket'), {
        what: 'the upgrading clients to upgrade through nginx',
      });
      for (const m of polling) assert.equal(m.socket.io.engine.transport.name, 'polling');
      const nodes = new Set(everyone.map((m) => m.id.split('.')[0]));
      if (spread) assert.ok(nodes.size >= 2, `handshakes balanced over the gateways: ${[...nodes]}`);
      // Three rounds of relays, each sender once: every other member gets each exactly once.
      const senders = [polling[0], upgrading[1], polling[5]];
      for (const [round, sender] of senders.entries()) {
        sender.socket.emit('say', { room: 'lb-room', text: `round ${round}` });
      }
      for (const m of everyone) {
        const want = senders.filter((s) => s !== m).length;
        await m.until('say', (a) => /^round /.test(a[0].text), want);
      }
      // A fence after the rounds: once it arrived, no duplicate can still be on its way.
      const fence = upgrading[0];
      fence.socket.emit('say', { room: 'lb-room', text: 'fence' });
      for (const m of everyone.filter((x) => x !== fence)) await m.until('say', (a) => a[0].text === 'fence');
      for (const m of everyone) {
        const got = m.of('say', (a) => /^round /.test(a[0].text)).map((a) => a[0].text).sort();
        const want = senders.map((s, r) => (s === m ? null : `round ${r}`)).filter(Boolean).sort();
        assert.deepEqual(got, want, `${m.id} got each relay once`);
      }
      // Nobody lost its session on the way (a polling request at the wrong gateway ends it).
      for (const m of everyone) assert.equal(m.gone, false, `${m.id} still connected`);
      assert.equal(new Set(everyone.map((m) => m.socket.id)).size, everyone.length);
      // Sticky variants never need a gateway to pass a request on; round robin does, often.
      const passedOn = await forwardedOk(cluster.gateways);
      if (forwards) assert.ok(passedOn > 0, 'requests were passed to their owner');
      else assert.equal(passedOn, 0, 'no request reached a gateway other than its owner');
    });
  });
}

throughNginx('switchboard-sid.conf', { spread: true });
throughNginx('switchboard-hash.conf', { spread: false });
throughNginx('switchboard-roundrobin.conf', { spread: true, forwards: true });

describe('nginx: round robin without forwarding (control)', () => {
  let cluster;
  let nginx;
  const members = new Members();
  before(async () => {
    cluster = await startCluster({ config: CONFIG, env: { ...ENV, SWITCHBOARD_FORWARD: 'off' }, gateways: 3 });
    nginx = await startNginx('switchboard-roundrobin.conf', cluster.gateways);
  });
  after(async () => {
    members.closeAll();
    if (nginx) await nginx.stop();
    if (cluster) await cluster.stop();
  });

  it('polling sessions break when gateways do not pass requests on', async () => {
    const lb = { url: nginx.url };
    let failures = 0;
    const attempts = [];
    for (let i = 0; i < 6; i++) {
      attempts.push(
        members.connect(lb, { transports: POLLING }).then(
          (m) => m.join('lb-room'),
          () => (failures += 1),
        ),
      );
    }
    await within(Promise.allSettled(attempts), 'the connection attempts to settle', 20_000);
    // A request of a session that reaches another gateway gets "Session ID unknown", which ends
    // the session (or fails its connect): with round robin over three gateways that happens.
    await waitFor(() => failures > 0 || members.all.some((m) => m.gone), {
      timeoutMs: 10_000,
      what: 'a polling session to break behind round robin without forwarding',
    });
  });
});
