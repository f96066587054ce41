// nats-server CPU per message, for the capacity model of docs/scaling.md: one publisher and S
// subscribers of one subject (as a room's subject with S gateways holding members), SIZE-byte
// messages, N of them; reads the server's CPU from /proc/PID/stat (10 ms ticks).
//   taskset -c 0 nats-server -a 127.0.0.1 -p 14333 &
//   taskset -c 1 node scripts/bench-nats.js nats://127.0.0.1:14333 <nats-server PID> 300000 100 [S]
// Needs tests/e2e's node_modules (npm ci there). Prints one JSON line.
'use strict';
const { connect } = require(require('path').join(__dirname, '..', 'tests', 'e2e', 'node_modules', 'nats'));
const fs = require('fs');
const [url, pid, n, size, subs] = [process.argv[2], +process.argv[3], +process.argv[4], +process.argv[5], +(process.argv[6] || 1)];
const cpu = () => { const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); return (+f[11] + +f[12]) / 100; };
(async () => {
  const subConns = []; let got = 0; let done;
  const all = new Promise((r) => (done = r));
  for (let i = 0; i < subs; i++) {
    const nc = await connect({ servers: url });
    const sub = nc.subscribe('bench.room');
    (async () => { for await (const _ of sub) { if (++got === n * subs) done(); } })();
    await nc.flush(); subConns.push(nc);
  }
  const pub = await connect({ servers: url });
  const payload = Buffer.alloc(size, 120);
  const c0 = cpu(); const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) { pub.publish('bench.room', payload); if (i % 1000 === 0) await pub.flush(); }
  await all;
  const wall = Number(process.hrtime.bigint() - t0) / 1e9; const c = cpu() - c0;
  console.log(JSON.stringify({ messages: n, subs, size, wall_s: wall, msgs_per_s: Math.round(n / wall), nats_cpu_s: c, nats_cpu_us_per_msg: (c * 1e6) / n, nats_cpu_us_per_delivery: (c * 1e6) / (n * subs) }));
  await pub.close(); for (const s of subConns) await s.close();
})();
