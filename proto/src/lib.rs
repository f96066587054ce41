//! The wire contract shared by Switchboard's gateway, broker and backend workers.
//!
//! This crate owns the names and shapes that cross process boundaries. Today that is
//! [`subject`], the only place NATS subjects are made or read back; the gRPC `.proto` files
//! and the NATS message envelopes will live here too. It does no I/O: everything here is a pure
//! function of its inputs, so both tiers (and tests) agree on the contract by linking it.

pub mod subject;
