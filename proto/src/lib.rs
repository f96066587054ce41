//! The wire contract shared by Switchboard's gateway, broker and backend workers.
//!
//! This crate owns the names and shapes that cross process boundaries: [`subject`], the only
//! place NATS subjects are made or read back, and [`bus`], the protobuf envelopes of every NATS
//! message (generated from `proto/bus.proto`), [`batch`], which writes membership batches around
//! already-encoded messages, [`presence`], which writes presence announcements in batches and
//! takes them apart, and, with the `grpc` feature, `admin`, the broker's
//! gRPC API (tonic, from `proto/admin.proto`). It does no I/O: everything here is a pure
//! function of its inputs, so both tiers (and tests) agree on the contract by linking it.

pub mod batch;
pub mod offset;
pub mod presence;
pub mod subject;

/// Event names an application may neither emit nor handle as ordinary events, because the
/// Socket.IO client libraries use them themselves. The gateway (config validation, the codec)
/// and the broker (admin emits) check against this one list.
pub const RESERVED_EVENTS: &[&str] = &[
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// The NATS message envelopes (`proto/bus.proto`, package `switchboard.bus.v1`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod bus {
    include!(concat!(env!("OUT_DIR"), "/switchboard.bus.v1.rs"));
}

/// The broker's gRPC API (`proto/admin.proto`, package `switchboard.admin.v1`): messages, the
/// tonic server trait and a client. Only with the `grpc` feature, so that users of the bus
/// envelopes alone do not compile tonic.
#[cfg(feature = "grpc")]
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod admin {
    include!(concat!(env!("OUT_DIR"), "/switchboard.admin.v1.rs"));
    // serde `Serialize`/`Deserialize` in the proto3 canonical JSON mapping (pbjson).
    include!(concat!(env!("OUT_DIR"), "/switchboard.admin.v1.serde.rs"));

    /// The encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/admin_descriptor.bin"));
}

pub use prost::Message;
