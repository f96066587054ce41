// Root hooks for the official client suites as scripts/client-suites.sh runs them (instead of
// the suites' own test/support/hooks.*, which would start the Node support server in-process).
//
// One thing only: a test that installed @sinonjs/fake-timers and failed before its own
// `clock.uninstall()` leaves the fake clock on the global object, and every later test of the
// run then times out (socket.io-client's "reconnect timeout" tests do this when they fail). The
// clock is uninstalled after each test, so a failure stays that test's own.
exports.mochaHooks = {
  afterEach() {
    const clock = globalThis.setTimeout && globalThis.setTimeout.clock;
    if (clock && typeof clock.uninstall === "function") {
      clock.uninstall();
    }
  },
};
