'use strict';
// Hostile clients against a standalone gateway (embedded broker, in-process bus) with
// fixtures/hostile.toml, part 1: the attacks of issue 12 and the quick classics. Each attack
// asserts its refusal, a bound on the gateway's RSS, that relays between the sentinel clients
// still arrive and that the gateway's state equals what the clients see, and prints its measured
// outcome as a test diagnostic (lib/hostile.js).

const h = require('../lib/hostile');

h.standaloneSuite('hostile clients: standalone gateway', [
  h.attachmentBomb,
  h.attachmentBombPolling,
  h.rateLimitReentry,
  h.longNamespace,
  h.tenantFlood,
  h.tenantNamespaces,
  h.operatorOnClientPort,
  h.oversized,
  h.invalidPackets,
  h.badTokens,
  h.rateFlood,
  h.origins,
  h.pollingOverlap,
]);
