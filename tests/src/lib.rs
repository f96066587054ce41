//! Cross-tier end-to-end harness (gateways, broker and NATS as processes on loopback), for the
//! cluster issue. The standalone gateway's end-to-end tests are in `tests/e2e/` (node).
