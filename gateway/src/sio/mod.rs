//! The Socket.IO server: the embedding API (namespaces, sockets, rooms, events, acks) on top of
//! Engine.IO sessions.
//!
//! ```no_run
//! use switchboard_gateway::sio::{Args, Server};
//! let io = Server::new(Default::default());
//! let chat = io.of("/chat");
//! chat.on("hello", |socket, mut event| {
//!     socket.to("lobby").emit("hello", event.args.clone().into());
//!     event.ack(Args::new(vec![serde_json::json!({ "ok": true })]));
//! });
//! ```
//!
//! Handlers are plain closures called on the connection's task, in packet order; one that needs
//! to wait for something spawns a task with a clone of the [`Socket`]. Anything a connect handler
//! emits is queued after the CONNECT reply.
//!
//! What one connection may make the server hold is bounded by [`Limits`] before the memory is
//! spent: names, namespaces and CONNECTs, a binary packet's attachments (count, bytes, and time,
//! its deadline kept by the session's timer), and the acks the server owes (an [`Event`]'s ack
//! responder counts while it lives). A dynamic namespace's child exists only while an accepted
//! socket is in it.

mod adapter;
mod namespace;
mod socket;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use regex::Regex;
use serde_json::Value;
use switchboard_codec::engineio::{Frame, Payload};
use switchboard_codec::socketio::{self, Decoded, PacketType, Reassembly};
use tokio::time::Instant;

use crate::engine::{self, CloseReason, Conn};
use crate::metrics::{self, Limit};

pub use adapter::{Adapter, Handover, Recovery, Restored, Target};
pub use namespace::{Broadcast, Namespace, Room, RoomFull};
pub use socket::{
    AckError, Acker, Args, ConnectError, ConnectRequest, DisconnectReason, Event, Socket,
};
/// Whether an emit may be compressed ([`Broadcast::compress`], [`Socket::emit_with`]).
pub use switchboard_codec::engineio::Compress;

use adapter::AdapterSlot;
use namespace::{NsInner, SharedHandlers};
use socket::{AckResponder, Data, SocketInner};

/// Socket.IO options.
#[derive(Clone, Debug)]
pub struct Config {
    /// A connection must connect to a namespace within this time or be closed.
    pub connect_timeout: Duration,
    /// What one connection may ask of the server.
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(45),
            limits: Limits::default(),
        }
    }
}

/// Bounds on what one Engine.IO connection may make the server hold (docs/security.md). Each
/// is checked before the memory is spent, and each refusal is counted with
/// [`metrics::limited`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest namespace name a CONNECT may name, and longest event name, in bytes.
    pub max_name_bytes: usize,
    /// Most attachments one binary packet may announce (more: the connection is closed).
    pub max_attachments: usize,
    /// Most bytes the attachments of one binary packet may have in total.
    pub max_attachment_bytes: usize,
    /// Time from a binary packet's header to its last attachment.
    pub binary_timeout: Duration,
    /// Most namespaces one connection may be connected to at once.
    pub max_namespaces: usize,
    /// Most CONNECT packets one connection may send per `connect_interval`.
    pub connects_per_interval: u32,
    /// The window `connects_per_interval` is counted in.
    pub connect_interval: Duration,
    /// Most client events whose ack the server still owes, per connection.
    pub max_pending_acks: usize,
}

/// Default of [`Limits::max_name_bytes`].
pub const DEFAULT_MAX_NAME_BYTES: usize = 256;
/// Default of [`Limits::max_attachments`].
pub const DEFAULT_MAX_ATTACHMENTS: usize = 64;
/// Default of [`Limits::binary_timeout`].
pub const DEFAULT_BINARY_TIMEOUT: Duration = Duration::from_millis(10_000);
/// Default of [`Limits::max_namespaces`].
pub const DEFAULT_MAX_NAMESPACES: usize = 16;
/// Default of [`Limits::connects_per_interval`].
pub const DEFAULT_CONNECTS_PER_INTERVAL: u32 = 32;
/// Default of [`Limits::connect_interval`].
pub const DEFAULT_CONNECT_INTERVAL: Duration = Duration::from_millis(10_000);
/// Default of [`Limits::max_pending_acks`].
pub const DEFAULT_MAX_PENDING_ACKS: usize = 128;

impl Default for Limits {
    /// The defaults; attachment bytes as the default `max_payload_bytes`.
    fn default() -> Self {
        Self {
            max_name_bytes: DEFAULT_MAX_NAME_BYTES,
            max_attachments: DEFAULT_MAX_ATTACHMENTS,
            max_attachment_bytes: crate::engine::DEFAULT_MAX_PAYLOAD_BYTES,
            binary_timeout: DEFAULT_BINARY_TIMEOUT,
            max_namespaces: DEFAULT_MAX_NAMESPACES,
            connects_per_interval: DEFAULT_CONNECTS_PER_INTERVAL,
            connect_interval: DEFAULT_CONNECT_INTERVAL,
            max_pending_acks: DEFAULT_MAX_PENDING_ACKS,
        }
    }
}

/// Per-connection Socket.IO state, kept in the Engine.IO [`Conn`].
#[derive(Default)]
pub struct ConnData {
    state: Mutex<ConnSockets>,
    /// Client events whose ack the server still owes (live [`AckResponder`]s).
    pending_acks: AtomicUsize,
}

#[derive(Default)]
struct ConnSockets {
    sockets: Vec<Arc<SocketInner>>,
    /// A binary packet waiting for its attachments (boxed: rare, and every connection has the
    /// slot).
    partial: Option<Box<Reassembly>>,
    /// Namespaces the server disconnected this client from: packets the client sent before it
    /// learned that are dropped rather than treated as a protocol error.
    left: Vec<Arc<str>>,
    /// CONNECT packets of the current window.
    connects: ConnectWindow,
    /// State namespaces keep for this connection across leaving and re-entering them (see
    /// [`ConnectRequest::keep`]), least recently connected first; at most
    /// [`Limits::max_namespaces`] namespaces.
    kept: Vec<(Arc<str>, Data)>,
    /// Namespaces whose CONNECT waits for a session recovery.
    connecting: Vec<Arc<str>>,
}

/// Counts CONNECT packets in fixed windows of [`Limits::connect_interval`].
#[derive(Default)]
struct ConnectWindow {
    opened: Option<Instant>,
    count: u32,
}

impl ConnectWindow {
    /// Counts one CONNECT at `now`; false if it is over `limits.connects_per_interval`.
    fn admit(&mut self, now: Instant, limits: &Limits) -> bool {
        if self
            .opened
            .is_none_or(|t| now.saturating_duration_since(t) >= limits.connect_interval)
        {
            self.opened = Some(now);
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.count <= limits.connects_per_interval
    }
}

/// The namespaces of a server by name: static ones, and the dynamic children that have sockets.
pub(crate) type Registry = RwLock<HashMap<Arc<str>, Arc<NsInner>>>;

struct ServerInner {
    config: Config,
    namespaces: Arc<Registry>,
    patterns: RwLock<Vec<(Regex, SharedHandlers)>>,
    adapter: AdapterSlot,
}

/// The namespace a CONNECT names, found before its middleware runs.
enum Found {
    /// A static namespace.
    Static(Arc<NsInner>),
    /// A name that a dynamic namespace's pattern matches: its child exists only while it has
    /// sockets, so it is created (or found) once the connect is accepted.
    Dynamic {
        pattern: String,
        handlers: SharedHandlers,
    },
}

impl Found {
    fn handlers(&self) -> SharedHandlers {
        match self {
            Self::Static(ns) => ns.handlers.clone(),
            Self::Dynamic { handlers, .. } => handlers.clone(),
        }
    }
}

/// The Socket.IO server (cheap to clone). Hand it to an Engine.IO endpoint as its handler.
#[derive(Clone)]
pub struct Server {
    inner: Arc<ServerInner>,
}

impl Server {
    /// A server with no namespaces.
    pub fn new(config: Config) -> Self {
        Self {
            inner: Arc::new(ServerInner {
                config,
                namespaces: Arc::new(RwLock::new(HashMap::new())),
                patterns: RwLock::new(Vec::new()),
                adapter: AdapterSlot::default(),
            }),
        }
    }

    /// Installs the cluster adapter (once; before serving). False if one was already set.
    pub fn set_adapter(&self, adapter: Arc<dyn Adapter>) -> bool {
        self.inner.adapter.set(adapter).is_ok()
    }

    /// Delivers frames that came from the cluster to the local sockets of `ns` that `target`
    /// selects, without reporting them to the adapter again; returns the number of recipients.
    /// A namespace that does not exist on this node yet has no local sockets.
    pub fn deliver_remote(
        &self,
        ns: &str,
        target: &Target,
        frames: &[Frame],
        volatile: bool,
    ) -> usize {
        let Some(ns) = self.get_inner(ns) else {
            return 0;
        };
        let n = namespace::deliver(&ns, target, frames, volatile);
        ::metrics::histogram!(metrics::FANOUT_SIZE).record(n as f64);
        n
    }

    /// The local sockets of `ns` that `target` selects.
    pub fn select(&self, ns: &str, target: &Target) -> Vec<Socket> {
        self.get_inner(ns).map_or_else(Vec::new, |ns| {
            ns.select(target)
                .into_iter()
                .map(Socket::from_inner)
                .collect()
        })
    }

    /// Every local socket of every namespace.
    pub fn all_sockets(&self) -> Vec<Socket> {
        let namespaces: Vec<Arc<NsInner>> =
            self.inner.namespaces.read().values().cloned().collect();
        namespaces
            .iter()
            .flat_map(|ns| ns.select(&Target::default()))
            .map(Socket::from_inner)
            .collect()
    }

    fn get_inner(&self, name: &str) -> Option<Arc<NsInner>> {
        self.inner.namespaces.read().get(name).cloned()
    }

    /// A static namespace, created if absent.
    pub fn of(&self, name: &str) -> Namespace {
        let mut map = self.inner.namespaces.write();
        let ns = map.entry(name.into()).or_insert_with(|| {
            NsInner::new(
                name,
                name,
                SharedHandlers::default(),
                self.inner.adapter.clone(),
                None,
            )
        });
        Namespace::from_inner(ns)
    }

    /// A dynamic namespace: every namespace name the pattern matches is created once a connect to
    /// it is accepted, with the handlers registered on the returned value, and removed when its
    /// last socket leaves.
    pub fn of_pattern(&self, re: Regex) -> Namespace {
        let handlers = SharedHandlers::default();
        let name: Arc<str> = re.as_str().into();
        self.inner.patterns.write().push((re, handlers.clone()));
        Namespace {
            inner: None,
            handlers,
            name,
        }
    }

    /// An existing namespace (static, or a dynamic child already created).
    pub fn get(&self, name: &str) -> Option<Namespace> {
        self.get_inner(name).as_ref().map(Namespace::from_inner)
    }

    /// Finds the namespace a client asks for; creates nothing.
    fn lookup(&self, name: &str) -> Option<Found> {
        if let Some(ns) = self.get_inner(name)
            && ns.registry.is_none()
        {
            return Some(Found::Static(ns));
        }
        self.inner
            .patterns
            .read()
            .iter()
            .find(|(re, _)| re.is_match(name))
            .map(|(re, h)| Found::Dynamic {
                pattern: re.as_str().to_owned(),
                handlers: h.clone(),
            })
    }

    /// Adds an accepted socket to its namespace, creating a dynamic child if it has no socket
    /// yet. A child is created and filled under the registry's lock, the same lock under which
    /// its last socket's departure removes it: a socket never lands in a removed child.
    fn attach(
        &self,
        found: Found,
        nsp: &str,
        make: impl FnOnce(Arc<NsInner>) -> Arc<SocketInner>,
    ) -> Arc<SocketInner> {
        match found {
            Found::Static(ns) => {
                let socket = make(ns.clone());
                ns.add_socket(&socket);
                socket
            }
            Found::Dynamic { pattern, handlers } => {
                let mut map = self.inner.namespaces.write();
                let ns = map
                    .entry(nsp.into())
                    .or_insert_with(|| {
                        NsInner::new(
                            nsp,
                            &pattern,
                            handlers,
                            self.inner.adapter.clone(),
                            Some(Arc::downgrade(&self.inner.namespaces)),
                        )
                    })
                    .clone();
                let socket = make(ns.clone());
                ns.add_socket(&socket);
                socket
            }
        }
    }

    fn on_packet(&self, conn: &Arc<Conn<ConnData>>, packet: socketio::Packet) {
        let socket = find_socket(conn, &packet.nsp);
        match (packet.kind, socket) {
            (PacketType::Connect, None) => self.connect(conn, packet),
            (PacketType::Connect, Some(_)) => {
                tracing::debug!(sid = %conn.sid(), nsp = %packet.nsp, "duplicate connect ignored");
            }
            (PacketType::Disconnect, Some(s)) => {
                remove_socket(&s, DisconnectReason::ClientNamespaceDisconnect);
            }
            (PacketType::Event | PacketType::BinaryEvent, Some(s)) => {
                dispatch_event(&self.inner, conn, s, packet)
            }
            (PacketType::Ack | PacketType::BinaryAck, Some(s)) => {
                let id = packet.id.unwrap_or(u64::MAX);
                s.resolve_ack(id, into_args(packet.data, packet.attachments));
            }
            (PacketType::ConnectError, _) => conn.close(CloseReason::ParseError),
            // A packet for a namespace this connection is not in: the reference server closes
            // the connection, unless the server itself just disconnected that namespace (the
            // reference dispatches a batch's packets before the disconnect takes effect).
            (_, None) => {
                if conn
                    .data
                    .state
                    .lock()
                    .left
                    .iter()
                    .any(|n| **n == *packet.nsp)
                {
                    tracing::trace!(nsp = %packet.nsp, "packet for a namespace the server left");
                } else {
                    conn.close(CloseReason::ParseError);
                }
            }
        }
    }

    /// The limits a CONNECT meets before its namespace is looked at: the connection's connect
    /// rate, the name's length and the connection's number of namespaces.
    fn refuse_connect(&self, conn: &Conn<ConnData>, nsp: &str) -> Option<(Limit, &'static str)> {
        let limits = &self.inner.config.limits;
        let mut st = conn.data.state.lock();
        if !st.connects.admit(Instant::now(), limits) {
            Some((Limit::ConnectRate, "too many connects"))
        } else if nsp.len() > limits.max_name_bytes {
            Some((Limit::NameBytes, "namespace name too long"))
        } else if st.sockets.len() + st.connecting.len() >= limits.max_namespaces {
            Some((Limit::Namespaces, "too many namespaces"))
        } else {
            None
        }
    }

    fn connect(&self, conn: &Arc<Conn<ConnData>>, packet: socketio::Packet) {
        let nsp = packet.nsp;
        if let Some((limit, message)) = self.refuse_connect(conn, &nsp) {
            metrics::limited(limit);
            tracing::debug!(sid = %conn.sid(), limit = limit.name(), "connect refused");
            let frames = namespace::connect_error_frames(&nsp, &ConnectError::new(message));
            conn.send_all(&frames, false);
            return;
        }
        let Some(found) = self.lookup(&nsp) else {
            ::metrics::counter!(metrics::CONNECTS_REFUSED, "reason" => "invalid_namespace")
                .increment(1);
            let frames =
                namespace::connect_error_frames(&nsp, &ConnectError::new("Invalid namespace"));
            conn.send_all(&frames, false);
            return;
        };
        let empty = Value::Object(serde_json::Map::new());
        let auth = packet.data.unwrap_or(empty);
        let (recovery, prepare) = {
            let shared = found.handlers();
            let handlers = shared.read();
            (handlers.recovery, handlers.prepare.clone())
        };
        // Something to wait for before the middlewares run (a key being fetched).
        let waiting = prepare.and_then(|p| p(&auth, conn.handshake().header("authorization")));
        let adapter = self
            .inner
            .adapter
            .get()
            .filter(|a| recovery.is_some() && a.logged(&nsp))
            .cloned();
        // A client coming back names its session and the last offset it saw (socket.io-client
        // sends both in the CONNECT payload); anything else is a fresh connect, as in socket.io.
        let claim = adapter.as_ref().and_then(|_| {
            let field = |k: &str| {
                auth.get(k)
                    .and_then(Value::as_str)
                    .filter(|v| !v.is_empty() && v.len() <= MAX_RECOVERY_TOKEN_BYTES)
            };
            Some((field("pid")?.to_owned(), field("offset")?.to_owned()))
        });
        let (Some(adapter), Some((pid, offset))) = (adapter, claim) else {
            let Some(waiting) = waiting else {
                self.admit(conn, found, nsp, auth, recovery, None);
                return;
            };
            if !mark_connecting(conn, &nsp) {
                return;
            }
            let server = self.clone();
            let session = conn.clone();
            conn.spawn(async move {
                waiting.await;
                session.data.state.lock().connecting.retain(|n| **n != *nsp);
                server.admit(&session, found, nsp, auth, recovery, None);
            });
            return;
        };
        if !mark_connecting(conn, &nsp) {
            return;
        }
        // The claim runs to its end even if this connection closes meanwhile: a session the
        // broker granted is then dropped here, which hands it back (see `Restored`).
        let claiming = adapter.recover(&nsp, &pid, &offset);
        let (tx, rx) = tokio::sync::oneshot::channel();
        conn.spawn_to_end(async move {
            let _ = tx.send(claiming.await);
        });
        let server = self.clone();
        let session = conn.clone();
        conn.spawn(async move {
            let restored = rx.await.ok().flatten();
            if let Some(waiting) = waiting {
                waiting.await;
            }
            session.data.state.lock().connecting.retain(|n| **n != *nsp);
            let pid: Arc<str> = pid.into();
            server.admit(
                &session,
                found,
                nsp,
                auth,
                recovery,
                restored.map(|r| (r, pid)),
            );
        });
    }

    /// Accepts a CONNECT: recovers the session if `restored` (falling back to a fresh socket
    /// when the hand-over fails), else runs the middlewares and makes a new socket.
    fn admit(
        &self,
        conn: &Arc<Conn<ConnData>>,
        found: Found,
        nsp: String,
        auth: Value,
        recovery: Option<Recovery>,
        restored: Option<(Restored, Arc<str>)>,
    ) {
        let skip = recovery.is_some_and(|r| r.skip_middlewares);
        let run_middleware = |restoring: bool| {
            let middleware = found.handlers().read().middleware.clone();
            let mut req = ConnectRequest {
                auth: &auth,
                conn,
                nsp: &nsp,
                data: Vec::new(),
                rooms: Vec::new(),
                kept: Vec::new(),
            };
            if restoring && skip {
                return Ok((Vec::new(), Vec::new(), Vec::new()));
            }
            match namespace::run_middleware(&middleware, &mut req) {
                Ok(()) => Ok((req.data, req.rooms, req.kept)),
                Err(err) => {
                    ::metrics::counter!(metrics::CONNECTS_REFUSED, "reason" => "middleware")
                        .increment(1);
                    conn.send_all(&namespace::connect_error_frames(&nsp, &err), false);
                    Err(())
                }
            }
        };
        let Ok((data, rooms, kept)) = run_middleware(restored.is_some()) else {
            return;
        };
        if let Some((restored, pid)) = restored {
            let Restored {
                id,
                rooms: session_rooms,
                init,
                missed,
                handover,
            } = restored;
            let mut parts = Some((found, data, init));
            let mut made = None;
            let done = handover.complete(&mut |buffered| {
                let Some((found, data, init)) = parts.take() else {
                    return;
                };
                for frames in &missed {
                    conn.send_all(frames, false);
                }
                conn.send_apart(&connect_reply(&nsp, &id, Some(&pid)));
                for frames in &buffered {
                    conn.send_all(frames, false);
                }
                let inner = self.attach(found, &nsp, |ns| {
                    let inner = SocketInner::new(
                        id.clone(),
                        ns,
                        conn.clone(),
                        data,
                        Some(pid.clone()),
                        true,
                    );
                    init(&Socket::from_inner(inner.clone()));
                    inner
                });
                for room in session_rooms.iter().chain(&rooms) {
                    inner.ns.join(&inner, room.clone());
                }
                made = Some(inner);
            });
            match (done, made) {
                (Ok(()), Some(inner)) => {
                    ::metrics::counter!(metrics::RECOVERIES, "outcome" => "recovered").increment(1);
                    self.settle(conn, inner, &nsp, kept);
                }
                _ => {
                    ::metrics::counter!(metrics::RECOVERIES, "outcome" => "overflow").increment(1);
                    let Some((found, _, _)) = parts else {
                        return;
                    };
                    self.admit(conn, found, nsp, auth, recovery, None);
                }
            }
            return;
        }
        let pid = (recovery.is_some() && self.inner.adapter.get().is_some_and(|a| a.logged(&nsp)))
            .then(new_pid);
        let id = conn.new_id();
        let inner = self.attach(found, &nsp, |ns| {
            SocketInner::new(id.clone(), ns, conn.clone(), data, pid.clone(), false)
        });
        for room in rooms {
            inner.ns.join(&inner, room);
        }
        conn.send_apart(&connect_reply(&nsp, &id, pid.as_deref()));
        self.settle(conn, inner, &nsp, kept);
    }

    /// Registers an attached socket with its connection (or takes it out again if the
    /// connection closed meanwhile), then tells the adapter and the connect handlers.
    fn settle(&self, conn: &Arc<Conn<ConnData>>, inner: Arc<SocketInner>, nsp: &str, kept: Data) {
        let ns = inner.ns.clone();
        {
            let mut st = conn.data.state.lock();
            if conn.is_closed() {
                drop(st);
                // A recovered session whose new connection is gone already: the claim made the
                // broker hold it for this node, so hand it back the way a transport close does
                // (kept again, claimable at once) rather than leave it claimed.
                let socket = Socket::from_inner(inner.clone());
                let adapter = ns.adapter().filter(|_| inner.recovered);
                if let Some(adapter) = adapter {
                    adapter.connected(&socket);
                }
                let rooms = ns.remove_socket(&inner);
                ns.release();
                if let Some(adapter) = adapter {
                    let reason = DisconnectReason::Connection(CloseReason::TransportClose);
                    adapter.disconnected(&socket, &rooms, reason);
                }
                return;
            }
            st.sockets.push(inner.clone());
            st.left.retain(|n| **n != *nsp);
            keep(
                &mut st,
                &ns.name,
                kept,
                self.inner.config.limits.max_namespaces,
            );
        }
        conn.mark_connected();
        let socket = Socket::from_inner(inner);
        if let Some(adapter) = ns.adapter() {
            adapter.connected(&socket);
        }
        let handlers = ns.handlers().connect.clone();
        for h in handlers {
            h(&socket);
        }
    }
}

/// Longest `pid` or `offset` a CONNECT may carry for a recovery (ours are 22 and under 30
/// characters); longer ones are not looked up.
const MAX_RECOVERY_TOKEN_BYTES: usize = 64;

/// A new session's private id: 128 random bits, URL-safe base64 (22 characters). It names
/// nothing; the cluster looks up its hash.
fn new_pid() -> Arc<str> {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(bytes)
        .into()
}

/// The CONNECT reply: `{"sid":…}`, with the session's `pid` in a namespace with recovery.
/// Marks a CONNECT of `nsp` as in progress on `conn` while it waits for something (a recovery
/// claim, a key); false (and nothing to do) when one already is: a duplicate CONNECT is ignored.
fn mark_connecting(conn: &Conn<ConnData>, nsp: &str) -> bool {
    let mut st = conn.data.state.lock();
    if st.connecting.iter().any(|n| **n == *nsp) {
        tracing::debug!(sid = %conn.sid(), nsp = %nsp, "duplicate connect ignored");
        return false;
    }
    st.connecting.push(nsp.into());
    true
}

fn connect_reply(nsp: &str, id: &str, pid: Option<&str>) -> Vec<Frame> {
    let mut reply = serde_json::Map::new();
    reply.insert("sid".into(), Value::String(id.to_owned()));
    if let Some(pid) = pid {
        reply.insert("pid".into(), Value::String(pid.to_owned()));
    }
    socketio::encode(&socketio::Packet {
        kind: PacketType::Connect,
        nsp: nsp.to_owned(),
        id: None,
        data: Some(Value::Object(reply)),
        attachments: Vec::new(),
    })
}

/// Records the state a connect's middleware kept for namespace `nsp` (new entries only: found
/// ones are in the table already) and marks `nsp` as the most recently connected. Past
/// `max_namespaces` namespaces, the least recently connected one without a socket is forgotten:
/// a client that cycles through that many other namespaces to reset one pays as much as one
/// that opens a new connection, which starts afresh anyway.
fn keep(st: &mut ConnSockets, nsp: &Arc<str>, kept: Data, max_namespaces: usize) {
    let pos = st.kept.iter().position(|(n, _)| n == nsp);
    let mut entry = match pos {
        Some(i) => st.kept.remove(i),
        None if kept.is_empty() => return,
        None => (nsp.clone(), Vec::new()),
    };
    for (t, v) in kept {
        if !entry.1.iter().any(|(u, _)| *u == t) {
            entry.1.push((t, v));
        }
    }
    if st.kept.len() >= max_namespaces {
        let sockets = &st.sockets;
        if let Some(i) = st
            .kept
            .iter()
            .position(|(n, _)| !sockets.iter().any(|s| s.ns.name == *n))
        {
            st.kept.remove(i);
        }
    }
    st.kept.push(entry);
}

/// Ends the connection for a limit (`Conn::close` counts it).
fn close_limited(conn: &Arc<Conn<ConnData>>, limit: Limit) {
    tracing::debug!(sid = %conn.sid(), limit = limit.name(), "connection closed by a limit");
    conn.close(CloseReason::Limited(limit));
}

fn find_socket(conn: &Conn<ConnData>, nsp: &str) -> Option<Arc<SocketInner>> {
    conn.data
        .state
        .lock()
        .sockets
        .iter()
        .find(|s| &*s.ns.name == nsp)
        .cloned()
}

fn into_args(data: Option<Value>, attachments: Vec<bytes::Bytes>) -> Args {
    let values = match data {
        Some(Value::Array(v)) => v,
        Some(other) => vec![other],
        None => Vec::new(),
    };
    Args::new(values).with_attachments(attachments)
}

/// Hands a client event to its handler, unless its name is too long or the connection already
/// waits for too many acks (both refused with an error ack, if one was asked for).
fn dispatch_event(
    server: &ServerInner,
    conn: &Arc<Conn<ConnData>>,
    s: Arc<SocketInner>,
    packet: socketio::Packet,
) {
    let Some(Value::Array(mut values)) = packet.data else {
        conn.close(CloseReason::ParseError);
        return;
    };
    if values.is_empty() {
        conn.close(CloseReason::ParseError);
        return;
    }
    let name = match values.remove(0) {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        _ => {
            conn.close(CloseReason::ParseError);
            return;
        }
    };
    let limits = &server.config.limits;
    let refusal = if name.len() > limits.max_name_bytes {
        Some((Limit::NameBytes, "event name too long"))
    } else if packet.id.is_some()
        && conn.data.pending_acks.load(Ordering::Relaxed) >= limits.max_pending_acks
    {
        Some((Limit::PendingAcks, "too many pending acks"))
    } else {
        None
    };
    if let Some((limit, error)) = refusal {
        metrics::limited(limit);
        tracing::trace!(limit = limit.name(), "event refused");
        if let Some(id) = packet.id {
            let reply = serde_json::json!({ "ok": false, "error": error });
            AckResponder::new(conn.clone(), s.ns.name.clone(), id).send(Args::new(vec![reply]));
        }
        return;
    }
    let ack = packet
        .id
        .map(|id| AckResponder::new(conn.clone(), s.ns.name.clone(), id));
    let handler = {
        let handlers = s.ns.handlers();
        handlers
            .events
            .get(&name)
            .or(handlers.any.as_ref())
            .cloned()
    };
    let event = Event {
        name,
        args: values,
        attachments: packet.attachments,
        ack,
    };
    match handler {
        Some(h) => h(&Socket::from_inner(s), event),
        None => {
            ::metrics::counter!(metrics::EVENTS_UNMATCHED).increment(1);
            tracing::trace!(event = %event.name, "no handler");
        }
    }
}

/// Takes a socket out of its namespace and connection and tells the disconnect handlers.
pub(crate) fn remove_socket(s: &Arc<SocketInner>, reason: DisconnectReason) {
    let removed = {
        let mut st = s.conn.data.state.lock();
        let before = st.sockets.len();
        st.sockets.retain(|x| !Arc::ptr_eq(x, s));
        let removed = st.sockets.len() != before;
        if removed
            && reason == DisconnectReason::ServerNamespaceDisconnect
            && !st.left.contains(&s.ns.name)
        {
            st.left.push(s.ns.name.clone());
        }
        removed
    };
    if removed {
        finish_socket(s, reason);
    }
}

fn finish_socket(s: &Arc<SocketInner>, reason: DisconnectReason) {
    // The handlers still see the socket's rooms; the memberships go afterwards.
    let socket = Socket::from_inner(s.clone());
    let handlers = s.ns.handlers().disconnect.clone();
    for h in handlers {
        h(&socket, reason);
    }
    let rooms = s.ns.remove_socket(s);
    if let Some(adapter) = s.ns.adapter() {
        adapter.disconnected(&socket, &rooms, reason);
    }
    s.ns.release();
    s.fail_acks();
}

impl engine::Handler for Server {
    type Data = ConnData;

    fn on_message(&self, conn: &Arc<Conn<ConnData>>, message: Payload) {
        let limits = &self.inner.config.limits;
        match message {
            Payload::Text(text) => {
                let decoded = std::str::from_utf8(&text)
                    .map_err(|_| ())
                    .and_then(|t| socketio::decode(t).map_err(|_| ()));
                match decoded {
                    Ok(Decoded::Complete(p)) => {
                        if conn.data.state.lock().partial.is_some() {
                            conn.close(CloseReason::ParseError);
                        } else {
                            self.on_packet(conn, p);
                        }
                    }
                    Ok(Decoded::NeedAttachments(_, n)) if n > limits.max_attachments => {
                        close_limited(conn, Limit::Attachments);
                    }
                    Ok(Decoded::NeedAttachments(p, n)) => {
                        let mut st = conn.data.state.lock();
                        if st.partial.is_some() {
                            drop(st);
                            conn.close(CloseReason::ParseError);
                        } else {
                            let deadline = Instant::now() + limits.binary_timeout;
                            let r = Reassembly::new(
                                p,
                                n,
                                limits.max_attachment_bytes,
                                deadline.into_std(),
                            );
                            st.partial = Some(Box::new(r));
                            drop(st);
                            let reason = CloseReason::Limited(Limit::AttachmentTime);
                            conn.set_deadline(Some((deadline, reason)));
                        }
                    }
                    Err(()) => conn.close(CloseReason::ParseError),
                }
            }
            Payload::Binary(data) => {
                let now = Instant::now().into_std();
                let done = {
                    let mut st = conn.data.state.lock();
                    let pushed = st.partial.as_mut().map(|r| r.push(data, now));
                    if matches!(pushed, Some(Ok(Some(_)) | Err(_))) {
                        st.partial = None;
                    }
                    pushed
                };
                if !matches!(done, Some(Ok(None))) {
                    conn.set_deadline(None);
                }
                match done {
                    Some(Ok(None)) => {}
                    Some(Ok(Some(p))) => self.on_packet(conn, p),
                    Some(Err(socketio::DecodeError::AttachmentsTooLarge)) => {
                        close_limited(conn, Limit::AttachmentBytes);
                    }
                    Some(Err(socketio::DecodeError::AttachmentsTooLate)) => {
                        close_limited(conn, Limit::AttachmentTime);
                    }
                    None | Some(Err(_)) => conn.close(CloseReason::ParseError),
                }
            }
        }
    }

    fn on_close(&self, conn: &Arc<Conn<ConnData>>, reason: CloseReason) {
        let sockets = std::mem::take(&mut conn.data.state.lock().sockets);
        for s in sockets {
            finish_socket(&s, DisconnectReason::Connection(reason));
        }
    }

    fn connect_timeout(&self) -> Option<Duration> {
        Some(self.inner.config.connect_timeout)
    }
}

#[cfg(test)]
mod tests;
