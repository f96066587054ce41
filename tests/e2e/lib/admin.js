'use strict';
// A client of the broker's gRPC Admin API (proto/proto/admin.proto) for the tests: the official
// @grpc/grpc-js with the .proto loaded at runtime, calls as promises, a bearer token per call.

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const PROTO = path.resolve(__dirname, '..', '..', '..', 'proto', 'proto', 'admin.proto');
const definition = loader.loadSync(PROTO, { keepCase: true, longs: Number, defaults: true, oneofs: true });
const { Admin } = grpc.loadPackageDefinition(definition).switchboard.admin.v1;

/**
 * A client of `addr` (`127.0.0.1:PORT`). `call(method, request, { token, deadlineMs })` resolves
 * to the response or rejects with the gRPC error (`err.code`, `err.details`); `stream(selector)`
 * collects StreamSockets.
 */
function adminClient(addr, token) {
  const client = new Admin(addr, grpc.credentials.createInsecure());
  const metadata = (t) => {
    const md = new grpc.Metadata();
    if (t) md.set('authorization', `Bearer ${t}`);
    return md;
  };
  const call = (method, request, { token: t = token, deadlineMs = 15000 } = {}) =>
    new Promise((resolve, reject) => {
      client[method](request, metadata(t), { deadline: Date.now() + deadlineMs }, (err, res) => (err ? reject(err) : resolve(res)));
    });
  const stream = (selector, { token: t = token } = {}) =>
    new Promise((resolve, reject) => {
      const got = [];
      const s = client.StreamSockets(selector, metadata(t), { deadline: Date.now() + 15000 });
      s.on('data', (item) => got.push(item));
      s.on('error', reject);
      s.on('end', () => resolve(got));
    });
  return { call, stream, close: () => client.close() };
}

/** Rejects unless `promise` fails with gRPC status `code`; resolves to the error. */
async function failsWith(promise, code) {
  try {
    await promise;
  } catch (err) {
    if (err.code !== code) throw new Error(`expected status ${code}, got ${err.code}: ${err.details}`);
    return err;
  }
  throw new Error(`expected status ${code}, the call succeeded`);
}

module.exports = { adminClient, failsWith, status: grpc.status };
