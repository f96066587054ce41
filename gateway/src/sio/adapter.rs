//! The cluster hook: what a [`Server`](super::Server) tells the rest of the cluster, and the
//! [`Target`] of a broadcast as it travels between nodes.
//!
//! Without an adapter the server is a single node. With one, every membership change and every
//! broadcast is reported after it took effect locally; frames that arrive from the cluster are
//! delivered with [`Server::deliver_remote`](super::Server::deliver_remote), which does not report
//! them again.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
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
    /// A broadcast to spread; `frames` are its encoded packet and attachments. It was delivered
    /// locally already, unless the namespace is [`logged`](Self::logged) and the broadcast is not
    /// volatile: then the adapter delivers it to the local recipients too, in the log's order.
    fn broadcast(&self, ns: &str, target: &Target, frames: &[Frame], volatile: bool);

    /// Whether non-volatile emits of `ns` go through the adapter's log (connection state
    /// recovery, docs/recovery.md): the server then writes them to no local socket itself, and
    /// the adapter delivers them, local recipients included, in the log's order with their
    /// offsets. Such a namespace's CONNECT replies carry a `pid`.
    fn logged(&self, ns: &str) -> bool {
        let _ = ns;
        false
    }

    /// Claims the session `pid` of `ns` for a client that came back with the last `offset` it
    /// saw, and reads the packets it missed. `None`: nothing to recover (unknown, expired,
    /// claimed elsewhere, offset unusable); the client gets a fresh session.
    fn recover(&self, ns: &str, pid: &str, offset: &str) -> BoxFuture<'static, Option<Restored>> {
        let _ = (ns, pid, offset);
        Box::pin(async { None })
    }
}

/// How a namespace recovers the sessions of clients that come back (socket.io's
/// `connectionStateRecovery`). Takes effect with an adapter whose [`Adapter::logged`] says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// How long after a disconnect a client may come back for its session (socket.io's
    /// `maxDisconnectionDuration`).
    pub max_disconnection: Duration,
    /// Whether a recovered socket skips the namespace's middlewares (socket.io's
    /// `skipMiddlewares`): it keeps what its session had instead.
    pub skip_middlewares: bool,
}

impl Default for Recovery {
    /// socket.io's defaults: 2 minutes, middlewares skipped.
    fn default() -> Self {
        Self {
            max_disconnection: Duration::from_secs(120),
            skip_middlewares: true,
        }
    }
}

/// A session claimed for a returning client: who it was, and what it missed. Dropped without a
/// successful [`Handover::complete`], the adapter hands the session back (claimable again).
pub struct Restored {
    /// The socket id, kept.
    pub id: Arc<str>,
    /// Its rooms at the disconnect.
    pub rooms: Vec<Room>,
    /// Restores the socket's typed data (claims, `data`) on the new socket, before any handler
    /// sees it.
    pub init: Box<dyn FnOnce(&Socket) + Send>,
    /// The packets it missed, in order, each an encoded packet and its attachments, with
    /// offsets.
    pub missed: Vec<Vec<Frame>>,
    /// Makes the new socket live without losing or repeating a packet.
    pub handover: Box<dyn Handover>,
}

/// The last step of a recovery, between the replay and live delivery.
pub trait Handover: Send {
    /// Holds live delivery of the namespace still while `attach` writes the replay, the CONNECT
    /// reply and `buffered` (the packets for this socket that arrived live while the replay was
    /// read) and makes the socket a live member of its namespace and rooms. `Err(())`: the
    /// buffer overflowed; `attach` is not called and the client gets a fresh session.
    #[allow(clippy::result_unit_err)]
    fn complete(self: Box<Self>, attach: &mut dyn FnMut(Vec<Vec<Frame>>)) -> Result<(), ()>;
}

/// Where a server's adapter lives, shared with its namespaces (set once, before serving).
pub(crate) type AdapterSlot = Arc<std::sync::OnceLock<Arc<dyn Adapter>>>;
