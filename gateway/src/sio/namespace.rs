//! Namespaces: their handlers, their sockets and their rooms, and broadcasts to them.
//!
//! Rooms are a forward index (room → members) owned by the namespace plus a reverse index (the
//! socket's own room list), changed together under the namespace's room lock. A broadcast encodes
//! its packet once and hands every recipient a clone of the same `Bytes`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use serde_json::Value;
use switchboard_codec::engineio::{Compress, Frame};
use switchboard_codec::socketio;

use crate::engine::Pushed;
use crate::metrics;

use super::Registry;
use super::adapter::{Adapter, AdapterSlot, Recovery, Target};
use super::socket::{
    Args, ConnectError, ConnectRequest, DisconnectReason, Event, Socket, SocketInner,
};

/// A room name.
pub type Room = Arc<str>;

/// A join refused because the room has reached its capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("room full")]
pub struct RoomFull;

pub(crate) type Middleware =
    Arc<dyn Fn(&mut ConnectRequest<'_>) -> Result<(), ConnectError> + Send + Sync>;
pub(crate) type Prepare = Arc<
    dyn Fn(&Value, Option<&str>) -> Option<futures_util::future::BoxFuture<'static, ()>>
        + Send
        + Sync,
>;
pub(crate) type ConnectHandler = Arc<dyn Fn(&Socket) + Send + Sync>;
pub(crate) type EventHandler = Arc<dyn Fn(&Socket, Event) + Send + Sync>;
pub(crate) type DisconnectHandler = Arc<dyn Fn(&Socket, DisconnectReason) + Send + Sync>;

/// The handlers of a namespace (shared by every child of a dynamic namespace).
#[derive(Default)]
pub(crate) struct Handlers {
    pub(crate) middleware: Vec<Middleware>,
    pub(crate) prepare: Option<Prepare>,
    pub(crate) connect: Vec<ConnectHandler>,
    pub(crate) events: HashMap<String, EventHandler>,
    pub(crate) any: Option<EventHandler>,
    pub(crate) disconnect: Vec<DisconnectHandler>,
    pub(crate) recovery: Option<Recovery>,
}

pub(crate) type SharedHandlers = Arc<RwLock<Handlers>>;

type Members = HashMap<Arc<str>, Arc<SocketInner>>;

pub(crate) struct NsInner {
    pub(crate) name: Arc<str>,
    pub(crate) handlers: SharedHandlers,
    pub(crate) sockets: RwLock<Members>,
    pub(crate) rooms: RwLock<HashMap<Room, Members>>,
    adapter: AdapterSlot,
    /// For a child of a dynamic namespace: the server's registry, which it leaves with its last
    /// socket. `None` for a static namespace, which lives as long as the server.
    pub(crate) registry: Option<Weak<Registry>>,
    /// [`metrics::SOCKETS`] and [`metrics::NAMESPACE_CONNECTS`] of the namespace's label.
    connected: ::metrics::Gauge,
    connects: ::metrics::Counter,
}

impl NsInner {
    /// `label` names the namespace in metrics: its name, or for a child of a dynamic namespace
    /// the pattern (a closed set: what the server registered, never what a client asked for).
    pub(crate) fn new(
        name: &str,
        label: &str,
        handlers: SharedHandlers,
        adapter: AdapterSlot,
        registry: Option<Weak<Registry>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            handlers,
            sockets: RwLock::new(HashMap::new()),
            rooms: RwLock::new(HashMap::new()),
            adapter,
            registry,
            connected: ::metrics::gauge!(metrics::SOCKETS, "namespace" => label.to_owned()),
            connects: ::metrics::counter!(
                metrics::NAMESPACE_CONNECTS,
                "namespace" => label.to_owned()
            ),
        })
    }

    /// The cluster adapter, if the server has one.
    pub(crate) fn adapter(&self) -> Option<&Arc<dyn Adapter>> {
        self.adapter.get()
    }

    pub(crate) fn handlers(&self) -> RwLockReadGuard<'_, Handlers> {
        self.handlers.read()
    }

    pub(crate) fn add_socket(&self, socket: &Arc<SocketInner>) {
        if self
            .sockets
            .write()
            .insert(socket.id.clone(), socket.clone())
            .is_none()
        {
            self.connected.increment(1.0);
            self.connects.increment(1);
        }
    }

    /// Takes a dynamic namespace's child out of the server once it has no socket left (checked
    /// under the registry's lock, under which sockets are added to children).
    pub(crate) fn release(self: &Arc<Self>) {
        let Some(registry) = self.registry.as_ref().and_then(Weak::upgrade) else {
            return;
        };
        let mut map = registry.write();
        if self.sockets.read().is_empty()
            && map.get(&self.name).is_some_and(|ns| Arc::ptr_eq(ns, self))
        {
            map.remove(&self.name);
        }
    }

    /// Removes a socket and its room memberships; returns the rooms it was in.
    pub(crate) fn remove_socket(&self, socket: &Arc<SocketInner>) -> Vec<Room> {
        if self.sockets.write().remove(&socket.id).is_some() {
            self.connected.decrement(1.0);
        }
        let mut rooms = self.rooms.write();
        let mine = std::mem::take(&mut *socket.rooms());
        for room in &mine {
            if let Some(members) = rooms.get_mut(room) {
                members.remove(&socket.id);
                if members.is_empty() {
                    rooms.remove(room);
                }
            }
        }
        mine
    }

    /// The sockets a target selects, each once.
    pub(crate) fn select(&self, target: &Target) -> Vec<Arc<SocketInner>> {
        let mut out = Vec::new();
        let _ = visit(self, target, |s| {
            out.push(s.clone());
            true
        });
        out
    }

    /// Adds a socket to a room; false if it was already a member.
    pub(crate) fn join(&self, socket: &Arc<SocketInner>, room: Room) -> bool {
        self.join_within(socket, room, 0).unwrap_or(false)
    }

    /// Adds a socket to a room unless the room already has `max_members` members (0 = no
    /// limit), checked and changed under one lock; Ok(false) if it was already a member.
    pub(crate) fn join_within(
        &self,
        socket: &Arc<SocketInner>,
        room: Room,
        max_members: usize,
    ) -> Result<bool, RoomFull> {
        let mut rooms = self.rooms.write();
        let mut mine = socket.rooms();
        if mine.contains(&room) {
            return Ok(false);
        }
        if max_members > 0 && rooms.get(&room).is_some_and(|m| m.len() >= max_members) {
            return Err(RoomFull);
        }
        mine.push(room.clone());
        rooms
            .entry(room)
            .or_default()
            .insert(socket.id.clone(), socket.clone());
        Ok(true)
    }

    /// Removes a socket from a room; false if it was not a member.
    pub(crate) fn leave(&self, socket: &Arc<SocketInner>, room: &str) -> bool {
        let mut rooms = self.rooms.write();
        let mut mine = socket.rooms();
        let Some(pos) = mine.iter().position(|r| &**r == room) else {
            return false;
        };
        mine.swap_remove(pos);
        if let Some(members) = rooms.get_mut(room) {
            members.remove(&socket.id);
            if members.is_empty() {
                rooms.remove(room);
            }
        }
        true
    }
}

/// A namespace (cheap to clone). Handlers registered on a dynamic namespace apply to every child
/// namespace its pattern matches.
#[derive(Clone)]
pub struct Namespace {
    pub(crate) inner: Option<Arc<NsInner>>,
    pub(crate) handlers: SharedHandlers,
    pub(crate) name: Arc<str>,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("name", &self.name)
            .finish()
    }
}

impl Namespace {
    pub(crate) fn from_inner(inner: &Arc<NsInner>) -> Self {
        Self {
            inner: Some(inner.clone()),
            handlers: inner.handlers.clone(),
            name: inner.name.clone(),
        }
    }

    /// The namespace's name (for a dynamic namespace: its pattern).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn handlers_mut(&self) -> RwLockWriteGuard<'_, Handlers> {
        self.handlers.write()
    }

    /// Adds a middleware, run in order before the CONNECT reply; an error refuses the connection
    /// with a CONNECT_ERROR carrying its message and data.
    pub fn use_middleware(
        &self,
        f: impl Fn(&mut ConnectRequest<'_>) -> Result<(), ConnectError> + Send + Sync + 'static,
    ) {
        self.handlers_mut().middleware.push(Arc::new(f));
    }

    /// Sets the step that runs before the middlewares of a CONNECT: given the CONNECT payload and
    /// the handshake's `Authorization` header, it may return something to wait for first (the
    /// connection goes on reading meanwhile; the wait is bounded by whoever makes the future).
    /// How a namespace whose keys come from a JWKS fetches a key it does not know yet before its
    /// middleware verifies the token.
    pub fn prepare_connect(
        &self,
        f: impl Fn(&Value, Option<&str>) -> Option<futures_util::future::BoxFuture<'static, ()>>
        + Send
        + Sync
        + 'static,
    ) {
        self.handlers_mut().prepare = Some(Arc::new(f));
    }

    /// Adds a connect handler, called once the CONNECT reply is queued (so anything it emits
    /// follows the reply).
    pub fn on_connect(&self, f: impl Fn(&Socket) + Send + Sync + 'static) {
        self.handlers_mut().connect.push(Arc::new(f));
    }

    /// Sets the handler of one event name.
    pub fn on(&self, event: &str, f: impl Fn(&Socket, Event) + Send + Sync + 'static) {
        self.handlers_mut()
            .events
            .insert(event.to_owned(), Arc::new(f));
    }

    /// Sets the handler of events that have no handler of their own.
    pub fn on_any(&self, f: impl Fn(&Socket, Event) + Send + Sync + 'static) {
        self.handlers_mut().any = Some(Arc::new(f));
    }

    /// Adds a disconnect handler.
    pub fn on_disconnect(&self, f: impl Fn(&Socket, DisconnectReason) + Send + Sync + 'static) {
        self.handlers_mut().disconnect.push(Arc::new(f));
    }

    /// Turns on connection state recovery (socket.io's `connectionStateRecovery`) for this
    /// namespace: with an adapter that logs it ([`Adapter::logged`]), CONNECT replies carry a
    /// `pid`, emits carry offsets, and a client that comes back within the window gets its
    /// socket back (same id, rooms, data) with the packets it missed.
    pub fn set_recovery(&self, recovery: Recovery) {
        self.handlers_mut().recovery = Some(recovery);
    }

    /// Emits to every socket of the namespace; returns the number of recipients.
    pub fn emit(&self, event: &str, args: Args) -> usize {
        self.broadcast().emit(event, args)
    }

    /// A broadcast to the whole namespace, to be narrowed.
    pub fn broadcast(&self) -> Broadcast {
        Broadcast::new(self.inner.clone())
    }

    /// A broadcast to the members of a room.
    pub fn to(&self, room: impl Into<Room>) -> Broadcast {
        self.broadcast().to(room)
    }

    /// Number of members of a room on this node.
    pub fn room_len(&self, room: &str) -> usize {
        self.inner
            .as_ref()
            .map_or(0, |ns| ns.rooms.read().get(room).map_or(0, HashMap::len))
    }

    /// Number of sockets connected to the namespace on this node.
    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |ns| ns.sockets.read().len())
    }

    /// Whether no socket is connected to the namespace on this node.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rooms of the namespace on this node.
    pub fn rooms(&self) -> Vec<Room> {
        self.inner
            .as_ref()
            .map_or_else(Vec::new, |ns| ns.rooms.read().keys().cloned().collect())
    }

    /// A connected socket by id.
    pub fn socket(&self, id: &str) -> Option<Socket> {
        let ns = self.inner.as_ref()?;
        ns.sockets
            .read()
            .get(id)
            .map(|s| Socket::from_inner(s.clone()))
    }
}

/// A set of target sockets in one namespace (see [`Target`]). [`Broadcast::emit`] encodes once,
/// queues the same bytes to every local recipient and hands them to the cluster adapter, if any.
#[must_use = "a broadcast does nothing until emitted"]
pub struct Broadcast {
    ns: Option<Arc<NsInner>>,
    target: Target,
    volatile: bool,
    local: bool,
    compress: Compress,
}

impl Broadcast {
    pub(crate) fn new(ns: Option<Arc<NsInner>>) -> Self {
        Self {
            ns,
            target: Target::default(),
            volatile: false,
            local: false,
            compress: Compress::Allowed,
        }
    }

    /// Adds a room to the targets (several rooms: their union, each socket once).
    pub fn to(mut self, room: impl Into<Room>) -> Self {
        self.target.rooms.push(room.into());
        self
    }

    /// Adds one socket, by id, to the targets (it may live on another node).
    pub fn to_socket(mut self, id: &str) -> Self {
        self.target.sockets.push(id.into());
        self
    }

    /// Leaves out the members of a room.
    pub fn except(mut self, room: impl Into<Room>) -> Self {
        self.target.except_rooms.push(room.into());
        self
    }

    /// Leaves out one socket.
    pub fn except_socket(mut self, id: &str) -> Self {
        self.target.except_sockets.push(id.into());
        self
    }

    /// Drops the message for recipients whose queue is full instead of disconnecting them.
    pub fn volatile(mut self) -> Self {
        self.volatile = true;
        self
    }

    /// Delivers on this node only, not through the cluster.
    pub fn local(mut self) -> Self {
        self.local = true;
        self
    }

    /// Whether the transports may compress this emit (the default; permessage-deflate or the
    /// polling body's gzip, each above its threshold): `false` is Node's `compress(false)`, for
    /// payloads that do not compress (already compressed media, random tokens). It travels with
    /// the emit to the other gateways too.
    pub fn compress(mut self, on: bool) -> Self {
        self.compress = Compress::from_allowed(on);
        self
    }

    /// Emits an event to the targets; returns how many local sockets it was queued for (in a
    /// namespace whose emits go through the cluster's log, [`Adapter::logged`]: 0, since the
    /// log writes them later, in its order).
    pub fn emit(self, event: &str, args: Args) -> usize {
        let Some(ns) = self.ns.as_ref() else {
            return 0;
        };
        let mut frames = args.encode_event(&ns.name, event);
        if !self.compress.allowed() {
            frames
                .iter_mut()
                .for_each(|f| f.set_compress(self.compress));
        }
        if !self.local
            && !self.volatile
            && let Some(adapter) = ns.adapter()
            && adapter.logged(&ns.name)
        {
            adapter.broadcast(&ns.name, &self.target, &frames, false);
            return 0;
        }
        let n = deliver(ns, &self.target, &frames, self.volatile);
        ::metrics::histogram!(metrics::FANOUT_SIZE).record(n as f64);
        if !self.local
            && let Some(adapter) = ns.adapter()
        {
            adapter.broadcast(&ns.name, &self.target, &frames, self.volatile);
        }
        n
    }
}

/// Calls `f` on every local socket `target` selects, each once, until it returns false; returns
/// whether it ran to the end. Holds the namespace's read locks meanwhile.
fn visit(ns: &NsInner, target: &Target, mut f: impl FnMut(&Arc<SocketInner>) -> bool) -> bool {
    let excluded = |s: &SocketInner| {
        target.except_sockets.contains(&s.id)
            || (!target.except_rooms.is_empty()
                && s.rooms().iter().any(|r| target.except_rooms.contains(r)))
    };
    let mut each = |s: &Arc<SocketInner>| excluded(s) || f(s);
    if target.is_everyone() {
        return ns.sockets.read().values().all(&mut each);
    }
    let several = target.rooms.len() + target.sockets.len() > 1;
    let mut seen: HashSet<Arc<str>> = HashSet::new();
    let mut first = |s: &Arc<SocketInner>| (several && !seen.insert(s.id.clone())) || each(s);
    if !target.sockets.is_empty() {
        let sockets = ns.sockets.read();
        for id in &target.sockets {
            if let Some(s) = sockets.get(id)
                && !first(s)
            {
                return false;
            }
        }
    }
    let rooms = ns.rooms.read();
    target
        .rooms
        .iter()
        .filter_map(|room| rooms.get(room))
        .all(|members| members.values().all(&mut first))
}

/// Queues pre-encoded frames to the local sockets `target` selects; returns how many got them.
/// A recipient whose queue is full is disconnected as a slow consumer (volatile: skipped).
pub(crate) fn deliver(ns: &NsInner, target: &Target, frames: &[Frame], volatile: bool) -> usize {
    let mut slow: Vec<Arc<SocketInner>> = Vec::new();
    let mut n = 0;
    visit(ns, target, |s| {
        match s.conn.push_all(frames, volatile) {
            Pushed::Queued => n += 1,
            Pushed::Dropped | Pushed::Closed => {}
            Pushed::Full => slow.push(s.clone()),
        }
        true
    });
    // Closing runs the disconnect handlers, which take the namespace locks released above.
    for s in slow {
        s.conn.close(crate::engine::CloseReason::SlowConsumer);
    }
    n
}

/// Runs every middleware; the first error wins.
pub(crate) fn run_middleware(
    handlers: &[Middleware],
    req: &mut ConnectRequest<'_>,
) -> Result<(), ConnectError> {
    handlers.iter().try_for_each(|m| m(req))
}

/// Encodes an Engine.IO frame list for a CONNECT_ERROR.
pub(crate) fn connect_error_frames(nsp: &str, err: &ConnectError) -> Vec<Frame> {
    let mut body = serde_json::Map::new();
    body.insert("message".into(), err.message.clone().into());
    if let Some(data) = &err.data {
        body.insert("data".into(), data.clone());
    }
    socketio::encode(&socketio::Packet {
        kind: socketio::PacketType::ConnectError,
        nsp: nsp.to_owned(),
        id: None,
        data: Some(serde_json::Value::Object(body)),
        attachments: Vec::new(),
    })
}
