'use strict';
// Hostile clients against a three-gateway cluster with fixtures/hostile.toml, part 2: the client
// floods and malformed input of the standalone suite, against gw1 of a cluster, with relays
// between gateways, NATS links and the broker's state checked after each (lib/hostile.js).

const h = require('../lib/hostile');

h.clusterSuite('hostile clients: cluster, floods and malformed input', [
  h.attachmentBomb,
  h.attachmentBombPolling,
  h.rateLimitReentry,
  h.tenantFlood,
  h.tenantNamespaces,
  h.oversized,
  h.invalidPackets,
  h.badTokens,
  h.rateFlood,
  h.origins,
  h.pollingOverlap,
]);
