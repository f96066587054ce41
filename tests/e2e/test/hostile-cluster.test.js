'use strict';
// Hostile clients against a three-gateway cluster (nats-server, broker, 3 gateways with
// fixtures/hostile.toml; lib/cluster.js), part 1: the attacks that only a cluster has — names
// that become NATS subjects, the operator surface behind the shipped nginx configs, the bus's
// credentials, snapshots and payload limit — and the 10 000 sessions from one address. Attacks
// hit gw1; after each, relays cross every gateway boundary, no NATS link went down, and the
// broker's state equals what the clients see (lib/hostile.js). Each attack prints its measured
// outcome as a test diagnostic.

const h = require('../lib/hostile');

h.clusterSuite('hostile clients: cluster, bus and operator surface', [
  h.longNamespace,
  h.operatorOnClientPort,
  h.operatorThroughNginx,
  h.workerKick,
  h.snapshotOversize,
  h.busPayload,
  h.perIp,
]);
