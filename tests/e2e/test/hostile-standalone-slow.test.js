'use strict';
// Hostile clients against a standalone gateway with fixtures/hostile.toml, part 2: the attacks
// that wait on the gateway's deadlines (slowloris, abandoned upgrades) and the 10 000 sessions
// from one address (lib/hostile.js).

const h = require('../lib/hostile');

h.standaloneSuite('hostile clients: standalone gateway, deadlines and sessions', [h.slowloris, h.attachmentLimits, h.perIp, h.upgradeAbuse]);
