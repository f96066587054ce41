'use strict';
// Hostile clients against a three-gateway cluster with fixtures/hostile.toml, part 3: the
// attacks that wait on the gateway's deadlines (slowloris, binary packet timeout, abandoned
// upgrades), against gw1 (lib/hostile.js).

const h = require('../lib/hostile');

h.clusterSuite('hostile clients: cluster, deadlines', [h.slowloris, h.attachmentLimits, h.upgradeAbuse]);
