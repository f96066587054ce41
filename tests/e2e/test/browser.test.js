'use strict';
// The demo chat page (gateway/static/index.html) in headless Chromium, driven by playwright-core:
// two people join the same room, one says something, the other sees it; a shout reaches the
// other; a `user:` room is refused. Screenshots go to a temp dir (printed as a diagnostic).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startGateway } = require('../lib/server');
const { launchChromium } = require('../lib/browser');

const WAIT_MS = 10_000;

let server;
let browser;
let shots;

before(async () => {
  shots = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-e2e-shots-'));
  // the built-in configuration (gateway/config/default.toml): what `switchboard-gateway` runs
  server = await startGateway();
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

/** A page of its own browser context (separate storage, like a second person). */
async function person(name, room, viewport = { width: 1100, height: 720 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('response', (res) => {
    if (res.status() >= 400) problems.push(`HTTP ${res.status()} for ${res.url()}`);
  });
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console error: ${msg.text()}`);
  });
  await page.goto(`${server.url}/?name=${encodeURIComponent(name)}&room=${encodeURIComponent(room)}`);
  await page.locator('#status[data-state="connected"]').waitFor({ timeout: WAIT_MS });
  return { page, context, problems };
}

async function join(page, room) {
  await page.getByLabel('Room', { exact: true }).fill(room);
  await page.getByRole('button', { name: 'Join' }).click();
}

async function screenshot(t, page, name) {
  const file = path.join(shots, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  t.diagnostic(`screenshot: ${file}`);
}

describe('demo chat page', () => {
  it('serves the page and the official client bundle', async () => {
    const page = await fetch(`${server.url}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type'), /^text\/html/);
    // Where Node's socket.io serves it: the client built into the gateway (bin/build.rs), not a
    // copy from tests/e2e/node_modules or a redirect to a CDN.
    assert.match(await page.text(), /<script src="\/socket\.io\/socket\.io\.min\.js"><\/script>/);
    const js = await fetch(`${server.url}/socket.io/socket.io.min.js`, { redirect: 'manual' });
    assert.equal(js.status, 200, 'the client bundle is served by the gateway (did its build fetch it? see the build warning)');
    assert.match(js.headers.get('content-type'), /javascript/);
    assert.match(await js.text(), /Socket\.IO v4\.8\./);
  });

  it('two people in one room: say reaches the other, shout reaches everyone else', async (t) => {
    const room = `room-${process.pid}`;
    const ada = await person('Ada', room);
    const bob = await person('Bob', room);
    try {
      // the page upgrades from polling to websocket and says so
      await ada.page.getByText('Connected via websocket').waitFor({ timeout: WAIT_MS });

      for (const p of [ada, bob]) {
        await p.page.getByRole('button', { name: 'Join' }).click();
        await p.page.getByRole('button', { name: `# ${room}` }).waitFor({ timeout: WAIT_MS });
      }
      assert.equal(await bob.page.locator('#chat-title').textContent(), `# ${room}`);

      await ada.page.getByLabel('Message', { exact: true }).fill('Hello from Ada <b>not bold</b>');
      await ada.page.getByRole('button', { name: 'Send to room' }).click();
      const received = bob.page.locator('#log li.theirs', { hasText: 'Hello from Ada <b>not bold</b>' });
      await received.waitFor({ timeout: WAIT_MS });
      assert.equal(await received.locator('.who').textContent(), 'Ada');
      assert.equal(await bob.page.locator('#log b').count(), 0, 'message text is not parsed as HTML');
      // the sender sees her own message once the server acked it, and not twice
      await ada.page.locator('#log li.mine', { hasText: 'Hello from Ada' }).waitFor({ timeout: WAIT_MS });
      assert.equal(await ada.page.locator('#log li.theirs').count(), 0);

      await bob.page.getByLabel('Message', { exact: true }).fill('Hi everybody!');
      await bob.page.getByRole('button', { name: 'Shout to all' }).click();
      await ada.page.locator('#log li.shout', { hasText: 'Hi everybody!' }).waitFor({ timeout: WAIT_MS });

      await join(ada.page, 'user:bob');
      await ada.page.locator('#join-error', { hasText: 'Cannot join' }).waitFor({ timeout: WAIT_MS });

      await screenshot(t, ada.page, 'ada-desktop');
      await screenshot(t, bob.page, 'bob-desktop');

      // leaving stops delivery
      await bob.page.getByRole('button', { name: `Leave ${room}` }).click();
      await bob.page.locator('#log li.system', { hasText: `You left # ${room}` }).waitFor({ timeout: WAIT_MS });
      await ada.page.getByLabel('Message', { exact: true }).fill('after Bob left');
      await ada.page.getByRole('button', { name: 'Send to room' }).click();
      await ada.page.locator('#log li.mine', { hasText: 'after Bob left' }).waitFor({ timeout: WAIT_MS });
      await ada.page.getByLabel('Message', { exact: true }).fill('shout after');
      await ada.page.getByRole('button', { name: 'Shout to all' }).click();
      await bob.page.locator('#log li.shout', { hasText: 'shout after' }).waitFor({ timeout: WAIT_MS });
      assert.equal(await bob.page.locator('#log li', { hasText: 'after Bob left' }).count(), 0);

      assert.deepEqual([...ada.problems, ...bob.problems], []);
    } finally {
      await ada.context.close();
      await bob.context.close();
    }
  });

  it('fits a phone-sized screen', async (t) => {
    const room = `phone-${process.pid}`;
    const eve = await person('Eve', room, { width: 390, height: 844 });
    const sam = await person('Sam', room, { width: 390, height: 844 });
    try {
      for (const p of [eve, sam]) {
        await p.page.getByRole('button', { name: 'Join' }).click();
        await p.page.getByRole('button', { name: `# ${room}` }).waitFor({ timeout: WAIT_MS });
      }
      await sam.page.getByLabel('Message', { exact: true }).fill('Seen on a phone');
      await sam.page.keyboard.press('Enter');
      await eve.page.locator('#log li.theirs', { hasText: 'Seen on a phone' }).waitFor({ timeout: WAIT_MS });
      const overflow = await eve.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `no horizontal scrolling (overflow ${overflow}px)`);
      await screenshot(t, eve.page, 'eve-phone');
      assert.deepEqual([...eve.problems, ...sam.problems], []);
    } finally {
      await eve.context.close();
      await sam.context.close();
    }
  });
});
