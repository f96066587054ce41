'use strict';
// deploy/: the manifests and the local-cluster script, checked without a Docker engine or a
// Kubernetes cluster.
//
// - Every YAML (multi-document included) and JSON file under deploy/ parses.
// - The Kubernetes objects are well formed (apiVersion, kind, metadata.name), the kustomization
//   lists them (and no Secret), selectors match pod labels, the gateway's probes point at paths
//   the gateway serves and its grace period covers preStop + drain.
// - Every binary the Dockerfile, compose and Kubernetes run is a [[bin]] of the workspace, and
//   every SWITCHBOARD_* variable they (and local-cluster.sh) set is one the binaries read, taken
//   from the Rust sources, so a typo fails here.
// - The operator surfaces (/metrics, /v1/state) are never routed to clients: the gateway's operator
//   port is in no Service and only Prometheus may reach it; the Ingress routes only the client
//   surface; compose publishes no gateway port; Prometheus scrapes the operator ports.
// - The real gateway starts with the ConfigMap's TOML and answers its probes.
// - deploy/local-cluster.sh on free ports: a socket.io-client round trip through its nginx, the
//   admin CLI with the printed token, then `local-cluster.sh stop` leaves none of its processes.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const YAML = require('yaml');
const { io } = require('socket.io-client');
const { start, gatewayBin, GATEWAY_ENV, REPO } = require('../lib/server');
const { brokerBin, adminBin, natsServerBin, waitFor } = require('../lib/cluster');
const { nginxBin, rewrite } = require('../lib/nginx');
const { within, once, connected, TRANSPORTS } = require('../lib/client');

const DEPLOY = path.join(REPO, 'deploy');
const K8S = path.join(DEPLOY, 'k8s');
const DOCKERFILE = path.join(DEPLOY, 'docker', 'Dockerfile');
const SCRIPT = path.join(DEPLOY, 'local-cluster.sh');
/** Not applied: the real Secret is created by the operator (see the file). */
const SECRET_EXAMPLE = 'secret.example.yaml';


// ---- reading deploy/ ---------------------------------------------------------------------------

/** Every file under `dir`, recursively, as paths relative to REPO. */
function walk(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    return e.isDirectory() ? walk(full) : [path.relative(REPO, full)];
  });
}

/** The documents of a YAML file as plain objects; throws naming the file on any parse error. */
function yamlDocs(file) {
  const text = fs.readFileSync(path.join(REPO, file), 'utf8');
  // `merge`: compose files share settings with `<<: *anchor`.
  const docs = YAML.parseAllDocuments(text, { merge: true });
  const problems = docs.flatMap((d) => [...d.errors, ...d.warnings]);
  if (problems.length > 0) throw new Error(`${file}: ${problems.map((p) => p.message).join('\n')}`);
  return docs.map((d) => d.toJS({ maxAliasCount: 100 })).filter((d) => d != null);
}

/** The Kubernetes objects of deploy/k8s/, each with the file it came from. */
function k8sObjects({ withExample = false } = {}) {
  return fs
    .readdirSync(K8S)
    .filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml' && (withExample || f !== SECRET_EXAMPLE))
    .flatMap((f) => yamlDocs(path.join('deploy', 'k8s', f)).map((obj) => ({ ...obj, file: f })));
}

const WORKLOADS = new Set(['Deployment', 'StatefulSet', 'DaemonSet']);

/** The containers of every workload, with the workload's name and grace period. */
function containers(objects) {
  return objects
    .filter((o) => WORKLOADS.has(o.kind))
    .flatMap((o) =>
      o.spec.template.spec.containers.map((c) => ({
        ...c,
        workload: o.metadata.name,
        grace: o.spec.template.spec.terminationGracePeriodSeconds,
      })),
    );
}

/** Our containers (image switchboard-gateway / switchboard-broker) by image base name. */
function ours(objects, image) {
  return containers(objects).filter((c) => c.image.split(':')[0].split('/').pop() === image);
}

/**
 * The Dockerfile's stages: { name: { copied: [paths in the image], entrypoint: [...], env: {} } }.
 * Understands what deploy/docker/Dockerfile uses: FROM ... AS, COPY --from, ENV, ENTRYPOINT/CMD
 * in exec form, continuation lines.
 */
function dockerStages(file = DOCKERFILE) {
  const text = fs.readFileSync(file, 'utf8').replace(/\\\n/g, ' ');
  const stages = {};
  let cur = null;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const [, instr, rest] = /^(\w+)\s+(.*)$/.exec(line) || [];
    if (!instr) throw new Error(`${file}: cannot read line: ${line}`);
    switch (instr.toUpperCase()) {
      case 'FROM': {
        const m = /\bAS\s+(\S+)$/i.exec(rest);
        const base = rest.split(/\s+/)[0];
        const inherited = stages[base] || { copied: [], entrypoint: null, env: {}, runs: [] };
        cur = { copied: [...inherited.copied], entrypoint: inherited.entrypoint, env: { ...inherited.env }, runs: [] };
        if (m) stages[m[1]] = cur;
        break;
      }
      case 'COPY': {
        const args = rest.split(/\s+/).filter((a) => !a.startsWith('--'));
        const dest = args.pop();
        for (const src of args) cur.copied.push(dest.endsWith('/') ? `${dest}${path.basename(src)}` : dest);
        break;
      }
      case 'ENV':
        for (const m of rest.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=(\S*)/g)) cur.env[m[1]] = m[2];
        break;
      case 'ENTRYPOINT':
      case 'CMD':
        if (!rest.startsWith('[')) throw new Error(`${file}: ${instr} must use the exec form: ${line}`);
        if (instr.toUpperCase() === 'ENTRYPOINT') cur.entrypoint = JSON.parse(rest);
        break;
      case 'RUN':
        cur.runs.push(rest);
        break;
      default:
        break;
    }
  }
  return stages;
}

/** The workspace's binaries, from `cargo metadata`. */
function workspaceBins() {
  let out;
  try {
    out = execFileSync('cargo', ['metadata', '--no-deps', '--format-version', '1'], { cwd: REPO, encoding: 'utf8', maxBuffer: 64 << 20 });
  } catch (err) {
    throw new Error(`cargo metadata failed (is cargo installed? see scripts/test.sh): ${err.message}`);
  }
  const meta = JSON.parse(out);
  return new Set(meta.packages.flatMap((p) => p.targets.filter((t) => t.kind.includes('bin')).map((t) => t.name)));
}

/** Every .rs file under `dir`. */
function rustFiles(dir) {
  return walk(path.join(REPO, dir)).filter((f) => f.endsWith('.rs'));
}

/**
 * The SWITCHBOARD_* variables the gateway and broker read: every such string literal in
 * bin/src (the binaries' one table of variables, bin/src/settings.rs), gateway/src and
 * broker/src, outside the unit tests at the bottom of each file.
 */
function variablesRead() {
  const names = new Set();
  for (const file of [...rustFiles('bin/src'), ...rustFiles('gateway/src'), ...rustFiles('broker/src')]) {
    const text = fs.readFileSync(path.join(REPO, file), 'utf8');
    const code = text.split(/^#\[cfg\(test\)\]/m)[0];
    for (const m of code.matchAll(/"(SWITCHBOARD_[A-Z0-9_]+)"/g)) names.add(m[1]);
  }
  return names;
}

/** `set` (name → where) entries whose name is neither read nor being added, as messages. */
function unknownVariables(set, read) {
  return [...set].filter(([name]) => !read.has(name)).map(([name, where]) => `${name} (set in ${where})`);
}

/** The SWITCHBOARD_* variables each manifest sets: [[name, where], ...]. */
function variablesSet() {
  const set = [];
  for (const [stage, s] of Object.entries(dockerStages())) {
    for (const name of Object.keys(s.env)) set.push([name, `deploy/docker/Dockerfile stage ${stage}`]);
  }
  const compose = yamlDocs('deploy/compose.yaml')[0];
  for (const [service, s] of Object.entries(compose.services)) {
    const env = Array.isArray(s.environment) ? s.environment.map((e) => e.split('=')[0]) : Object.keys(s.environment || {});
    for (const name of env) set.push([name, `deploy/compose.yaml service ${service}`]);
  }
  for (const c of containers(k8sObjects())) {
    for (const e of c.env || []) set.push([e.name, `deploy/k8s ${c.workload}/${c.name}`]);
  }
  // The script's assignments in the environment of the processes it starts (`NAME=value`).
  const script = fs.readFileSync(SCRIPT, 'utf8').split('\n').filter((l) => !/^\s*#/.test(l)).join('\n');
  for (const m of script.matchAll(/\b(SWITCHBOARD_[A-Z0-9_]+)=/g)) set.push([m[1], 'deploy/local-cluster.sh']);
  return set.filter(([name]) => name.startsWith('SWITCHBOARD_'));
}

/** The paths a binary's HTTP router answers, from its source. */
function servedPaths() {
  const gw = fs.readFileSync(path.join(REPO, 'gateway/src/http.rs'), 'utf8');
  const broker = fs.readFileSync(path.join(REPO, 'broker/src/http.rs'), 'utf8');
  return {
    gateway: new Set([...gw.matchAll(/\(&Method::GET, "(\/[^"]*)"\)/g)].map((m) => m[1])),
    broker: new Set([...broker.matchAll(/^\s*"(\/[^"]*)" =>/gm)].map((m) => m[1])),
  };
}

/** The ConfigMap's gateway TOML. */
function gatewayToml() {
  const cm = k8sObjects().find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'switchboard-gateway-config');
  assert.ok(cm, 'deploy/k8s has the ConfigMap switchboard-gateway-config');
  assert.equal(typeof cm.data['gateway.toml'], 'string', 'the ConfigMap has gateway.toml');
  return cm.data['gateway.toml'];
}

/** The environment variables named by `secret_env` in a gateway TOML. */
function secretEnvs(toml) {
  return [...toml.matchAll(/^\s*secret_env\s*=\s*"([^"]+)"/gm)].map((m) => m[1]);
}

/** GET `url` → status code. */
async function status(url) {
  const res = await fetch(url);
  await res.arrayBuffer();
  return res.status;
}

// ---- the manifests -----------------------------------------------------------------------------

describe('deploy/: manifests', () => {
  it('every YAML (all documents) and JSON file under deploy/ parses', () => {
    const files = walk(DEPLOY).filter((f) => /\.(ya?ml|json)$/.test(f));
    for (const want of ['deploy/compose.yaml', 'deploy/k8s/kustomization.yaml', 'deploy/k8s/gateway.yaml']) {
      assert.ok(files.includes(want), `${want} exists (found: ${files.join(', ')})`);
    }
    for (const file of files) {
      if (file.endsWith('.json')) {
        assert.doesNotThrow(() => JSON.parse(fs.readFileSync(path.join(REPO, file), 'utf8')), `${file} is valid JSON`);
      } else {
        const docs = yamlDocs(file);
        assert.ok(docs.length > 0, `${file} has at least one document`);
      }
    }
  });

  it('Kubernetes objects: apiVersion, kind, metadata.name; the kustomization lists them all but the Secret example', () => {
    const objects = k8sObjects({ withExample: true });
    assert.ok(objects.length > 0);
    for (const o of objects) {
      for (const key of ['apiVersion', 'kind']) assert.equal(typeof o[key], 'string', `${o.file}: ${key} in ${JSON.stringify(o).slice(0, 120)}`);
      assert.ok(o.metadata && typeof o.metadata.name === 'string' && o.metadata.name !== '', `${o.file}: ${o.kind} has metadata.name`);
    }
    const kinds = new Set(objects.map((o) => o.kind));
    for (const kind of ['Deployment', 'StatefulSet', 'Service', 'ConfigMap', 'Ingress', 'PodDisruptionBudget', 'Secret']) {
      assert.ok(kinds.has(kind), `deploy/k8s has a ${kind}`);
    }
    const [kustomization] = yamlDocs('deploy/k8s/kustomization.yaml');
    assert.equal(kustomization.kind, 'Kustomization');
    const listed = kustomization.resources;
    for (const f of listed) assert.ok(fs.existsSync(path.join(K8S, f)), `kustomization.yaml lists ${f}, which exists`);
    const files = fs.readdirSync(K8S).filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml');
    for (const f of files) {
      if (f === SECRET_EXAMPLE) assert.ok(!listed.includes(f), `${f} is an example and must not be applied`);
      else assert.ok(listed.includes(f), `kustomization.yaml lists ${f}`);
    }
    // Secrets are never applied from the repository, and the example holds placeholders only.
    for (const o of objects.filter((x) => x.kind === 'Secret')) {
      assert.equal(o.file, SECRET_EXAMPLE, `a Secret only in ${SECRET_EXAMPLE}, not in ${o.file}`);
      for (const [k, v] of Object.entries({ ...o.stringData, ...o.data })) assert.match(v, /REPLACE/, `${k} is a placeholder`);
    }
  });

  it('Kubernetes references: selectors match pod labels; Secret keys and ConfigMaps exist', () => {
    const objects = k8sObjects({ withExample: true });
    const selects = (selector, labels) => Object.entries(selector).every(([k, v]) => labels[k] === v);
    const pods = objects.filter((o) => WORKLOADS.has(o.kind)).map((o) => {
      const labels = o.spec.template.metadata.labels;
      assert.ok(selects(o.spec.selector.matchLabels, labels), `${o.metadata.name}: its selector matches its pods' labels`);
      return labels;
    });
    const matches = (selector) => pods.some((labels) => selects(selector, labels));
    for (const o of objects.filter((x) => x.kind === 'Service')) assert.ok(matches(o.spec.selector), `Service ${o.metadata.name} selects pods`);
    for (const o of objects.filter((x) => x.kind === 'PodDisruptionBudget')) {
      assert.ok(matches(o.spec.selector.matchLabels), `PDB ${o.metadata.name} selects pods`);
    }
    const secret = objects.find((o) => o.kind === 'Secret');
    for (const c of containers(objects)) {
      for (const e of c.env || []) {
        const ref = e.valueFrom && e.valueFrom.secretKeyRef;
        if (!ref) continue;
        assert.equal(ref.name, secret.metadata.name, `${c.workload}: ${e.name} reads the Secret ${secret.metadata.name}`);
        assert.ok(ref.key in secret.stringData, `${c.workload}: ${e.name}: key ${ref.key} is in ${SECRET_EXAMPLE}`);
      }
    }
    const configMaps = new Set(objects.filter((o) => o.kind === 'ConfigMap').map((o) => o.metadata.name));
    for (const o of objects.filter((x) => WORKLOADS.has(x.kind))) {
      for (const v of o.spec.template.spec.volumes || []) {
        if (v.configMap) assert.ok(configMaps.has(v.configMap.name), `${o.metadata.name}: ConfigMap ${v.configMap.name} exists`);
      }
    }
    const services = new Set(objects.filter((o) => o.kind === 'Service').map((o) => o.metadata.name));
    for (const o of objects.filter((x) => x.kind === 'Ingress')) {
      for (const rule of o.spec.rules) {
        for (const p of rule.http.paths) assert.ok(services.has(p.backend.service.name), `Ingress ${o.metadata.name} → Service ${p.backend.service.name}`);
      }
    }
  });

  it('gateway pods: /ready and /health probes on paths the gateway serves; the grace period covers preStop + drain', () => {
    const served = servedPaths();
    assert.ok(served.gateway.has('/health') && served.broker.has('/health'), `routes found in the sources: ${JSON.stringify([...served.gateway])}`);
    const objects = k8sObjects();
    const gateways = ours(objects, 'switchboard-gateway');
    assert.ok(gateways.length > 0, 'a gateway container');
    for (const c of gateways) {
      assert.equal(c.readinessProbe.httpGet.path, '/ready', 'readiness is /ready (503 while draining)');
      assert.equal(c.livenessProbe.httpGet.path, '/health', 'liveness is /health (a NATS outage must not restart gateways)');
      const sleep = c.lifecycle.preStop.sleep
        ? c.lifecycle.preStop.sleep.seconds
        : Number(/^(?:\/bin\/)?sleep$/.test(c.lifecycle.preStop.exec.command[0]) && c.lifecycle.preStop.exec.command[1]);
      assert.ok(sleep > 0, `a preStop sleep gives the endpoints time to update: ${JSON.stringify(c.lifecycle.preStop)}`);
      const drain = Number((c.env.find((e) => e.name === 'SWITCHBOARD_DRAIN_MS') || { value: '10000' }).value);
      assert.ok(c.grace * 1000 > sleep * 1000 + drain, `terminationGracePeriodSeconds ${c.grace} s > preStop ${sleep} s + drain ${drain} ms`);
      const host = c.env.find((e) => e.name === 'SWITCHBOARD_HOST');
      assert.equal(host && host.value, '0.0.0.0', 'the gateway listens on the pod network');
      const advertise = c.env.find((e) => e.name === 'SWITCHBOARD_ADVERTISE_ADDR');
      assert.match(advertise.value, /^\$\(POD_IP\):\d+$/, 'advertised address from the pod IP');
      const podIp = c.env.find((e) => e.name === 'POD_IP');
      assert.equal(podIp.valueFrom.fieldRef.fieldPath, 'status.podIP');
    }
    for (const [image, routes] of [['switchboard-gateway', served.gateway], ['switchboard-broker', served.broker]]) {
      for (const c of ours(objects, image)) {
        for (const probe of ['readinessProbe', 'livenessProbe', 'startupProbe']) {
          const p = c[probe] && c[probe].httpGet;
          if (p) assert.ok(routes.has(p.path.split('?')[0]), `${c.workload} ${probe} ${p.path} is served (${[...routes].join(' ')})`);
        }
      }
    }
  });

  it('the operator surfaces are never routed to clients; Prometheus scrapes the operator port', () => {
    const objects = k8sObjects();
    const served = servedPaths();
    for (const c of ours(objects, 'switchboard-gateway')) {
      const env = Object.fromEntries((c.env || []).map((e) => [e.name, e.value]));
      const operator = c.ports.find((p) => p.name === 'operator');
      assert.ok(operator, `${c.workload} names its operator port`);
      assert.equal(String(operator.containerPort), env.SWITCHBOARD_OPERATOR_PORT, 'the operator port is the one the gateway binds');
      const pod = objects.find((o) => WORKLOADS.has(o.kind) && o.metadata.name === c.workload).spec.template.metadata;
      assert.equal(pod.annotations['prometheus.io/port'], String(operator.containerPort), 'Prometheus scrapes the operator port');
      for (const svc of objects.filter((o) => o.kind === 'Service' && o.spec.selector['app.kubernetes.io/name'] === 'switchboard-gateway')) {
        for (const p of svc.spec.ports) {
          assert.notEqual(p.targetPort, 'operator', `Service ${svc.metadata.name} does not route to the operator port`);
          assert.notEqual(String(p.targetPort), String(operator.containerPort), `Service ${svc.metadata.name} does not route to the operator port`);
        }
      }
      const policy = objects.find((o) => o.kind === 'NetworkPolicy' && o.spec.podSelector.matchLabels['app.kubernetes.io/name'] === 'switchboard-gateway');
      assert.ok(policy, 'a NetworkPolicy guards the gateway pods');
      for (const rule of policy.spec.ingress) {
        if (rule.ports.some((p) => p.port === 'operator')) assert.ok(rule.from && rule.from.length > 0, 'the operator port only from selected pods');
      }
    }
    // The Ingress routes the client surface only, path by path.
    for (const o of objects.filter((x) => x.kind === 'Ingress')) {
      for (const rule of o.spec.rules) {
        for (const p of rule.http.paths) {
          const ok = p.pathType === 'Exact' ? served.gateway.has(p.path) || p.path === '/assets/socket.io.min.js' : p.path === '/socket.io/';
          assert.ok(ok, `Ingress ${o.metadata.name} routes only the client surface: ${p.pathType} ${p.path}`);
        }
      }
    }
    // compose: no gateway port is published; nginx is the way in.
    const compose = yamlDocs('deploy/compose.yaml')[0];
    for (const [name, svc] of Object.entries(compose.services)) {
      if (/^gw\d$/.test(name)) assert.equal(svc.ports, undefined, `compose ${name} publishes no port`);
    }
    // Prometheus scrapes the gateways' operator ports (local-cluster.sh's defaults).
    const [prom] = yamlDocs('deploy/prometheus/prometheus.yml');
    const job = prom.scrape_configs.find((j) => j.job_name === 'switchboard-gateway');
    const script = fs.readFileSync(SCRIPT, 'utf8');
    const opPorts = /LOCAL_CLUSTER_OPERATOR_PORTS:-([\d ]+)\}/.exec(script)[1].split(' ');
    assert.deepEqual(job.static_configs[0].targets, opPorts.map((p) => `127.0.0.1:${p}`));
  });

  it('every binary the Dockerfile, compose and Kubernetes run is a workspace [[bin]], without flags', () => {
    const bins = workspaceBins();
    assert.ok(bins.has('switchboard-gateway') && bins.has('switchboard-broker'), `bins: ${[...bins]}`);
    const stages = dockerStages();
    const named = (p) => path.basename(p);
    // The builder builds and copies real binaries.
    for (const run of stages.builder.runs) {
      for (const m of run.matchAll(/target\/release\/([\w-]+)/g)) assert.ok(bins.has(m[1]), `Dockerfile copies ${m[1]}, a [[bin]]`);
    }
    for (const target of ['gateway', 'broker']) {
      const s = stages[target];
      assert.ok(s && s.entrypoint, `Dockerfile stage ${target} with an ENTRYPOINT`);
      assert.ok(bins.has(named(s.entrypoint[0])), `stage ${target} runs ${s.entrypoint[0]}, a [[bin]]`);
      assert.ok(s.copied.includes(s.entrypoint[0]), `stage ${target} has ${s.entrypoint[0]} (copied: ${s.copied})`);
      assert.equal(s.entrypoint.length, 1, `stage ${target}: the binaries take no flags`);
      for (const p of s.copied) assert.ok(bins.has(named(p)), `stage ${target} copies ${p}, a [[bin]]`);
    }
    // compose and Kubernetes run what the image's stage runs, with no flags (the gateway takes
    // at most one argument: its configuration file).
    const checkArgs = (what, bin, args = []) => {
      assert.ok(bins.has(named(bin)), `${what} runs ${bin}, a [[bin]]`);
      const max = named(bin) === 'switchboard-gateway' ? 1 : 0;
      assert.ok(args.length <= max && args.every((a) => !a.startsWith('-')), `${what}: ${named(bin)} takes no flags: ${args}`);
    };
    const compose = yamlDocs('deploy/compose.yaml')[0];
    let composed = 0;
    for (const [name, s] of Object.entries(compose.services)) {
      if (!s.build) continue;
      assert.equal(s.build.dockerfile, 'deploy/docker/Dockerfile', `compose ${name} builds the Dockerfile`);
      const stage = stages[s.build.target];
      assert.ok(stage, `compose ${name}: stage ${s.build.target} exists`);
      const entry = s.entrypoint || stage.entrypoint;
      assert.deepEqual(entry, stage.entrypoint, `compose ${name} runs what stage ${s.build.target} runs`);
      checkArgs(`compose ${name}`, entry[0], s.command || []);
      composed++;
    }
    assert.equal(composed, 4, 'compose builds the broker and three gateways');
    const objects = k8sObjects();
    for (const target of ['gateway', 'broker']) {
      const cs = ours(objects, `switchboard-${target}`);
      assert.ok(cs.length > 0, `a Kubernetes container runs switchboard-${target}`);
      for (const c of cs) {
        const entry = c.command || stages[target].entrypoint;
        assert.deepEqual(entry, stages[target].entrypoint, `${c.workload} runs what stage ${target} runs`);
        checkArgs(`${c.workload}`, entry[0], c.args || []);
      }
    }
  });

  it('every SWITCHBOARD_* variable set by the manifests and local-cluster.sh is one the binaries read', () => {
    const read = variablesRead();
    for (const name of ['SWITCHBOARD_NATS_URL', 'SWITCHBOARD_HOST', 'SWITCHBOARD_BROKER_HTTP_PORT', 'SWITCHBOARD_ADMIN_TOKEN']) {
      assert.ok(read.has(name), `${name} found in the sources (found: ${[...read].join(' ')})`);
    }
    const set = variablesSet();
    assert.ok(set.length > 10, `variables found in the manifests: ${set.length}`);
    // The check itself catches a typo.
    assert.deepEqual(unknownVariables([['SWITCHBOARD_NAT_URL', 'a typo']], read), ['SWITCHBOARD_NAT_URL (set in a typo)']);
    assert.deepEqual(unknownVariables(set, read), [], 'variables no binary reads');
  });

  it('the gateway starts with the ConfigMap TOML and answers its probe paths', async (t) => {
    const toml = gatewayToml();
    const secrets = secretEnvs(toml);
    assert.ok(secrets.length > 0, 'the TOML names a JWT secret variable');
    // Every secret the TOML needs is given to the gateway pods.
    const gw = ours(k8sObjects(), 'switchboard-gateway')[0];
    for (const name of secrets) {
      assert.ok((gw.env || []).some((e) => e.name === name && e.valueFrom && e.valueFrom.secretKeyRef), `the gateway Deployment sets ${name} from the Secret`);
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-deploy-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'gateway.toml');
    fs.writeFileSync(file, toml);
    const env = { SWITCHBOARD_HOST: '127.0.0.1', SWITCHBOARD_PORT: '0', PORT: '0', ...GATEWAY_ENV, SWITCHBOARD_CONFIG: file, SWITCHBOARD_NATS_URL: undefined };
    for (const name of secrets) env[name] = crypto.randomBytes(48).toString('base64');
    const server = await start('gateway (ConfigMap TOML)', gatewayBin(), [], env);
    try {
      for (const probe of ['readinessProbe', 'livenessProbe']) {
        const p = gw[probe].httpGet.path;
        assert.equal(await status(`${server.url}${p}`), 200, `${probe} ${p}`);
      }
    } finally {
      await server.stop();
    }
    assert.equal(server.exited(), true, 'the gateway stopped');
  });

  it('kubectl kustomize renders deploy/k8s (when kubectl is installed)', (t) => {
    let version;
    try {
      version = execFileSync('kubectl', ['version', '--client'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    } catch {
      t.skip('kubectl not installed: the YAML checks above still ran');
      return;
    }
    assert.match(version, /Client Version/);
    const out = execFileSync('kubectl', ['kustomize', K8S], { encoding: 'utf8' });
    const rendered = YAML.parseAllDocuments(out).map((d) => d.toJS());
    const expected = k8sObjects().length;
    assert.equal(rendered.length, expected, 'every listed object rendered');
    for (const o of rendered) {
      if (o.kind !== 'Namespace') assert.equal(o.metadata.namespace, 'switchboard', `${o.kind} ${o.metadata.name} in the namespace`);
    }
  });
});

// ---- the local cluster -------------------------------------------------------------------------

/** `n` distinct free loopback ports (all held open at once while picking, then released). */
async function freePorts(n) {
  const servers = [];
  try {
    for (let i = 0; i < n; i++) {
      const srv = net.createServer();
      await new Promise((resolve, reject) => {
        srv.once('error', reject);
        srv.listen(0, '127.0.0.1', resolve);
      });
      servers.push(srv);
    }
    return servers.map((s) => s.address().port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  }
}

/** PIDs of `pid` and all its descendants, from /proc. */
function processTree(pid) {
  const parent = new Map();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      // pid (comm) state ppid ...: comm may hold spaces and parentheses, so parse from the last ')'.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parent.set(Number(entry), ppid);
    } catch {
      // gone meanwhile
    }
  }
  const tree = new Set([pid]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [child, ppid] of parent) {
      if (tree.has(ppid) && !tree.has(child)) {
        tree.add(child);
        grew = true;
      }
    }
  }
  return [...tree];
}

/** True when `pid` is a live process (not a zombie). */
function running(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Runs `bash deploy/local-cluster.sh stop` with `env`; resolves to { code, output }. */
function runStop(env) {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [SCRIPT, 'stop'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, output }));
  });
}

/** Fails with how to install what local-cluster.sh needs (it would install it itself; a test must not). */
function checkLocalClusterNeeds() {
  const missing = [
    [natsServerBin(), 'nats-server not found: apt-get install nats-server (scripts/test.sh installs it)'],
    [nginxBin(), 'nginx not found: apt-get install nginx (scripts/test.sh installs it)'],
    [fs.existsSync(gatewayBin()), `${gatewayBin()} not found: run \`cargo build --release --workspace --bins\` first`],
    [fs.existsSync(brokerBin()), `${brokerBin()} not found: run \`cargo build --release --workspace --bins\` first`],
  ].filter(([ok]) => !ok);
  if (missing.length > 0) throw new Error(missing.map(([, why]) => why).join('\n'));
}

/**
 * Runs deploy/local-cluster.sh on free ports with a fresh state directory until it prints
 * "local cluster ready". Resolves to { script, output(), exit, env, ports, dir, tree, cleanup() };
 * `tree` is the script and every process it started; `cleanup()` stops whatever is left (by
 * `stop`, then by PID) and removes the directory.
 */
async function startLocalCluster() {
  checkLocalClusterNeeds();
  const [lb, gw1, gw2, gw3, broker, grpc, nats, op1, op2, op3] = await freePorts(10);
  const ports = { lb, gateways: [gw1, gw2, gw3], operators: [op1, op2, op3], broker, grpc, nats };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-local-cluster-'));
  const env = {
    ...process.env,
    LOCAL_CLUSTER_PORT: String(lb),
    LOCAL_CLUSTER_GATEWAY_PORTS: `${gw1} ${gw2} ${gw3}`,
    LOCAL_CLUSTER_OPERATOR_PORTS: `${op1} ${op2} ${op3}`,
    LOCAL_CLUSTER_BROKER_PORT: String(broker),
    LOCAL_CLUSTER_GRPC_PORT: String(grpc),
    LOCAL_CLUSTER_NATS_PORT: String(nats),
    LOCAL_CLUSTER_DIR: dir,
    LOCAL_CLUSTER_DRAIN_MS: '1000',
    SWITCHBOARD_GATEWAY_BIN: gatewayBin(),
    SWITCHBOARD_BROKER_BIN: brokerBin(),
  };
  delete env.SWITCHBOARD_ADMIN_TOKEN;
  const script = spawn('bash', [SCRIPT], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let exited = null;
  const exit = new Promise((resolve) => script.once('exit', (code, signal) => resolve((exited = { code, signal }))));
  script.stdout.on('data', (d) => (output += d));
  script.stderr.on('data', (d) => {
    output += d;
    if (process.env.E2E_VERBOSE) process.stderr.write(`[local-cluster] ${d}`);
  });
  const cluster = { script, output: () => output, exit, env, ports, dir, tree: [script.pid] };
  cluster.cleanup = async () => {
    if (!exited) {
      await runStop(env);
      if (!exited) script.kill('SIGKILL');
    }
    // A failed stop must not leave processes behind: the ones this run started, by PID.
    for (const pid of cluster.tree.filter(running)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(
      () => {
        if (exited) throw new Error(`local-cluster.sh exited (${JSON.stringify(exited)})`);
        return output.includes('local cluster ready');
      },
      { timeoutMs: 60_000, intervalMs: 100, what: 'local-cluster.sh to print "local cluster ready"' },
    );
  } catch (err) {
    await cluster.cleanup();
    throw new Error(`${err.message}\n--- its output ---\n${output}`);
  }
  cluster.tree = processTree(script.pid);
  return cluster;
}

describe('deploy/local-cluster.sh', () => {
  let cluster;
  let output;
  let exit;
  let env;
  let ports;
  let dir;
  let tree;

  before(async () => {
    cluster = await startLocalCluster();
    ({ exit, env, ports, dir, tree } = cluster);
    output = cluster.output();
  });

  after(async () => {
    if (cluster) await cluster.cleanup();
  });

  it('prints the addresses, routes a client through its nginx, and stops all it started', async () => {
    // The addresses, as set.
    for (const want of [
      `http://127.0.0.1:${ports.lb}`,
      ...ports.gateways.map((p) => `http://127.0.0.1:${p}`),
      ...ports.operators.map((p) => `http://127.0.0.1:${p}`),
      `http://127.0.0.1:${ports.broker}`,
      `127.0.0.1:${ports.grpc}`,
      `nats://127.0.0.1:${ports.nats}`,
    ]) {
      assert.ok(output.includes(want), `printed ${want}:\n${output}`);
    }
    const token = (/token: (\S+)/.exec(output) || [])[1];
    assert.ok(token && token.length >= 16, `printed a gRPC token:\n${output}`);

    // Its nginx runs the shipped config with only the addresses rewritten (lib/nginx.js's rewrite).
    assert.equal(
      fs.readFileSync(path.join(dir, 'nginx', 'switchboard.conf'), 'utf8'),
      rewrite('switchboard-sid.conf', ports.lb, ports.gateways),
      'nginx config derived from deploy/nginx/switchboard-sid.conf',
    );

    // Every component it recorded is running, and children of the script.
    const pids = {};
    for (const name of ['nats', 'broker', 'gw1', 'gw2', 'gw3', 'nginx']) {
      pids[name] = Number(fs.readFileSync(path.join(dir, 'pids', `${name}.pid`), 'utf8').split(' ')[0]);
      assert.ok(running(pids[name]), `${name} (pid ${pids[name]}) is running`);
    }
    for (const [name, pid] of Object.entries(pids)) assert.ok(tree.includes(pid), `${name} was started by the script`);

    // The probes the Kubernetes manifests use answer on the cluster's processes.
    for (const p of ports.gateways) {
      assert.equal(await status(`http://127.0.0.1:${p}/ready`), 200, `gateway :${p} /ready`);
      assert.equal(await status(`http://127.0.0.1:${p}/health`), 200, `gateway :${p} /health`);
    }
    assert.equal(await status(`http://127.0.0.1:${ports.broker}/health`), 200, 'broker /health');
    // /metrics on the operator ports only: not on the client ports, not through nginx.
    for (const p of ports.operators) assert.equal(await status(`http://127.0.0.1:${p}/metrics`), 200, `operator :${p} /metrics`);
    for (const p of [...ports.gateways, ports.lb]) {
      for (const doc of ['/metrics', '/v1/state']) assert.equal(await status(`http://127.0.0.1:${p}${doc}`), 404, `:${p} ${doc}`);
    }
    // The demo page it advertises, through nginx.
    const page = await fetch(`http://127.0.0.1:${ports.lb}/`);
    assert.equal(page.status, 200, 'demo page through nginx');
    assert.match(page.headers.get('content-type'), /text\/html/);
    await page.arrayBuffer();

    // Clients through nginx: a polling-only one and an upgrading one; a join's ack (a round
    // trip) and a relay from one to the other through the cluster.
    const lb = `http://127.0.0.1:${ports.lb}/chat`;
    const opts = { forceNew: true, reconnection: false, timeout: 5000 };
    const a = io(lb, { ...opts, ...TRANSPORTS.polling });
    const b = io(lb, { ...opts, ...TRANSPORTS.upgrade });
    try {
      await connected(a);
      await connected(b);
      assert.match(a.id, /^gw[123]\./, `a socket id of one of the gateways: ${a.id}`);
      for (const s of [a, b]) assert.deepEqual(await within(s.emitWithAck('join', 'deploy-room'), 'join ack'), { ok: true });
      const got = once(a, 'say');
      b.emit('say', { room: 'deploy-room', text: 'through nginx' });
      const [msg] = await got;
      assert.equal(msg.text, 'through nginx');
    } finally {
      a.close();
      b.close();
    }

    // The gRPC admin API with the printed address and token sees the three gateways.
    const stats = execFileSync(adminBin(), ['stats', '--json'], {
      env: { ...process.env, SWITCHBOARD_ADMIN_ADDR: `http://127.0.0.1:${ports.grpc}`, SWITCHBOARD_ADMIN_TOKEN: token },
      encoding: 'utf8',
    });
    for (const node of ['gw1', 'gw2', 'gw3']) assert.match(stats, new RegExp(`"${node}"`), `admin stats lists ${node}`);

    // `stop` from "another shell": the script and everything it started are gone.
    const stopped = await runStop(env);
    assert.equal(stopped.code, 0, `local-cluster.sh stop: ${stopped.output}`);
    const { code } = await within(exit, 'local-cluster.sh to exit after stop', 30_000);
    assert.equal(code, 0, `local-cluster.sh exit status:\n${cluster.output()}`);
    await waitFor(() => tree.every((pid) => !running(pid)), { timeoutMs: 10_000, what: `processes ${tree.join(' ')} to be gone` });
    assert.deepEqual(fs.readdirSync(path.join(dir, 'pids')), [], 'no PID files left');
  });
});

describe('deploy/local-cluster.sh: Ctrl-C', () => {
  let cluster;
  after(async () => {
    if (cluster) await cluster.cleanup();
  });

  it('SIGINT to the script stops everything it started, and it exits 0', async () => {
    cluster = await startLocalCluster();
    const { tree, script } = cluster;
    assert.ok(tree.length >= 7, `the script and its processes: ${tree.join(' ')}`);
    script.kill('SIGINT');
    const { code } = await within(cluster.exit, 'local-cluster.sh to exit after SIGINT', 30_000);
    assert.equal(code, 0, `exit status after SIGINT:\n${cluster.output()}`);
    await waitFor(() => tree.every((pid) => !running(pid)), { timeoutMs: 10_000, what: `processes ${tree.join(' ')} to be gone` });
    assert.deepEqual(fs.readdirSync(path.join(cluster.dir, 'pids')), [], 'no PID files left');
  });
});
