'use strict';
// Server-wide limits of the standalone gateway: concurrent sessions per client address.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway } = require('../lib/server');
const { Clients, within } = require('../lib/client');

let server;
before(async () => {
  server = await startGateway({ config: 'limits.toml' });
});
after(() => server && server.stop());

async function handshake() {
  const res = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`);
  return { status: res.status, body: await res.text() };
}

describe('max_connections_per_ip', () => {
  it('refuses a third session from the same address with 429, and admits one again after a close', async () => {
    const clients = new Clients(server.url, 'websocket');
    try {
      const a = await clients.connect('/');
      await clients.connect('/');
      const refused = await handshake();
      assert.equal(refused.status, 429);
      assert.deepEqual(JSON.parse(refused.body), { code: 4, message: 'Too many connections from this address' });
      // The official client sees the refusal as a connect_error.
      const third = clients.socket('/', { reconnection: false });
      const err = await within(new Promise((resolve) => third.once('connect_error', resolve)), 'connect_error');
      assert.ok(err instanceof Error);
      assert.equal(third.connected, false);
      // Closing one session frees its slot.
      a.disconnect();
      let admitted;
      for (let i = 0; i < 50; i++) {
        admitted = await handshake();
        if (admitted.status === 200) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(admitted.status, 200);
      assert.match(admitted.body, /^0\{"sid":/);
    } finally {
      clients.closeAll();
    }
  });
});
