'use strict';
// The client side of scripts/bench-forward.sh: what it costs when a long-polling request reaches a
// gateway that does not own its session and is passed on to the owner.
//
//   node scripts/bench-forward.js OWNER_URL VIA_URL ITERATIONS OWNER_PID VIA_PID
//
// Opens a polling session on OWNER_URL and connects the `/chat` namespace (loadtest/bench.toml),
// then runs ITERATIONS exchanges twice: sent to OWNER_URL (direct), then to VIA_URL (every request
// passed on). One exchange is two HTTP requests, as a polling client makes them: a POST of
// `420["join","bench"]` and the GET that returns the ack `430[{"ok":true}]`. Reports, per
// request: latency p50 / p99 / mean, and the CPU time of each gateway (from /proc) divided by
// the number of requests. Prints one JSON line per mode. Only loopback URLs; bounded by
// ITERATIONS (at most 100 000). Node's own http client, one keep-alive connection.

const http = require('node:http');
const fs = require('node:fs');

const [ownerUrl, viaUrl, iterArg, ownerPid, viaPid] = process.argv.slice(2);
const iterations = Number(iterArg);
if (!ownerUrl || !viaUrl || !Number.isInteger(iterations) || iterations < 1 || iterations > 100_000) {
  console.error('usage: bench-forward.js OWNER_URL VIA_URL ITERATIONS(1..100000) OWNER_PID VIA_PID');
  process.exit(2);
}
for (const u of [ownerUrl, viaUrl]) {
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(new URL(u).hostname)) {
    console.error(`bench-forward.js: only loopback targets: ${u}`);
    process.exit(2);
  }
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function request(base, method, query, body) {
  return new Promise((resolve, reject) => {
    const url = new URL(`/socket.io/?EIO=4&transport=polling${query}`, base);
    const req = http.request(url, { method, agent, headers: body ? { 'content-type': 'text/plain;charset=UTF-8' } : {} }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (data += d));
      res.on('end', () => (res.statusCode === 200 ? resolve(data) : reject(new Error(`${method} ${url}: ${res.statusCode} ${data}`))));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** User + system CPU seconds of a process, from /proc/PID/stat. */
function cpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];
}

async function main() {
  const open = await request(ownerUrl, 'GET', '');
  const sid = JSON.parse(open.slice(1)).sid;
  const q = `&sid=${encodeURIComponent(sid)}`;
  await request(ownerUrl, 'POST', q, '40/chat,');
  const connected = await request(ownerUrl, 'GET', q);
  if (!connected.startsWith('40/chat,')) throw new Error(`no CONNECT reply: ${connected}`);
  for (const [mode, base] of [
    ['direct', ownerUrl],
    ['forwarded', viaUrl],
  ]) {
    const times = [];
    const cpu0 = [cpuSeconds(ownerPid), cpuSeconds(viaPid)];
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) {
      let t = process.hrtime.bigint();
      await request(base, 'POST', q, '42/chat,0["join","bench"]');
      times.push(Number(process.hrtime.bigint() - t) / 1000);
      t = process.hrtime.bigint();
      const got = await request(base, 'GET', q);
      times.push(Number(process.hrtime.bigint() - t) / 1000);
      if (!got.includes('43/chat,0[{"ok":true}]')) throw new Error(`unexpected answer: ${got}`);
    }
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu1 = [cpuSeconds(ownerPid), cpuSeconds(viaPid)];
    const requests = iterations * 2;
    times.sort((a, b) => a - b);
    const result = {
      mode,
      requests,
      wall_s: Number(wall.toFixed(3)),
      latency_us_p50: Math.round(percentile(times, 50)),
      latency_us_p99: Math.round(percentile(times, 99)),
      latency_us_mean: Math.round(times.reduce((a, b) => a + b, 0) / times.length),
      latency_us_max: Math.round(times[times.length - 1]),
      owner_cpu_us_per_request: Number((((cpu1[0] - cpu0[0]) * 1e6) / requests).toFixed(1)),
      via_cpu_us_per_request: Number((((cpu1[1] - cpu0[1]) * 1e6) / requests).toFixed(1)),
    };
    console.log(JSON.stringify(result));
  }
  await request(ownerUrl, 'POST', q, '1').catch(() => {});
  agent.destroy();
}

main().catch((err) => {
  console.error(`bench-forward.js: ${err.message}`);
  process.exit(1);
});
