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

mod adapter;
mod namespace;
mod socket;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use regex::Regex;
use serde_json::Value;

use crate::engine::{self, CloseReason, Conn};
use crate::engineio::Payload;
use crate::metrics;
use crate::socketio::{self, Decoded, PacketType, Reassembly};

pub use adapter::{Adapter, Target};
pub use namespace::{Broadcast, Namespace, Room, RoomFull};
pub use socket::{
    AckError, Acker, Args, ConnectError, ConnectRequest, DisconnectReason, Event, Socket,
};

use adapter::AdapterSlot;
use namespace::{NsInner, SharedHandlers};
use socket::{AckResponder, SocketInner};

/// Most binary attachments one packet may declare: they are buffered until the packet is
/// complete, each up to `max_payload` bytes.
pub const MAX_ATTACHMENTS: usize = 64;

/// Socket.IO options.
#[derive(Clone, Debug)]
pub struct Config {
    /// A connection must connect to a namespace within this time or be closed.
    pub connect_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(45),
        }
    }
}

/// Per-connection Socket.IO state, kept in the Engine.IO [`Conn`].
#[derive(Default)]
pub struct ConnData {
    state: Mutex<ConnSockets>,
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
}

struct ServerInner {
    config: Config,
    namespaces: RwLock<HashMap<Arc<str>, Arc<NsInner>>>,
    patterns: RwLock<Vec<(Regex, SharedHandlers)>>,
    adapter: AdapterSlot,
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
                namespaces: RwLock::new(HashMap::new()),
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
        frames: &[crate::engineio::Frame],
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
        let namespaces: Vec<Arc<NsInner>> = self
            .inner
            .namespaces
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        namespaces
            .iter()
            .flat_map(|ns| ns.select(&Target::default()))
            .map(Socket::from_inner)
            .collect()
    }

    fn get_inner(&self, name: &str) -> Option<Arc<NsInner>> {
        self.inner
            .namespaces
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// A static namespace, created if absent.
    pub fn of(&self, name: &str) -> Namespace {
        let mut map = self
            .inner
            .namespaces
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let ns = map.entry(name.into()).or_insert_with(|| {
            NsInner::new(
                name,
                name,
                SharedHandlers::default(),
                self.inner.adapter.clone(),
            )
        });
        Namespace::from_inner(ns)
    }

    /// A dynamic namespace: every namespace name the pattern matches is created on first connect,
    /// with the handlers registered on the returned value.
    pub fn of_pattern(&self, re: Regex) -> Namespace {
        let handlers = SharedHandlers::default();
        let name: Arc<str> = re.as_str().into();
        self.inner
            .patterns
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push((re, handlers.clone()));
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

    /// Finds or (for a dynamic match) creates the namespace a client asks for.
    fn lookup(&self, name: &str) -> Option<Arc<NsInner>> {
        if let Some(ns) = self
            .inner
            .namespaces
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Some(ns.clone());
        }
        let (pattern, handlers) = self
            .inner
            .patterns
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(re, _)| re.is_match(name))
            .map(|(re, h)| (re.as_str().to_owned(), h.clone()))?;
        let mut map = self
            .inner
            .namespaces
            .write()
            .unwrap_or_else(|p| p.into_inner());
        Some(
            map.entry(name.into())
                .or_insert_with(|| {
                    NsInner::new(name, &pattern, handlers, self.inner.adapter.clone())
                })
                .clone(),
        )
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
                dispatch_event(conn, s, packet)
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
                if lock_conn(conn).left.iter().any(|n| **n == *packet.nsp) {
                    tracing::trace!(nsp = %packet.nsp, "packet for a namespace the server left");
                } else {
                    conn.close(CloseReason::ParseError);
                }
            }
        }
    }

    fn connect(&self, conn: &Arc<Conn<ConnData>>, packet: socketio::Packet) {
        let nsp = packet.nsp;
        let Some(ns) = self.lookup(&nsp) else {
            ::metrics::counter!(metrics::CONNECTS_REFUSED, "reason" => "invalid_namespace")
                .increment(1);
            let frames =
                namespace::connect_error_frames(&nsp, &ConnectError::new("Invalid namespace"));
            conn.send_all(&frames, false);
            return;
        };
        let empty = Value::Object(serde_json::Map::new());
        let auth = packet.data.unwrap_or(empty);
        let middleware = ns.handlers().middleware.clone();
        let mut req = ConnectRequest {
            auth: &auth,
            conn,
            nsp: &nsp,
            data: Vec::new(),
            rooms: Vec::new(),
        };
        if let Err(err) = namespace::run_middleware(&middleware, &mut req) {
            ::metrics::counter!(metrics::CONNECTS_REFUSED, "reason" => "middleware").increment(1);
            conn.send_all(&namespace::connect_error_frames(&nsp, &err), false);
            return;
        }
        let ConnectRequest { data, rooms, .. } = req;
        let id = conn.new_id();
        let inner = SocketInner::new(id.clone(), ns.clone(), conn.clone(), data);
        {
            let mut st = lock_conn(conn);
            if conn.is_closed() {
                return;
            }
            st.sockets.push(inner.clone());
            st.left.retain(|n| **n != *nsp);
        }
        ns.add_socket(&inner);
        for room in rooms {
            ns.join(&inner, room);
        }
        conn.mark_connected();
        let mut reply = serde_json::Map::new();
        reply.insert("sid".into(), Value::String(id.to_string()));
        let frames = socketio::encode(&socketio::Packet {
            kind: PacketType::Connect,
            nsp: nsp.clone(),
            id: None,
            data: Some(Value::Object(reply)),
            attachments: Vec::new(),
        });
        conn.send_apart(&frames);
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

fn lock_conn(conn: &Conn<ConnData>) -> std::sync::MutexGuard<'_, ConnSockets> {
    conn.data.state.lock().unwrap_or_else(|p| p.into_inner())
}

fn find_socket(conn: &Conn<ConnData>, nsp: &str) -> Option<Arc<SocketInner>> {
    lock_conn(conn)
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

fn dispatch_event(conn: &Arc<Conn<ConnData>>, s: Arc<SocketInner>, packet: socketio::Packet) {
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
    let ack = packet.id.map(|id| AckResponder {
        conn: conn.clone(),
        nsp: s.ns.name.clone(),
        id,
    });
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
        let mut st = lock_conn(&s.conn);
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
    s.fail_acks();
}

impl engine::Handler for Server {
    type Data = ConnData;

    fn on_message(&self, conn: &Arc<Conn<ConnData>>, message: Payload) {
        match message {
            Payload::Text(text) => {
                let decoded = std::str::from_utf8(&text)
                    .map_err(|_| ())
                    .and_then(|t| socketio::decode(t).map_err(|_| ()));
                match decoded {
                    Ok(Decoded::Complete(p)) => {
                        if lock_conn(conn).partial.is_some() {
                            conn.close(CloseReason::ParseError);
                        } else {
                            self.on_packet(conn, p);
                        }
                    }
                    Ok(Decoded::NeedAttachments(p, n)) => {
                        let mut st = lock_conn(conn);
                        if st.partial.is_some() || n > MAX_ATTACHMENTS {
                            drop(st);
                            conn.close(CloseReason::ParseError);
                        } else {
                            st.partial = Some(Box::new(Reassembly::new(p, n)));
                        }
                    }
                    Err(()) => conn.close(CloseReason::ParseError),
                }
            }
            Payload::Binary(data) => {
                let done = {
                    let mut st = lock_conn(conn);
                    match st.partial.as_mut().map(|r| r.push(data)) {
                        None | Some(Err(_)) => Err(()),
                        Some(Ok(None)) => Ok(None),
                        Some(Ok(Some(p))) => {
                            st.partial = None;
                            Ok(Some(p))
                        }
                    }
                };
                match done {
                    Err(()) => conn.close(CloseReason::ParseError),
                    Ok(Some(p)) => self.on_packet(conn, p),
                    Ok(None) => {}
                }
            }
        }
    }

    fn on_close(&self, conn: &Arc<Conn<ConnData>>, reason: CloseReason) {
        let sockets = std::mem::take(&mut lock_conn(conn).sockets);
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
