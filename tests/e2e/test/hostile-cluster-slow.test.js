'use strict';
// Hostile clients against a three-gateway cluster with fixtures/hostile.toml, part 3: the
// attacks that wait on the gateway's deadlines (slowloris, binary packet timeout, abandoned upgrades) and the 10 000
// sessions from one address, against gw1 (lib/hostile.js).

const h = require('../lib/hostile');

h.clusterSuite('hostile clients: cluster, deadlines and sessions', [h.slowloris, h.attachmentLimits, h.perIp, h.upgradeAbuse]);
