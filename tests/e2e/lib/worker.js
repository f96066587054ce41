'use strict';
// A backend worker for the tests (nats + protobufjs): queue-subscribes the forwarded events
// `{prefix}.event.{ns}.{event}` in group `workers` and records every ClientEvent. `ask` requests
// are answered with one ack argument
//   {"ok": true, "echo": <the event's args>, "user": <user or null>, "socket": <socket id>,
//    "node": <node>, "claims": <claims>}
// `refuse` requests with EventReply.error "refused"; `slow` ones never.
//
// It connects as the shipped `worker` NATS user when the server runs with permissions (cluster.js).
//
// In-process: `const w = await startWorker({ url, prefix, ns: '/chat' })`, then `w.events`,
// `w.waitFor(pred)`, `await w.stop()`. As a process: `node lib/worker.js` with NATS_URL, PREFIX,
// NS (default `/chat`) and EVENTS (comma-separated, default `ask,note,slow,refuse`); it prints
// `worker ready` once subscribed and one JSON line per received event; NATS_USER and NATS_PASS,
// when set, are its NATS credentials.

const { connect } = require('nats');
const { encode, decode, subjects, credentials, NATS_OPTIONS } = require('./bus');

const QUEUE = 'workers';
const DEFAULT_EVENTS = ['ask', 'note', 'slow', 'refuse'];

/** The reply a worker gives to a ClientEvent that wants an ack (null: no reply). */
function answer(ev) {
  switch (ev.event) {
    case 'slow':
      return null;
    case 'refuse':
      return { args_json: '', error: 'refused' };
    default: {
      const reply = {
        ok: true,
        echo: JSON.parse(ev.args_json),
        user: ev.user === undefined || ev.user === '' ? null : ev.user,
        socket: ev.socket_id,
        node: ev.node,
        claims: JSON.parse(ev.claims_json || '{}'),
      };
      return { args_json: JSON.stringify([reply]) };
    }
  }
}

/**
 * Starts a worker. Resolves once its subscriptions are registered with the server, to
 * { events, waitFor(pred, ms), stop(), nc }.
 */
async function startWorker({ url, prefix, ns = '/chat', events = DEFAULT_EVENTS, name = 'e2e-worker', onEvent } = {}) {
  const nc = await connect({ servers: url, name, ...NATS_OPTIONS, ...credentials(url, 'worker') });
  const s = subjects(prefix);
  const received = [];
  let waiters = [];
  for (const event of events) {
    nc.subscribe(s.event(ns, event), {
      queue: QUEUE,
      callback: (err, m) => {
        if (err) return;
        let ev;
        try {
          ev = decode('ClientEvent', m.data);
        } catch (e) {
          ev = { undecodable: e.message };
        }
        ev.subject = m.subject;
        ev.replied = Boolean(m.reply);
        received.push(ev);
        if (onEvent) onEvent(ev);
        waiters = waiters.filter((w) => {
          if (!w.pred(ev)) return true;
          w.resolve(ev);
          return false;
        });
        if (m.reply && !ev.undecodable) {
          const reply = answer(ev);
          if (reply) m.respond(encode('EventReply', reply));
        }
      },
    });
  }
  await nc.flush();
  return {
    nc,
    events: received,
    /** Resolves to the first received event (already or later) matching `pred`. */
    waitFor(pred, ms = 5000) {
      const seen = received.find(pred);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const w = { pred, resolve };
        waiters.push(w);
        setTimeout(() => {
          waiters = waiters.filter((x) => x !== w);
          reject(new Error(`worker: no matching event within ${ms} ms; received: ${JSON.stringify(received)}`));
        }, ms).unref();
      });
    },
    async stop() {
      await nc.drain().catch(() => nc.close());
    },
  };
}

module.exports = { startWorker, answer, QUEUE };

if (require.main === module) {
  const url = process.env.NATS_URL;
  const prefix = process.env.PREFIX || 'sio';
  if (!url) {
    process.stderr.write('worker: NATS_URL is required\n');
    process.exit(2);
  }
  const events = (process.env.EVENTS || DEFAULT_EVENTS.join(',')).split(',').filter(Boolean);
  if (process.env.NATS_USER) require('./bus').registerAuth(url, { worker: { user: process.env.NATS_USER, pass: process.env.NATS_PASS } });
  startWorker({ url, prefix, ns: process.env.NS || '/chat', events, onEvent: (ev) => process.stdout.write(`${JSON.stringify(ev)}\n`) })
    .then((w) => {
      process.stdout.write('worker ready\n');
      const quit = () => w.stop().finally(() => process.exit(0));
      process.once('SIGTERM', quit);
      process.once('SIGINT', quit);
    })
    .catch((err) => {
      process.stderr.write(`worker: ${err.message}\n`);
      process.exit(1);
    });
}
