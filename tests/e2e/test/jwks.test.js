'use strict';
// JWKS key rotation end to end: a JWKS server in this test (node:http on 127.0.0.1:0, keys made
// and tokens signed with node:crypto), a standalone gateway whose /idp namespace verifies with
// `jwks_url` pointing at it, and the real socket.io-client. The test rotates the set mid-run:
// a token with a new key (ES256) is accepted once the gateway's unknown-kid refetch found it (the
// scheduled refresh is an hour away); once the old key (RS256) left the set and its grace ended,
// a token signed with it is refused.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { startGateway } = require('../lib/server');
const { Clients, connected, connectError, now } = require('../lib/client');

const DEADLINE_MS = 20_000;
const GRACE_MS = 1500;
/** `jwks_unknown_kid_interval_ms` of fixtures/jwks.toml. */
const UNKNOWN_KID_INTERVAL_MS = 200;

function b64url(data) {
  return Buffer.from(data).toString('base64url');
}

/** A key pair with its public JWK (`kid`, `alg`, `use`). */
function keyPair(alg, kid) {
  const { privateKey, publicKey } = alg === 'RS256'
    ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { alg, kid, privateKey, jwk: { ...publicKey.export({ format: 'jwk' }), kid, alg, use: 'sig' } };
}

/** A signed JWT for `sub`, valid ten minutes. */
function sign(key, sub, { kid = key.kid } = {}) {
  const header = { alg: key.alg, typ: 'JWT', ...(kid ? { kid } : {}) };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify({ sub, iat: now(), exp: now() + 600 }))}`;
  const signature = key.alg === 'RS256'
    ? crypto.sign('sha256', Buffer.from(input), key.privateKey)
    : crypto.sign('sha256', Buffer.from(input), { key: key.privateKey, dsaEncoding: 'ieee-p1363' });
  return `${input}.${b64url(signature)}`;
}

describe('JWKS: socket.io-client → gateway with jwks_url, keys rotated mid-test', () => {
  const oldKey = keyPair('RS256', 'old-rs');
  const newKey = keyPair('ES256', 'new-es');
  let keys = [oldKey.jwk];
  let requests = 0;
  let jwks;
  let gateway;
  let clients;
  let dir;

  before(async () => {
    jwks = http.createServer((req, res) => {
      requests += 1;
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=3600' });
      res.end(JSON.stringify({ keys }));
    });
    await new Promise((resolve) => jwks.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${jwks.address().port}/.well-known/jwks.json`;
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-jwks-'));
    const config = path.join(dir, 'jwks.toml');
    // Same shape as fixtures/jwks.toml, with the test server's URL.
    const template = fs.readFileSync(path.join(__dirname, '..', 'fixtures', 'jwks.toml'), 'utf8');
    fs.writeFileSync(config, template.replace('http://127.0.0.1:1/jwks.json', url).replace('jwks_grace_ms = 1500', `jwks_grace_ms = ${GRACE_MS}`));
    gateway = await startGateway({ config });
    clients = new Clients(gateway.url, 'websocket');
  });

  after(async () => {
    if (clients) clients.closeAll();
    if (gateway) await gateway.stop();
    if (jwks) await new Promise((resolve) => jwks.close(resolve));
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  /** Connects with `token`; resolves to null when connected, else the connect_error. */
  async function attempt(token) {
    const socket = clients.socket('/idp', { auth: { token } });
    try {
      await connected(socket);
      return null;
    } catch (err) {
      return err;
    } finally {
      socket.disconnect();
    }
  }

  /** Resolves once the JWKS server has had more than `n` requests. */
  async function requestsAbove(n, what) {
    const deadline = Date.now() + DEADLINE_MS;
    while (requests <= n) {
      if (Date.now() > deadline) assert.fail(`${what}: ${requests} requests`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Attempts until `want(result)` holds or the deadline passes. */
  async function until(token, want, what) {
    const deadline = Date.now() + DEADLINE_MS;
    for (;;) {
      const result = await attempt(token);
      if (want(result)) return result;
      if (Date.now() > deadline) assert.fail(`${what}: last result ${result && result.message}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  it('accepts the current key, refuses a missing or unknown one', async () => {
    assert.ok(requests >= 1, 'the gateway fetched the set at start');
    assert.equal(await attempt(sign(oldKey, 'ada')), null);
    // One key in the set: a token without kid may use it.
    assert.equal(await attempt(sign(oldKey, 'ada', { kid: null })), null);
    assert.equal((await connectError(clients.socket('/idp', {}))).message, 'missing token');
    const forged = keyPair('RS256', 'old-rs');
    assert.equal((await attempt(sign(forged, 'eve'))).message, 'invalid token');
    const before = requests;
    const unknown = await attempt(sign(newKey, 'ada'));
    assert.equal(unknown.message, 'invalid token');
    assert.equal(unknown.data.code, 'unknown_key');
    // The unknown kid made the gateway refetch (the set it got still lacks the key).
    await requestsAbove(before, 'no refetch after an unknown kid');
  });

  it('accepts the first token with a new kid: the connect waits for the refetch it asks for, long before the scheduled refresh', async () => {
    keys = [oldKey.jwk, newKey.jwk];
    // Past the unknown-kid interval of the previous test's refetch (so this one may fetch):
    await new Promise((resolve) => setTimeout(resolve, UNKNOWN_KID_INTERVAL_MS + 100));
    // The gateway has not fetched since: the first attempt waits for the refetch it asks for,
    // and is accepted.
    const before = requests;
    assert.equal(await attempt(sign(newKey, 'bob')), null, 'the first token of the new key is accepted');
    assert.equal(requests, before + 1, 'by one refetch');
    assert.equal(await attempt(sign(oldKey, 'ada')), null, 'the old key still verifies');
    // Two keys: a token without kid is ambiguous.
    assert.equal((await attempt(sign(oldKey, 'ada', { kid: null }))).message, 'invalid token');
  });

  it('refuses the retired key once its grace ended; the new key stays accepted', async () => {
    keys = [newKey.jwk];
    const before = requests;
    // A token with an unknown kid makes the gateway refetch; the set without the old key
    // retires it, and after the grace its tokens are refused.
    const probe = keyPair('ES256', 'probe');
    // (Retried: an ask within jwks_unknown_kid_interval_ms of the last one fetches nothing.)
    const probed = await until(sign(probe, 'x'), () => requests > before, 'no refetch after an unknown kid');
    assert.equal(probed.data.code, 'unknown_key');
    const refused = await until(sign(oldKey, 'ada'), (r) => r !== null, 'retired key still accepted');
    assert.equal(refused.message, 'invalid token');
    assert.equal(refused.data.code, 'unknown_key');
    const socket = clients.socket('/idp', { auth: { token: sign(newKey, 'bob') } });
    await connected(socket);
    socket.disconnect();
  });

  it('counts the fetches on /metrics', async () => {
    const res = await fetch(`${gateway.operatorUrl}/metrics`);
    const text = await res.text();
    const m = /^switchboard_gateway_jwks_fetches_total\{result="ok"\} (\d+)/m.exec(text);
    assert.ok(m, 'the fetch counter is exported');
    assert.ok(Number(m[1]) >= 3, `ok fetches: ${m[1]}`);
  });
});
