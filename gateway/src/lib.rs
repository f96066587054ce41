//! Switchboard gateway: terminates Socket.IO connections (Engine.IO v4 over long-polling and
//! WebSocket, Socket.IO protocol v5) and runs the application logic attached to them.
//!
//! Dependencies point one way: [`http`] → [`transport`] → [`engine`] / [`sio`] →
//! [`engineio`] / [`socketio`] / [`websocket`]. The three codec modules are pure: bytes in,
//! packets out, no tokio, no hyper, no clock. That is what makes them fuzzable.

pub mod auth;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod engineio;
pub mod forward;
pub mod http;
pub mod id;
pub mod metrics;
pub mod policy;
pub mod ratelimit;
pub mod rule;
pub mod sio;
pub mod socketio;
pub mod transport;
pub mod websocket;

#[cfg(test)]
mod testing;
