//! Engine.IO sessions: one [`Conn`] per client connection, whatever its transport, and the
//! [`Engine`] that owns them.
//!
//! A `Conn` holds the bounded outbound queue of encoded frames, the heartbeat deadlines and which
//! transport currently writes. It does no I/O itself: the transports (`transport::polling`,
//! `transport::ws`) drain the queue and drive the heartbeat with `Conn::tick`; the WebSocket
//! transport may lend it a direct-write handle for quiet connections (`State::direct`). Pushing a frame
//! wakes whichever writer is active: the WebSocket task through a `Notify`, or the pending long-poll
//! ([`Waiter`]): through a oneshot when hyper holds it, or, when it was read without hyper, by
//! writing its response there and then.
//!
//! Invariants:
//! - the state mutex is never held across an `.await` nor while calling the [`Handler`];
//! - a session is closed at most once: [`Conn::close`] removes it from the registry and calls
//!   [`Handler::on_close`] exactly once;
//! - the outbound queue never holds more than `max_queued_frames` frames: past that the client is
//!   a slow consumer and is disconnected (volatile frames are dropped instead).

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use switchboard_codec::engineio::{self, Frame, Packet, Payload};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::id::NodeId;
use crate::metrics;

/// Engine.IO options of one endpoint.
#[derive(Clone, Debug)]
pub struct Config {
    /// Interval between server pings.
    pub ping_interval: Duration,
    /// How long the client has to answer a ping.
    pub ping_timeout: Duration,
    /// Largest message (and polling POST body) accepted, in bytes.
    pub max_payload: usize,
    /// How long a WebSocket upgrade may take between the probe and `5`.
    pub upgrade_timeout: Duration,
    /// Per-connection outbound queue bound, in frames.
    pub max_queued_frames: usize,
    /// Per-connection outbound queue bound, in bytes.
    pub max_queued_bytes: usize,
    /// Whether clients may use HTTP long-polling.
    pub allow_polling: bool,
    /// Whether clients may use WebSocket.
    pub allow_websocket: bool,
    /// Most concurrent sessions per client IP address (0 = no limit).
    pub max_connections_per_ip: usize,
    /// How long a polling POST may take to deliver its body.
    pub body_timeout: Duration,
    /// Longest handshake query string a session may keep.
    pub max_query_bytes: usize,
    /// Most bytes of [`KEPT_HEADERS`] values a session may keep, all together.
    pub max_kept_header_bytes: usize,
    /// permessage-deflate over WebSocket, when a client offers it: `None` = off (Node's default);
    /// `Some(n)`: messages of `n` bytes or more are sent compressed.
    pub per_message_deflate: Option<usize>,
    /// Polling responses of this many bytes or more are compressed (gzip or deflate, as the
    /// request's `Accept-Encoding` allows); `None` = never. Node's default: on, 1 024 bytes.
    pub http_compression: Option<usize>,
}

/// Default threshold of compression (Node's engine.io, for both `perMessageDeflate` and
/// `httpCompression`).
pub const DEFAULT_COMPRESSION_THRESHOLD_BYTES: usize = 1024;

/// Default largest message (and polling POST body) accepted, in bytes (the reference server's
/// `maxHttpBufferSize`).
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1_000_000;

/// Default bound of a connection's queued bytes.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 16 * 1024 * 1024;

impl Default for Config {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            max_payload: DEFAULT_MAX_PAYLOAD_BYTES,
            upgrade_timeout: Duration::from_millis(10_000),
            max_queued_frames: 1024,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            allow_polling: true,
            allow_websocket: true,
            max_connections_per_ip: 0,
            body_timeout: Duration::from_millis(10_000),
            max_query_bytes: 2048,
            max_kept_header_bytes: 4096,
            per_message_deflate: None,
            http_compression: Some(DEFAULT_COMPRESSION_THRESHOLD_BYTES),
        }
    }
}

/// Why a session ended. `as_str` gives the Engine.IO reason, also used as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent a close packet.
    ClientClose,
    /// The transport's connection ended (EOF, cancelled long-poll, WebSocket close frame).
    TransportClose,
    /// The transport failed (I/O error, WebSocket protocol error, over-size message).
    TransportError,
    /// The client did not answer a ping in time.
    PingTimeout,
    /// The client sent something that is not a valid packet.
    ParseError,
    /// The client did not connect to any namespace in time.
    ConnectTimeout,
    /// The client did not read fast enough and its queue filled up.
    SlowConsumer,
    /// Two long-polls were open at once.
    DuplicatePoll,
    /// The application closed the connection.
    ServerClose,
    /// The server is shutting down.
    Shutdown,
    /// The client ran into a limit that ends the connection (docs/security.md); counted in
    /// `limited_total` by [`Conn::close`].
    Limited(metrics::Limit),
}

impl CloseReason {
    /// Engine.IO's name for the reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientClose => "transport close",
            Self::TransportClose => "transport close",
            Self::TransportError => "transport error",
            Self::PingTimeout => "ping timeout",
            Self::ParseError => "parse error",
            Self::ConnectTimeout => "connect timeout",
            Self::SlowConsumer => "slow consumer",
            Self::DuplicatePoll => "transport error",
            Self::ServerClose => "forced close",
            Self::Shutdown => "server shutting down",
            Self::Limited(_) => "limit exceeded",
        }
    }

    /// Whether a polling client that had no GET pending when the session closed still gets its
    /// next GET answered: with noop after its own close packet (the GET was on its way and lost
    /// the race), and with the queued frames plus a close packet after a close by the server
    /// (like the reference server, which drains its buffer before closing). After errors and
    /// timeouts the session is simply gone (400).
    pub fn owes_farewell(self) -> bool {
        matches!(
            self,
            Self::ClientClose | Self::ServerClose | Self::Shutdown | Self::ConnectTimeout
        )
    }

    /// Label for metrics (closed set, distinguishes every variant).
    pub fn label(self) -> &'static str {
        match self {
            Self::ClientClose => "client_close",
            Self::TransportClose => "transport_close",
            Self::TransportError => "transport_error",
            Self::PingTimeout => "ping_timeout",
            Self::ParseError => "parse_error",
            Self::ConnectTimeout => "connect_timeout",
            Self::SlowConsumer => "slow_consumer",
            Self::DuplicatePoll => "duplicate_poll",
            Self::ServerClose => "server_close",
            Self::Shutdown => "shutdown",
            Self::Limited(_) => "limited",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the application does with an Engine.IO connection (the Socket.IO server, or a raw
/// Engine.IO handler). Called from the connection's task without any engine lock held.
pub trait Handler: Send + Sync + 'static {
    /// Per-connection application state stored in the [`Conn`].
    type Data: Send + Sync + Default + 'static;

    /// A session was opened (its handshake frame is already queued).
    fn on_open(&self, _conn: &Arc<Conn<Self::Data>>) {}

    /// A message arrived.
    fn on_message(&self, conn: &Arc<Conn<Self::Data>>, message: Payload);

    /// The session ended; called exactly once.
    fn on_close(&self, conn: &Arc<Conn<Self::Data>>, reason: CloseReason);

    /// If set, a session must call [`Conn::mark_connected`] within this time or be closed.
    fn connect_timeout(&self) -> Option<Duration> {
        None
    }
}

/// Which transport carries the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// HTTP long-polling.
    Polling,
    /// Long-polling, with a WebSocket connected for an upgrade that has not completed.
    Upgrading,
    /// WebSocket.
    WebSocket,
}

impl Transport {
    /// Metric label / Engine.IO transport name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Polling | Self::Upgrading => "polling",
            Self::WebSocket => "websocket",
        }
    }
}

/// The handshake request headers a session keeps (lower case): `authorization` for namespace
/// auth, the others for the broker's view of the socket. Nothing else reads headers after the
/// handshake. Keeping the whole `HeaderMap` would cost more than the map: its values are slices of
/// hyper's 8 KiB read buffer, which would then stay allocated for the life of the connection.
pub const KEPT_HEADERS: [&str; 5] = [
    "authorization",
    "user-agent",
    "origin",
    "x-forwarded-for",
    "referer",
];

/// What the client's first request told us (what of it a session keeps).
#[derive(Debug)]
pub struct HandshakeInfo {
    /// Peer address of the connection that made the handshake.
    pub remote: SocketAddr,
    /// The [`KEPT_HEADERS`] the request had (valid UTF-8 values only), copied out of the request.
    headers: Box<[(&'static str, Box<str>)]>,
    /// The raw query string (decoded when asked: one allocation instead of two per parameter).
    query: Box<str>,
    /// Unix time of the handshake, in milliseconds.
    pub issued_ms: u64,
}

/// Why a handshake is refused before anything of it is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeRefusal {
    /// The query string is longer than `max_query_bytes`.
    QueryTooLong,
    /// The [`KEPT_HEADERS`] values together are longer than `max_kept_header_bytes`.
    HeadersTooLarge,
}

impl HandshakeInfo {
    /// Checks what [`HandshakeInfo::new`] would keep against the bounds of `config`, before it is
    /// copied. Counts the same bytes `new` keeps: the query string and the first value of each
    /// kept header.
    pub fn check(
        config: &Config,
        headers: &http::HeaderMap,
        query: Option<&str>,
    ) -> Result<(), HandshakeRefusal> {
        if query.map_or(0, str::len) > config.max_query_bytes {
            return Err(HandshakeRefusal::QueryTooLong);
        }
        let kept: usize = KEPT_HEADERS
            .iter()
            .filter_map(|name| headers.get(*name))
            .map(http::HeaderValue::len)
            .sum();
        if kept > config.max_kept_header_bytes {
            return Err(HandshakeRefusal::HeadersTooLarge);
        }
        Ok(())
    }

    /// Keeps what a session needs of a handshake request: its [`KEPT_HEADERS`] and query string.
    pub fn new(
        remote: SocketAddr,
        headers: &http::HeaderMap,
        query: Option<&str>,
        issued_ms: u64,
    ) -> Self {
        let headers: Vec<(&'static str, Box<str>)> = KEPT_HEADERS
            .iter()
            .filter_map(|name| {
                let value = headers.get(*name)?.to_str().ok()?;
                Some((*name, Box::from(value)))
            })
            .collect();
        Self {
            remote,
            headers: headers.into_boxed_slice(),
            query: Box::from(query.unwrap_or("")),
            issued_ms,
        }
    }

    /// A request header, by case-insensitive name; `None` for names not in [`KEPT_HEADERS`].
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| &**v)
    }

    /// The first query parameter named `key`, decoded.
    pub fn query(&self, key: &str) -> Option<Cow<'_, str>> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Every query parameter, decoded, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        parse_query(Some(&self.query))
    }
}

/// Decodes a query string into pairs as the WHATWG `application/x-www-form-urlencoded` parser
/// does: `+` is a space, invalid `%` sequences stay as they are, bad UTF-8 becomes U+FFFD.
pub(crate) fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// How long a connection must have been quiet before a pusher writes to it directly.
const DIRECT_QUIET: Duration = Duration::from_millis(20);

/// Writes frames straight to a connection's socket, for pushers (see [`State::direct`]).
pub(crate) trait DirectWrite: Send + Sync {
    /// Writes what the kernel takes now and appends the rest to `spill`. An error means the
    /// socket is broken (the transport finds out and closes the session).
    fn write(&self, frames: &[Frame], spill: &mut Vec<u8>) -> std::io::Result<()>;
}

/// A pending long-poll GET.
pub(crate) enum Waiter {
    /// Served by hyper: its request's task waits on this, and answers once woken.
    Hyper(oneshot::Sender<()>),
    /// Read without hyper (`transport::direct`): whoever wakes it writes its answer, under the
    /// session's lock, so that a delivery wakes no task.
    Direct(Arc<dyn AnswerPoll>),
}

/// Answers a pending GET read without hyper (see [`Waiter::Direct`]).
pub(crate) trait AnswerPoll: Send + Sync {
    /// Writes the answer that the session's state calls for (the waiter is already taken out of
    /// `st`); must not block.
    fn answer(&self, st: &mut State);
}

/// Result of pushing frames to a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// Volatile frames not queued because the queue is full.
    Dropped,
    /// The connection is closed (or was just closed as a slow consumer).
    Closed,
    /// Not queued: the queue is full and the frames were not volatile (the caller closes).
    Full,
}

pub(crate) struct State {
    pub(crate) outbox: VecDeque<Frame>,
    /// Bytes of the frames in `outbox`.
    queued_bytes: usize,
    /// Set by the WebSocket transport while nothing waits to be written: frames pushed to an
    /// empty queue are then written to the socket at once, by the pusher, under this lock.
    pub(crate) direct: Option<Arc<dyn DirectWrite>>,
    /// Bytes written to the connection that the kernel did not take yet (the transport's writer
    /// sends them before anything else).
    pub(crate) spill: Vec<u8>,
    /// When frames were last written to the socket (directly or by the transport's writer).
    pub(crate) last_write: Option<Instant>,
    pub(crate) transport: Transport,
    /// The pending long-poll, woken when there is something for it.
    pub(crate) poll: Option<Waiter>,
    pub(crate) post_active: bool,
    /// A WebSocket is attached (upgrading or upgraded): a second one is refused.
    pub(crate) ws_attached: bool,
    pub(crate) closed: Option<CloseReason>,
    /// The first this-many queued frames must be written on their own (see [`Conn::send_apart`]).
    pub(crate) boundary: usize,
    /// The session closed while polling with no GET pending, and the next GET still gets an
    /// answer instead of 400 (see [`CloseReason::owes_farewell`]).
    pub(crate) farewell: bool,
    next_ping: Instant,
    pong_deadline: Option<Instant>,
    connect_deadline: Option<Instant>,
    /// The application's deadline (a binary packet to complete), and the reason to close with.
    app_deadline: Option<(Instant, CloseReason)>,
}

impl State {
    /// Queues one frame (outside the bounds: heartbeats and farewells).
    pub(crate) fn push_back(&mut self, frame: Frame) {
        self.queued_bytes += frame.len();
        self.outbox.push_back(frame);
    }

    /// Drops the first `n` queued frames (after they were written).
    pub(crate) fn discard_front(&mut self, n: usize) {
        let n = n.min(self.outbox.len());
        let bytes: usize = self.outbox.iter().take(n).map(Frame::len).sum();
        self.queued_bytes = self.queued_bytes.saturating_sub(bytes);
        self.outbox.drain(..n);
    }

    /// Frees the queue's allocation once it is empty and larger than an idle connection needs.
    pub(crate) fn release_spare(&mut self) {
        if self.outbox.is_empty() && self.outbox.capacity() > IDLE_QUEUE_SLOTS {
            self.outbox = VecDeque::new();
        }
    }

    /// Wakes the pending long-poll, if any (taking it out of the state).
    pub(crate) fn wake_poll(&mut self) {
        match self.poll.take() {
            Some(Waiter::Hyper(tx)) => {
                let _ = tx.send(());
            }
            Some(Waiter::Direct(waiter)) => waiter.answer(self),
            None => {}
        }
    }

    /// Takes every queued frame (with the queue's allocation: an idle session keeps none).
    pub(crate) fn drain(&mut self) -> VecDeque<Frame> {
        self.boundary = 0;
        self.queued_bytes = 0;
        std::mem::take(&mut self.outbox)
    }
}

/// How long a session closed while polling stays known, to give its next GET a farewell.
const CLOSED_GRACE: Duration = Duration::from_secs(1);

/// Keep at most this many queue slots allocated while idle.
const IDLE_QUEUE_SLOTS: usize = 4;

/// One Engine.IO session.
pub struct Conn<D> {
    sid: Arc<str>,
    handshake: HandshakeInfo,
    state: Mutex<State>,
    /// Wakes the WebSocket task when there is something to write.
    pub(crate) wake: Notify,
    /// Set with a new application deadline: the timer's cached next instant may be too late.
    retick: std::sync::atomic::AtomicBool,
    config: Arc<Config>,
    node: NodeId,
    /// Application state (e.g. the Socket.IO sockets of this connection).
    pub data: D,
    close_hook: Mutex<Option<CloseHook<D>>>,
    /// The engine's task tracker: the session's own tasks ([`Conn::spawn`]) run on it.
    tasks: TaskTracker,
    /// Cancelled when the session closes; made on the first [`Conn::spawn`] (most sessions
    /// never spawn one, and a token is an allocation).
    ended: std::sync::OnceLock<CancellationToken>,
}

type CloseHook<D> = Box<dyn FnOnce(&Arc<Conn<D>>, CloseReason) + Send + Sync>;

impl<D> fmt::Debug for Conn<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("sid", &self.sid)
            .finish_non_exhaustive()
    }
}

impl<D: Send + Sync + 'static> Conn<D> {
    /// The Engine.IO session id.
    pub fn sid(&self) -> &Arc<str> {
        &self.sid
    }

    /// The handshake request's details.
    pub fn handshake(&self) -> &HandshakeInfo {
        &self.handshake
    }

    /// The endpoint's Engine.IO options.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A new id owned by this node (for the sockets of this connection).
    pub fn new_id(&self) -> Arc<str> {
        self.node.new_id()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// The transport in use.
    pub fn transport(&self) -> Transport {
        self.lock().transport
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    /// Queues one frame; a slow consumer is disconnected.
    pub fn push(self: &Arc<Self>, frame: Frame) -> Pushed {
        self.send_all(std::slice::from_ref(&frame), false)
    }

    /// Queues frames that belong together (a packet and its attachments) — all or none. When the
    /// queue is full, volatile frames are dropped and otherwise the client is disconnected as a
    /// slow consumer. Must not be called with a namespace lock held (closing runs the handler);
    /// use [`Conn::push_all`] there.
    pub fn send_all(self: &Arc<Self>, frames: &[Frame], volatile: bool) -> Pushed {
        self.close_if_full(self.enqueue(frames, volatile, false))
    }

    /// Disconnects a slow consumer whose queue had no room.
    fn close_if_full(self: &Arc<Self>, pushed: Pushed) -> Pushed {
        if pushed == Pushed::Full {
            self.close(CloseReason::SlowConsumer);
            return Pushed::Closed;
        }
        pushed
    }

    /// Like [`Conn::send_all`] but never closes: a full queue gives [`Pushed::Full`] and the
    /// caller closes the connection once it holds no lock.
    pub fn push_all(&self, frames: &[Frame], volatile: bool) -> Pushed {
        self.enqueue(frames, volatile, false)
    }

    /// Queues (or writes through) frames. `apart`: always queue, and mark them to be written on
    /// their own (see [`Conn::send_apart`]), in the same critical section.
    fn enqueue(&self, frames: &[Frame], volatile: bool, apart: bool) -> Pushed {
        let mut st = self.lock();
        if st.closed.is_some() {
            return Pushed::Closed;
        }
        let bytes: usize = frames.iter().map(Frame::len).sum();
        if st.outbox.len() + frames.len() > self.config.max_queued_frames
            || st.queued_bytes + bytes > self.config.max_queued_bytes
        {
            drop(st);
            let reason = if volatile {
                "volatile_full"
            } else {
                "slow_consumer"
            };
            ::metrics::counter!(metrics::EMITS_DROPPED, "reason" => reason).increment(1);
            return if volatile {
                Pushed::Dropped
            } else {
                Pushed::Full
            };
        }
        if !apart
            && st.outbox.is_empty()
            && st.spill.is_empty()
            && let Some(direct) = st.direct.clone()
            && let now = Instant::now()
            && st
                .last_write
                .is_none_or(|t| now.saturating_duration_since(t) >= DIRECT_QUIET)
        {
            // Nothing is waiting ahead of these frames and the connection has been quiet: write
            // them now instead of waking the connection's task (a delivery at low rates then
            // costs one write). Busy connections keep going through the queue, where the writer
            // coalesces everything queued into one write.
            st.last_write = Some(now);
            let written = direct.write(frames, &mut st.spill);
            if written.is_err() || !st.spill.is_empty() {
                st.direct = None;
                self.wake.notify_one();
            }
            return Pushed::Queued;
        }
        st.outbox.extend(frames.iter().cloned());
        st.queued_bytes += bytes;
        if apart {
            st.boundary = st.outbox.len();
        }
        self.wake_writer(&mut st);
        Pushed::Queued
    }

    /// Queues frames that the WebSocket writer sends in a write of their own, a moment before
    /// anything queued after them. Used for the CONNECT reply: clients that dispatch every message
    /// of one read synchronously (the `ws` package ≥ 8.17 does) may otherwise miss a handler's
    /// first emit while they are still processing the reply.
    pub fn send_apart(self: &Arc<Self>, frames: &[Frame]) -> Pushed {
        self.close_if_full(self.enqueue(frames, false, true))
    }

    fn wake_writer(&self, st: &mut State) {
        match st.transport {
            Transport::WebSocket => self.wake.notify_one(),
            Transport::Polling | Transport::Upgrading => st.wake_poll(),
        }
    }

    /// The session has connected at least one namespace: the connect timeout no longer applies.
    pub fn mark_connected(&self) {
        self.lock().connect_deadline = None;
    }

    /// Closes the session with `reason` at `deadline` unless cleared before (`None`). Setting
    /// one wakes the session's timer, which may be sleeping towards a later instant.
    pub fn set_deadline(&self, deadline: Option<(Instant, CloseReason)>) {
        self.lock().app_deadline = deadline;
        if deadline.is_some() {
            self.retick
                .store(true, std::sync::atomic::Ordering::Relaxed);
            self.wake.notify_one();
        }
    }

    /// Whether a deadline was set since the last call: the timer must look again.
    pub(crate) fn take_retick(&self) -> bool {
        self.retick.load(std::sync::atomic::Ordering::Relaxed)
            && self
                .retick
                .swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// A pong arrived.
    pub(crate) fn on_pong(&self, now: Instant) {
        let mut st = self.lock();
        if st.pong_deadline.take().is_some() {
            st.next_ping = now + self.config.ping_interval;
        }
    }

    /// Drives the heartbeat and the connect timeout. Returns the next instant this must be called
    /// again, or `None` once the session is closed.
    pub(crate) fn tick(self: &Arc<Self>, now: Instant) -> Option<Instant> {
        let mut st = self.lock();
        if st.closed.is_some() {
            return None;
        }
        let expired = match (st.pong_deadline, st.connect_deadline, st.app_deadline) {
            (Some(d), _, _) if d <= now => Some(CloseReason::PingTimeout),
            (_, Some(d), _) if d <= now => Some(CloseReason::ConnectTimeout),
            (_, _, Some((d, reason))) if d <= now => Some(reason),
            _ => None,
        };
        if let Some(reason) = expired {
            drop(st);
            self.close(reason);
            return None;
        }
        if st.pong_deadline.is_none() && st.next_ping <= now {
            // The deadline counts from when the ping was due, not from when this timer fired:
            // a client that waits exactly `ping_interval + ping_timeout` must find the session
            // gone. A very late timer still leaves the client half the timeout.
            let timeout = self.config.ping_timeout;
            st.pong_deadline = Some((st.next_ping + timeout).max(now + timeout / 2));
            // Heartbeats bypass the queue bound: a full queue is already being handled.
            st.push_back(Frame::ping());
            self.wake_writer(&mut st);
        }
        let mut next = st.pong_deadline.unwrap_or(st.next_ping);
        if let Some(d) = st.connect_deadline {
            next = next.min(d);
        }
        if let Some((d, _)) = st.app_deadline {
            next = next.min(d);
        }
        Some(next)
    }

    /// Whether a pong deadline has passed (checked lazily by requests, so that a request arriving
    /// right at the deadline does not race the timer).
    pub(crate) fn heartbeat_expired(&self, now: Instant) -> bool {
        let st = self.lock();
        let due = st
            .pong_deadline
            .unwrap_or(st.next_ping + self.config.ping_timeout);
        due <= now
    }

    /// Runs `task` for this session on the engine's tracker ([`Engine::tasks`]): it ends when
    /// it completes or when the session closes, whichever is first. After the close it is not
    /// started at all.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let ended = {
            // Under the state lock, so a close either comes before (nothing starts) or after
            // (and finds the token to cancel).
            let st = self.lock();
            if st.closed.is_some() {
                return;
            }
            self.ended.get_or_init(CancellationToken::new).clone()
        };
        self.tasks.spawn(async move {
            ended.run_until_cancelled_owned(task).await;
        });
    }

    /// Runs `task` on the engine's tracker to its end, even if the session closes first: for a
    /// step whose result must be handled to leave shared state right (a session claimed from
    /// the broker is handed back if nobody takes it). Bound it in time yourself.
    pub fn spawn_to_end(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Ends the session: marks it closed, wakes its writer (which flushes and says goodbye), and
    /// runs the close hook (registry removal and [`Handler::on_close`]). Idempotent.
    pub fn close(self: &Arc<Self>, reason: CloseReason) {
        {
            let mut st = self.lock();
            if st.closed.is_some() {
                return;
            }
            st.closed = Some(reason);
            if let Some(ended) = self.ended.get() {
                ended.cancel();
            }
            st.farewell =
                reason.owes_farewell() && st.transport != Transport::WebSocket && st.poll.is_none();
            // Wake both possible writers: the WebSocket task and a pending long-poll.
            self.wake.notify_one();
            st.wake_poll();
        }
        // Counted here, once per session, whichever path ended it (a limit hit while reading,
        // or an application deadline that ran out in `tick`).
        if let CloseReason::Limited(limit) = reason {
            metrics::limited(limit);
        }
        let hook = self.close_hook.lock().take();
        if let Some(hook) = hook {
            hook(self, reason);
        }
    }
}

/// When each of `n` sessions is closed during a drain of `window`: independent uniform
/// moments in `[0, window)`, sorted. Uniform jitter makes the reconnections arriving at the
/// other gateways a steady stream of `n / window` instead of a burst of `n`.
pub fn drain_schedule(n: usize, window: Duration, rng: &mut impl rand::Rng) -> Vec<Duration> {
    let nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
    let mut at: Vec<Duration> = (0..n)
        .map(|_| {
            if nanos == 0 {
                Duration::ZERO
            } else {
                Duration::from_nanos(rng.random_range(0..nanos))
            }
        })
        .collect();
    at.sort_unstable();
    at
}

type Sessions<D> = HashMap<Arc<str>, Arc<Conn<D>>>;
/// A new session and its handshake frame.
pub type Opened<D> = (Arc<Conn<D>>, Frame);

/// The sessions of one Engine.IO endpoint and the application handler behind them.
pub struct Engine<H: Handler> {
    /// The endpoint's options.
    pub config: Arc<Config>,
    /// The application.
    pub handler: H,
    node: NodeId,
    sessions: Mutex<Sessions<H::Data>>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// The sessions' tasks (transports, heartbeats, closing grace): whoever owns the process
    /// closes and waits for it at shutdown, after the sessions were closed.
    tasks: TaskTracker,
}

/// Why a new session was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// The client address already has `max_connections_per_ip` sessions.
    #[error("too many connections from this address")]
    TooManyFromAddress,
}

impl<H: Handler> Engine<H> {
    /// An endpoint with no sessions yet.
    pub fn new(config: Config, handler: H, node: NodeId) -> Arc<Self> {
        Arc::new(Self {
            config: Arc::new(config),
            handler,
            node,
            sessions: Mutex::new(HashMap::new()),
            per_ip: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
        })
    }

    /// The sessions' tasks: close it and wait for it once the sessions are closed.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Runs a task of a session on [`Engine::tasks`].
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// This node's id.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// Looks a session up by sid.
    pub fn get(&self, sid: &str) -> Option<Arc<Conn<H::Data>>> {
        self.sessions.lock().get(sid).cloned()
    }

    /// Number of open sessions.
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Whether there are no open sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes every open session with [`CloseReason::Shutdown`], each at its own random moment
    /// of `window` (see [`drain_schedule`]), so that their clients reconnect elsewhere spread
    /// over the window instead of all at once. Sessions opened meanwhile are not waited for (the
    /// caller refuses new ones). Returns once the last scheduled session is closed.
    pub async fn drain(&self, window: Duration) {
        let conns = self.all();
        let start = Instant::now();
        let schedule = drain_schedule(conns.len(), window, &mut rand::rng());
        for (conn, at) in conns.iter().zip(schedule) {
            tokio::time::sleep_until(start + at).await;
            conn.close(CloseReason::Shutdown);
        }
    }

    /// Every open session (for shutdown).
    pub fn all(&self) -> Vec<Arc<Conn<H::Data>>> {
        self.sessions.lock().values().cloned().collect()
    }

    /// Opens a session: registers it, starts its heartbeat clock (before the handshake is written,
    /// so a silent client is gone `ping_interval + ping_timeout` after the handshake), queues the
    /// handshake frame unless the transport writes it itself, and tells the handler.
    pub fn open(
        self: &Arc<Self>,
        transport: Transport,
        handshake: HandshakeInfo,
        now: Instant,
    ) -> Result<Opened<H::Data>, OpenError> {
        let ip = handshake.remote.ip();
        if self.config.max_connections_per_ip > 0 {
            let mut per_ip = self.per_ip.lock();
            let n = per_ip.entry(ip).or_insert(0);
            if *n >= self.config.max_connections_per_ip {
                metrics::limited(metrics::Limit::ConnectionsPerIp);
                return Err(OpenError::TooManyFromAddress);
            }
            *n += 1;
        }
        let sid = self.node.new_id();
        let upgrades: &[&str] = if transport == Transport::Polling && self.config.allow_websocket {
            &["websocket"]
        } else {
            &[]
        };
        let open = engineio::Handshake {
            sid: &sid,
            upgrades,
            ping_interval_ms: millis(self.config.ping_interval),
            ping_timeout_ms: millis(self.config.ping_timeout),
            max_payload: self.config.max_payload as u64,
        }
        .encode();
        let connect_deadline = self.handler.connect_timeout().map(|t| now + t);
        let conn = Arc::new(Conn {
            sid: sid.clone(),
            handshake,
            state: Mutex::new(State {
                outbox: VecDeque::new(),
                queued_bytes: 0,
                direct: None,
                spill: Vec::new(),
                last_write: None,
                transport,
                poll: None,
                post_active: false,
                ws_attached: transport == Transport::WebSocket,
                closed: None,
                boundary: 0,
                farewell: false,
                next_ping: now + self.config.ping_interval,
                pong_deadline: None,
                connect_deadline,
                app_deadline: None,
            }),
            wake: Notify::new(),
            retick: std::sync::atomic::AtomicBool::new(false),
            config: self.config.clone(),
            node: self.node.clone(),
            data: H::Data::default(),
            close_hook: Mutex::new(None),
            tasks: self.tasks.clone(),
            ended: std::sync::OnceLock::new(),
        });
        let engine = Arc::downgrade(self);
        *conn.close_hook.lock() = Some(Box::new(move |conn: &Arc<Conn<H::Data>>, reason| {
            if let Some(engine) = engine.upgrade() {
                engine.forget_later(conn);
                ::metrics::counter!(metrics::DISCONNECTS, "reason" => reason.label()).increment(1);
                // Read after `closed` is set, so an upgrade can no longer move the session.
                let websocket = conn.transport() == Transport::WebSocket;
                metrics::wire(websocket).connections.decrement(1.0);
                tracing::debug!(sid = %conn.sid, %reason, "session closed");
                engine.handler.on_close(conn, reason);
            }
        }));
        self.sessions.lock().insert(sid, conn.clone());
        ::metrics::counter!(metrics::HANDSHAKES, "transport" => transport.as_str()).increment(1);
        metrics::wire(transport == Transport::WebSocket)
            .connections
            .increment(1.0);
        tracing::debug!(sid = %conn.sid, transport = transport.as_str(), "session opened");
        Ok((conn, open))
    }

    /// Tells the handler about a freshly opened session, once its handshake is on its way.
    pub fn opened(&self, conn: &Arc<Conn<H::Data>>) {
        self.handler.on_open(conn);
    }

    /// Forgets a closed session, after a grace period if it still owes a GET its farewell.
    fn forget_later(self: &Arc<Self>, conn: &Arc<Conn<H::Data>>) {
        let owed = conn.lock().farewell;
        match tokio::runtime::Handle::try_current() {
            Ok(_) if owed => {
                let (engine, conn) = (self.clone(), conn.clone());
                self.spawn(async move {
                    tokio::time::sleep(CLOSED_GRACE).await;
                    engine.forget(&conn);
                });
            }
            _ => self.forget(conn),
        }
    }

    fn forget(&self, conn: &Arc<Conn<H::Data>>) {
        self.sessions.lock().remove(conn.sid());
        if self.config.max_connections_per_ip > 0 {
            let ip = conn.handshake.remote.ip();
            let mut per_ip = self.per_ip.lock();
            if let Some(n) = per_ip.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }

    /// Handles one packet received on any transport (except the upgrade handshake, which the
    /// WebSocket transport handles itself).
    pub fn on_packet(&self, conn: &Arc<Conn<H::Data>>, packet: Packet, now: Instant) {
        match packet {
            Packet::Message(payload) => self.handler.on_message(conn, payload),
            Packet::Pong(_) => conn.on_pong(now),
            Packet::Close => conn.close(CloseReason::ClientClose),
            // Engine.IO v4 clients never send noop: harmless, ignored as Node does.
            Packet::Noop => {}
            // In v4 only the server pings (the upgrade probe is handled by the WebSocket
            // transport): Node closes the session on "invalid heartbeat direction", so do we.
            Packet::Ping(_) | Packet::Open(_) | Packet::Upgrade => {
                conn.close(CloseReason::ParseError)
            }
        }
    }
}

/// Milliseconds in a duration, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Recorder {
        messages: Mutex<Vec<Payload>>,
        closes: Mutex<Vec<CloseReason>>,
        opens: AtomicUsize,
    }

    impl Handler for Arc<Recorder> {
        type Data = ();
        fn on_open(&self, _conn: &Arc<Conn<()>>) {
            self.opens.fetch_add(1, Ordering::SeqCst);
        }
        fn on_message(&self, _conn: &Arc<Conn<()>>, message: Payload) {
            self.messages.lock().push(message);
        }
        fn on_close(&self, _conn: &Arc<Conn<()>>, reason: CloseReason) {
            self.closes.lock().push(reason);
        }
        fn connect_timeout(&self) -> Option<Duration> {
            Some(Duration::from_millis(1000))
        }
    }

    fn info() -> HandshakeInfo {
        HandshakeInfo::new(
            "127.0.0.1:5000".parse().expect("addr"),
            &http::HeaderMap::new(),
            None,
            0,
        )
    }

    #[test]
    fn handshake_keeps_only_the_headers_read_later_copied_out_of_the_request() {
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", "Bearer t".parse().expect("value"));
        headers.insert("user-agent", "ua/1".parse().expect("value"));
        headers.insert("sec-websocket-key", "abc".parse().expect("value"));
        headers.insert("cookie", "a=b".parse().expect("value"));
        let info = HandshakeInfo::new("127.0.0.1:1".parse().expect("addr"), &headers, None, 0);
        drop(headers);
        let cases = [
            ("authorization", Some("Bearer t")),
            ("Authorization", Some("Bearer t")),
            ("user-agent", Some("ua/1")),
            ("origin", None),
            ("sec-websocket-key", None),
            ("cookie", None),
        ];
        for (name, want) in cases {
            assert_eq!(info.header(name), want, "{name}");
        }
    }

    #[test]
    fn handshake_bounds_what_is_kept() {
        let config = Config {
            max_query_bytes: 10,
            max_kept_header_bytes: 8,
            ..Config::default()
        };
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = http::HeaderMap::new();
            for (name, value) in pairs {
                h.append(*name, value.parse().expect("value"));
            }
            h
        };
        let ok = Ok(());
        let cases = [
            (headers(&[]), Some("EIO=4&t=ab"), ok),
            (
                headers(&[]),
                Some("EIO=4&t=abc"),
                Err(HandshakeRefusal::QueryTooLong),
            ),
            (
                headers(&[("authorization", "1234"), ("origin", "5678")]),
                None,
                ok,
            ),
            (
                headers(&[("authorization", "1234"), ("origin", "56789")]),
                None,
                Err(HandshakeRefusal::HeadersTooLarge),
            ),
            // Headers a session does not keep do not count, nor repeats (only the first is kept).
            (headers(&[("cookie", &"x".repeat(100))]), None, ok),
            (
                headers(&[("user-agent", "12345678"), ("user-agent", "more")]),
                None,
                ok,
            ),
        ];
        for (i, (h, query, want)) in cases.into_iter().enumerate() {
            assert_eq!(HandshakeInfo::check(&config, &h, query), want, "case {i}");
        }
    }

    #[test]
    fn handshake_query_is_decoded_when_asked() {
        let info = HandshakeInfo::new(
            "127.0.0.1:1".parse().expect("addr"),
            &http::HeaderMap::new(),
            Some("EIO=4&name=a%20b+c&empty&k=1&k=2"),
            0,
        );
        let cases = [
            ("EIO", Some("4")),
            ("name", Some("a b c")),
            ("empty", Some("")),
            ("k", Some("1")),
            ("missing", None),
        ];
        for (key, want) in cases {
            assert_eq!(info.query(key).as_deref(), want, "{key}");
        }
        let pairs = info.query_pairs();
        assert_eq!(pairs.len(), 5);
        assert_eq!(pairs[1], ("name".to_owned(), "a b c".to_owned()));
    }

    fn engine(config: Config) -> (Arc<Engine<Arc<Recorder>>>, Arc<Recorder>) {
        let rec = Arc::new(Recorder::default());
        let node = NodeId::parse("t").expect("node id");
        (Engine::new(config, rec.clone(), node), rec)
    }

    fn small() -> Config {
        Config {
            ping_interval: Duration::from_millis(300),
            ping_timeout: Duration::from_millis(200),
            max_queued_frames: 3,
            ..Config::default()
        }
    }

    #[test]
    fn drain_schedule_spreads_over_the_window() {
        use rand::SeedableRng as _;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let window = Duration::from_secs(10);
        let at = drain_schedule(10_000, window, &mut rng);
        assert_eq!(at.len(), 10_000);
        assert!(at.windows(2).all(|w| w[0] <= w[1]), "sorted");
        assert!(at.iter().all(|&t| t < window), "inside the window");
        // Spread, not bunched: every tenth of the window gets a share near a tenth.
        for tenth in 0..10u32 {
            let (lo, hi) = (window * tenth / 10, window * (tenth + 1) / 10);
            let n = at.iter().filter(|&&t| t >= lo && t < hi).count();
            assert!((800..=1200).contains(&n), "tenth {tenth}: {n}");
        }
        assert_eq!(
            drain_schedule(3, Duration::ZERO, &mut rng),
            [Duration::ZERO; 3]
        );
    }

    /// A session's tasks run on the engine's tracker and end with the session; after the close
    /// none starts.
    #[tokio::test(start_paused = true)]
    async fn session_tasks_end_when_the_session_closes() {
        let (engine, _) = engine(Config::default());
        let (conn, _) = engine
            .open(Transport::WebSocket, info(), Instant::now())
            .expect("open");
        let started = Arc::new(AtomicUsize::new(0));
        let counter = started.clone();
        conn.spawn(async move {
            counter.fetch_add(1, Ordering::SeqCst);
            // An ack timer's length: far longer than the test.
            tokio::time::sleep(Duration::from_secs(600)).await;
        });
        tokio::task::yield_now().await;
        assert_eq!(engine.tasks().len(), 1);
        assert_eq!(started.load(Ordering::SeqCst), 1);
        conn.close(CloseReason::Shutdown);
        let counter = started.clone();
        conn.spawn(async move {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        engine.tasks().close();
        // Ends without the clock moving: the close cancelled the sleeper.
        tokio::time::timeout(Duration::from_millis(1), engine.tasks().wait())
            .await
            .expect("the session's task ended with the session");
        assert_eq!(started.load(Ordering::SeqCst), 1, "spawned after the close");
    }

    #[tokio::test(start_paused = true)]
    async fn drain_closes_every_session_within_the_window() {
        let (engine, rec) = engine(Config::default());
        let now = Instant::now();
        for _ in 0..50 {
            engine
                .open(Transport::WebSocket, info(), now)
                .expect("open");
        }
        let window = Duration::from_secs(5);
        let drain = engine.drain(window);
        tokio::pin!(drain);
        // Halfway through, some but not all are closed.
        tokio::select! {
            () = &mut drain => panic!("finished before the window was half over"),
            () = tokio::time::sleep(window / 2) => {}
        }
        let half = rec.closes.lock().len();
        assert!(half > 0 && half < 50, "closed at half time: {half}");
        drain.await;
        assert!(Instant::now() <= now + window);
        let closes = rec.closes.lock().clone();
        assert_eq!(closes, vec![CloseReason::Shutdown; 50]);
        assert!(engine.is_empty());
    }

    #[test]
    fn handshake_lists_upgrades_only_for_polling() {
        let (engine, _) = engine(small());
        let now = Instant::now();
        let (conn, open) = engine.open(Transport::Polling, info(), now).expect("open");
        let Frame::Text(text, _) = open else {
            panic!("handshake is text")
        };
        let text = std::str::from_utf8(&text).expect("utf8");
        assert_eq!(
            text,
            format!(
                "0{{\"sid\":\"{}\",\"upgrades\":[\"websocket\"],\"pingInterval\":300,\"pingTimeout\":200,\"maxPayload\":1000000}}",
                conn.sid()
            )
        );
        let (_, open) = engine
            .open(Transport::WebSocket, info(), now)
            .expect("open");
        assert!(
            matches!(open, Frame::Text(t, _) if t.windows(13).any(|w| w == b"\"upgrades\":[]"))
        );
        assert_eq!(engine.len(), 2);
    }

    #[test]
    fn heartbeat_pings_after_one_interval_and_times_out() {
        let (engine, rec) = engine(small());
        let t0 = Instant::now();
        let (conn, _) = engine.open(Transport::WebSocket, info(), t0).expect("open");
        conn.mark_connected();
        // Nothing before one interval.
        assert_eq!(conn.tick(t0), Some(t0 + Duration::from_millis(300)));
        assert!(conn.lock().outbox.is_empty());
        // The ping goes out at the interval; the deadline is the timeout.
        let t1 = t0 + Duration::from_millis(300);
        assert_eq!(conn.tick(t1), Some(t1 + Duration::from_millis(200)));
        assert_eq!(conn.lock().outbox.len(), 1);
        // A pong reschedules the next ping one interval later.
        let t2 = t1 + Duration::from_millis(50);
        conn.on_pong(t2);
        assert_eq!(conn.tick(t2), Some(t2 + Duration::from_millis(300)));
        // No pong this time: closed at the deadline, handler told once.
        let t3 = t2 + Duration::from_millis(300);
        conn.tick(t3);
        assert!(!conn.heartbeat_expired(t3));
        assert!(conn.heartbeat_expired(t3 + Duration::from_millis(200)));
        assert_eq!(conn.tick(t3 + Duration::from_millis(200)), None);
        assert_eq!(*rec.closes.lock(), vec![CloseReason::PingTimeout]);
        assert!(engine.is_empty());
    }

    #[test]
    fn pong_deadline_counts_from_when_the_ping_was_due() {
        let (engine, _) = engine(small());
        let t0 = Instant::now();
        let (conn, _) = engine.open(Transport::Polling, info(), t0).expect("open");
        conn.mark_connected();
        // The timer fires 40 ms late: the session still ends at interval + timeout.
        let late = t0 + Duration::from_millis(340);
        assert_eq!(conn.tick(late), Some(t0 + Duration::from_millis(500)));
        assert!(conn.heartbeat_expired(t0 + Duration::from_millis(500)));
        // A timer so late that the deadline passed leaves the client half the timeout.
        let (conn, _) = engine.open(Transport::Polling, info(), t0).expect("open");
        conn.mark_connected();
        let very_late = t0 + Duration::from_millis(900);
        assert_eq!(
            conn.tick(very_late),
            Some(very_late + Duration::from_millis(100))
        );
    }

    #[test]
    fn connect_timeout_closes_unconnected_sessions() {
        let (engine, rec) = engine(Config {
            ping_interval: Duration::from_secs(10),
            ..small()
        });
        let t0 = Instant::now();
        let (conn, _) = engine.open(Transport::Polling, info(), t0).expect("open");
        assert_eq!(conn.tick(t0), Some(t0 + Duration::from_millis(1000)));
        assert_eq!(conn.tick(t0 + Duration::from_millis(1000)), None);
        assert_eq!(*rec.closes.lock(), vec![CloseReason::ConnectTimeout]);
    }

    #[test]
    fn full_queue_drops_volatile_and_disconnects_slow_consumers() {
        let (engine, rec) = engine(small());
        let (conn, _) = engine
            .open(Transport::WebSocket, info(), Instant::now())
            .expect("open");
        let f = Frame::text(Bytes::from_static(b"4x"));
        for _ in 0..3 {
            assert_eq!(conn.push(f.clone()), Pushed::Queued);
        }
        assert_eq!(
            conn.push_all(std::slice::from_ref(&f), true),
            Pushed::Dropped
        );
        assert_eq!(conn.push_all(std::slice::from_ref(&f), false), Pushed::Full);
        assert!(!conn.is_closed());
        assert_eq!(conn.push(f.clone()), Pushed::Closed);
        assert!(conn.is_closed());
        assert_eq!(*rec.closes.lock(), vec![CloseReason::SlowConsumer]);
        // Closing again changes nothing.
        conn.close(CloseReason::ServerClose);
        assert_eq!(rec.closes.lock().len(), 1);
    }

    #[test]
    fn queue_is_bounded_in_bytes_too() {
        let (engine, rec) = engine(Config {
            max_queued_bytes: 10,
            ..small()
        });
        let (conn, _) = engine
            .open(Transport::WebSocket, info(), Instant::now())
            .expect("open");
        let f = Frame::text(Bytes::from_static(b"4abcd"));
        assert_eq!(conn.push(f.clone()), Pushed::Queued);
        assert_eq!(conn.push(f.clone()), Pushed::Queued);
        // Written frames no longer count.
        conn.lock().discard_front(1);
        assert_eq!(conn.push(f.clone()), Pushed::Queued);
        assert_eq!(
            conn.push_all(std::slice::from_ref(&f), true),
            Pushed::Dropped
        );
        assert_eq!(conn.push(f), Pushed::Closed);
        assert_eq!(*rec.closes.lock(), vec![CloseReason::SlowConsumer]);
    }

    #[test]
    fn per_ip_limit_counts_open_sessions() {
        let (engine, _) = engine(Config {
            max_connections_per_ip: 2,
            ..small()
        });
        let now = Instant::now();
        let (a, _) = engine.open(Transport::Polling, info(), now).expect("first");
        engine
            .open(Transport::Polling, info(), now)
            .expect("second");
        assert_eq!(
            engine.open(Transport::Polling, info(), now).err(),
            Some(OpenError::TooManyFromAddress)
        );
        a.close(CloseReason::ClientClose);
        assert!(engine.open(Transport::Polling, info(), now).is_ok());
    }

    #[test]
    fn packets_reach_the_handler() {
        let (engine, rec) = engine(small());
        let now = Instant::now();
        let (conn, _) = engine.open(Transport::Polling, info(), now).expect("open");
        engine.opened(&conn);
        engine.on_packet(
            &conn,
            Packet::Message(Payload::Text(Bytes::from_static(b"hi"))),
            now,
        );
        engine.on_packet(&conn, Packet::Close, now);
        assert_eq!(rec.opens.load(Ordering::SeqCst), 1);
        assert_eq!(rec.messages.lock().len(), 1);
        assert_eq!(*rec.closes.lock(), vec![CloseReason::ClientClose]);
    }
}
