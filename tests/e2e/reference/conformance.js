'use strict';
// The Node reference (engine.io 6 / socket.io 4.8) configured like Switchboard's conformance
// example, so that the conformance tests can be checked against the reference itself:
//   E2E_REFERENCE=1 node --test test/conformance-*.test.js
// Prints the same `listening on http://127.0.0.1:<port>` line as the Rust binaries.
const http = require('node:http');
const { Server: EngineServer } = require('engine.io');
const { Server } = require('socket.io');

const options = { pingInterval: 300, pingTimeout: 200, maxHttpBufferSize: 1e6 };

const httpServer = http.createServer();

const engine = new EngineServer({ ...options, path: '/engine.io/' });
engine.attach(httpServer, { path: '/engine.io/' });
engine.on('connection', (socket) => {
  socket.on('message', (data) => socket.send(data));
});

const io = new Server(httpServer, { ...options, connectTimeout: 1000, serveClient: false });
for (const nsp of [io.of('/'), io.of('/custom')]) {
  nsp.on('connection', (socket) => {
    socket.emit('auth', socket.handshake.auth);
    socket.on('message', (...args) => socket.emit('message-back', ...args));
    socket.on('message-with-ack', (...args) => {
      const ack = args.pop();
      ack(...args);
    });
    // Beyond the official suites, as in our example: server → client acks.
    socket.on('request-ack', (...args) => {
      socket.timeout(1000).emit('ack-request', ...args, (err, ...res) => {
        if (err) socket.emit('ack-error', err.message);
        else socket.emit('ack-response', ...res);
      });
    });
  });
}

httpServer.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  process.stdout.write(`listening on http://127.0.0.1:${httpServer.address().port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
