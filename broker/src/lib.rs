//! Switchboard broker: the control plane that owns cluster-wide room membership, presence and
//! socket queries. [`state`] is its pure core (no I/O, no clock); the NATS and gRPC adapters
//! around it are thin.

pub mod state;
