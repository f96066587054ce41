'use strict';
// The Socket.IO Admin UI (@socket.io/admin-ui 0.5, its own built files) in headless Chromium,
// driven by playwright-core, against a cluster of three gateways (lib/cluster.js) that serve it
// under /admin-ui/ and answer its `/admin` namespace from the broker's admin service, reached
// over gRPC with an API key of scopes `read` and `admin` (docs/admin-ui.md). The UI is opened on
// gw1; the clients it lists and acts on are official socket.io-clients on all three gateways.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { io } = require('socket.io-client');
const { startCluster, waitFor } = require('../lib/cluster');
const { launchChromium } = require('../lib/browser');

const WAIT_MS = 15_000;
const API_KEY = 'e2e-admin-ui-key-0123456789';
// fixtures/admin-ui.toml holds its bcrypt hash.
const PASSWORD = 'e2e-admin-ui-password';

let cluster;
let browser;
const clients = [];

/** An official client of `/` on `gw` over WebSocket, connected; its socket id and disconnect reason. */
async function client(gw) {
  const socket = io(gw.url, { transports: ['websocket'], forceNew: true, reconnection: false });
  clients.push(socket);
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
  const gone = new Promise((resolve) => socket.once('disconnect', resolve));
  return { socket, id: socket.id, gone };
}

before(async () => {
  cluster = await startCluster({
    gateways: 3,
    config: 'admin-ui.toml',
    env: { SWITCHBOARD_GRPC_PORT: '0', SWITCHBOARD_API_KEYS: `admin-ui:read,admin:${API_KEY}` },
    gatewayEnv: (broker) => {
      assert.ok(broker.grpcAddr, 'the broker printed its gRPC address');
      return { SWITCHBOARD_ADMIN_UI_BROKER_URL: `http://${broker.grpcAddr}`, SWITCHBOARD_ADMIN_UI_API_KEY: API_KEY };
    },
  });
  browser = await launchChromium();
});

after(async () => {
  for (const socket of clients) socket.close();
  if (browser) await browser.close();
  if (cluster) await cluster.stop();
});

/** The UI, opened on gw1, logged in with `password`: its page. */
async function openUi(password) {
  const gw = cluster.gateways[0];
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  await page.goto(`${gw.url}/admin-ui/`);
  await page.getByLabel('Server URL').fill(gw.url);
  await page.getByLabel('Username').fill('admin');
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Connect' }).click();
  return page;
}

describe('Socket.IO Admin UI on a cluster of three gateways', () => {
  it('serves the package\'s page on every gateway', async () => {
    for (const gw of cluster.gateways) {
      const res = await fetch(`${gw.url}/admin-ui/`);
      assert.equal(res.status, 200, gw.nodeId);
      assert.match(await res.text(), /<title>Socket\.IO Admin UI<\/title>/, gw.nodeId);
    }
  });

  it('refuses a wrong password', async () => {
    const page = await openUi('not-the-password');
    try {
      await page.getByText('Invalid credentials').waitFor({ timeout: WAIT_MS });
      assert.equal(await page.getByRole('button', { name: 'Connect' }).isVisible(), true, 'the login form stays');
    } finally {
      await page.context().close();
    }
  });

  it('lists the sockets of all three gateways, and its disconnect button disconnects that client', async () => {
    const [a, b, c] = await Promise.all(cluster.gateways.map(client));
    const page = await openUi(PASSWORD);
    try {
      const socketsPage = `${cluster.gateways[0].url}/admin-ui/#/sockets/`;
      await page.goto(socketsPage);
      // a row of the sockets table (a socket's own page has a table too)
      const row = (id) => page.locator('.row-pointer tbody tr', { hasText: id });
      for (const { id } of [a, b, c]) await row(id).waitFor({ timeout: WAIT_MS });

      // c is on gw3, the UI on gw1: the command goes through the broker to c's gateway.
      await row(c.id).getByRole('button').click();
      assert.equal(await c.gone, 'io server disconnect');
      // The click also reached the row, which opens the socket's own page (its table lists its
      // rooms, one named after its id): once there, back to the list.
      await waitFor(() => page.url().endsWith(`/sockets/${c.id}`), { timeoutMs: WAIT_MS, what: "the socket's page" });
      await page.goto(socketsPage);
      await row(a.id).waitFor({ timeout: WAIT_MS });
      await row(c.id).waitFor({ state: 'detached', timeout: WAIT_MS });
      // the others stay connected, and listed
      for (const { socket, id } of [a, b]) {
        assert.equal(socket.connected, true, id);
        assert.equal(await row(id).count(), 1, id);
      }
      const state = await waitFor(
        async () => {
          const s = await cluster.broker.state();
          return s.sockets.every((x) => x.id !== c.id) && s;
        },
        { what: 'the broker forgets the disconnected socket' },
      );
      assert.ok(state.sockets.some((x) => x.id === a.id));
    } finally {
      await page.context().close();
    }
  });
});
