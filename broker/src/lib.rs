//! Switchboard broker: the control plane that owns cluster-wide room membership, presence and
//! socket queries.
//!
//! [`state`] is its pure core (no I/O, no clock); everything else is a thin adapter around it:
//! [`convert`] maps the bus envelopes to the directory's types, [`snapshot`] reassembles
//! multi-part snapshots, [`leader`] elects the one broker that announces presence and decides
//! room capacity, [`service`] runs the NATS side ([`Broker`]), [`grpc`] serves the admin API
//! (queries and actions) over gRPC (FetchSockets' pages written straight from the directory by
//! [`page`]) and [`api`] the same over HTTP/JSON, both for holders of
//! [`keys`], and [`http`] serves health, metrics, the state document and the HTTP API.
//!
//! The library never reads the environment or OS signals and installs no log subscriber or
//! metrics recorder: the `switchboard-broker` binary (`bin/`) composes it.

pub mod api;
pub mod convert;
pub mod error;
pub mod grpc;
pub mod http;
pub mod keys;
pub mod leader;
pub mod metrics;
pub mod page;
pub mod service;
pub mod snapshot;
pub mod state;
mod table;

pub use error::BrokerError;
pub use leader::LeaderMode;
pub use service::{Broker, BrokerConfig, RebuildConfig, RebuildStats, RecoveryConfig};
