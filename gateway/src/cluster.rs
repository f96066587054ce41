//! The gateway's side of the cluster: the [`Adapter`] that spreads this node's membership and
//! broadcasts over the bus, and the tasks that bring the cluster's traffic back in.
//!
//! Out: every membership change becomes a [`MemberMessage`] with the next per-node sequence
//! number; every broadcast becomes one [`Envelope`] on exactly one subject (a single room → the
//! room's subject; socket ids only → each owner's node subject; anything else → the namespace
//! subject). Both go through one bounded queue to one publisher task, so the bus sees them in the
//! order they happened. A full queue drops the message and counts it; a dropped membership
//! message still consumed its sequence number, so the broker sees the gap and asks for a
//! snapshot.
//!
//! In: this node's subject (deliveries and commands for its sockets), a room's subject while a
//! local socket is in the room, a namespace's subject while a local socket is connected to it,
//! the resync and snapshot-request subjects, and presence announcements for the namespaces that
//! show them. Received packets are written to the local recipients as the bytes that came in.
//!
//! NATS down: local delivery goes on; the publisher's messages are dropped (counted) once the
//! client's buffer is full; when the link comes back, a full snapshot is sent.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Value, json};
use switchboard_bus::{Bus, BusError, Subscription};
use switchboard_proto::Message as _;
use switchboard_proto::bus::{self as pb, envelope, member_message, presence_event};
use switchboard_proto::subject::Subjects;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::auth::Claims;
use crate::engineio::{Frame, RECORD_SEPARATOR};
use crate::id::{NodeId, owner_of};
use crate::metrics as m;
use crate::policy::{BoxFuture, Bridge, Reservation};
use crate::sio::{Adapter, Args, DisconnectReason, Room, Server, Socket, Target};
use crate::socketio::{self, Decoded, PacketType};

/// Messages the publisher may hold before new ones are dropped.
const OUT_QUEUE: usize = 65_536;
/// Longest wait for the subscriptions of a join before its ack goes anyway.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a room capacity check may take.
const RESERVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a capacity check is asked while the broker does not know the socket yet.
const RESERVE_ATTEMPTS: u64 = 4;
/// Sockets per snapshot part.
const SNAPSHOT_PART: usize = 500;
/// Handshake headers carried to the broker.
const HEADERS: [&str; 4] = ["user-agent", "origin", "x-forwarded-for", "referer"];

/// How a namespace shows presence announcements from the broker to its sockets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceConfig {
    /// Announce users joining and leaving rooms (to the room's members).
    pub rooms: bool,
    /// Announce users coming online and going offline (to the whole namespace).
    pub users: bool,
    /// The event name clients receive, with one argument
    /// `{kind, room, user, socket, reason}`.
    pub event: String,
    /// Whether this gateway shows the announcements to its sockets (else: workers only).
    pub to_clients: bool,
}

/// What the cluster side of a gateway needs to know.
#[derive(Clone)]
pub struct ClusterConfig {
    /// This node's id.
    pub node: NodeId,
    /// Subject builder (with the cluster's prefix).
    pub subjects: Subjects,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Presence announcements by namespace name (static namespaces only).
    pub presence: HashMap<String, PresenceConfig>,
    /// Counts the node's Engine.IO connections, for the heartbeat.
    pub connections: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// Test fault injection: membership sequence numbers whose message is not published.
    pub drop_seqs: Vec<u64>,
}

/// A socket's `data` as the cluster set it (JSON text), carried in snapshots.
#[derive(Debug, Clone)]
pub struct SocketData(pub String);

/// Subscriptions that follow local membership.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Interest {
    Room(Arc<str>, Room),
    Namespace(Arc<str>),
}

#[derive(Default)]
struct St {
    seq: u64,
    rooms: HashMap<(Arc<str>, Room), usize>,
    namespaces: HashMap<Arc<str>, usize>,
    /// Bumped on every change of the interest set.
    version: u64,
}

struct Out {
    subject: String,
    payload: Bytes,
    kind: &'static str,
}

struct Inner {
    bus: Bus,
    io: Server,
    cfg: ClusterConfig,
    /// Unix time of the start in milliseconds: this process's epoch.
    epoch: u64,
    address: Mutex<String>,
    st: Mutex<St>,
    out: mpsc::Sender<Out>,
    interest_changed: Notify,
    /// The interest version whose subscriptions the NATS server has confirmed.
    applied: watch::Sender<u64>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// The cluster adapter of one gateway (cheap to clone).
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Cluster {
    /// Connects `io` to the cluster over `bus`: installs the adapter, subscribes this node's
    /// subjects and starts the publisher, the heartbeat and the subscription manager. Fails if
    /// the server already has an adapter or a fixed subscription cannot be made.
    pub async fn start(bus: Bus, io: Server, cfg: ClusterConfig) -> Result<Self, BusError> {
        let (tx, rx) = mpsc::channel(OUT_QUEUE);
        let cluster = Self {
            inner: Arc::new(Inner {
                bus,
                io: io.clone(),
                cfg,
                epoch: unix_ms(),
                address: Mutex::new(String::new()),
                st: Mutex::new(St::default()),
                out: tx,
                interest_changed: Notify::new(),
                applied: watch::Sender::new(0),
                tasks: Mutex::new(Vec::new()),
            }),
        };
        let subjects = &cluster.inner.cfg.subjects;
        let node = cluster.inner.cfg.node.as_str();
        let mut fixed = vec![
            cluster.inner.bus.subscribe(subjects.node(node)).await?,
            cluster.inner.bus.subscribe(subjects.resync()).await?,
            cluster.inner.bus.subscribe(subjects.snapshot(node)).await?,
        ];
        if cluster.inner.cfg.presence.values().any(|p| p.to_clients) {
            fixed.push(cluster.inner.bus.subscribe(subjects.all_presence()).await?);
        }
        if !io.set_adapter(Arc::new(cluster.clone())) {
            return Err(BusError::Subscribe(
                "the server already has an adapter".into(),
            ));
        }
        let mut tasks = vec![
            tokio::spawn(publisher(cluster.inner.bus.clone(), rx)),
            tokio::spawn(heartbeats(cluster.clone())),
            tokio::spawn(interests(cluster.clone())),
            tokio::spawn(link_watch(cluster.clone())),
        ];
        for sub in fixed {
            tasks.push(tokio::spawn(receive(cluster.clone(), sub)));
        }
        lock(&cluster.inner.tasks).extend(tasks);
        cluster.send_snapshot(0, "start");
        Ok(cluster)
    }

    /// Sets the address reported in heartbeats (`host:port`, once the listener is bound) and
    /// sends a heartbeat at once, so that the other gateways can forward to this one right away.
    pub fn set_address(&self, address: String) {
        *lock(&self.inner.address) = address;
        self.heartbeat();
    }

    /// The bus this node uses.
    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    /// The subject builder.
    pub fn subjects(&self) -> &Subjects {
        &self.inner.cfg.subjects
    }

    /// This node's id.
    pub fn node(&self) -> &NodeId {
        &self.inner.cfg.node
    }

    /// Tells the broker this node is leaving (its sockets go with reason `node_left`) and waits
    /// for the publisher to pass it on, at most `wait`.
    pub async fn leave(&self, wait: Duration) {
        let msg = self.member_message(0, member_message::Body::Leaving(pb::NodeLeaving {}));
        self.queue(self.member_subject(), msg, "leaving");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = tokio::time::timeout(wait, self.inner.bus.flush()).await;
    }

    /// Stops every task of the cluster side.
    pub fn shutdown(&self) {
        for t in lock(&self.inner.tasks).drain(..) {
            t.abort();
        }
    }

    fn member_subject(&self) -> String {
        self.inner.cfg.subjects.member(self.inner.cfg.node.as_str())
    }

    fn member_message(&self, seq: u64, body: member_message::Body) -> Bytes {
        Bytes::from(
            pb::MemberMessage {
                node: self.inner.cfg.node.as_str().to_owned(),
                epoch: self.inner.epoch,
                seq,
                body: Some(body),
            }
            .encode_to_vec(),
        )
    }

    /// Queues a message for the publisher; drops it (counted) if the queue is full.
    fn queue(&self, subject: String, payload: Bytes, kind: &'static str) {
        if self
            .inner
            .out
            .try_send(Out {
                subject,
                payload,
                kind,
            })
            .is_err()
        {
            ::metrics::counter!(m::BUS_OUT_DROPPED, "kind" => kind).increment(1);
        }
    }

    /// Takes the next sequence number, lets `f` update the interest counts, and queues the
    /// event, all under the state lock so sequence order is queue order.
    fn membership(
        &self,
        kind: &'static str,
        body: member_message::Body,
        f: impl FnOnce(&mut St) -> bool,
    ) {
        let mut st = lock(&self.inner.st);
        st.seq += 1;
        let seq = st.seq;
        if f(&mut st) {
            st.version += 1;
            self.inner.interest_changed.notify_one();
        }
        if self.inner.cfg.drop_seqs.contains(&seq) {
            tracing::warn!(seq, "fault injection: membership message not published");
            return;
        }
        let msg = self.member_message(seq, body);
        self.queue(self.member_subject(), msg, kind);
    }

    fn socket_info(&self, socket: &Socket) -> pb::SocketInfo {
        let claims = socket.get::<Claims>();
        let hs = socket.handshake();
        let ns = socket.namespace();
        let presence = self.inner.cfg.presence.get(ns.name());
        pb::SocketInfo {
            id: socket.id().to_owned(),
            ns: ns.name().to_owned(),
            user: user_of(claims.as_deref()),
            rooms: socket.rooms().iter().map(|r| r.to_string()).collect(),
            handshake: Some(pb::Handshake {
                address: hs.remote.to_string(),
                headers: HEADERS
                    .iter()
                    .filter_map(|name| {
                        let value = hs.header(name)?;
                        Some(pb::Header {
                            name: (*name).to_owned(),
                            value: value.to_owned(),
                        })
                    })
                    .collect(),
                query: encode_query(&hs.query_pairs()),
                claims_json: claims_json(claims.as_deref()),
                connected_at_ms: hs.issued_ms,
            }),
            data_json: socket
                .get::<SocketData>()
                .map_or_else(|| "null".to_owned(), |d| d.0.clone()),
            presence: Some(pb::PresenceFlags {
                rooms: presence.is_some_and(|p| p.rooms),
                users: presence.is_some_and(|p| p.users),
            }),
        }
    }

    /// Sends this node's full state as snapshot parts, as of the current sequence number.
    fn send_snapshot(&self, request_id: u64, why: &'static str) {
        let st = lock(&self.inner.st);
        let sockets: Vec<pb::SocketInfo> = self
            .inner
            .io
            .all_sockets()
            .iter()
            .map(|s| self.socket_info(s))
            .collect();
        let parts: Vec<&[pb::SocketInfo]> = if sockets.is_empty() {
            vec![&[]]
        } else {
            sockets.chunks(SNAPSHOT_PART).collect()
        };
        let last = parts.len() - 1;
        for (i, chunk) in parts.into_iter().enumerate() {
            let body = member_message::Body::Snapshot(pb::SnapshotPart {
                part: u32::try_from(i).unwrap_or(u32::MAX),
                last: i == last,
                sockets: chunk.to_vec(),
                request_id,
            });
            let msg = self.member_message(st.seq, body);
            self.queue(self.member_subject(), msg, "snapshot");
        }
        drop(st);
        ::metrics::counter!(m::SNAPSHOTS, "why" => why).increment(1);
        tracing::debug!(why, sockets = sockets.len(), "snapshot sent");
    }

    fn heartbeat(&self) {
        let seq = lock(&self.inner.st).seq;
        let msg = pb::Heartbeat {
            node: self.inner.cfg.node.as_str().to_owned(),
            epoch: self.inner.epoch,
            seq,
            connections: (self.inner.cfg.connections)(),
            sockets: self.inner.io.all_sockets().len() as u64,
            address: lock(&self.inner.address).clone(),
        };
        let subject = self
            .inner
            .cfg
            .subjects
            .heartbeat(self.inner.cfg.node.as_str());
        self.queue(subject, Bytes::from(msg.encode_to_vec()), "heartbeat");
    }

    fn wanted(&self) -> (u64, HashSet<Interest>) {
        let st = lock(&self.inner.st);
        let mut set: HashSet<Interest> = st
            .rooms
            .keys()
            .map(|(ns, room)| Interest::Room(ns.clone(), room.clone()))
            .collect();
        set.extend(
            st.namespaces
                .keys()
                .map(|ns| Interest::Namespace(ns.clone())),
        );
        (st.version, set)
    }

    fn subject_of(&self, interest: &Interest) -> String {
        match interest {
            Interest::Room(ns, room) => self.inner.cfg.subjects.room(ns, room),
            Interest::Namespace(ns) => self.inner.cfg.subjects.namespace(ns),
        }
    }

    /// Handles one message from any subscription.
    fn on_message(&self, msg: switchboard_bus::Message) {
        let subjects = &self.inner.cfg.subjects;
        let node = self.inner.cfg.node.as_str();
        if msg.subject == subjects.resync() {
            self.send_snapshot(0, "resync");
            return;
        }
        if msg.subject == subjects.snapshot(node) {
            let id = pb::SnapshotRequest::decode(msg.payload).map_or(0, |r| r.request_id);
            self.send_snapshot(id, "request");
            return;
        }
        if let Ok(switchboard_proto::subject::Parsed::Presence { .. }) =
            subjects.parse(&msg.subject)
        {
            match pb::PresenceEvent::decode(msg.payload) {
                Ok(ev) => self.on_presence(&ev),
                Err(_) => ::metrics::counter!(m::BUS_MALFORMED).increment(1),
            }
            return;
        }
        match pb::Envelope::decode(msg.payload) {
            Ok(pb::Envelope {
                body: Some(envelope::Body::Delivery(d)),
            }) => self.on_delivery(d),
            Ok(pb::Envelope {
                body: Some(envelope::Body::Command(c)),
            }) => self.on_command(c),
            Ok(pb::Envelope { body: None }) | Err(_) => {
                ::metrics::counter!(m::BUS_MALFORMED).increment(1);
                tracing::debug!(subject = %msg.subject, "malformed envelope ignored");
            }
        }
    }

    fn on_delivery(&self, d: pb::Delivery) {
        ::metrics::counter!(m::BUS_RECEIVED).increment(1);
        let target = from_pb_target(d.target.unwrap_or_default());
        if let Some(ack) = d.ack {
            self.emit_with_acks(&d.ns, &target, ack, d.attachments);
            return;
        }
        let Some(frames) = delivery_frames(&d.ns, d.packet, d.attachments) else {
            ::metrics::counter!(m::BUS_MALFORMED).increment(1);
            tracing::debug!(ns = %d.ns, "delivery with a malformed packet ignored");
            return;
        };
        self.inner
            .io
            .deliver_remote(&d.ns, &target, &frames, d.volatile);
    }

    /// An emit whose every recipient's ack goes back to the sender, one `AckReply` each.
    fn emit_with_acks(
        &self,
        ns: &str,
        target: &Target,
        ack: pb::AckRequest,
        attachments: Vec<Bytes>,
    ) {
        let Some(args) = ack_request_args(&ack, attachments) else {
            ::metrics::counter!(m::BUS_MALFORMED).increment(1);
            return;
        };
        let timeout = Duration::from_millis(ack.timeout_ms.clamp(1, 600_000));
        for socket in self.inner.io.select(ns, target) {
            let args = args.clone();
            let bus = self.inner.bus.clone();
            let reply_to = ack.reply.clone();
            let socket_id = socket.id().to_owned();
            socket.emit_with_ack_cb(&ack.event, args, timeout, move |result| {
                let reply = match result {
                    Ok(args) => pb::AckReply {
                        socket_id,
                        args_json: Value::Array(args.values).to_string(),
                        attachments: args.attachments,
                        timed_out: false,
                    },
                    Err(_) => pb::AckReply {
                        socket_id,
                        timed_out: true,
                        ..Default::default()
                    },
                };
                let payload = Bytes::from(reply.encode_to_vec());
                tokio::spawn(async move {
                    if let Err(e) = bus.publish(reply_to, payload).await {
                        m::bus_error("reply", &e);
                        tracing::debug!(error = %e, "ack reply not published");
                    }
                });
            });
        }
    }

    fn on_command(&self, c: pb::Command) {
        let target = from_pb_target(c.target.unwrap_or_default());
        let sockets = self.inner.io.select(&c.ns, &target);
        match c.action {
            Some(pb::command::Action::Join(list)) => {
                for s in &sockets {
                    for room in &list.rooms {
                        s.join(room.as_str());
                    }
                }
            }
            Some(pb::command::Action::Leave(list)) => {
                for s in &sockets {
                    for room in &list.rooms {
                        s.leave(room);
                    }
                }
            }
            Some(pb::command::Action::Disconnect(kick)) => {
                for s in &sockets {
                    if !kick.reason.is_empty() {
                        s.emit("kicked", Args::new(vec![json!({ "reason": kick.reason })]));
                    }
                    if kick.close_connection {
                        s.close_connection();
                    } else {
                        s.disconnect();
                    }
                }
            }
            Some(pb::command::Action::SetData(set)) => {
                if serde_json::from_str::<serde::de::IgnoredAny>(&set.data_json).is_err() {
                    ::metrics::counter!(m::BUS_MALFORMED).increment(1);
                    return;
                }
                for s in &sockets {
                    s.insert(SocketData(set.data_json.clone()));
                }
            }
            None => ::metrics::counter!(m::BUS_MALFORMED).increment(1),
        }
    }

    fn on_presence(&self, ev: &pb::PresenceEvent) {
        let Some(cfg) = self.inner.cfg.presence.get(&ev.ns).filter(|p| p.to_clients) else {
            return;
        };
        let kind = presence_event::Kind::try_from(ev.kind).ok();
        let (name, room_scoped, wanted) = match kind {
            Some(presence_event::Kind::MemberJoined) => ("member_joined", true, cfg.rooms),
            Some(presence_event::Kind::MemberLeft) => ("member_left", true, cfg.rooms),
            Some(presence_event::Kind::UserJoined) => ("user_joined", true, cfg.rooms),
            Some(presence_event::Kind::UserLeft) => ("user_left", true, cfg.rooms),
            Some(presence_event::Kind::UserOnline) => ("user_online", false, cfg.users),
            Some(presence_event::Kind::UserOffline) => ("user_offline", false, cfg.users),
            None => return,
        };
        if !wanted {
            return;
        }
        let mut target = Target::default();
        if room_scoped {
            target.rooms.push(Room::from(ev.room.as_str()));
        }
        // The socket the news is about has it already (or is gone).
        if !ev.socket_id.is_empty() {
            target.except_sockets.push(ev.socket_id.as_str().into());
        }
        let payload = json!({
            "kind": name,
            "room": if room_scoped { Value::String(ev.room.clone()) } else { Value::Null },
            "user": ev.user,
            "socket": ev.socket_id,
            "reason": ev.reason,
        });
        let frames = Args::new(vec![payload]).encode_event(&ev.ns, &cfg.event);
        self.inner
            .io
            .deliver_remote(&ev.ns, &target, &frames, false);
    }
}

impl Bridge for Cluster {
    /// Publishes the event on its (namespace, event) subject, for the workers' queue group;
    /// with `timeout`, as a request whose reply is the worker's answer.
    fn forward(
        &self,
        socket: &Socket,
        event: &str,
        args: Args,
        timeout: Option<Duration>,
    ) -> BoxFuture<Result<Args, String>> {
        let claims = socket.get::<Claims>();
        let msg = pb::ClientEvent {
            node: self.inner.cfg.node.as_str().to_owned(),
            socket_id: socket.id().to_owned(),
            ns: socket.namespace().name().to_owned(),
            event: event.to_owned(),
            args_json: Value::Array(args.values).to_string(),
            attachments: args.attachments,
            claims_json: claims_json(claims.as_deref()),
            user: user_of(claims.as_deref()),
            wants_ack: timeout.is_some(),
            rooms: socket.rooms().iter().map(|r| r.to_string()).collect(),
        };
        let subject = self.inner.cfg.subjects.event(&msg.ns, event);
        let payload = Bytes::from(msg.encode_to_vec());
        let bus = self.inner.bus.clone();
        Box::pin(async move {
            let Some(timeout) = timeout else {
                return bus
                    .publish(subject, payload)
                    .await
                    .map(|()| Args::none())
                    .map_err(|e| {
                        m::bus_error("publish", &e);
                        e.to_string()
                    });
            };
            let start = tokio::time::Instant::now();
            let reply = bus
                .request(subject, payload, timeout)
                .await
                .inspect(|_| m::bus_latency("forward", start))
                .inspect_err(|e| m::bus_error("forward", e))
                .map_err(|e| match e {
                    BusError::NoResponders => "no worker".to_owned(),
                    BusError::Timeout => "worker timeout".to_owned(),
                    other => other.to_string(),
                })?;
            let reply =
                pb::EventReply::decode(reply).map_err(|_| "malformed worker reply".to_owned())?;
            worker_reply(reply)
        })
    }

    /// Resolves once the subscriptions for this node's current memberships are in place at the
    /// NATS server (at once while the link is down; at most [`SETTLE_TIMEOUT`]).
    fn settled(&self) -> BoxFuture<()> {
        let version = lock(&self.inner.st).version;
        let mut applied = self.inner.applied.subscribe();
        let up = self.inner.bus.is_up();
        Box::pin(async move {
            if up {
                let _ =
                    tokio::time::timeout(SETTLE_TIMEOUT, applied.wait_for(|v| *v >= version)).await;
            }
        })
    }

    /// Asks the broker (the leader's reserve subscription) for a place in the room. The broker
    /// may not have seen the socket's connect yet: an unknown socket is asked about again.
    fn reserve(
        &self,
        socket: &Socket,
        room: &str,
        max_members: usize,
    ) -> BoxFuture<Result<Reservation, String>> {
        let req = pb::ReserveRequest {
            ns: socket.namespace().name().to_owned(),
            room: room.to_owned(),
            socket_id: socket.id().to_owned(),
            max_members: u32::try_from(max_members).unwrap_or(u32::MAX),
        };
        let payload = Bytes::from(req.encode_to_vec());
        let subject = self.inner.cfg.subjects.reserve();
        let bus = self.inner.bus.clone();
        Box::pin(async move {
            for attempt in 1..=RESERVE_ATTEMPTS {
                let start = tokio::time::Instant::now();
                let reply = bus
                    .request(subject.clone(), payload.clone(), RESERVE_TIMEOUT)
                    .await
                    .inspect(|_| m::bus_latency("reserve", start))
                    .inspect_err(|e| m::bus_error("reserve", e))
                    .map_err(|e| format!("broker: {e}"))?;
                let reply = pb::ReserveReply::decode(reply)
                    .map_err(|_| "malformed broker reply".to_owned())?;
                match pb::reserve_reply::Outcome::try_from(reply.outcome) {
                    Ok(pb::reserve_reply::Outcome::Joined) => return Ok(Reservation::Joined),
                    Ok(pb::reserve_reply::Outcome::AlreadyMember) => {
                        return Ok(Reservation::AlreadyMember);
                    }
                    Ok(pb::reserve_reply::Outcome::Full) => return Ok(Reservation::Full),
                    Ok(pb::reserve_reply::Outcome::UnknownSocket) => {
                        tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                    }
                    Err(_) => return Err("malformed broker reply".to_owned()),
                }
            }
            Err("the broker does not know this socket yet".to_owned())
        })
    }
}

impl Adapter for Cluster {
    fn connected(&self, socket: &Socket) {
        let info = self.socket_info(socket);
        let ns: Arc<str> = socket.namespace().name().into();
        let rooms = socket.rooms();
        self.membership(
            "connect",
            member_message::Body::Connect(info.clone()),
            |st| {
                let mut changed = bump(&mut st.namespaces, ns.clone());
                for room in rooms {
                    changed |= bump(&mut st.rooms, (ns.clone(), room));
                }
                changed
            },
        );
        self.life(&info, "", true);
    }

    fn disconnected(&self, socket: &Socket, rooms: &[Room], reason: DisconnectReason) {
        let ns: Arc<str> = socket.namespace().name().into();
        let body = member_message::Body::Disconnect(pb::Disconnect {
            id: socket.id().to_owned(),
            reason: reason.as_str().to_owned(),
        });
        self.membership("disconnect", body, |st| {
            let mut changed = unbump(&mut st.namespaces, &ns);
            for room in rooms {
                changed |= unbump(&mut st.rooms, &(ns.clone(), room.clone()));
            }
            changed
        });
        let mut info = self.socket_info(socket);
        info.rooms = rooms.iter().map(|r| r.to_string()).collect();
        self.life(&info, reason.as_str(), false);
    }

    fn joined(&self, socket: &Socket, room: &Room) {
        let ns: Arc<str> = socket.namespace().name().into();
        let body = member_message::Body::Join(pb::RoomChange {
            id: socket.id().to_owned(),
            room: room.to_string(),
        });
        self.membership("join", body, |st| bump(&mut st.rooms, (ns, room.clone())));
    }

    fn left(&self, socket: &Socket, room: &Room) {
        let ns: Arc<str> = socket.namespace().name().into();
        let body = member_message::Body::Leave(pb::RoomChange {
            id: socket.id().to_owned(),
            room: room.to_string(),
        });
        self.membership("leave", body, |st| {
            unbump(&mut st.rooms, &(ns, room.clone()))
        });
    }

    fn broadcast(&self, ns: &str, target: &Target, frames: &[Frame], volatile: bool) {
        let Some((Frame::Text(packet), rest)) = frames.split_first() else {
            return;
        };
        let attachments: Vec<Bytes> = rest
            .iter()
            .map(|f| match f {
                Frame::Text(b) | Frame::Binary(b) => b.clone(),
            })
            .collect();
        let subjects = &self.inner.cfg.subjects;
        let me = self.inner.cfg.node.as_str();
        let envelope = |t: &Target| pb::Envelope {
            body: Some(envelope::Body::Delivery(pb::Delivery {
                origin: me.to_owned(),
                ns: ns.to_owned(),
                target: Some(to_pb_target(t)),
                packet: packet.clone(),
                attachments: attachments.clone(),
                volatile,
                ack: None,
            })),
        };
        if target.rooms.is_empty() && !target.sockets.is_empty() {
            // Straight to each owner; local sockets were served already.
            let mut by_owner: HashMap<&str, Vec<Arc<str>>> = HashMap::new();
            for id in &target.sockets {
                match owner_of(id) {
                    Some(owner) if owner != me => {
                        by_owner.entry(owner).or_default().push(id.clone())
                    }
                    _ => {}
                }
            }
            for (owner, sockets) in by_owner {
                let t = Target {
                    sockets,
                    ..target.clone()
                };
                let payload = Bytes::from(envelope(&t).encode_to_vec());
                self.queue(subjects.node(owner), payload, "delivery");
            }
            return;
        }
        let subject = match target.rooms.as_slice() {
            [room] if target.sockets.is_empty() => subjects.room(ns, room),
            _ => subjects.namespace(ns),
        };
        self.queue(
            subject,
            Bytes::from(envelope(target).encode_to_vec()),
            "delivery",
        );
    }
}

impl Cluster {
    /// Publishes a connect or disconnect notice for workers.
    fn life(&self, info: &pb::SocketInfo, reason: &str, connect: bool) {
        let msg = pb::LifeEvent {
            node: self.inner.cfg.node.as_str().to_owned(),
            socket: Some(info.clone()),
            reason: reason.to_owned(),
        };
        let subjects = &self.inner.cfg.subjects;
        let subject = if connect {
            subjects.connect(&info.ns)
        } else {
            subjects.disconnect(&info.ns)
        };
        self.queue(subject, Bytes::from(msg.encode_to_vec()), "life");
    }
}

/// Counts one more; true if the key is new.
fn bump<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) -> bool {
    let n = map.entry(key).or_insert(0);
    *n += 1;
    *n == 1
}

/// Counts one less; true if the key is gone.
fn unbump<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) -> bool {
    match map.get_mut(key) {
        Some(n) if *n > 1 => {
            *n -= 1;
            false
        }
        Some(_) => {
            map.remove(key);
            true
        }
        None => false,
    }
}

fn claims_json(claims: Option<&Claims>) -> String {
    claims.map_or_else(
        || "{}".to_owned(),
        |c| Value::Object(c.0.clone()).to_string(),
    )
}

fn user_of(claims: Option<&Claims>) -> Option<String> {
    match claims?.subject()? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `k=v&k2=v2`, with `%`, `&`, `=`, `+`, `#` and controls percent-encoded.
fn encode_query(query: &[(String, String)]) -> String {
    fn push(out: &mut String, s: &str) {
        for c in s.chars() {
            if matches!(c, '%' | '&' | '=' | '+' | '#') || c.is_control() {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            } else {
                out.push(c);
            }
        }
    }
    let mut out = String::new();
    for (i, (k, v)) in query.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        push(&mut out, k);
        out.push('=');
        push(&mut out, v);
    }
    out
}

fn to_pb_target(t: &Target) -> pb::Target {
    let strings = |v: &[Arc<str>]| v.iter().map(|s| s.to_string()).collect();
    pb::Target {
        rooms: strings(&t.rooms),
        except_rooms: strings(&t.except_rooms),
        except_sockets: strings(&t.except_sockets),
        socket_ids: strings(&t.sockets),
    }
}

/// The frames a delivery from the bus writes to its local recipients: the packet as an
/// Engine.IO text frame, then the attachments. `None` unless the packet is what a gateway's
/// encoder writes for an emit: `4` and a Socket.IO EVENT or BINARY_EVENT of the delivery's own
/// namespace, without an ack id, that announces exactly the delivered attachments. So a bus
/// peer cannot make a gateway write any other packet (an Engine.IO close, a Socket.IO CONNECT
/// or DISCONNECT, an ack) or a record separator that would split a polling payload in two.
/// Costs one decode per delivery and gateway, not per recipient.
pub fn delivery_frames(ns: &str, packet: Bytes, attachments: Vec<Bytes>) -> Option<Vec<Frame>> {
    let text = std::str::from_utf8(&packet).ok()?.strip_prefix('4')?;
    let (header, announced) = match socketio::decode(text).ok()? {
        Decoded::Complete(p) => (p, 0),
        Decoded::NeedAttachments(p, n) => (p, n),
    };
    let emit = matches!(header.kind, PacketType::Event | PacketType::BinaryEvent)
        && header.nsp == ns
        && header.id.is_none()
        && announced == attachments.len()
        && !packet.contains(&RECORD_SEPARATOR);
    if !emit {
        return None;
    }
    let mut frames = Vec::with_capacity(1 + attachments.len());
    frames.push(Frame::Text(packet));
    frames.extend(attachments.into_iter().map(Frame::Binary));
    Some(frames)
}

/// The arguments of a delivery that collects acks: `args_json` (a JSON array; empty for none)
/// and the delivery's attachments. `None` for an event name the client libraries reserve, other
/// JSON, or a placeholder naming an attachment that is not there: the recipients could not
/// decode such an emit.
pub fn ack_request_args(ack: &pb::AckRequest, attachments: Vec<Bytes>) -> Option<Args> {
    if socketio::RESERVED_EVENTS.contains(&ack.event.as_str()) {
        return None;
    }
    let values = match serde_json::from_str::<Value>(&ack.args_json) {
        Ok(Value::Array(values)) => values,
        Err(_) if ack.args_json.is_empty() => Vec::new(),
        _ => return None,
    };
    acceptable(Args::new(values).with_attachments(attachments))
}

/// The ack a worker's reply to a forwarded event gives the client: the worker's error, or its
/// arguments (a JSON array, or one value; none when empty) with its attachments. Malformed JSON,
/// or a placeholder naming an attachment the reply does not carry, is "malformed worker reply":
/// the client could not decode that ack.
pub fn worker_reply(reply: pb::EventReply) -> Result<Args, String> {
    let malformed = || "malformed worker reply".to_owned();
    if !reply.error.is_empty() {
        return Err(reply.error);
    }
    let values = if reply.args_json.is_empty() {
        Value::Array(Vec::new())
    } else {
        serde_json::from_str(&reply.args_json).map_err(|_| malformed())?
    };
    acceptable(Args::from(values).with_attachments(reply.attachments)).ok_or_else(malformed)
}

/// `args` if every placeholder in them names one of their attachments.
fn acceptable(args: Args) -> Option<Args> {
    let count = args.attachments.len();
    let named = |v: &Value| socketio::check_placeholders(Some(v), count).is_ok();
    args.values.iter().all(named).then_some(args)
}

fn from_pb_target(t: pb::Target) -> Target {
    let arcs = |v: Vec<String>| v.into_iter().map(Arc::from).collect();
    Target {
        rooms: arcs(t.rooms),
        except_rooms: arcs(t.except_rooms),
        except_sockets: arcs(t.except_sockets),
        sockets: arcs(t.socket_ids),
    }
}

async fn publisher(bus: Bus, mut rx: mpsc::Receiver<Out>) {
    while let Some(out) = rx.recv().await {
        match bus.publish(out.subject, out.payload).await {
            Ok(()) => ::metrics::counter!(m::BUS_PUBLISHED, "kind" => out.kind).increment(1),
            Err(e) => {
                ::metrics::counter!(m::BUS_OUT_DROPPED, "kind" => out.kind).increment(1);
                m::bus_error("publish", &e);
                tracing::debug!(error = %e, "publish failed");
            }
        }
    }
}

async fn heartbeats(cluster: Cluster) {
    let mut tick = tokio::time::interval(cluster.inner.cfg.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        cluster.heartbeat();
    }
}

/// Sends a snapshot whenever the link comes back after a loss.
async fn link_watch(cluster: Cluster) {
    let mut link = cluster.inner.bus.link();
    let mut generation = link.borrow().generation;
    while link.changed().await.is_ok() {
        let now = *link.borrow();
        if now.up && now.generation != generation {
            generation = now.generation;
            tracing::info!("bus link back: sending a snapshot");
            cluster.send_snapshot(0, "reconnect");
        } else if !now.up {
            tracing::warn!("bus link down");
        }
    }
}

async fn receive(cluster: Cluster, mut sub: Subscription) {
    while let Some(msg) = sub.next().await {
        cluster.on_message(msg);
    }
}

/// Keeps one subscription per wanted room and namespace, following local membership.
async fn interests(cluster: Cluster) {
    let mut active: HashMap<Interest, JoinHandle<()>> = HashMap::new();
    let mut seen = u64::MAX;
    loop {
        let (version, wanted) = cluster.wanted();
        if version == seen {
            cluster.inner.interest_changed.notified().await;
            continue;
        }
        active.retain(|interest, task| {
            let keep = wanted.contains(interest) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        let mut failed = false;
        for interest in wanted {
            if active.contains_key(&interest) {
                continue;
            }
            match cluster
                .inner
                .bus
                .subscribe(cluster.subject_of(&interest))
                .await
            {
                Ok(sub) => {
                    active.insert(interest, tokio::spawn(receive(cluster.clone(), sub)));
                }
                Err(e) => {
                    m::bus_error("subscribe", &e);
                    tracing::warn!(error = %e, ?interest, "subscribe failed; retrying");
                    failed = true;
                }
            }
        }
        if failed {
            tokio::time::sleep(Duration::from_millis(500)).await;
            seen = u64::MAX;
        } else {
            // A round trip through the server: every SUB above is in effect once it answers.
            let start = tokio::time::Instant::now();
            match cluster.inner.bus.barrier(SETTLE_TIMEOUT).await {
                Ok(()) => {
                    m::bus_latency("barrier", start);
                    cluster.inner.applied.send_replace(version);
                }
                Err(e) => m::bus_error("barrier", &e),
            }
            seen = version;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::engine::{Conn, Engine, Handler as _, HandshakeInfo, Transport};
    use crate::engineio::Payload;
    use crate::sio::{Config, ConnData};
    use switchboard_bus::Hub;

    struct Node {
        io: Server,
        engine: Arc<Engine<Server>>,
        cluster: Cluster,
    }

    async fn node(hub: &Hub, id: &str, drop_seqs: Vec<u64>) -> Node {
        let io = Server::new(Config::default());
        io.of("/chat");
        let node = NodeId::parse(id).unwrap();
        let cfg = ClusterConfig {
            node: node.clone(),
            subjects: Subjects::new("t").unwrap(),
            heartbeat: Duration::from_secs(3600),
            presence: HashMap::new(),
            connections: Arc::new(|| 0),
            drop_seqs,
        };
        let cluster = Cluster::start(hub.client(), io.clone(), cfg).await.unwrap();
        let engine = Engine::new(Default::default(), io.clone(), node);
        Node {
            io,
            engine,
            cluster,
        }
    }

    impl Node {
        fn socket(&self) -> (Arc<Conn<ConnData>>, Socket) {
            let info = HandshakeInfo::new(
                "127.0.0.1:1".parse().unwrap(),
                &http::HeaderMap::new(),
                None,
                0,
            );
            let (conn, _) = self
                .engine
                .open(Transport::WebSocket, info, tokio::time::Instant::now())
                .unwrap();
            self.engine
                .handler
                .on_message(&conn, Payload::Text(Bytes::from_static(b"0/chat,")));
            let socket = self.io.all_sockets().into_iter().last().unwrap();
            drain(&conn);
            (conn, socket)
        }
    }

    fn drain(conn: &Arc<Conn<ConnData>>) -> Vec<Bytes> {
        conn.lock()
            .drain()
            .into_iter()
            .map(|f| match f {
                Frame::Text(b) | Frame::Binary(b) => b,
            })
            .collect()
    }

    /// Waits (bounded) until `f` holds, yielding to the cluster's tasks.
    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..2000 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("timed out waiting for {what}");
    }

    async fn next_member(sub: &mut Subscription) -> pb::MemberMessage {
        let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap()
            .unwrap();
        pb::MemberMessage::decode(msg.payload).unwrap()
    }

    #[tokio::test]
    async fn a_room_emit_crosses_nodes_as_the_same_bytes_once() {
        let hub = Hub::new();
        let a = node(&hub, "a", vec![]).await;
        let b = node(&hub, "b", vec![]).await;
        let (_ca, sa) = a.socket();
        let (cb, sb) = b.socket();
        let (cb2, _outsider) = b.socket();
        sa.join("room");
        sb.join("room");
        // The join's subscription is confirmed before a join ack would go out.
        b.cluster.settled().await;
        sa.to("room").emit("hi", Args::new(vec![json!({"n": 1})]));
        let mut got = Vec::new();
        until("the relay on b", || {
            got.extend(drain(&cb));
            !got.is_empty()
        })
        .await;
        assert_eq!(got, vec![Bytes::from_static(br#"42/chat,["hi",{"n":1}]"#)]);
        // Several rooms and an exception go by the namespace subject, filtered at b.
        a.io.get("/chat")
            .unwrap()
            .to("room")
            .to("other")
            .except_socket(sb.id())
            .emit("x", Args::none());
        a.io.get("/chat")
            .unwrap()
            .broadcast()
            .to_socket(sb.id())
            .emit("direct", Args::none());
        let mut got = Vec::new();
        until("the direct emit on b", || {
            got.extend(drain(&cb));
            !got.is_empty()
        })
        .await;
        assert_eq!(got, vec![Bytes::from_static(br#"42/chat,["direct"]"#)]);
        assert!(drain(&cb2).is_empty(), "b's other socket is in no room");
    }

    #[test]
    fn bus_arguments_must_fill_their_placeholders() {
        let one = || vec![Bytes::from_static(b"\x01")];
        let ph = r#"{"_placeholder":true,"num":0}"#;
        let reply = |args_json: &str, attachments: Vec<Bytes>| {
            worker_reply(pb::EventReply {
                args_json: args_json.to_owned(),
                attachments,
                error: String::new(),
            })
        };
        let malformed = Err("malformed worker reply".to_owned());
        assert_eq!(reply("", vec![]), Ok(Args::none()));
        assert_eq!(reply("[1]", vec![]), Ok(Args::new(vec![json!(1)])));
        assert_eq!(reply("7", vec![]), Ok(Args::new(vec![json!(7)])));
        assert!(reply(&format!("[{ph}]"), one()).is_ok());
        assert_eq!(reply(&format!("[{ph}]"), vec![]), malformed);
        assert_eq!(reply(&format!("[{{\"a\":[{ph}]}}]"), vec![]), malformed);
        assert_eq!(reply(ph, vec![]), malformed);
        assert_eq!(reply("[", vec![]), malformed);
        let refused = pb::EventReply {
            error: "no".into(),
            ..Default::default()
        };
        assert_eq!(worker_reply(refused), Err("no".to_owned()));

        let ack = |event: &str, args_json: &str| pb::AckRequest {
            event: event.to_owned(),
            args_json: args_json.to_owned(),
            ..Default::default()
        };
        assert_eq!(ack_request_args(&ack("ping", ""), vec![]), Some(Args::none()));
        assert!(ack_request_args(&ack("ping", &format!("[{ph}]")), one()).is_some());
        assert_eq!(ack_request_args(&ack("ping", &format!("[{ph}]")), vec![]), None);
        assert_eq!(ack_request_args(&ack("ping", "{}"), vec![]), None);
        assert_eq!(ack_request_args(&ack("connect", "[]"), vec![]), None);
        assert_eq!(ack_request_args(&ack("disconnect", "[]"), vec![]), None);
    }

    #[tokio::test]
    async fn a_delivery_writes_only_an_emit_of_its_own_namespace() {
        let hub = Hub::new();
        let b = node(&hub, "b", vec![]).await;
        let (conn, socket) = b.socket();
        let publisher = hub.client();
        let subject = Subjects::new("t").unwrap().node("b");
        let one = vec![Bytes::from_static(b"\x01")];
        let attached = r#"451-/chat,["a",{"_placeholder":true,"num":0}]"#;
        // Refused: not an emit, another namespace, an ack id, attachments that do not match
        // the header, a record separator, invalid UTF-8. The last one is the fence.
        let packets: Vec<(&[u8], Vec<Bytes>)> = vec![
            (b"1", vec![]),
            (b"6", vec![]),
            (b"40/chat,", vec![]),
            (b"41/chat,", vec![]),
            (br#"44/chat,{"message":"x"}"#, vec![]),
            (br#"42["other namespace"]"#, vec![]),
            (br#"42/chat,7["wants an ack"]"#, vec![]),
            (br#"43/chat,7[]"#, vec![]),
            (attached.as_bytes(), vec![]),
            (br#"42/chat,["a"]"#, one.clone()),
            (b"42/chat,[\"a\"]\x1e41/chat,", vec![]),
            (b"42/chat,[\"\xff\"]", vec![]),
            (b"", vec![]),
            (attached.as_bytes(), one.clone()),
            (br#"42/chat,["fence"]"#, vec![]),
        ];
        for (packet, attachments) in packets {
            let delivery = pb::Delivery {
                ns: "/chat".into(),
                target: Some(pb::Target {
                    socket_ids: vec![socket.id().to_owned()],
                    ..Default::default()
                }),
                packet: Bytes::copy_from_slice(packet),
                attachments,
                ..Default::default()
            };
            let envelope = pb::Envelope {
                body: Some(envelope::Body::Delivery(delivery)),
            };
            let payload = Bytes::from(envelope.encode_to_vec());
            publisher.publish(subject.clone(), payload).await.unwrap();
        }
        let mut got = Vec::new();
        until("the fence", || {
            got.extend(drain(&conn));
            got.last().map(Bytes::as_ref) == Some(br#"42/chat,["fence"]"#.as_slice())
        })
        .await;
        let want: Vec<Bytes> = vec![
            Bytes::from(attached),
            Bytes::from_static(b"\x01"),
            Bytes::from_static(br#"42/chat,["fence"]"#),
        ];
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn membership_is_sequenced_and_a_dropped_event_leaves_a_gap_a_snapshot_fills() {
        let hub = Hub::new();
        let broker = hub.client();
        let subjects = Subjects::new("t").unwrap();
        let mut members = broker.subscribe(subjects.all_members()).await.unwrap();
        let a = node(&hub, "a", vec![2]).await;
        let start = next_member(&mut members).await;
        assert!(
            matches!(start.body, Some(member_message::Body::Snapshot(ref p)) if p.last && p.sockets.is_empty())
        );
        let (_c, s) = a.socket();
        s.join("r1");
        s.join("r2");
        let connect = next_member(&mut members).await;
        assert_eq!(connect.seq, 1);
        assert!(matches!(
            connect.body,
            Some(member_message::Body::Connect(_))
        ));
        let join = next_member(&mut members).await;
        assert_eq!(
            join.seq, 3,
            "seq 2 (the join of r1) was dropped by the fault injection"
        );
        broker
            .publish(
                subjects.snapshot("a"),
                Bytes::from(
                    pb::SnapshotRequest {
                        broker: "x".into(),
                        request_id: 7,
                    }
                    .encode_to_vec(),
                ),
            )
            .await
            .unwrap();
        let snap = next_member(&mut members).await;
        let Some(member_message::Body::Snapshot(part)) = snap.body else {
            panic!("a snapshot expected: {snap:?}");
        };
        assert_eq!((snap.seq, part.request_id, part.last), (3, 7, true));
        assert_eq!(part.sockets.len(), 1);
        let mut rooms = part.sockets[0].rooms.clone();
        rooms.sort();
        assert_eq!(rooms, vec!["r1".to_owned(), "r2".to_owned()]);
    }

    #[test]
    fn the_headers_carried_to_the_broker_are_kept_by_the_session() {
        for name in HEADERS {
            assert!(
                crate::engine::KEPT_HEADERS.contains(&name),
                "{name} is not kept"
            );
        }
    }

    #[test]
    fn query_encoding_is_unambiguous() {
        let q = vec![
            ("a".to_owned(), "1&b=2".to_owned()),
            ("EIO".to_owned(), "4".to_owned()),
            ("x%".to_owned(), "é".to_owned()),
        ];
        assert_eq!(encode_query(&q), "a=1%26b%3D2&EIO=4&x%25=é");
        assert_eq!(encode_query(&[]), "");
    }

    #[test]
    fn refcounts() {
        let mut m: HashMap<&str, usize> = HashMap::new();
        assert!(bump(&mut m, "r"));
        assert!(!bump(&mut m, "r"));
        assert!(!unbump(&mut m, &"r"));
        assert!(unbump(&mut m, &"r"));
        assert!(!unbump(&mut m, &"r"));
        assert!(m.is_empty());
    }

    #[test]
    fn targets_round_trip() {
        let t = Target {
            rooms: vec!["a".into(), "b c".into()],
            except_rooms: vec!["x".into()],
            except_sockets: vec!["n.1".into()],
            sockets: vec!["m.2".into()],
        };
        assert_eq!(from_pb_target(to_pb_target(&t)), t);
    }
}
