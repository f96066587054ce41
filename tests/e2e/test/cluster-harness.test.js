'use strict';
// The multi-process harness itself (lib/cluster.js): nats-server started, restarted on the same
// port and stopped; waitFor's resolution and rejection; brokerTruth's normal form. The broker and
// gateway paths are exercised by the cluster tests, which need the binaries.

const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const { startNats, waitFor, brokerTruth, uniquePrefix } = require('../lib/cluster');

/** Connects to a NATS URL and resolves to the first line the server sends (its INFO). */
function natsGreeting(url, ms = 3000) {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: hostname, port: Number(port) });
    let data = '';
    socket.setEncoding('utf8');
    socket.setTimeout(ms, () => socket.destroy(new Error(`no INFO from ${url} within ${ms} ms`)));
    socket.on('data', (chunk) => {
      data += chunk;
      const eol = data.indexOf('\r\n');
      if (eol < 0) return;
      socket.destroy();
      resolve(data.slice(0, eol));
    });
    socket.once('error', reject);
  });
}

/** Resolves to the error code of a TCP connection attempt to `url` (null if it connects). */
function connectErrorCode(url) {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = net.connect({ host: hostname, port: Number(port) });
    socket.once('connect', () => {
      socket.destroy();
      resolve(null);
    });
    socket.once('error', (err) => resolve(err.code));
  });
}

describe('startNats', () => {
  const started = [];
  after(() => Promise.all(started.map((n) => n.stop())));

  it('starts on a free port, restarts on the same port, and stops', async () => {
    const nats = await startNats();
    started.push(nats);
    assert.match(nats.url, /^nats:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(nats.url, `nats://127.0.0.1:${nats.port}`);
    assert.match(await natsGreeting(nats.url), /^INFO \{.*"jetstream":true/);

    const firstPid = nats.pid;
    await nats.restart();
    assert.notEqual(nats.pid, firstPid, 'a restart is a new process');
    assert.equal(nats.url, `nats://127.0.0.1:${nats.port}`, 'the same URL after the restart');
    const info = JSON.parse((await natsGreeting(nats.url)).slice('INFO '.length));
    assert.equal(info.port, nats.port, 'the restarted server listens on the same port');

    await nats.stop();
    assert.equal(await connectErrorCode(nats.url), 'ECONNREFUSED', 'the port is closed after stop()');
  });

  it('kill() (SIGKILL) closes the port; restart() brings it back on the same port', async () => {
    const nats = await startNats();
    started.push(nats);
    await nats.kill();
    assert.equal(await connectErrorCode(nats.url), 'ECONNREFUSED');
    await nats.restart();
    assert.match(await natsGreeting(nats.url), /^INFO /);
    assert.match(nats.logs(), /Server is ready/);
  });

  it('starts on a requested port', async () => {
    const first = await startNats();
    const port = first.port;
    await first.stop();
    const nats = await startNats({ port });
    started.push(nats);
    assert.equal(nats.port, port);
    assert.match(await natsGreeting(nats.url), /^INFO /);
  });
});

describe('waitFor', () => {
  it('resolves to the first truthy value of the predicate, retrying falsy values and throws', async () => {
    let calls = 0;
    const value = await waitFor(
      async () => {
        calls += 1;
        if (calls === 1) throw new Error('not yet');
        return calls >= 3 ? { calls } : 0;
      },
      { intervalMs: 5, what: 'three calls' },
    );
    assert.deepEqual(value, { calls: 3 });
    assert.equal(calls, 3);
  });

  it('accepts a synchronous predicate', async () => {
    assert.equal(await waitFor(() => 'yes'), 'yes');
  });

  it('rejects after timeoutMs with a message naming `what` and the last value seen', async () => {
    let n = 0;
    await assert.rejects(
      waitFor(() => (n += 1) < 0, { timeoutMs: 100, intervalMs: 10, what: 'the answer' }),
      (err) => {
        assert.match(err.message, /timed out after 100 ms waiting for the answer/);
        assert.match(err.message, /last value seen: false/);
        return true;
      },
    );
    assert.ok(n > 1, `the predicate was polled more than once (${n} times)`);
  });

  it('names the last error thrown and a last object value in the rejection', async () => {
    await assert.rejects(
      waitFor(
        () => {
          throw new Error('bus still down');
        },
        { timeoutMs: 60, intervalMs: 10, what: 'readiness' },
      ),
      /waiting for readiness; last value seen: error: bus still down/,
    );
    await assert.rejects(
      waitFor(() => null, { timeoutMs: 60, intervalMs: 10, what: 'state' }),
      /waiting for state; last value seen: null/,
    );
  });

  it('does not hang on a predicate that never settles', async () => {
    await assert.rejects(
      waitFor(() => new Promise(() => {}), { timeoutMs: 80, what: 'a stuck fetch' }),
      /timed out after 80 ms waiting for a stuck fetch; last value seen: error: the first evaluation was still running/,
    );
  });
});

describe('brokerTruth', () => {
  const sample = {
    nodes: [
      { id: 'gw2', sockets: 1, seq: 4 },
      { id: 'gw1', sockets: 2, seq: 12 },
    ],
    sockets: [
      { id: 'gw2.zz', ns: '/chat', node: 'gw2', user: 'alice', rooms: ['lobby', 'gw2.zz', 'b-room'] },
      { id: 'gw1.bb', ns: '/', node: 'gw1', user: null, rooms: [] },
      { id: 'gw1.aa', ns: '/chat', node: 'gw1', user: null, rooms: ['lobby'] },
    ],
  };

  it('maps socket ids to their sorted rooms, ids sorted', () => {
    const truth = brokerTruth(sample);
    assert.deepStrictEqual(truth, {
      'gw1.aa': ['lobby'],
      'gw1.bb': [],
      'gw2.zz': ['b-room', 'gw2.zz', 'lobby'],
    });
    assert.deepEqual(Object.keys(truth), ['gw1.aa', 'gw1.bb', 'gw2.zz']);
    assert.deepEqual(sample.sockets[0].rooms, ['lobby', 'gw2.zz', 'b-room'], 'the input is not modified');
  });

  it('keeps only one namespace with { ns }', () => {
    assert.deepStrictEqual(brokerTruth(sample, { ns: '/chat' }), {
      'gw1.aa': ['lobby'],
      'gw2.zz': ['b-room', 'gw2.zz', 'lobby'],
    });
  });

  it('normalizes an empty state and a socket without rooms', () => {
    assert.deepStrictEqual(brokerTruth({ nodes: [], sockets: [] }), {});
    assert.deepStrictEqual(brokerTruth({ sockets: [{ id: 'gw1.x', ns: '/', node: 'gw1' }] }), { 'gw1.x': [] });
  });

  it('rejects a malformed state and a socket listed twice', () => {
    assert.throws(() => brokerTruth({ nodes: [] }), /no "sockets" array/);
    assert.throws(() => brokerTruth(null), /no "sockets" array/);
    const twice = { sockets: [{ id: 'gw1.a', rooms: ['x'] }, { id: 'gw1.a', rooms: ['y'] }] };
    assert.throws(() => brokerTruth(twice), /gw1\.a is listed twice/);
  });
});

describe('uniquePrefix', () => {
  it('is a fresh subject token of a-z0-9 each time', () => {
    const a = uniquePrefix();
    const b = uniquePrefix();
    assert.match(a, /^t[0-9a-f]{8}$/);
    assert.notEqual(a, b);
  });
});
