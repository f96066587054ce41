'use strict';
// Does a JetStream stream hand its messages out in sequence order across subjects? The recovery
// design (docs/recovery.md, "The log on JetStream") needs one order per socket, and a socket's
// packets come from several subjects (its rooms, its namespace, itself) and several publishers.
//
// Two connections publish 2 000 messages each, interleaved, on different subjects of one stream
// (one on 7 room subjects, one on 3 socket subjects). Then:
//   1. RePublish: a core subscription to the republished subjects records Nats-Sequence and
//      Nats-Last-Sequence: are sequences increasing, and does each subject's chain hold?
//   2. An ordered consumer filtered on the namespace (`t.log.ns.>`): consecutive sequences?
//
//   /usr/sbin/nats-server -js -sd /tmp/js-order -a 127.0.0.1 -p 14222 &
//   cd tests/e2e && node tools/jetstream-order.js 14222
//
// It creates the stream `T` (subjects `t.log.>`); use a throwaway server.
const { connect } = require('nats');

const N = 2000;

async function publishInterleaved(a, b) {
  const ja = a.jetstream();
  const jb = b.jetstream();
  const acks = [];
  for (let i = 0; i < N; i++) {
    acks.push(ja.publish(`t.log.ns.room.r${i % 7}`, new Uint8Array([1])));
    acks.push(jb.publish(`t.log.ns.sock.n${i % 3}`, new Uint8Array([2])));
  }
  return Promise.all(acks);
}

async function main() {
  const port = Number(process.argv[2] || 4222);
  const a = await connect({ port });
  const b = await connect({ port });
  const sub = await connect({ port });
  const info = a.info;
  const jsm = await a.jetstreamManager();
  await jsm.streams.add({
    name: 'T',
    subjects: ['t.log.>'],
    max_age: 60e9,
    republish: { src: 't.log.>', dest: 't.live.>' },
  });

  // 1. RePublish, on a core subscription.
  const seen = [];
  const live = sub.subscribe('t.live.>');
  await sub.flush();
  (async () => {
    for await (const m of live) {
      seen.push([m.subject, Number(m.headers.get('Nats-Sequence')), Number(m.headers.get('Nats-Last-Sequence'))]);
    }
  })();
  // 2. An ordered consumer on the namespace, from the start.
  const oc = await sub.jetstream().consumers.get('T', { filterSubjects: 't.log.ns.>' });
  const consumed = [];
  const messages = await oc.consume();
  const drained = (async () => {
    for await (const m of messages) {
      consumed.push(m.seq);
      if (consumed.length === 2 * N) break;
    }
  })();

  await publishInterleaved(a, b);
  await Promise.race([drained, new Promise((r) => setTimeout(r, 5000))]);
  await new Promise((r) => setTimeout(r, 300));

  let inversions = 0;
  let maxBack = 0;
  let high = 0;
  const examples = [];
  for (let i = 0; i < seen.length; i++) {
    const seq = seen[i][1];
    if (seq < high) {
      inversions += 1;
      maxBack = Math.max(maxBack, high - seq);
      if (examples.length < 2) examples.push({ after: seen[i - 1], got: seen[i] });
    }
    high = Math.max(high, seq);
  }
  const last = {};
  let chainBreaks = 0;
  for (const [subject, seq, previous] of seen) {
    if ((last[subject] || 0) !== previous) chainBreaks += 1;
    last[subject] = seq;
  }
  let consecutive = true;
  for (let i = 1; i < consumed.length; i++) if (consumed[i] !== consumed[i - 1] + 1) consecutive = false;

  console.log(`nats-server ${info.version}, ${2 * N} messages from 2 publishers on 10 subjects`);
  console.log(
    `RePublish: received ${seen.length}; arrivals below an earlier sequence: ${inversions} ` +
      `(at most ${maxBack} sequences back); per-subject Nats-Last-Sequence chain breaks: ${chainBreaks}`,
  );
  for (const e of examples) console.log(`  e.g. ${JSON.stringify(e.after)} then ${JSON.stringify(e.got)}`);
  console.log(`ordered consumer (filter t.log.ns.>): received ${consumed.length}; consecutive: ${consecutive}`);
  for (const c of [a, b, sub]) await c.close();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
