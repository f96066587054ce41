//! The wire contract shared by Switchboard's gateway, broker and backend workers.
//!
//! This crate owns the names and shapes that cross process boundaries: [`subject`], the only
//! place NATS subjects are made or read back, and [`bus`], the protobuf envelopes of every NATS
//! message (generated from `proto/bus.proto`). It does no I/O: everything here is a pure
//! function of its inputs, so both tiers (and tests) agree on the contract by linking it.

pub mod subject;

/// The NATS message envelopes (`proto/bus.proto`, package `switchboard.bus.v1`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod bus {
    include!(concat!(env!("OUT_DIR"), "/switchboard.bus.v1.rs"));
}

/// The broker's gRPC API (`proto/admin.proto`, package `switchboard.admin.v1`): messages, the
/// tonic server trait and a client.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod admin {
    include!(concat!(env!("OUT_DIR"), "/switchboard.admin.v1.rs"));

    /// The encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/admin_descriptor.bin"));
}

pub use prost::Message;
