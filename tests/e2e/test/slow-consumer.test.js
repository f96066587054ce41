'use strict';
// A client that stops reading is disconnected once its bounded queue fills up, and the server
// stays responsive for everybody else (conformance example, raw WebSocket).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startConformance } = require('../lib/server');
const { sioConnect, sleep } = require('../lib/raw');

let server;
before(async () => {
  server = await startConformance();
});
after(() => server && server.stop());

describe('slow consumer', () => {
  it('a WebSocket client that does not read is cut off; others keep being served', async () => {
    const slow = await sioConnect(server.url);
    const healthy = await sioConnect(server.url);
    // Stop reading: the server's echoes pile up in the kernel buffers, then in our queue.
    slow.ws.ws._socket.pause();
    const big = 'x'.repeat(100_000);
    const sent = 600; // 60 MB of echoes: far past the 16 MiB queue bound plus kernel buffers
    for (let i = 0; i < sent; i++) slow.ws.send(`42["message","${big}"]`);
    await sleep(2000);
    // The server still answers someone who reads.
    healthy.ws.send('42["message","still there?"]');
    assert.equal(await healthy.ws.nextText(10_000), '42["message-back","still there?"]');
    // Reading again, the slow client gets what was sent before the cut, then the end.
    slow.ws.ws._socket.resume();
    const { code } = await slow.ws.waitClose(30_000);
    assert.ok(code === 1008 || code === 1006, `closed with ${code}`);
    const echoes = slow.ws.queue.filter((f) => typeof f === 'string' && f.startsWith('42["message-back"')).length;
    assert.ok(echoes < sent, `the slow client got all ${sent} echoes: it was never cut off`);
    healthy.ws.close();
  });
});
