//! Typed streams of what the bus tells workers: forwarded events, presence, life events,
//! server-side events.
//!
//! Everything read from the bus is hostile until decoded and checked: a message that does not
//! decode, belongs to another namespace or carries malformed JSON is skipped, counted in
//! [`MALFORMED`] (label `stream`) and in [`Stream::skipped`], and logged at debug. Nothing here
//! panics on input, and nothing is buffered beyond the bus's bounded subscription
//! ([`switchboard_bus::SUBSCRIPTION_CAPACITY`]; a worker that falls behind loses messages, as
//! NATS drops for slow consumers) and the items of the one message being read: a presence batch
//! (several announcements in one bus message, at most the bus's `max_payload`) is yielded entry
//! by entry, in order, each entry checked as a lone announcement is.

use std::collections::VecDeque;

use serde_json::Value;
use switchboard_bus::{Message, Subscription};
use switchboard_proto::Message as _;
use switchboard_proto::bus as pb;

use crate::Args;

/// Counter (metric name) of bus messages a worker skipped as malformed, by `stream` (`events`,
/// `presence`, `life`, `server`).
pub const MALFORMED: &str = "switchboard_worker_malformed_total";

/// Decodes one bus message into the items it carries, queued in order; returns how many were
/// malformed (skipped).
type Decode<T> = Box<dyn FnMut(Message, &mut VecDeque<T>) -> u64 + Send>;

/// Items queued past this many are let go of (the queue's memory) once read: a batch the
/// size of `max_payload` may hold thousands.
const QUEUED_KEPT: usize = 64;

/// A stream of decoded messages of one kind. Dropping it unsubscribes.
pub struct Stream<T> {
    first: Subscription,
    second: Option<Subscription>,
    decode: Decode<T>,
    /// Items of the last message not yielded yet (a presence batch's later entries).
    queued: VecDeque<T>,
    kind: &'static str,
    skipped: u64,
}

impl<T> Stream<T> {
    /// A stream of one item per well-formed message.
    pub(crate) fn new(
        kind: &'static str,
        first: Subscription,
        second: Option<Subscription>,
        mut decode: impl FnMut(Message) -> Option<T> + Send + 'static,
    ) -> Self {
        Self::of_many(kind, first, second, move |msg, out| match decode(msg) {
            Some(item) => {
                out.push_back(item);
                0
            }
            None => 1,
        })
    }

    /// A stream of the items each message carries (any number, in order); `decode` queues them
    /// and returns how many were malformed.
    pub(crate) fn of_many(
        kind: &'static str,
        first: Subscription,
        second: Option<Subscription>,
        decode: impl FnMut(Message, &mut VecDeque<T>) -> u64 + Send + 'static,
    ) -> Self {
        Self {
            first,
            second,
            decode: Box::new(decode),
            queued: VecDeque::new(),
            kind,
            skipped: 0,
        }
    }

    /// The next well-formed item; `None` once the bus client is closed. Malformed messages (and
    /// malformed entries of a presence batch) are skipped and counted. Cancel-safe: no message
    /// is lost if the future is dropped, and the rest of a batch stays queued for the next
    /// call.
    pub async fn next(&mut self) -> Option<T> {
        loop {
            if let Some(item) = self.queued.pop_front() {
                return Some(item);
            }
            if self.queued.capacity() > QUEUED_KEPT {
                self.queued.shrink_to(QUEUED_KEPT);
            }
            let msg = match &mut self.second {
                None => self.first.next().await?,
                Some(second) => tokio::select! {
                    m = self.first.next() => m?,
                    m = second.next() => m?,
                },
            };
            let subject = msg.subject.clone();
            let malformed = (self.decode)(msg, &mut self.queued);
            if malformed > 0 {
                self.skipped += malformed;
                metrics::counter!(MALFORMED, "stream" => self.kind).increment(malformed);
                tracing::debug!(%subject, stream = self.kind, malformed, "malformed bus message skipped");
            }
        }
    }

    /// How many malformed messages (and malformed entries of presence batches) this stream
    /// skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

impl<T> std::fmt::Debug for Stream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("kind", &self.kind)
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

/// What a presence announcement is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceKind {
    /// A socket joined a room.
    MemberJoined,
    /// A socket left a room.
    MemberLeft,
    /// A user's first socket joined a room.
    UserJoined,
    /// A user's last socket left a room.
    UserLeft,
    /// A user's first socket connected to the namespace.
    UserOnline,
    /// A user's last socket left the namespace.
    UserOffline,
}

/// A presence announcement of the broker's leader (`{prefix}.presence.{ns}`), sent for the
/// namespaces whose `[namespace.presence]` asks for them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceEvent {
    /// What happened.
    pub kind: PresenceKind,
    /// The namespace.
    pub ns: String,
    /// The room; `None` for [`PresenceKind::UserOnline`] and [`PresenceKind::UserOffline`].
    pub room: Option<String>,
    /// The user, when the socket is authenticated.
    pub user: Option<String>,
    /// The socket whose change caused it.
    pub socket_id: String,
    /// For leaves and offline: `leave`, a disconnect reason, `node_lost`, `node_left`, ...
    pub reason: String,
}

impl PresenceEvent {
    /// Queues the announcements of a message of `ns`'s presence subject (one, or a batch's
    /// entries in order) in `out`; how many were malformed (the message, or entries of it).
    pub(crate) fn decode_all(ns: &str, msg: Message, out: &mut VecDeque<Self>) -> u64 {
        let Ok(message) = pb::PresenceEvent::decode(msg.payload) else {
            return 1;
        };
        let mut malformed = 0;
        for ev in switchboard_proto::presence::announcements(ns, message) {
            match ev.ok().and_then(Self::checked) {
                Some(ev) => out.push_back(ev),
                None => malformed += 1,
            }
        }
        malformed
    }

    /// One announcement of the right namespace, if its kind is known and a room-scoped one
    /// names its room.
    fn checked(ev: pb::PresenceEvent) -> Option<Self> {
        use pb::presence_event::Kind;
        let kind = match Kind::try_from(ev.kind).ok()? {
            Kind::MemberJoined => PresenceKind::MemberJoined,
            Kind::MemberLeft => PresenceKind::MemberLeft,
            Kind::UserJoined => PresenceKind::UserJoined,
            Kind::UserLeft => PresenceKind::UserLeft,
            Kind::UserOnline => PresenceKind::UserOnline,
            Kind::UserOffline => PresenceKind::UserOffline,
        };
        let room = match kind {
            PresenceKind::UserOnline | PresenceKind::UserOffline => None,
            _ if ev.room.is_empty() => return None,
            _ => Some(ev.room),
        };
        Some(Self {
            kind,
            ns: ev.ns,
            room,
            user: ev.user,
            socket_id: ev.socket_id,
            reason: ev.reason,
        })
    }
}

/// A socket as a gateway describes it in a [`LifeEvent`].
#[derive(Clone, Debug, PartialEq)]
pub struct SocketInfo {
    /// Socket id: `{node}.{random}`.
    pub id: String,
    /// The user id (the JWT `sub`), when authenticated.
    pub user: Option<String>,
    /// Its rooms.
    pub rooms: Vec<String>,
    /// Its `data` (`Null` when unset).
    pub data: Value,
    /// The verified JWT claims (`{}` when unauthenticated).
    pub claims: Value,
    /// The client's address as the gateway saw it (`ip:port`).
    pub address: String,
    /// The handshake's query string.
    pub query: String,
    /// The handshake headers the gateways keep (lowercase names).
    pub headers: Vec<(String, String)>,
    /// Unix time of the connection, in milliseconds.
    pub connected_at_ms: u64,
}

/// A socket connected to or left a namespace (`{prefix}.life.{ns}.connect` / `.disconnect`).
#[derive(Clone, Debug, PartialEq)]
pub enum LifeEvent {
    /// A socket connected.
    Connect {
        /// The gateway holding it.
        node: String,
        /// The socket.
        socket: SocketInfo,
        /// A recovered session (same id), not a new socket (docs/recovery.md).
        recovered: bool,
    },
    /// A socket left.
    Disconnect {
        /// The gateway that held it.
        node: String,
        /// The socket as it was.
        socket: SocketInfo,
        /// Why: `client namespace disconnect`, `transport close`, `ping timeout`, ...
        reason: String,
        /// The session is kept for recovery: a `Connect` with `recovered` may follow.
        recoverable: bool,
    },
}

impl LifeEvent {
    /// Decodes a life event; `connect` tells which subject it came on (the subject decides,
    /// not the body).
    pub(crate) fn decode(ns: &str, connect: bool, msg: Message) -> Option<Self> {
        let ev = pb::LifeEvent::decode(msg.payload).ok()?;
        let s = ev.socket?;
        if s.ns != ns {
            return None;
        }
        let json = |text: &str, empty: Value| match text {
            "" => Some(empty),
            text => serde_json::from_str::<Value>(text).ok(),
        };
        let handshake = s.handshake.unwrap_or_default();
        let socket = SocketInfo {
            id: s.id,
            user: s.user,
            rooms: s.rooms,
            data: json(&s.data_json, Value::Null)?,
            claims: json(&handshake.claims_json, Value::Object(Default::default()))?,
            address: handshake.address,
            query: handshake.query,
            headers: handshake
                .headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
            connected_at_ms: handshake.connected_at_ms,
        };
        Some(if connect {
            Self::Connect {
                node: ev.node,
                socket,
                recovered: ev.recovered,
            }
        } else {
            Self::Disconnect {
                node: ev.node,
                socket,
                reason: ev.reason,
                recoverable: ev.recoverable,
            }
        })
    }

    /// The socket concerned.
    pub fn socket(&self) -> &SocketInfo {
        match self {
            Self::Connect { socket, .. } | Self::Disconnect { socket, .. } => socket,
        }
    }
}

/// A `serverSideEmit` of another worker or an emitter (`{prefix}.srv.{ns}.{event}`).
#[derive(Clone, Debug, PartialEq)]
pub struct ServerEvent {
    /// Who published it (the emitting service's name).
    pub origin: String,
    /// The namespace.
    pub ns: String,
    /// The event name.
    pub event: String,
    /// Its arguments.
    pub args: Args,
}

impl ServerEvent {
    pub(crate) fn decode(ns: &str, msg: Message) -> Option<Self> {
        let ev = pb::ServerSideEmit::decode(msg.payload).ok()?;
        if ev.ns != ns || ev.event.is_empty() {
            return None;
        }
        Some(Self {
            args: Args::from_bus(&ev.args_json, ev.attachments)?,
            origin: ev.origin,
            ns: ev.ns,
            event: ev.event,
        })
    }
}
