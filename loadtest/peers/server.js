// The reference peer for scripts/bench-compare.sh: Node's socket.io 4.8 with the same `/chat`
// behaviours as Switchboard's loadtest/bench.toml, so that the load generator can run the same
// scenarios against both.
//
//   /       accepts every connection (idle, connect)
//   /chat   join(room, ack)  → joins (not `user:*`, at most MAX_ROOMS rooms), ack({ok:true})
//           leave(room, ack) → leaves, ack({ok:true})
//           say({room,…}, …) → relayed as `say` with the same arguments to the room's other
//                              members; the sender must be in the room
//           shout(…)         → `shout` to every other socket of /chat
//           Refusals answer the ack, if any, with {ok:false, error}.
//
// Environment: PORT (0 or unset: a free port), HOST (default 127.0.0.1), REDIS_URL (optional:
// the @socket.io/redis-adapter over that redis, so that several processes form one cluster).
// Prints `listening on http://HOST:PORT` once it accepts connections; SIGTERM/SIGINT stop it.
'use strict';

const http = require('node:http');
const { Server } = require('socket.io');

// The same limits as gateway/config/default.toml (and loadtest/bench.toml).
const MAX_ROOMS = 50;
const PING_INTERVAL_MS = 25000;
const PING_TIMEOUT_MS = 20000;
const MAX_PAYLOAD_BYTES = 1000000;

function reply(ack, body) {
  if (typeof ack === 'function') ack(body);
}

// Splits an event's arguments from its trailing ack callback, if any.
function split(args) {
  const last = args[args.length - 1];
  return typeof last === 'function' ? [args.slice(0, -1), last] : [args, undefined];
}

function chat(nsp) {
  nsp.on('connection', (socket) => {
    socket.on('join', (...raw) => {
      const [[room], ack] = split(raw);
      if (typeof room !== 'string' || room === '' || room.startsWith('user:')) {
        return reply(ack, { ok: false, error: 'room not allowed' });
      }
      // socket.rooms holds the socket's own id as well.
      if (!socket.rooms.has(room) && socket.rooms.size - 1 >= MAX_ROOMS) {
        return reply(ack, { ok: false, error: 'too many rooms' });
      }
      socket.join(room);
      reply(ack, { ok: true });
    });
    socket.on('leave', (...raw) => {
      const [[room], ack] = split(raw);
      if (typeof room !== 'string') return reply(ack, { ok: false, error: 'bad room' });
      socket.leave(room);
      reply(ack, { ok: true });
    });
    socket.on('say', (...raw) => {
      const [args, ack] = split(raw);
      const room = args[0] && typeof args[0] === 'object' ? args[0].room : undefined;
      if (typeof room !== 'string') return reply(ack, { ok: false, error: 'no room' });
      if (!socket.rooms.has(room)) {
        return reply(ack, { ok: false, error: 'not a member of the room' });
      }
      socket.to(room).emit('say', ...args);
      reply(ack, { ok: true });
    });
    socket.on('shout', (...raw) => {
      const [args, ack] = split(raw);
      socket.broadcast.emit('shout', ...args);
      reply(ack, { ok: true });
    });
  });
}

async function adapter(url) {
  const { createClient } = require('redis');
  const { createAdapter } = require('@socket.io/redis-adapter');
  const pub = createClient({ url });
  const sub = pub.duplicate();
  for (const client of [pub, sub]) {
    client.on('error', (e) => console.error(`redis: ${e.message}`));
  }
  await Promise.all([pub.connect(), sub.connect()]);
  return { factory: createAdapter(pub, sub), clients: [pub, sub] };
}

async function main() {
  const host = process.env.HOST || '127.0.0.1';
  const port = Number(process.env.PORT || 0);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`PORT must be 0..65535 (got ${JSON.stringify(process.env.PORT)})`);
  }
  // Anything that is not Engine.IO's path gets a 404 (socket.io hands other requests to this
  // listener; without one they would hang, and a proxy's health probe with them).
  const httpServer = http.createServer((req, res) => {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found');
  });
  const io = new Server(httpServer, {
    pingInterval: PING_INTERVAL_MS,
    pingTimeout: PING_TIMEOUT_MS,
    maxHttpBufferSize: MAX_PAYLOAD_BYTES,
    transports: ['polling', 'websocket'],
    serveClient: false,
  });
  let redis = [];
  if (process.env.REDIS_URL) {
    const { factory, clients } = await adapter(process.env.REDIS_URL);
    io.adapter(factory);
    redis = clients;
  }
  io.of('/');
  chat(io.of('/chat'));

  await new Promise((resolve, reject) => {
    httpServer.once('error', reject);
    httpServer.listen(port, host, resolve);
  });
  const { port: bound } = httpServer.address();
  console.log(
    `listening on http://${host}:${bound} (socket.io ${require('socket.io/package.json').version}` +
      `${process.env.REDIS_URL ? ', redis adapter' : ''}, pid ${process.pid})`,
  );

  const stop = () => {
    io.close();
    for (const client of redis) client.quit().catch(() => {});
    // Anything still open (held polls) must not keep the process alive.
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main().catch((e) => {
  console.error(`peer: ${e.stack || e}`);
  process.exit(2);
});
