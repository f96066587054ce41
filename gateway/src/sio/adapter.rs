//! The cluster hook: what a [`Server`](super::Server) tells the rest of the cluster, and the
//! [`Target`] of a broadcast as it travels between nodes.
//!
//! Without an adapter the server is a single node. With one, every membership change and every
//! broadcast is reported after it took effect locally; frames that arrive from the cluster are
//! delivered with [`Server::deliver_remote`](super::Server::deliver_remote), which does not report
//! them again.

use std::sync::Arc;

use switchboard_codec::engineio::Frame;

use super::namespace::Room;
use super::socket::{DisconnectReason, Socket};

/// Who a broadcast is for, within one namespace: the union of the members of `rooms` and the
/// sockets in `sockets` (both empty: every socket), minus the members of `except_rooms` and the
/// sockets in `except_sockets`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// Rooms whose members are targeted.
    pub rooms: Vec<Room>,
    /// Rooms whose members are left out.
    pub except_rooms: Vec<Room>,
    /// Sockets left out.
    pub except_sockets: Vec<Arc<str>>,
    /// Sockets targeted by id.
    pub sockets: Vec<Arc<str>>,
}

impl Target {
    /// Whether this targets the whole namespace (no room and no socket named).
    pub fn is_everyone(&self) -> bool {
        self.rooms.is_empty() && self.sockets.is_empty()
    }
}

/// Receives a node's membership changes and broadcasts, to spread them over the cluster.
///
/// Calls are made on the connection's task, after the local change, with no lock of the server
/// held: an implementation must not block (queue and return).
pub trait Adapter: Send + Sync + 'static {
    /// A socket connected to its namespace, already in its auto-joined rooms.
    fn connected(&self, socket: &Socket);
    /// A socket left its namespace; `rooms` are the rooms it was in.
    fn disconnected(&self, socket: &Socket, rooms: &[Room], reason: DisconnectReason);
    /// A socket joined a room it was not in.
    fn joined(&self, socket: &Socket, room: &Room);
    /// A socket left a room it was in.
    fn left(&self, socket: &Socket, room: &Room);
    /// A broadcast was delivered locally; `frames` are its encoded packet and attachments.
    fn broadcast(&self, ns: &str, target: &Target, frames: &[Frame], volatile: bool);
}

/// Where a server's adapter lives, shared with its namespaces (set once, before serving).
pub(crate) type AdapterSlot = Arc<std::sync::OnceLock<Arc<dyn Adapter>>>;
