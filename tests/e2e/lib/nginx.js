'use strict';
// A real nginx in front of test gateways, running one of the shipped configs from deploy/nginx/.
// The shipped file is used as written except for its addresses: `listen 8080` becomes a free
// loopback port, and the i-th distinct `server 127.0.0.1:300N` (gateway N of the local cluster)
// becomes the i-th test gateway's port. nginx runs in the foreground (daemon off) with its pid,
// logs and temp files in a fresh directory, and is stopped by its PID.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { REPO } = require('./server');
const { waitFor, tcpConnect } = require('./cluster');

const DEPLOY = path.join(REPO, 'deploy', 'nginx');
const children = new Set();
process.on('exit', () => {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

/** Path of nginx on PATH or in /usr/sbin, or null. */
function nginxBin() {
  const dirs = (process.env.PATH || '').split(path.delimiter).filter(Boolean);
  for (const dir of [...dirs, '/usr/sbin', '/usr/local/sbin']) {
    const candidate = path.join(dir, 'nginx');
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // next
    }
  }
  return null;
}

/** A free TCP port on 127.0.0.1 (bound, read, released). */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * The shipped config `name` with its addresses replaced: `ports` lists the test gateways' ports
 * in the order of the file's gateways (127.0.0.1:3001, :3002, ...); a file gateway beyond them is
 * mapped to the last one given.
 */
function rewrite(name, listenPort, ports) {
  const text = fs.readFileSync(path.join(DEPLOY, name), 'utf8');
  if (!/listen 8080;/.test(text)) throw new Error(`${name}: no "listen 8080;" to rewrite`);
  return text
    .replace(/listen 8080;/g, `listen 127.0.0.1:${listenPort};`)
    .replace(/server 127\.0\.0\.1:300(\d)/g, (_, n) => `server 127.0.0.1:${ports[Math.min(Number(n), ports.length) - 1]}`);
}

/** Starts nginx with deploy/nginx/`name` in front of `gateways` (handles with a `url`). */
async function startNginx(name, gateways) {
  const bin = nginxBin();
  if (!bin) throw new Error('nginx not found: apt-get install nginx (scripts/test.sh installs it)');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-nginx-'));
  const port = await freePort();
  const ports = gateways.map((g) => Number(new URL(g.url).port));
  fs.writeFileSync(path.join(dir, 'switchboard.conf'), rewrite(name, port, ports));
  const main = [
    'daemon off;',
    'worker_processes 1;',
    `pid ${dir}/nginx.pid;`,
    `error_log ${dir}/error.log warn;`,
    'worker_rlimit_nofile 16384;',
    'events { worker_connections 8192; }',
    'http {',
    '  access_log off;',
    ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${dir}/${t};`),
    `  include ${dir}/switchboard.conf;`,
    '}',
    '',
  ].join('\n');
  fs.writeFileSync(path.join(dir, 'nginx.conf'), main);
  const child = spawn(bin, ['-p', dir, '-c', path.join(dir, 'nginx.conf')], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  let exited = false;
  const exit = new Promise((resolve) => child.once('exit', () => ((exited = true), children.delete(child), resolve())));
  const stop = async () => {
    if (!exited) child.kill('SIGTERM');
    await exit;
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(async () => {
      if (exited) throw new Error(`nginx exited: ${output}`);
      try {
        await tcpConnect(port);
        return true;
      } catch {
        return false;
      }
    }, { timeoutMs: 10_000, what: `nginx (${name}) to listen on ${port}` });
  } catch (err) {
    await stop();
    throw err;
  }
  return { url: `http://127.0.0.1:${port}`, port, pid: child.pid, stop, output: () => output };
}

module.exports = { startNginx, nginxBin, rewrite };
