'use strict';
// Headless Chromium for the browser tests, driven by playwright-core: Debian's chromium
// (`apt-get install chromium`, which scripts/test.sh does) or the one CHROMIUM_PATH names.

const fs = require('node:fs');

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
// As the machine notes say: without the background-networking flags Chromium keeps trying to
// reach Google's hosts, which this closed network refuses.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * Launches Chromium; throws, saying how to install it, when it is missing. launch() gives every
 * run a fresh, empty user-data-dir of its own (removed on close).
 */
async function launchChromium() {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: install it with \`apt-get install chromium\` (scripts/test.sh does), or set CHROMIUM_PATH`);
  }
  const { chromium } = require('playwright-core');
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
}

module.exports = { launchChromium };
