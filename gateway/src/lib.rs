//! Switchboard gateway: terminates Socket.IO connections (Engine.IO v4 over long-polling and
//! WebSocket, Socket.IO protocol v5) and runs the application logic attached to them.
//!
//! Dependencies point one way: [`http`] → [`transport`] (`polling`, `ws`) → [`engine`] (the
//! Engine.IO session layer) / [`sio`] (the Socket.IO server) → the wire codecs, which are a crate
//! of their own: `switchboard_codec::{engineio, socketio, websocket}`. The codecs are pure (bytes
//! in, packets out, no tokio, no hyper, no clock) and fuzzed; everything with I/O or a timer is
//! here.
//!
//! The application rules: [`config`] → [`rule`] ← [`policy`]. The rule types the configuration
//! builds and the policy layer runs (room templates, argument paths, event rules) live in `rule`,
//! which imports neither; the policy reads the configuration, never the other way round.
//!
//! Token verification: [`auth`] (pure: a token, keys, `now` in; claims or a refusal out) takes
//! its keys from the configuration or from a [`jwks`] source, whose background task (started by
//! the binary with [`jwks::start`]) is the only part that touches the network.

pub mod admin_ui;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod forward;
pub mod http;
pub mod id;
pub mod jwks;
pub mod metrics;
pub mod policy;
pub mod ratelimit;
pub mod rule;
pub mod sio;
pub mod transport;
