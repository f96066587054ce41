'use strict';
// Requests for another gateway's session, sent straight to the wrong gateway (no load balancer):
// the gateway passes them to the owner named by the sid and hands back the owner's answer whole —
// also when the owner refuses a WebSocket upgrade — and answers "Session ID unknown" itself for a
// node it has never heard of. The happy paths (sessions kept through round robin) are in
// nginx.test.js and drain.test.js.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { startCluster } = require('../lib/cluster');
const { CONFIG, ENV } = require('../lib/members');

const UNKNOWN_SID = '{"code":1,"message":"Session ID unknown"}';

/** One HTTP request; resolves to { status, headers, body } (an upgrade's answer included). */
function request(base, path, { method = 'GET', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(path, base), { method, headers, agent: false }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (data += d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: data }));
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode, headers: res.headers, body: '' });
    });
    req.on('error', reject);
    req.end(body);
  });
}

const UPGRADE = {
  Connection: 'Upgrade',
  Upgrade: 'websocket',
  'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
  'Sec-WebSocket-Version': '13',
};

describe('forwarding: answers for other gateways\' sessions come from their owner', () => {
  let cluster;
  before(async () => {
    cluster = await startCluster({ config: CONFIG, env: ENV, gateways: 2 });
  });
  after(async () => {
    if (cluster) await cluster.stop();
  });

  it("passes requests on and hands back the owner's answers, refusals included", async () => {
    const [g1, g2] = cluster.gateways;
    // A real session on gw1, reached through gw2.
    const open = await request(g1.url, '/socket.io/?EIO=4&transport=polling');
    assert.equal(open.status, 200);
    const sid = JSON.parse(open.body.slice(1)).sid;
    assert.match(sid, /^gw1\./);
    const q = `/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(sid)}`;
    const post = await request(g2.url, q, { method: 'POST', body: '40/chat,', headers: { 'content-type': 'text/plain' } });
    assert.deepEqual([post.status, post.body], [200, 'ok']);
    const poll = await request(g2.url, q);
    assert.equal(poll.status, 200);
    assert.match(poll.body, /^40\/chat,\{"sid":"gw1\./, 'the CONNECT reply, from the owner');

    // A sid of gw1's that gw1 does not hold: gw1 answers, through gw2, for a poll and for an
    // upgrade alike (its refusal of the upgrade is passed back whole, body and all).
    const stale = '/socket.io/?EIO=4&transport=websocket&sid=gw1.AAAAAAAAAAAAAAAA';
    const refused = await request(g2.url, stale, { headers: UPGRADE });
    assert.deepEqual([refused.status, refused.body], [400, UNKNOWN_SID]);
    const stalePoll = await request(g2.url, '/socket.io/?EIO=4&transport=polling&sid=gw1.AAAAAAAAAAAAAAAA');
    assert.deepEqual([stalePoll.status, stalePoll.body], [400, UNKNOWN_SID]);

    // A node nobody heard of: gw2 answers itself, as the reference does for an unknown sid.
    const nobody = await request(g2.url, '/socket.io/?EIO=4&transport=polling&sid=gw9.AAAAAAAAAAAAAAAA');
    assert.deepEqual([nobody.status, nobody.body], [400, UNKNOWN_SID]);

    // gw2 counted what it passed on and what it could not.
    const metrics = await g2.metrics();
    const count = (labels) => {
      const line = metrics
        .split('\n')
        .find((l) => l.startsWith('switchboard_gateway_forwarded_requests_total{') && labels.every((x) => l.includes(x)));
      return line ? Number(line.split(' ').pop()) : 0;
    };
    assert.equal(count(['kind="post"', 'result="ok"']), 1);
    assert.equal(count(['kind="poll"', 'result="ok"']), 2);
    assert.equal(count(['kind="upgrade"', 'result="refused"']), 1);
    assert.equal(count(['kind="poll"', 'result="unknown_owner"']), 1);
  });
});
