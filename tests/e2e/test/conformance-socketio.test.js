'use strict';
// Socket.IO v5 conformance, raw frames against the conformance example's /socket.io/ endpoint:
// namespaces `/` and `/custom`; on connect each emits `auth` with the CONNECT payload, echoes
// `message` as `message-back` and acks `message-with-ack` with its arguments. The expected
// frames are those of the Node reference (socket.io 4.8); `npm run test:reference` runs this
// file against it.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startConformance } = require('../lib/server');
const { Polling, wsHandshake, sioConnect, sleep, SEP } = require('../lib/raw');

let server;
let base;
before(async () => {
  server = await startConformance();
  base = server.url;
});
after(() => server && server.stop());

/** A WebSocket-only Engine.IO session on /socket.io/ with pings answered (and not queued). */
async function open() {
  const [ws] = await wsHandshake(base, '/socket.io/', { autoPong: true });
  return ws;
}

function assertConnectReply(frame, nsp) {
  const prefix = nsp === '/' ? '40' : `40${nsp},`;
  assert.ok(frame.startsWith(prefix), `CONNECT reply ${JSON.stringify(frame)} for ${nsp}`);
  const payload = JSON.parse(frame.slice(prefix.length));
  assert.deepEqual(Object.keys(payload), ['sid'], `CONNECT reply ${frame} has exactly one key`);
  assert.equal(typeof payload.sid, 'string');
  assert.ok(payload.sid.length > 0);
  return payload.sid;
}

const PH0 = '{"_placeholder":true,"num":0}';
const PH1 = '{"_placeholder":true,"num":1}';

describe('connect', () => {
  it('main namespace: 40 → 40{"sid":…}, then auth {} as the very next frame', async () => {
    const ws = await open();
    try {
      ws.send('40');
      assertConnectReply(await ws.nextText(), '/');
      assert.equal(await ws.nextText(), '42["auth",{}]');
    } finally {
      ws.close();
    }
  });

  it('custom namespace with trailing comma: 40/custom, → 40/custom,{"sid":…}', async () => {
    const ws = await open();
    try {
      ws.send('40/custom,');
      assertConnectReply(await ws.nextText(), '/custom');
      assert.equal(await ws.nextText(), '42/custom,["auth",{}]');
    } finally {
      ws.close();
    }
  });

  it('custom namespace without trailing comma: 40/custom', async () => {
    const ws = await open();
    try {
      ws.send('40/custom');
      assertConnectReply(await ws.nextText(), '/custom');
      assert.equal(await ws.nextText(), '42/custom,["auth",{}]');
    } finally {
      ws.close();
    }
  });

  it('CONNECT payload is handed to the handler as auth, key order kept, compact', async () => {
    const ws = await open();
    try {
      ws.send('40{"token":"123","b":{"z":1,"a":[true,null]}, "a" : 2}');
      assertConnectReply(await ws.nextText(), '/');
      assert.equal(await ws.nextText(), '42["auth",{"token":"123","b":{"z":1,"a":[true,null]},"a":2}]');
      ws.send('40/custom,{"x":"é😀"}');
      assertConnectReply(await ws.nextText(), '/custom');
      assert.equal(await ws.nextText(), '42/custom,["auth",{"x":"é😀"}]');
    } finally {
      ws.close();
    }
  });

  it('the sids of two namespaces on one connection differ', async () => {
    const ws = await open();
    try {
      ws.send('40');
      const a = assertConnectReply(await ws.nextText(), '/');
      await ws.nextText();
      ws.send('40/custom,');
      const b = assertConnectReply(await ws.nextText(), '/custom');
      assert.notEqual(a, b);
    } finally {
      ws.close();
    }
  });

  it('unknown namespace: exactly 44/random,{"message":"Invalid namespace"}', async () => {
    const ws = await open();
    try {
      ws.send('40/random');
      assert.equal(await ws.nextText(), '44/random,{"message":"Invalid namespace"}');
      // the connection stays usable
      ws.send('40');
      assertConnectReply(await ws.nextText(), '/');
    } finally {
      ws.close();
    }
  });

  it('over polling: CONNECT reply and auth event', async () => {
    const session = await Polling.handshake(base, '/socket.io/');
    assert.equal((await session.post('40{"via":"polling"}')).status, 200);
    const [reply, auth] = await session.collect(2);
    assertConnectReply(reply, '/');
    assert.equal(auth, '42["auth",{"via":"polling"}]');
  });

  it('a session that never sends CONNECT is closed', async () => {
    const ws = await open();
    await ws.waitClose(5000);
  });
});

describe('disconnect', () => {
  it('41 gets no reply: the next frame is a ping', async () => {
    const [ws] = await wsHandshake(base, '/socket.io/'); // pings not answered, queued
    try {
      ws.send('40');
      assertConnectReply(await ws.nextText(), '/');
      assert.equal(await ws.nextText(), '42["auth",{}]');
      ws.send('41');
      assert.equal(await ws.nextText(), '2');
      ws.send('3');
    } finally {
      ws.close();
    }
  });

  it('disconnecting /custom keeps / working on the same connection', async () => {
    const { ws } = await sioConnect(base);
    try {
      ws.send('40/custom,');
      assertConnectReply(await ws.nextText(), '/custom');
      assert.equal(await ws.nextText(), '42/custom,["auth",{}]');
      ws.send('41/custom,');
      ws.send('42["message","still here"]');
      assert.equal(await ws.nextText(), '42["message-back","still here"]');
    } finally {
      ws.close();
    }
  });

  it('41/custom without trailing comma is accepted too', async () => {
    const { ws } = await sioConnect(base);
    try {
      ws.send('40/custom');
      assertConnectReply(await ws.nextText(), '/custom');
      await ws.nextText();
      ws.send('41/custom');
      ws.send('42["message",1]');
      assert.equal(await ws.nextText(), '42["message-back",1]');
    } finally {
      ws.close();
    }
  });

  it('a namespace can be connected again after its disconnect', async () => {
    const { ws } = await sioConnect(base);
    try {
      ws.send('41');
      await sleep(100);
      ws.send('40');
      assertConnectReply(await ws.nextText(), '/');
      assert.equal(await ws.nextText(), '42["auth",{}]');
    } finally {
      ws.close();
    }
  });
});

describe('events', () => {
  it('plain event echoed with all arguments, compact and in key order', async () => {
    const { ws } = await sioConnect(base);
    try {
      ws.send('42["message",1,"2",{"3":[true]},null,{"z":0, "a" : {"y":1,"b":2}}]');
      assert.equal(await ws.nextText(), '42["message-back",1,"2",{"3":[true]},null,{"z":0,"a":{"y":1,"b":2}}]');
    } finally {
      ws.close();
    }
  });

  it('plain event on /custom', async () => {
    const { ws } = await sioConnect(base, { nsp: '/custom' });
    try {
      ws.send('42/custom,["message","hi"]');
      assert.equal(await ws.nextText(), '42/custom,["message-back","hi"]');
    } finally {
      ws.close();
    }
  });

  it('event with ack: 42456[…] → 43456[…]', async () => {
    const { ws } = await sioConnect(base);
    try {
      ws.send('42456["message-with-ack",1,"2",{"3":[false]}]');
      assert.equal(await ws.nextText(), '43456[1,"2",{"3":[false]}]');
    } finally {
      ws.close();
    }
  });

  it('event with ack on /custom: 42/custom,7[…] → 43/custom,7[…]', async () => {
    const { ws } = await sioConnect(base, { nsp: '/custom' });
    try {
      ws.send('42/custom,7["message-with-ack","x"]');
      assert.equal(await ws.nextText(), '43/custom,7["x"]');
    } finally {
      ws.close();
    }
  });

  it('binary event: placeholders then attachments in order', async () => {
    const { ws } = await sioConnect(base);
    try {
      ws.send(`452-["message",${PH0},${PH1}]`);
      ws.send(Buffer.from([1, 2, 3]));
      ws.send(Buffer.from([4, 5, 6]));
      assert.equal(await ws.nextText(), `452-["message-back",${PH0},${PH1}]`);
      assert.deepEqual(await ws.nextBinary(), Buffer.from([1, 2, 3]));
      assert.deepEqual(await ws.nextBinary(), Buffer.from([4, 5, 6]));
    } finally {
      ws.close();
    }
  });

  it('binary event with a placeholder nested in an object, on /custom', async () => {
    const { ws } = await sioConnect(base, { nsp: '/custom' });
    try {
      ws.send(`451-/custom,["message",{"name":"f","data":${PH0}},"t"]`);
      ws.send(Buffer.from('payload'));
      assert.equal(await ws.nextText(), `451-/custom,["message-back",{"name":"f","data":${PH0}},"t"]`);
      assert.deepEqual(await ws.nextBinary(), Buffer.from('payload'));
    } finally {
      ws.close();
    }
  });

  it('binary event with ack: 452-789[…] → 462-789[…]', async () => {
    const { ws } = await sioConnect(base);
    try {
      ws.send(`452-789["message-with-ack",${PH0},${PH1}]`);
      ws.send(Buffer.from([1, 2, 3]));
      ws.send(Buffer.from([4, 5, 6]));
      assert.equal(await ws.nextText(), `462-789[${PH0},${PH1}]`);
      assert.deepEqual(await ws.nextBinary(), Buffer.from([1, 2, 3]));
      assert.deepEqual(await ws.nextBinary(), Buffer.from([4, 5, 6]));
    } finally {
      ws.close();
    }
  });

  it('binary event over polling: b<base64> attachments', async () => {
    const session = await Polling.handshake(base, '/socket.io/');
    await session.post('40');
    await session.collect(2);
    await session.post(`451-["message",${PH0}]${SEP}bAQID`);
    assert.deepEqual(await session.collect(2), [`451-["message-back",${PH0}]`, 'bAQID']);
  });
});

describe('edges shared with Node', () => {
  it('lone UTF-16 surrogates, as JSON.stringify escapes them, are accepted and come back escaped', async () => {
    const { ws } = await sioConnect(base);
    try {
      ws.send(String.raw`42["message","\ud800","a\uDC00b","\udc00\ud800","\ud83d\ude00",{"\udfff":"\u0001"}]`);
      assert.equal(await ws.nextText(), String.raw`42["message-back","\ud800","a\udc00b","\udc00\ud800","` + '\u{1f600}' + String.raw`",{"\udfff":"\u0001"}]`);
      ws.send(String.raw`427["message-with-ack","\udbff"]`);
      assert.equal(await ws.nextText(), String.raw`437["\udbff"]`);
    } finally {
      ws.close();
    }
  });

  it('U+10FFFF and the last private-use characters pass unchanged, raw or escaped', async () => {
    const { ws } = await sioConnect(base);
    try {
      ws.send('42["message","\u{10FFFF}x","\u{10F000}"]');
      assert.equal(await ws.nextText(), '42["message-back","\u{10FFFF}x","\u{10F000}"]');
      ws.send(String.raw`42["message","\udbff\udfff\ud800"]`);
      assert.equal(await ws.nextText(), '42["message-back","\u{10FFFF}' + String.raw`\ud800"]`);
    } finally {
      ws.close();
    }
  });

  it('a number event name is accepted and echoed as given', async () => {
    const { ws } = await sioConnect(base);
    try {
      ws.send('421[7,"x"]');
      ws.send('42["message","after"]');
      // No handler for "7": nothing comes back for it, and the connection goes on.
      assert.equal(await ws.nextText(), '42["message-back","after"]');
    } finally {
      ws.close();
    }
  });
});

describe('invalid packets close the connection', () => {
  for (const [what, frame] of [
    ['unknown packet type', '4abc'],
    ['EVENT whose payload is not an array', '42{}'],
    ['non-numeric ack id', '42abc["message-with-ack"]'],
    ['EVENT with an empty array', '42[]'],
    ['EVENT whose name is neither a string nor a number', '42[true]'],
    ['EVENT with a reserved name', '42["connect"]'],
  ]) {
    it(`${what}: ${frame}`, async () => {
      const { ws } = await sioConnect(base);
      ws.send(frame);
      await ws.waitClose();
    });
  }

  it('undecodable packet before any CONNECT', async () => {
    const ws = await open();
    ws.send('4abc');
    await ws.waitClose();
  });
});
