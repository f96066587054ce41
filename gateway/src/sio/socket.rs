//! Sockets (one client in one namespace), the events they receive, the arguments they send, and
//! acknowledgements in both directions.

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, MutexGuard};
use serde_json::Value;
use switchboard_codec::engineio::{Compress, Frame};
use switchboard_codec::socketio::{self, PacketType};
use tokio::sync::oneshot;

use crate::engine::{CloseReason, Conn};

use super::ConnData;
use super::namespace::{Broadcast, Namespace, NsInner, Room, RoomFull};

/// Typed values, one per type.
pub(crate) type Data = Vec<(TypeId, Arc<dyn Any + Send + Sync>)>;
type AckCallback = Box<dyn FnOnce(Result<Args, AckError>) + Send>;

pub(crate) struct SocketInner {
    pub(crate) id: Arc<str>,
    pub(crate) ns: Arc<NsInner>,
    pub(crate) conn: Arc<Conn<ConnData>>,
    rooms: Mutex<Vec<Room>>,
    data: Mutex<Data>,
    acks: Mutex<Option<Box<Acks>>>,
    /// The session's private id, in a namespace with connection state recovery.
    pub(crate) pid: Option<Arc<str>>,
    /// Whether this socket is a recovered session.
    pub(crate) recovered: bool,
}

#[derive(Default)]
struct Acks {
    next_id: u64,
    pending: HashMap<u64, AckCallback>,
}

impl SocketInner {
    pub(crate) fn new(
        id: Arc<str>,
        ns: Arc<NsInner>,
        conn: Arc<Conn<ConnData>>,
        data: Data,
        pid: Option<Arc<str>>,
        recovered: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            ns,
            conn,
            rooms: Mutex::new(Vec::new()),
            data: Mutex::new(data),
            acks: Mutex::new(None),
            pid,
            recovered,
        })
    }

    /// The socket's own room list (the reverse index); the namespace changes it together with
    /// its room map, under the namespace's room lock.
    pub(crate) fn rooms(&self) -> MutexGuard<'_, Vec<Room>> {
        self.rooms.lock()
    }

    /// Resolves a pending server→client ack.
    pub(crate) fn resolve_ack(&self, id: u64, args: Args) {
        let cb = self
            .acks
            .lock()
            .as_mut()
            .and_then(|a| a.pending.remove(&id));
        if let Some(cb) = cb {
            cb(Ok(args));
        }
    }

    /// Fails every pending ack (the socket is gone).
    pub(crate) fn fail_acks(&self) {
        let acks = self.acks.lock().take();
        if let Some(acks) = acks {
            for (_, cb) in acks.pending {
                cb(Err(AckError::Disconnected));
            }
        }
    }

    fn timeout_ack(&self, id: u64) {
        let cb = self
            .acks
            .lock()
            .as_mut()
            .and_then(|a| a.pending.remove(&id));
        if let Some(cb) = cb {
            cb(Err(AckError::Timeout));
        }
    }
}

/// One client connected to one namespace (cheap to clone).
#[derive(Clone)]
pub struct Socket {
    pub(crate) inner: Arc<SocketInner>,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.inner.id)
            .field("nsp", &self.inner.ns.name)
            .finish()
    }
}

impl Socket {
    pub(crate) fn from_inner(inner: Arc<SocketInner>) -> Self {
        Self { inner }
    }

    /// The socket id (carries this node's id).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The Engine.IO session id of the underlying connection.
    pub fn sid(&self) -> &str {
        self.inner.conn.sid()
    }

    /// The namespace.
    pub fn namespace(&self) -> Namespace {
        Namespace::from_inner(&self.inner.ns)
    }

    /// The handshake request of the underlying connection.
    pub fn handshake(&self) -> &crate::engine::HandshakeInfo {
        self.inner.conn.handshake()
    }

    /// The transport the connection uses now.
    pub fn transport(&self) -> crate::engine::Transport {
        self.inner.conn.transport()
    }

    /// Typed data attached by middleware or handlers.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let data = self.inner.data.lock();
        data.iter()
            .find(|(t, _)| *t == TypeId::of::<T>())
            .and_then(|(_, v)| v.clone().downcast::<T>().ok())
    }

    /// Attaches typed data, replacing any value of the same type.
    pub fn insert<T: Send + Sync + 'static>(&self, value: T) {
        insert_data(&mut self.inner.data.lock(), value);
    }

    /// Emits an event to this socket. In a namespace whose emits go through the cluster's log
    /// ([`super::Adapter::logged`]) it is logged too, so a recovery can replay it, as socket.io
    /// does with `connectionStateRecovery`.
    pub fn emit(&self, event: &str, args: Args) {
        self.emit_with(event, args, Compress::Allowed);
    }

    /// [`Socket::emit`], saying whether the transport may compress it: [`Compress::Off`] is
    /// Node's `socket.compress(false).emit(...)`.
    pub fn emit_with(&self, event: &str, args: Args, compress: Compress) {
        let mut frames = args.encode_event(&self.inner.ns.name, event);
        if !compress.allowed() {
            frames.iter_mut().for_each(|f| f.set_compress(compress));
        }
        if let Some(adapter) = self.inner.ns.adapter()
            && adapter.logged(&self.inner.ns.name)
        {
            let target = super::Target {
                sockets: vec![self.inner.id.clone()],
                ..Default::default()
            };
            adapter.broadcast(&self.inner.ns.name, &target, &frames, false);
            return;
        }
        self.inner.conn.send_all(&frames, false);
    }

    /// Whether this socket is a session recovered after a disconnect (socket.io's
    /// `socket.recovered`).
    pub fn recovered(&self) -> bool {
        self.inner.recovered
    }

    /// The session's private id (`pid`), in a namespace with connection state recovery.
    pub(crate) fn pid(&self) -> Option<&str> {
        self.inner.pid.as_deref()
    }

    /// Emits an event and waits for the client's acknowledgement, at most `timeout`.
    pub fn emit_with_ack(
        &self,
        event: &str,
        args: Args,
        timeout: Duration,
    ) -> impl Future<Output = Result<Args, AckError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        self.emit_with_ack_cb(event, args, timeout, Compress::Allowed, move |r| {
            let _ = tx.send(r);
        });
        async move { rx.await.unwrap_or(Err(AckError::Disconnected)) }
    }

    /// Emits an event; `callback` gets the client's acknowledgement or an error. `compress`:
    /// whether the transport may compress it (`Off` for a cluster emit with `compress(false)`).
    pub fn emit_with_ack_cb(
        &self,
        event: &str,
        args: Args,
        timeout: Duration,
        compress: Compress,
        callback: impl FnOnce(Result<Args, AckError>) + Send + 'static,
    ) {
        let id = {
            let mut acks = self.inner.acks.lock();
            let acks = acks.get_or_insert_with(Box::default);
            let id = acks.next_id;
            acks.next_id += 1;
            acks.pending.insert(id, Box::new(callback));
            id
        };
        let mut frames = args.encode(
            &self.inner.ns.name,
            Some(event),
            Some(id),
            PacketType::Event,
        );
        for f in &mut frames {
            f.set_compress(compress);
        }
        if self.inner.conn.send_all(&frames, false) != crate::engine::Pushed::Queued {
            self.inner.timeout_ack(id);
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        // Ends with the session too: a close fails the pending acks itself.
        self.spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(inner) = weak.upgrade() {
                inner.timeout_ack(id);
            }
        });
    }

    /// Runs `task` for this socket's session on the engine's task tracker, until it completes
    /// or the session closes ([`crate::engine::Conn::spawn`]).
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.inner.conn.spawn(task);
    }

    /// Joins a room; true if the socket was not a member yet.
    pub fn join(&self, room: impl Into<Room>) -> bool {
        let room = room.into();
        let joined = self.inner.ns.join(&self.inner, room.clone());
        if joined && let Some(adapter) = self.inner.ns.adapter() {
            adapter.joined(self, &room);
        }
        joined
    }

    /// Joins a room unless it already has `max_members` members (0 = no limit), atomically on
    /// this node; Ok(true) if the socket was not a member yet.
    pub fn join_within(&self, room: impl Into<Room>, max_members: usize) -> Result<bool, RoomFull> {
        let room = room.into();
        let joined = self
            .inner
            .ns
            .join_within(&self.inner, room.clone(), max_members)?;
        if joined && let Some(adapter) = self.inner.ns.adapter() {
            adapter.joined(self, &room);
        }
        Ok(joined)
    }

    /// Leaves a room; true if the socket was a member.
    pub fn leave(&self, room: &str) -> bool {
        let left = self.inner.ns.leave(&self.inner, room);
        if left && let Some(adapter) = self.inner.ns.adapter() {
            adapter.left(self, &Room::from(room));
        }
        left
    }

    /// The rooms this socket is in.
    pub fn rooms(&self) -> Vec<Room> {
        self.inner.rooms().clone()
    }

    /// Whether this socket is in a room.
    pub fn in_room(&self, room: &str) -> bool {
        self.inner.rooms().iter().any(|r| &**r == room)
    }

    /// How many rooms this socket is in.
    pub fn room_count(&self) -> usize {
        self.inner.rooms().len()
    }

    /// A broadcast to a room's members other than this socket.
    pub fn to(&self, room: impl Into<Room>) -> Broadcast {
        self.broadcast().to(room)
    }

    /// A broadcast to the whole namespace other than this socket.
    pub fn broadcast(&self) -> Broadcast {
        Broadcast::new(Some(self.inner.ns.clone())).except_socket(&self.inner.id)
    }

    /// Disconnects this namespace only: the client gets a DISCONNECT packet, other namespaces on
    /// the same connection stay.
    pub fn disconnect(&self) {
        let frames = socketio::encode(&socketio::Packet {
            kind: PacketType::Disconnect,
            nsp: self.inner.ns.name.to_string(),
            id: None,
            data: None,
            attachments: Vec::new(),
        });
        self.inner.conn.send_all(&frames, false);
        super::remove_socket(&self.inner, DisconnectReason::ServerNamespaceDisconnect);
    }

    /// Closes the whole underlying connection (every namespace).
    pub fn close_connection(&self) {
        self.inner.conn.close(CloseReason::ServerClose);
    }
}

fn insert_data<T: Send + Sync + 'static>(data: &mut Data, value: T) {
    set_data(data, TypeId::of::<T>(), Arc::new(value));
}

fn set_data(data: &mut Data, t: TypeId, value: Arc<dyn Any + Send + Sync>) {
    match data.iter_mut().find(|(u, _)| *u == t) {
        Some(slot) => slot.1 = value,
        None => data.push((t, value)),
    }
}

/// Arguments of an emit or an ack: JSON values, and binary attachments referenced from them by
/// placeholders (`{"_placeholder":true,"num":N}`, see [`Args::binary`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Args {
    /// The JSON arguments, in order.
    pub values: Vec<Value>,
    /// Binary attachments, in placeholder order.
    pub attachments: Vec<Bytes>,
}

impl Args {
    /// Arguments from JSON values.
    pub fn new(values: Vec<Value>) -> Self {
        Self {
            values,
            attachments: Vec::new(),
        }
    }

    /// No arguments.
    pub fn none() -> Self {
        Self::default()
    }

    /// Adds the attachments the placeholders in the values refer to.
    pub fn with_attachments(mut self, attachments: Vec<Bytes>) -> Self {
        self.attachments = attachments;
        self
    }

    /// Adds one binary argument (a placeholder plus its attachment).
    pub fn binary(mut self, data: Bytes) -> Self {
        self.values
            .push(socketio::placeholder(self.attachments.len()));
        self.attachments.push(data);
        self
    }

    pub(crate) fn encode_event(self, nsp: &str, event: &str) -> Vec<Frame> {
        self.encode(nsp, Some(event), None, PacketType::Event)
    }

    /// Encodes an EVENT (with `event` as first element) or an ACK.
    pub(crate) fn encode(
        self,
        nsp: &str,
        event: Option<&str>,
        id: Option<u64>,
        kind: PacketType,
    ) -> Vec<Frame> {
        let values = Value::Array(self.values);
        match event {
            Some(event) => socketio::encode_event(nsp, event, &values, id, &self.attachments),
            None => socketio::encode(&socketio::Packet {
                kind,
                nsp: nsp.to_owned(),
                id,
                data: Some(values),
                attachments: self.attachments,
            }),
        }
    }
}

impl From<Value> for Args {
    /// A JSON array gives its items as the arguments; any other value is one argument.
    fn from(v: Value) -> Self {
        match v {
            Value::Array(values) => Self::new(values),
            other => Self::new(vec![other]),
        }
    }
}

impl From<Vec<Value>> for Args {
    fn from(values: Vec<Value>) -> Self {
        Self::new(values)
    }
}

/// Why an acknowledgement did not arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// The client did not answer in time.
    #[error("operation has timed out")]
    Timeout,
    /// The socket disconnected first.
    #[error("socket has been disconnected")]
    Disconnected,
}

/// A received event.
pub struct Event {
    /// The event name.
    pub name: String,
    /// The arguments after the name (placeholders left in place).
    pub args: Vec<Value>,
    /// Binary attachments referenced by placeholders in `args`.
    pub attachments: Vec<Bytes>,
    pub(crate) ack: Option<AckResponder>,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("name", &self.name)
            .field("args", &self.args)
            .field("attachments", &self.attachments.len())
            .field("wants_ack", &self.ack.is_some())
            .finish()
    }
}

/// The server's promise to answer one client event's ack; counted in the connection's pending
/// acks while it lives.
pub(crate) struct AckResponder {
    conn: Arc<Conn<ConnData>>,
    nsp: Arc<str>,
    id: u64,
}

impl AckResponder {
    pub(crate) fn new(conn: Arc<Conn<ConnData>>, nsp: Arc<str>, id: u64) -> Self {
        conn.data.pending_acks.fetch_add(1, Ordering::Relaxed);
        Self { conn, nsp, id }
    }

    /// Answers the event (and so keeps the promise).
    pub(crate) fn send(self, args: Args) {
        let frames = args.encode(&self.nsp, None, Some(self.id), PacketType::Ack);
        self.conn.send_all(&frames, false);
    }
}

impl Drop for AckResponder {
    fn drop(&mut self) {
        self.conn.data.pending_acks.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Event {
    /// Whether the client asked for an acknowledgement (and it was not sent yet).
    pub fn wants_ack(&self) -> bool {
        self.ack.is_some()
    }

    /// Sends the acknowledgement; does nothing if none was asked for or it was already sent.
    pub fn ack(&mut self, args: Args) {
        if let Some(ack) = self.ack.take() {
            ack.send(args);
        }
    }

    /// The arguments and attachments as they came, for relaying.
    pub fn into_args(self) -> Args {
        Args {
            values: self.args,
            attachments: self.attachments,
        }
    }

    /// Splits off the ack responder so the arguments can be moved while keeping the ability to
    /// acknowledge.
    pub fn take_ack(&mut self) -> Option<Acker> {
        self.ack.take().map(Acker)
    }
}

/// The right to acknowledge one event, separated from it.
pub struct Acker(AckResponder);

impl Acker {
    /// Sends the acknowledgement.
    pub fn send(self, args: Args) {
        self.0.send(args);
    }
}

/// What middleware sees of a connect attempt, and may change.
pub struct ConnectRequest<'a> {
    pub(crate) auth: &'a Value,
    pub(crate) conn: &'a Conn<ConnData>,
    pub(crate) nsp: &'a str,
    pub(crate) data: Data,
    pub(crate) rooms: Vec<Room>,
    /// Values [`ConnectRequest::keep`] created, for the connection's table once accepted.
    pub(crate) kept: Data,
}

impl ConnectRequest<'_> {
    /// The CONNECT payload (`{}` if none).
    pub fn auth(&self) -> &Value {
        self.auth
    }

    /// A handshake request header, one of [`crate::engine::KEPT_HEADERS`] (the only ones a
    /// session keeps).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.conn.handshake().header(name)
    }

    /// A handshake query parameter, decoded.
    pub fn query(&self, key: &str) -> Option<Cow<'_, str>> {
        self.conn.handshake().query(key)
    }

    /// The client's address.
    pub fn remote_addr(&self) -> std::net::SocketAddr {
        self.conn.handshake().remote
    }

    /// The namespace being connected to.
    pub fn namespace(&self) -> &str {
        self.nsp
    }

    /// Attaches typed data to the socket-to-be.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        insert_data(&mut self.data, value);
    }

    /// Typed data attached by an earlier middleware.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.data
            .iter()
            .find(|(t, _)| *t == TypeId::of::<T>())
            .and_then(|(_, v)| v.downcast_ref::<T>())
    }

    /// Attaches to the socket-to-be the connection's value of type `T` for this namespace: the
    /// one a previous socket of the same connection in the same namespace had, else `init()`.
    /// Unlike [`insert`](Self::insert)ed data, it survives leaving and re-entering the namespace
    /// (a rate limit's bucket, say) until the Engine.IO connection ends. A connection remembers
    /// the values of at most `max_namespaces` namespaces (the least recently connected one
    /// without a socket is forgotten first).
    pub fn keep<T: Send + Sync + 'static>(&mut self, init: impl FnOnce() -> T) {
        let t = TypeId::of::<T>();
        let found = self
            .conn
            .data
            .state
            .lock()
            .kept
            .iter()
            .find(|(n, _)| **n == *self.nsp)
            .and_then(|(_, data)| data.iter().find(|(u, _)| *u == t))
            .map(|(_, v)| v.clone());
        let value = found.unwrap_or_else(|| {
            let value: Arc<dyn Any + Send + Sync> = Arc::new(init());
            self.kept.push((t, value.clone()));
            value
        });
        set_data(&mut self.data, t, value);
    }

    /// Joins a room as part of connecting (before the CONNECT reply).
    pub fn join(&mut self, room: impl Into<Room>) {
        let room = room.into();
        if !self.rooms.contains(&room) {
            self.rooms.push(room);
        }
    }
}

/// A refused connect: sent to the client as CONNECT_ERROR `{"message":…,"data":…}`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectError {
    /// Shown to the client as the `connect_error` message.
    pub message: String,
    /// Optional details.
    pub data: Option<Value>,
}

impl ConnectError {
    /// A refusal with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            data: None,
        }
    }

    /// Adds details.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

/// Why a socket left its namespace. `Display` gives Socket.IO's reason strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client disconnected this namespace.
    ClientNamespaceDisconnect,
    /// The server disconnected this namespace.
    ServerNamespaceDisconnect,
    /// The whole connection ended.
    Connection(CloseReason),
}

impl DisconnectReason {
    /// Socket.IO's reason string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientNamespaceDisconnect => "client namespace disconnect",
            Self::ServerNamespaceDisconnect => "server namespace disconnect",
            Self::Connection(CloseReason::ServerClose) => "forced server close",
            Self::Connection(r) => r.as_str(),
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
