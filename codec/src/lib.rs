//! Switchboard's wire codecs: the three protocol layers a Socket.IO connection speaks, as pure
//! functions and small state machines.
//!
//! - [`engineio`]: Engine.IO v4 packets, in WebSocket frames and long-polling bodies;
//! - [`socketio`]: Socket.IO v5 packets (the default parser's text format) and the reassembly
//!   of binary packets from their attachments;
//! - [`websocket`]: RFC 6455 frames, masking, close payloads and fragment reassembly;
//! - [`deflate`]: permessage-deflate (RFC 7692): negotiation, and the per-message compression
//!   and bounded decompression the WebSocket frames carry.
//!
//! Everything here is bytes in, packets out (and back): no tokio, no hyper, no sockets, no clock
//! (where a deadline matters, `now` is an argument). That is what lets the gateway, the load
//! generator and the fuzz targets (`fuzz/`, round-trip properties for every decoder) share the
//! same code, and lets the unit tests run the protocol documents' vectors. A change that needs
//! I/O or a timer belongs in the gateway (`switchboard_gateway::engine`, `sio`, `transport`), not
//! here.

pub mod deflate;
pub mod engineio;
pub mod socketio;
pub mod websocket;

#[cfg(test)]
mod testing;
