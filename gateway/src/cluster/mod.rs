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
//! Membership batches: when the publisher takes a membership message and more are queued right
//! behind it, it publishes them together as one `MemberBatch` (each entry the bytes it would
//! have published alone), up to [`MAX_BATCH_MESSAGES`] and the bus's `max_payload`; the first
//! message that is not membership, or does not fit, ends the batch and goes next, so queue order
//! is kept, except that workers' life events queued among the batch's messages follow the batch
//! ([`gather`] says why). Nothing waits for a batch to fill: under light load every message goes
//! alone, as itself. `ClusterConfig::member_batches` turns it off (brokers older than batches
//! count one as malformed).
//!
//! [`MemberMessage`]: pb::MemberMessage
//! [`Envelope`]: pb::Envelope
//!
//! In: this node's delivery and command subjects, a room's subject while a local socket is in
//! the room, a namespace's delivery and command subjects while a local socket is connected to
//! it, the resync and snapshot-request subjects, and presence announcements for the namespaces
//! that show them (alone or in batches, each entry shown as if it had come alone; one of
//! another namespace than its subject's, or a batch inside a batch, is refused and counted
//! malformed). Received packets are written to the local recipients as the bytes that came
//! in. A delivery subject carries only deliveries and a command subject only commands: NATS
//! permissions let workers publish deliveries but not commands, so a command that arrives on a
//! delivery subject is refused and counted (`switchboard_gateway_bus_refused_total`).
//!
//! A name too long for a subject (`switchboard_proto::subject::MAX_NAME_BYTES`) never reaches
//! the bus: its forward is refused, its broadcast and subscription are skipped, each counted as
//! `limited{limit="name_bytes"}`.
//!
//! NATS down: local delivery goes on; the publisher's messages are dropped (counted) once the
//! client's buffer is full; when the link comes back, a `rejoined` heartbeat tells the brokers,
//! which ask for a snapshot in their paced turn (a whole snapshot unasked from every gateway at
//! once after a NATS restart was a storm).
//!
//! Sizes: nothing is published longer than the bus's `max_payload` ([`Bus::max_payload`]). A
//! delivery longer than that (a relay with big attachments) is split into [`pb::Fragment`]s on
//! the subject the whole would have taken and reassembled by the receiving gateways, so every
//! recipient gets it or, if a part is lost, none on that node; the local members got it already.
//! A forwarded event that does not fit is refused to the client (`message too large`). Snapshot
//! parts are filled by encoded bytes, and one socket's record is bounded (handshake values cut,
//! oversized claims left out, a long room list spread over several parts).
//!
//! Ghost joins: a join that completes after its socket disconnected (it waited for a broker
//! reservation) is undone at once, so neither the room nor its subscription keeps the socket.
//! A reservation that fails on the gateway's side (timeout) is released with a sequenced leave,
//! so the broker never keeps counting a member this node does not have.

mod recovery;
mod sync;

pub use recovery::RecoveryConfig;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Value, json};
use switchboard_bus::{Bus, BusError, LogConfig, Subscription};
use switchboard_codec::engineio::{Compress, Frame, RECORD_SEPARATOR};
use switchboard_codec::socketio::{self, Decoded, PacketType};
use switchboard_proto::Message as _;
use switchboard_proto::bus::{self as pb, envelope, member_message, presence_event};
use switchboard_proto::subject::{SubjectError, Subjects};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Claims;
use crate::engine::CloseReason;
use crate::id::{NodeId, owner_of};
use crate::metrics::{self as m, Limit};
use crate::policy::{Bridge, Reservation};
use crate::sio::{Adapter, Args, DisconnectReason, Restored, Room, Server, Socket, Target};

/// Messages the publisher may hold before new ones are dropped.
const OUT_QUEUE: usize = 65_536;
/// The kind (metric label) of workers' life events, which a membership batch may pass.
const LIFE: &str = "life";
/// The most membership messages in one batch. Besides `max_payload`, this bounds what a broker
/// applies for one bus message before it looks at anything else; at 64 the per-message costs a
/// batch saves are already down to a small share of each event's.
pub const MAX_BATCH_MESSAGES: usize = 64;
/// Longest wait for the subscriptions of a join before its ack goes anyway.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a room capacity check may take.
const RESERVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a capacity check is asked while the broker does not know the socket yet.
const RESERVE_ATTEMPTS: u64 = 4;
/// Bytes of a member message or envelope besides its sockets or fragment data (node id,
/// epoch, sequence and field headers, with room to spare).
const MESSAGE_OVERHEAD: usize = 1024;
/// The longest header value a socket's record carries (longer ones are cut at a char boundary).
const HEADER_VALUE_BYTES: usize = 1024;
/// The longest query a socket's record carries.
const QUERY_BYTES: usize = 2048;
/// The longest claims JSON a socket's record carries; larger claims are left out (`{}`).
const CLAIMS_BYTES: usize = 8192;
/// The longest delivery that is split into fragments (longer: not published, counted).
const MAX_SPLIT_BYTES: usize = 16 * 1024 * 1024;
/// Bytes of fragments held for reassembly at once, over every origin.
const MAX_REASSEMBLY_BYTES: usize = 32 * 1024 * 1024;
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
    /// How long a node not heard from is still counted (its NATS server still asked by the
    /// join barrier).
    pub lease: Duration,
    /// Presence announcements by namespace name (static namespaces only).
    pub presence: HashMap<String, PresenceConfig>,
    /// Counts the node's Engine.IO connections, for the heartbeat.
    pub connections: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// Connection state recovery by namespace name (static namespaces only).
    pub recovery: HashMap<String, RecoveryConfig>,
    /// The log that recovery-enabled namespaces' emits go through (created or updated to these
    /// settings at start); unused when no namespace has recovery.
    pub log: Option<LogConfig>,
    /// Whether membership messages queued together are published as one batch
    /// (`[cluster] member_batches`; off while brokers older than batches run).
    pub member_batches: bool,
    /// Test fault injection: membership sequence numbers whose message is not published (only
    /// in test builds: the `fault-injection` feature).
    #[cfg(any(test, feature = "fault-injection"))]
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
    /// The namespace's command subject (subscribed with [`Interest::Namespace`]).
    Commands(Arc<str>),
}

/// Signed, so that a join and a disconnect reported in either order still cancel out.
#[derive(Default)]
struct St {
    seq: u64,
    rooms: HashMap<(Arc<str>, Room), isize>,
    namespaces: HashMap<Arc<str>, isize>,
    /// Bumped on every change of the interest set.
    version: u64,
}

struct Out {
    subject: String,
    payload: Bytes,
    kind: &'static str,
    /// Published into the recovery log (a JetStream publish, acknowledged), not on core NATS.
    log: bool,
    /// Told once the message was handed to the bus (how [`Cluster::leave`] knows).
    published: Option<oneshot::Sender<()>>,
    /// A membership message (on this node's member subject): its sequence number. Only these
    /// go into batches.
    member: Option<u64>,
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
    /// The NATS servers the other gateways are on, for the join barrier.
    servers: sync::Servers,
    /// The recovery log, when a namespace has recovery and the bus offers a log.
    log: Option<recovery::LogState>,
    /// Split deliveries: the id of the next one sent, and the ones being received.
    next_split: std::sync::atomic::AtomicU64,
    fragments: Mutex<Reassembly>,
    /// Paced snapshots being sent to brokers, a window at a time (at most
    /// [`MAX_HELD_SNAPSHOTS`], one per broker).
    held: Mutex<Vec<HeldSnapshot>>,
    /// Stops every task of the cluster side.
    stop: CancellationToken,
    /// Where those tasks run (the process's tracker).
    tasks: TaskTracker,
}

/// Paced snapshots kept at once (one per broker asking; the oldest goes first).
const MAX_HELD_SNAPSHOTS: usize = 4;
/// A paced snapshot nobody asked the next window of for this long is dropped (its broker died
/// or gave it up); a later window request cuts a new one.
const HELD_SNAPSHOT_TTL: Duration = Duration::from_secs(60);
/// Bytes a snapshot part's message takes besides its sockets, counted against a window: the
/// node id, epoch, sequence, part fields and the broker id (at most 64 bytes), with room to
/// spare, so that the broker, which counts whole payloads, never sees more than it asked for.
const PART_ENVELOPE_BYTES: usize = 192;

/// A snapshot cut for a broker's paced request, sent a window at a time.
struct HeldSnapshot {
    broker: String,
    request_id: u64,
    /// The sequence number it was cut at.
    seq: u64,
    /// The parts not yet sent (sent ones are emptied).
    parts: Vec<Vec<pb::SocketInfo>>,
    /// Each part's bytes as counted against a window.
    sizes: Vec<usize>,
    /// Cut or last asked for.
    at: std::time::Instant,
}

/// Deliveries arriving in fragments, by (origin, id). Bounded by [`MAX_REASSEMBLY_BYTES`].
#[derive(Default)]
struct Reassembly {
    partial: HashMap<(String, u64), Partial>,
    bytes: usize,
}

struct Partial {
    next: u32,
    count: u32,
    data: Vec<u8>,
}

impl Reassembly {
    /// Adds one fragment; the whole envelope once its last fragment is in. A fragment out of
    /// order (one was lost) drops what was gathered of its message.
    fn add(&mut self, f: pb::Fragment) -> Option<Vec<u8>> {
        let key = (f.origin, f.id);
        if f.index == 0 {
            let count = f.count;
            let size = u64::from(count) * (f.data.len() as u64);
            if count == 0 || size > MAX_SPLIT_BYTES as u64 {
                return None;
            }
            if let Some(old) = self.partial.remove(&key) {
                self.bytes -= old.data.len();
            }
            // Messages whose last fragment was lost stay behind: under pressure, forget them all
            // rather than refuse new ones.
            if self.bytes as u64 + size > MAX_REASSEMBLY_BYTES as u64 {
                ::metrics::counter!(m::BUS_MALFORMED).increment(self.partial.len() as u64);
                self.partial.clear();
                self.bytes = 0;
            }
            self.partial.insert(
                key.clone(),
                Partial {
                    next: 0,
                    count,
                    data: Vec::new(),
                },
            );
        }
        let p = self.partial.get_mut(&key)?;
        if f.index != p.next
            || f.count != p.count
            || p.data.len() + f.data.len() > MAX_SPLIT_BYTES
            || self.bytes + f.data.len() > MAX_REASSEMBLY_BYTES
        {
            let dropped = self.partial.remove(&key).map_or(0, |p| p.data.len());
            self.bytes -= dropped;
            ::metrics::counter!(m::BUS_MALFORMED).increment(1);
            return None;
        }
        p.data.extend_from_slice(&f.data);
        p.next += 1;
        self.bytes += f.data.len();
        if p.next < p.count {
            return None;
        }
        let done = self.partial.remove(&key)?;
        self.bytes -= done.data.len();
        Some(done.data)
    }
}

/// The cluster adapter of one gateway (cheap to clone).
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Cluster {
    /// Connects `io` to the cluster over `bus`: installs the adapter, subscribes this node's
    /// subjects and starts the publisher, the heartbeat and the subscription manager, on `tasks`,
    /// until `stop` is cancelled (after [`Cluster::leave`]). Fails if the server already has an
    /// adapter or a fixed subscription cannot be made.
    pub async fn start(
        bus: Bus,
        io: Server,
        cfg: ClusterConfig,
        stop: CancellationToken,
        tasks: TaskTracker,
    ) -> Result<Self, BusError> {
        let (tx, rx) = mpsc::channel(OUT_QUEUE);
        let log = match &cfg.log {
            Some(lc) => recovery::LogState::open(&bus, lc, &cfg.recovery).await,
            None => None,
        };
        let servers = sync::Servers::new(cfg.lease);
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
                servers,
                log,
                next_split: std::sync::atomic::AtomicU64::new(1),
                fragments: Mutex::new(Reassembly::default()),
                held: Mutex::new(Vec::new()),
                stop,
                tasks,
            }),
        };
        let subjects = &cluster.inner.cfg.subjects;
        let node = cluster.inner.cfg.node.as_str();
        let bus = &cluster.inner.bus;
        let subject = |s: Result<String, SubjectError>| {
            s.map_err(|e| BusError::Subscribe(format!("node {node}: {e}")))
        };
        // (subscription, whether it carries commands)
        let mut fixed = vec![
            (bus.subscribe(subject(subjects.node(node))?).await?, false),
            (
                bus.subscribe(subject(subjects.command_node(node))?).await?,
                true,
            ),
            (bus.subscribe(subjects.resync()).await?, false),
            (
                bus.subscribe(subject(subjects.snapshot(node))?).await?,
                false,
            ),
        ];
        if cluster.inner.cfg.presence.values().any(|p| p.to_clients) {
            fixed.push((bus.subscribe(subjects.all_presence()).await?, false));
        }
        let heartbeats_in = bus.subscribe(subjects.all_heartbeats()).await?;
        if !io.set_adapter(Arc::new(cluster.clone())) {
            return Err(BusError::Subscribe(
                "the server already has an adapter".into(),
            ));
        }
        let origin = format!("{}.{}", cluster.inner.cfg.node, cluster.inner.epoch);
        let batches = cluster.inner.cfg.member_batches.then(|| Batches {
            node: cluster.inner.cfg.node.as_str().to_owned(),
            epoch: cluster.inner.epoch,
        });
        cluster.spawn(publisher(
            cluster.inner.bus.clone(),
            rx,
            origin,
            batches,
            cluster.inner.tasks.clone(),
        ));
        if let Some(log) = &cluster.inner.log {
            for ns in log.all() {
                cluster.spawn(cluster.clone().follow(ns.clone()));
            }
        }
        cluster.spawn(heartbeats(cluster.clone()));
        cluster.spawn(follow_servers(cluster.clone(), heartbeats_in));
        cluster.spawn(sync::respond(
            cluster.inner.bus.clone(),
            cluster.inner.cfg.subjects.clone(),
            cluster.inner.cfg.heartbeat,
        ));
        cluster.spawn(interests(cluster.clone()));
        cluster.spawn(link_watch(cluster.clone()));
        for (sub, commands) in fixed {
            cluster.spawn(receive(cluster.clone(), sub, commands));
        }
        cluster.send_snapshot(0, "start");
        Ok(cluster)
    }

    /// Sets the address reported in heartbeats (`host:port`, once the listener is bound) and
    /// sends a heartbeat at once, so that the other gateways can forward to this one right away.
    pub fn set_address(&self, address: String) {
        *self.inner.address.lock() = address;
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
    /// until the publisher handed it to the bus and the bus flushed it, at most `wait`.
    pub async fn leave(&self, wait: Duration) {
        let body = member_message::Body::Leaving(pb::NodeLeaving {});
        let (done, published) = oneshot::channel();
        self.queue_member(0, body, "leaving", Some(done));
        let _ = tokio::time::timeout(wait, async {
            if published.await.is_ok() {
                let _ = self.inner.bus.flush().await;
            }
        })
        .await;
    }

    /// Runs `task` on the cluster's tracker until the cluster stops.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
        self.spawn_until(self.inner.stop.clone(), task)
    }

    /// Runs `task` on the cluster's tracker until `stop` (a child of the cluster's token).
    fn spawn_until(
        &self,
        stop: CancellationToken,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        self.inner.tasks.spawn(async move {
            stop.run_until_cancelled_owned(task).await;
        })
    }

    fn member_subject(&self) -> String {
        self.inner
            .cfg
            .subjects
            .member(self.inner.cfg.node.as_str())
            .expect("a node id (at most 32 bytes) is a bounded name")
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
        self.enqueue(Out {
            subject,
            payload,
            kind,
            log: false,
            published: None,
            member: None,
        });
    }

    /// Queues this node's membership message at `seq` (which a batch may carry), telling
    /// `published` once it was handed to the bus.
    fn queue_member(
        &self,
        seq: u64,
        body: member_message::Body,
        kind: &'static str,
        published: Option<oneshot::Sender<()>>,
    ) {
        self.enqueue(Out {
            subject: self.member_subject(),
            payload: self.member_message(seq, body),
            kind,
            log: false,
            published,
            member: Some(seq),
        });
    }

    /// Hands a message to the publisher (which keeps queue order), or counts it dropped.
    fn enqueue(&self, out: Out) {
        let kind = out.kind;
        if self.inner.out.try_send(out).is_err() {
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
        let mut st = self.inner.st.lock();
        st.seq += 1;
        let seq = st.seq;
        if f(&mut st) {
            st.version += 1;
            self.inner.interest_changed.notify_one();
        }
        #[cfg(any(test, feature = "fault-injection"))]
        if self.inner.cfg.drop_seqs.contains(&seq) {
            tracing::warn!(seq, "fault injection: membership message not published");
            return;
        }
        self.queue_member(seq, body, kind, None);
    }

    /// Hands a claimed session back to the broker, unused: its `connect` on this node (which
    /// the claim waits for) and at once a recoverable `disconnect`, as a transport close would.
    /// Interest counts do not change: the socket never was here.
    fn hand_back(&self, info: pb::SocketInfo) {
        let id = info.id.clone();
        self.membership("connect", member_message::Body::Connect(info), |_| false);
        let body = member_message::Body::Disconnect(pb::Disconnect {
            id,
            reason: DisconnectReason::Connection(CloseReason::TransportClose)
                .as_str()
                .to_owned(),
            recoverable: true,
        });
        self.membership("disconnect", body, |_| false);
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
                            value: cut(value, HEADER_VALUE_BYTES).to_owned(),
                        })
                    })
                    .collect(),
                query: cut(&encode_query(&hs.query_pairs()), QUERY_BYTES).to_owned(),
                claims_json: Some(claims_json(claims.as_deref()))
                    .filter(|c| c.len() <= CLAIMS_BYTES)
                    .unwrap_or_else(|| "{}".to_owned()),
                connected_at_ms: hs.issued_ms,
            }),
            data_json: socket
                .get::<SocketData>()
                .map_or_else(|| "null".to_owned(), |d| d.0.clone()),
            presence: Some(pb::PresenceFlags {
                rooms: presence.is_some_and(|p| p.rooms),
                users: presence.is_some_and(|p| p.users),
            }),
            recovery: socket.pid().and_then(|pid| {
                let rc = self.inner.cfg.recovery.get(ns.name())?;
                Some(pb::Recovery {
                    pid_hash: recovery::pid_hash(pid),
                    window_ms: u64::try_from(rc.window.as_millis()).unwrap_or(u64::MAX),
                })
            }),
            recovered: socket.recovered(),
        }
    }

    /// This node's sockets as snapshot parts (call under the `st` lock, so the state matches the
    /// sequence number).
    fn cut_snapshot(&self) -> (usize, Vec<Vec<pb::SocketInfo>>) {
        let sockets: Vec<pb::SocketInfo> = self
            .inner
            .io
            .all_sockets()
            .iter()
            .map(|s| self.socket_info(s))
            .collect();
        let count = sockets.len();
        let budget = self
            .inner
            .bus
            .max_payload()
            .saturating_sub(MESSAGE_OVERHEAD);
        (count, snapshot_parts(sockets, budget))
    }

    /// Sends this node's full state as snapshot parts at once, as of the current sequence
    /// number (unpaced: at start, for an older broker).
    fn send_snapshot(&self, request_id: u64, why: &'static str) {
        let st = self.inner.st.lock();
        let (count, parts) = self.cut_snapshot();
        let last = parts.len() - 1;
        for (i, sockets) in parts.into_iter().enumerate() {
            let body = member_message::Body::Snapshot(pb::SnapshotPart {
                part: u32::try_from(i).unwrap_or(u32::MAX),
                last: i == last,
                sockets,
                request_id,
                ..Default::default()
            });
            self.queue_member(st.seq, body, "snapshot", None);
        }
        drop(st);
        ::metrics::counter!(m::SNAPSHOTS, "why" => why).increment(1);
        tracing::debug!(why, sockets = count, "snapshot sent");
    }

    /// Answers a paced snapshot request (bus.proto, `SnapshotRequest`): the next window of the
    /// snapshot kept for its broker, or, when that is not kept (or `from_part` is 0), the first
    /// window of a new one cut now.
    fn send_window(&self, req: &pb::SnapshotRequest) {
        let window = usize::try_from(req.window_bytes).unwrap_or(usize::MAX);
        let from = usize::try_from(req.from_part).unwrap_or(usize::MAX);
        let now = std::time::Instant::now();
        let mut held = self.inner.held.lock();
        held.retain(|h| now.saturating_duration_since(h.at) < HELD_SNAPSHOT_TTL);
        let kept = held.iter().position(|h| {
            h.broker == req.broker
                && h.request_id == req.request_id
                && from > 0
                && from < h.parts.len()
        });
        // A new cut holds `st` while its first window is queued, so the events before it go
        // out before it and the ones after it after.
        let (index, from, _st) = match kept {
            Some(i) => (i, from, None),
            None => {
                held.retain(|h| h.broker != req.broker);
                if held.len() >= MAX_HELD_SNAPSHOTS {
                    held.remove(0);
                }
                let st = self.inner.st.lock();
                let (count, parts) = self.cut_snapshot();
                let sizes = parts
                    .iter()
                    .map(|p| {
                        p.iter()
                            .map(|s| s.encoded_len() + ELEMENT_OVERHEAD)
                            .sum::<usize>()
                            + PART_ENVELOPE_BYTES
                    })
                    .collect();
                held.push(HeldSnapshot {
                    broker: req.broker.clone(),
                    request_id: req.request_id,
                    seq: st.seq,
                    parts,
                    sizes,
                    at: now,
                });
                ::metrics::counter!(m::SNAPSHOTS, "why" => "paced").increment(1);
                tracing::debug!(broker = %req.broker, sockets = count, "paced snapshot cut");
                (held.len() - 1, 0, Some(st))
            }
        };
        let h = &mut held[index];
        h.at = now;
        let total = h.parts.len();
        let mut end = from;
        let mut used = 0;
        while end < total && (end == from || used + h.sizes[end] <= window) {
            used += h.sizes[end];
            end += 1;
        }
        for i in from..end {
            let body = member_message::Body::Snapshot(pb::SnapshotPart {
                part: u32::try_from(i).unwrap_or(u32::MAX),
                last: i + 1 == total,
                sockets: std::mem::take(&mut h.parts[i]),
                request_id: req.request_id,
                paused: i + 1 == end && end < total,
                broker: req.broker.clone(),
            });
            self.queue_member(h.seq, body, "snapshot", None);
        }
        if end == total {
            held.remove(index);
        }
    }

    fn heartbeat(&self) {
        self.heartbeat_as(false);
    }

    /// A heartbeat; `rejoined` when the link just came back (bus.proto, `Heartbeat`).
    fn heartbeat_as(&self, rejoined: bool) {
        let seq = self.inner.st.lock().seq;
        let msg = pb::Heartbeat {
            node: self.inner.cfg.node.as_str().to_owned(),
            epoch: self.inner.epoch,
            seq,
            connections: (self.inner.cfg.connections)(),
            sockets: self.inner.io.all_sockets().len() as u64,
            address: self.inner.address.lock().clone(),
            nats_server: self.inner.bus.server_id().unwrap_or_default(),
            rejoined,
        };
        let subject = self
            .inner
            .cfg
            .subjects
            .heartbeat(self.inner.cfg.node.as_str())
            .expect("a node id (at most 32 bytes) is a bounded name");
        self.queue(subject, Bytes::from(msg.encode_to_vec()), "heartbeat");
    }

    fn wanted(&self) -> (u64, HashSet<Interest>) {
        let st = self.inner.st.lock();
        let mut set: HashSet<Interest> = st
            .rooms
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|((ns, room), _)| Interest::Room(ns.clone(), room.clone()))
            .collect();
        for (ns, _) in st.namespaces.iter().filter(|(_, n)| **n > 0) {
            set.insert(Interest::Namespace(ns.clone()));
            set.insert(Interest::Commands(ns.clone()));
        }
        (st.version, set)
    }

    fn subject_of(&self, interest: &Interest) -> Result<String, SubjectError> {
        let subjects = &self.inner.cfg.subjects;
        match interest {
            Interest::Room(ns, room) => subjects.room(ns, room),
            Interest::Namespace(ns) => subjects.namespace(ns),
            Interest::Commands(ns) => subjects.command_namespace(ns),
        }
    }

    /// Handles one message from any subscription; `commands` tells whether it came on a command
    /// subject (else a delivery or control subject).
    fn on_message(&self, msg: switchboard_bus::Message, commands: bool) {
        let subjects = &self.inner.cfg.subjects;
        let node = self.inner.cfg.node.as_str();
        if msg.subject == subjects.resync() {
            // A paced broker only wants to hear from this node now (it asks for the snapshot
            // when its turn comes); an older one wants the snapshot at once.
            match pb::ResyncRequest::decode(msg.payload) {
                Ok(r) if r.announce => self.heartbeat(),
                Ok(_) => self.send_snapshot(0, "resync"),
                Err(_) => ::metrics::counter!(m::BUS_MALFORMED).increment(1),
            }
            return;
        }
        if subjects.snapshot(node).is_ok_and(|s| s == msg.subject) {
            // Undecodable bytes are not a request: the whole snapshot at once is what the
            // paced rebuild exists to avoid, so they are counted and dropped (a broker whose
            // request goes unanswered asks again).
            match pb::SnapshotRequest::decode(msg.payload) {
                Ok(req) if req.window_bytes > 0 => self.send_window(&req),
                Ok(req) => self.send_snapshot(req.request_id, "request"),
                Err(_) => ::metrics::counter!(m::BUS_MALFORMED).increment(1),
            }
            return;
        }
        if let Ok(switchboard_proto::subject::Parsed::Presence { ns }) =
            subjects.parse(&msg.subject)
        {
            let Ok(message) = pb::PresenceEvent::decode(msg.payload) else {
                ::metrics::counter!(m::BUS_MALFORMED).increment(1);
                return;
            };
            // One announcement, or a batch of them (in order): each as if it had come alone.
            for ev in switchboard_proto::presence::announcements(&ns, message) {
                match ev {
                    Ok(ev) => self.on_presence(&ev),
                    Err(why) => {
                        ::metrics::counter!(m::BUS_MALFORMED).increment(1);
                        tracing::debug!(subject = %msg.subject, %why, "presence announcement refused");
                    }
                }
            }
            return;
        }
        match pb::Envelope::decode(msg.payload) {
            Ok(pb::Envelope {
                body: Some(envelope::Body::Fragment(f)),
            }) if !commands => {
                let whole = self.inner.fragments.lock().add(f);
                match whole.map(|b| pb::Envelope::decode(b.as_slice())) {
                    None => {}
                    Some(Ok(pb::Envelope {
                        body: Some(envelope::Body::Delivery(d)),
                    })) => self.on_delivery(d),
                    Some(_) => ::metrics::counter!(m::BUS_MALFORMED).increment(1),
                }
            }
            Ok(pb::Envelope {
                body: Some(envelope::Body::Delivery(d)),
            }) if !commands => self.on_delivery(d),
            Ok(pb::Envelope {
                body: Some(envelope::Body::Command(c)),
            }) if commands => self.on_command(c),
            Ok(pb::Envelope { body: Some(body) }) => {
                let why = match body {
                    envelope::Body::Command(_) => "command_on_delivery_subject",
                    // A fragment is part of a delivery.
                    envelope::Body::Delivery(_) | envelope::Body::Fragment(_) => {
                        "delivery_on_command_subject"
                    }
                };
                ::metrics::counter!(m::BUS_REFUSED, "why" => why).increment(1);
                tracing::debug!(subject = %msg.subject, why, "envelope refused");
            }
            Ok(pb::Envelope { body: None }) | Err(_) => {
                ::metrics::counter!(m::BUS_MALFORMED).increment(1);
                tracing::debug!(subject = %msg.subject, "malformed envelope ignored");
            }
        }
    }

    fn on_delivery(&self, d: pb::Delivery) {
        ::metrics::counter!(m::BUS_RECEIVED).increment(1);
        let target = from_pb_target(d.target.unwrap_or_default());
        let compress = Compress::from_allowed(!d.uncompressed);
        if let Some(ack) = d.ack {
            self.emit_with_acks(&d.ns, &target, ack, d.attachments, compress);
            return;
        }
        let Some(frames) = delivery_frames(&d.ns, d.packet, d.attachments, compress) else {
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
        compress: Compress,
    ) {
        let Some(args) = ack_request_args(&ack, attachments) else {
            ::metrics::counter!(m::BUS_MALFORMED).increment(1);
            return;
        };
        let timeout = Duration::from_millis(ack.timeout_ms.clamp(1, 600_000));
        for socket in self.inner.io.select(ns, target) {
            let args = args.clone();
            let bus = self.inner.bus.clone();
            let tasks = self.inner.tasks.clone();
            let reply_to = ack.reply.clone();
            let socket_id = socket.id().to_owned();
            socket.emit_with_ack_cb(&ack.event, args, timeout, compress, move |result| {
                let reply = match result {
                    Ok(args) => pb::AckReply {
                        socket_id,
                        args_json: socketio::json_text(&Value::Array(args.values)),
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
                tasks.spawn(async move {
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
            // The client came back on another gateway before this one noticed it had gone: let go
            // of the socket as if its transport had closed (recoverable), which tells the broker.
            Some(pb::command::Action::Takeover(_)) => {
                for s in &sockets {
                    s.inner.conn.close(CloseReason::TransportClose);
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
    ) -> BoxFuture<'static, Result<Args, String>> {
        let claims = socket.get::<Claims>();
        let msg = pb::ClientEvent {
            node: self.inner.cfg.node.as_str().to_owned(),
            socket_id: socket.id().to_owned(),
            ns: socket.namespace().name().to_owned(),
            event: event.to_owned(),
            args_json: socketio::json_text(&Value::Array(args.values)),
            attachments: args.attachments,
            claims_json: claims_json(claims.as_deref()),
            user: user_of(claims.as_deref()),
            wants_ack: timeout.is_some(),
            rooms: socket.rooms().iter().map(|r| r.to_string()).collect(),
        };
        let subject = match self.inner.cfg.subjects.event(&msg.ns, event) {
            Ok(subject) => subject,
            Err(e) => {
                m::limited(Limit::NameBytes);
                return Box::pin(std::future::ready(Err(e.to_string())));
            }
        };
        let payload = Bytes::from(msg.encode_to_vec());
        let bus = self.inner.bus.clone();
        if payload.len() > bus.max_payload() {
            // Workers take one message per event: refused whole, before anything is sent.
            m::limited(m::Limit::BusPayload);
            return Box::pin(std::future::ready(Err(MESSAGE_TOO_LARGE.to_owned())));
        }
        let (cluster, socket) = (self.clone(), socket.clone());
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
            if !reply.error.is_empty() {
                return Err(reply.error);
            }
            let mut reply = reply;
            let (join, leave) = (
                std::mem::take(&mut reply.join),
                std::mem::take(&mut reply.leave),
            );
            if !join.is_empty() || !leave.is_empty() {
                for room in join {
                    socket.join(room);
                }
                for room in &leave {
                    socket.leave(room);
                }
                // The ack tells the client it is in the room: deliveries to it must arrive.
                cluster.settled().await;
            }
            worker_reply(reply)
        })
    }

    /// Resolves once the subscriptions for this node's current memberships are in place at the
    /// NATS server (at once while the link is down; at most `SETTLE_TIMEOUT`).
    fn settled(&self) -> BoxFuture<'static, ()> {
        let version = self.inner.st.lock().version;
        let mut applied = self.inner.applied.subscribe();
        let up = self.inner.bus.is_up();
        Box::pin(async move {
            if up {
                let _ =
                    tokio::time::timeout(SETTLE_TIMEOUT, applied.wait_for(|v| *v >= version)).await;
            }
        })
    }

    fn hold_log(&self, ns: &str, join: &mut dyn FnMut()) -> Option<u64> {
        self.hold(ns, join)
    }

    fn history(
        &self,
        ns: &str,
        room: &str,
        end: u64,
        rule: crate::config::HistoryRule,
    ) -> BoxFuture<'static, Result<Vec<Value>, String>> {
        self.room_history(ns, room, end, rule)
    }

    /// Asks the broker (the leader's reserve subscription) for a place in the room. The broker
    /// may not have seen the socket's connect yet: an unknown socket is asked about again.
    fn reserve(
        &self,
        socket: &Socket,
        room: &str,
        max_members: usize,
    ) -> BoxFuture<'static, Result<Reservation, String>> {
        let req = pb::ReserveRequest {
            ns: socket.namespace().name().to_owned(),
            room: room.to_owned(),
            socket_id: socket.id().to_owned(),
            max_members: u32::try_from(max_members).unwrap_or(u32::MAX),
        };
        let payload = Bytes::from(req.encode_to_vec());
        let subject = self.inner.cfg.subjects.reserve();
        let bus = self.inner.bus.clone();
        let cluster = self.clone();
        let socket = socket.clone();
        let room = Room::from(room);
        Box::pin(async move {
            let outcome = Self::ask_reservation(bus, subject, payload).await;
            if outcome.is_err() && !socket.in_room(&room) {
                // The broker may have granted it with the answer lost: take the place back, in
                // sequence with this node's membership, so the broker counts no phantom member.
                cluster.release(&socket, &room);
            }
            outcome
        })
    }
}

impl Cluster {
    async fn ask_reservation(
        bus: Bus,
        subject: String,
        payload: Bytes,
    ) -> Result<Reservation, String> {
        {
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
        }
    }

    /// Tells the broker that `socket` is not in `room` (a leave that changes nothing here).
    fn release(&self, socket: &Socket, room: &Room) {
        let body = member_message::Body::Leave(pb::RoomChange {
            id: socket.id().to_owned(),
            room: room.to_string(),
        });
        self.membership("release", body, |_| false);
    }

    /// Whether `socket` is still connected to its namespace (not a stale handle).
    fn is_live(socket: &Socket) -> bool {
        socket.namespace().socket(socket.id()).is_some()
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
        self.life(&info, "", true, false);
    }

    fn disconnected(&self, socket: &Socket, rooms: &[Room], reason: DisconnectReason) {
        let ns: Arc<str> = socket.namespace().name().into();
        let body = member_message::Body::Disconnect(pb::Disconnect {
            id: socket.id().to_owned(),
            reason: reason.as_str().to_owned(),
            recoverable: recoverable(socket, reason),
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
        self.life(&info, reason.as_str(), false, recoverable(socket, reason));
    }

    fn joined(&self, socket: &Socket, room: &Room) {
        let ns: Arc<str> = socket.namespace().name().into();
        let body = member_message::Body::Join(pb::RoomChange {
            id: socket.id().to_owned(),
            room: room.to_string(),
        });
        self.membership("join", body, |st| bump(&mut st.rooms, (ns, room.clone())));
        if !Self::is_live(socket) {
            // The socket disconnected while its join waited (for a broker reservation): take
            // it out again, which also releases the room's subscription and the broker's place.
            tracing::debug!(socket = socket.id(), room = %room, "join after disconnect undone");
            socket.leave(room);
        }
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
        let Some((Frame::Text(packet, compress), rest)) = frames.split_first() else {
            return;
        };
        let attachments: Vec<Bytes> = rest
            .iter()
            .map(|f| match f {
                Frame::Text(b, _) | Frame::Binary(b, _) => b.clone(),
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
                uncompressed: !compress.allowed(),
            })),
        };
        if !volatile && self.logged(ns) {
            let subject = match (target.rooms.as_slice(), target.sockets.as_slice()) {
                ([room], []) => subjects.log_room(ns, room),
                ([], [id]) => subjects.log_socket(ns, id),
                _ => subjects.log_namespace(ns),
            };
            let Ok(subject) = subject else {
                m::limited(Limit::NameBytes);
                return;
            };
            self.deliver(subject, Bytes::from(envelope(target).encode_to_vec()), true);
            return;
        }
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
                let Ok(subject) = subjects.node(owner) else {
                    m::limited(Limit::NameBytes);
                    continue;
                };
                let payload = Bytes::from(envelope(&t).encode_to_vec());
                self.deliver(subject, payload, false);
            }
            return;
        }
        let subject = match target.rooms.as_slice() {
            [room] if target.sockets.is_empty() => subjects.room(ns, room),
            _ => subjects.namespace(ns),
        };
        let Ok(subject) = subject else {
            m::limited(Limit::NameBytes);
            return;
        };
        self.deliver(
            subject,
            Bytes::from(envelope(target).encode_to_vec()),
            false,
        );
    }

    /// Configured for recovery and the log opened, and the bus link up: while it is down, the
    /// namespace's emits reach this node's sockets directly (without offsets) rather than nobody
    /// (docs/recovery.md, "Bus blips").
    fn logged(&self, ns: &str) -> bool {
        self.inner
            .log
            .as_ref()
            .is_some_and(|log| log.namespace(ns).is_some())
            && self.inner.bus.is_up()
    }

    fn recover(&self, ns: &str, pid: &str, offset: &str) -> BoxFuture<'static, Option<Restored>> {
        self.recover_session(ns, pid, offset)
    }
}

impl Cluster {
    /// Queues a delivery envelope, split into fragments if it is longer than the bus takes;
    /// into the recovery log if `log`.
    fn deliver(&self, subject: String, payload: Bytes, log: bool) {
        let max = self.inner.bus.max_payload();
        let queue = |subject: String, payload: Bytes, kind: &'static str| {
            self.enqueue(Out {
                subject,
                payload,
                kind,
                log,
                published: None,
                member: None,
            });
        };
        if payload.len() <= max {
            queue(subject, payload, "delivery");
            return;
        }
        let chunk = max.saturating_sub(MESSAGE_OVERHEAD).max(1);
        if payload.len() > MAX_SPLIT_BYTES {
            m::limited(m::Limit::BusPayload);
            tracing::warn!(
                bytes = payload.len(),
                "delivery longer than {MAX_SPLIT_BYTES} bytes not sent to other nodes"
            );
            return;
        }
        let id = self
            .inner
            .next_split
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let count = u32::try_from(payload.len().div_ceil(chunk)).unwrap_or(u32::MAX);
        for (index, data) in payload.chunks(chunk).enumerate() {
            let fragment = pb::Envelope {
                body: Some(envelope::Body::Fragment(pb::Fragment {
                    origin: self.inner.cfg.node.as_str().to_owned(),
                    id,
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    count,
                    data: payload.slice_ref(data),
                })),
            };
            queue(
                subject.clone(),
                Bytes::from(fragment.encode_to_vec()),
                "fragment",
            );
        }
    }
}

impl Cluster {
    /// Publishes a connect or disconnect notice for workers.
    fn life(&self, info: &pb::SocketInfo, reason: &str, connect: bool, recoverable: bool) {
        let msg = pb::LifeEvent {
            node: self.inner.cfg.node.as_str().to_owned(),
            socket: Some(info.clone()),
            reason: reason.to_owned(),
            recoverable,
            recovered: connect && info.recovered,
        };
        let subjects = &self.inner.cfg.subjects;
        let subject = if connect {
            subjects.connect(&info.ns)
        } else {
            subjects.disconnect(&info.ns)
        };
        let Ok(subject) = subject else {
            m::limited(Limit::NameBytes);
            return;
        };
        self.queue(subject, Bytes::from(msg.encode_to_vec()), LIFE);
    }
}

/// Counts one more; true if the key became wanted (its count went from 0 to 1).
fn bump<K: std::hash::Hash + Eq>(map: &mut HashMap<K, isize>, key: K) -> bool {
    add(map, key, 1) == 1
}

/// Counts one less; true if the key stopped being wanted (its count went from 1 to 0). A
/// count may go below 0 for a moment: a disconnect reported before the join it undoes.
fn unbump<K: std::hash::Hash + Eq + Clone>(map: &mut HashMap<K, isize>, key: &K) -> bool {
    add(map, key.clone(), -1) == 0
}

/// Adds `d` to the key's count and returns the new count; a zero count is not kept.
fn add<K: std::hash::Hash + Eq>(map: &mut HashMap<K, isize>, key: K, d: isize) -> isize {
    use std::collections::hash_map::Entry;
    match map.entry(key) {
        Entry::Occupied(mut e) => {
            let n = *e.get() + d;
            if n == 0 {
                e.remove();
            } else {
                *e.get_mut() = n;
            }
            n
        }
        Entry::Vacant(e) => *e.insert(d),
    }
}

/// `s` cut to at most `max` bytes, at a char boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Encoded bytes one repeated message field element takes besides its own (tag and length).
const ELEMENT_OVERHEAD: usize = 11;

/// Splits a node's sockets into snapshot parts of at most `budget` encoded bytes each (always at
/// least one part). A record too large for one part is spread over several: its first copy
/// carries everything but some rooms, the next ones only its identity and more rooms (the
/// broker merges them). A room that cannot fit even alone, or a record whose identity does not,
/// is left out and logged.
fn snapshot_parts(sockets: Vec<pb::SocketInfo>, budget: usize) -> Vec<Vec<pb::SocketInfo>> {
    let mut parts = vec![Vec::new()];
    let mut used = 0;
    let mut push = |parts: &mut Vec<Vec<pb::SocketInfo>>, rec: pb::SocketInfo| {
        let len = rec.encoded_len() + ELEMENT_OVERHEAD;
        if used + len > budget && used > 0 {
            parts.push(Vec::new());
            used = 0;
        }
        used += len;
        if let Some(part) = parts.last_mut() {
            part.push(rec);
        }
    };
    for rec in sockets {
        if rec.encoded_len() + ELEMENT_OVERHEAD <= budget {
            push(&mut parts, rec);
            continue;
        }
        for piece in split_record(rec, budget) {
            push(&mut parts, piece);
        }
    }
    parts
}

/// One socket's record as pieces of at most `budget` encoded bytes (see [`snapshot_parts`]).
fn split_record(mut rec: pb::SocketInfo, budget: usize) -> Vec<pb::SocketInfo> {
    let rooms = std::mem::take(&mut rec.rooms);
    if rec.encoded_len() + ELEMENT_OVERHEAD > budget {
        rec.handshake = None;
        "null".clone_into(&mut rec.data_json);
    }
    let bare = pb::SocketInfo {
        id: rec.id.clone(),
        ns: rec.ns.clone(),
        user: rec.user.clone(),
        presence: rec.presence,
        ..Default::default()
    };
    if rec.encoded_len() + ELEMENT_OVERHEAD > budget {
        tracing::warn!(socket = %rec.id, "socket record too large for a snapshot part: left out");
        return Vec::new();
    }
    let mut pieces = vec![rec];
    let mut used = pieces[0].encoded_len() + ELEMENT_OVERHEAD;
    for room in rooms {
        let len = room.len() + ELEMENT_OVERHEAD;
        if bare.encoded_len() + ELEMENT_OVERHEAD + len > budget {
            tracing::warn!(socket = %bare.id, "room name too long for a snapshot part: left out");
            continue;
        }
        if used + len > budget {
            pieces.push(bare.clone());
            used = bare.encoded_len() + ELEMENT_OVERHEAD;
        }
        used += len;
        if let Some(piece) = pieces.last_mut() {
            piece.rooms.push(room);
        }
    }
    pieces
}

/// What a client is told when its message cannot cross the bus.
const MESSAGE_TOO_LARGE: &str = "message too large";

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
/// Costs one decode per delivery and gateway, not per recipient. Every frame carries `compress`
/// (the delivery's `uncompressed`, inverted).
pub fn delivery_frames(
    ns: &str,
    packet: Bytes,
    attachments: Vec<Bytes>,
    compress: Compress,
) -> Option<Vec<Frame>> {
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
    frames.push(Frame::Text(packet, compress));
    frames.extend(attachments.into_iter().map(|a| Frame::Binary(a, compress)));
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
        socketio::parse_json(&reply.args_json).ok_or_else(malformed)?
    };
    acceptable(Args::from(values).with_attachments(reply.attachments)).ok_or_else(malformed)
}

/// `args` if every placeholder in them names one of their attachments.
fn acceptable(args: Args) -> Option<Args> {
    let count = args.attachments.len();
    let named = |v: &Value| socketio::check_placeholders(Some(v), count).is_ok();
    args.values.iter().all(named).then_some(args)
}

/// Whether the broker may keep `socket`'s session after it left for `reason`: it has a pid, and
/// the client did not leave on purpose nor was sent away (socket.io's recoverable reasons, minus
/// the server's own kicks and limits, which a recovery would undo).
fn recoverable(socket: &Socket, reason: DisconnectReason) -> bool {
    socket.pid().is_some()
        && matches!(
            reason,
            DisconnectReason::Connection(
                CloseReason::ClientClose
                    | CloseReason::TransportClose
                    | CloseReason::TransportError
                    | CloseReason::PingTimeout
                    | CloseReason::DuplicatePoll
                    | CloseReason::Shutdown
            )
        )
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

/// How often a log publish is tried (the same message id each time, so the log stores it once).
const LOG_PUBLISH_TRIES: u32 = 3;

/// What membership batches are written with: this node's id and epoch, as every entry has them.
struct Batches {
    node: String,
    epoch: u64,
}

/// Publishes queued messages in queue order. Log publishes are sent in order here and their
/// acknowledgements awaited off this task; one that fails is sent again with its message id
/// (stored once, but possibly after messages queued behind it). With `batches`, membership
/// messages queued one right behind the other go out together ([`gather`]).
async fn publisher(
    bus: Bus,
    mut rx: mpsc::Receiver<Out>,
    origin: String,
    batches: Option<Batches>,
    tasks: TaskTracker,
) {
    let mut counter: u64 = 0;
    // The message that ended a batch: the next one to publish.
    let mut next: Option<Out> = None;
    loop {
        let out = match next.take() {
            Some(out) => out,
            None => match rx.recv().await {
                Some(out) => out,
                None => break,
            },
        };
        if let (Some(b), Some(_)) = (&batches, out.member) {
            let gathered = gather(&mut rx, out, b, bus.max_payload());
            next = gathered.next;
            publish_batch(&bus, b, gathered.batch).await;
            for out in gathered.passed {
                publish_one(&bus, out).await;
            }
            continue;
        }
        if out.log {
            counter += 1;
            let id = format!("{origin}.{counter}");
            let sent = bus
                .log_publish(out.subject.clone(), out.payload.clone(), id.clone())
                .await;
            let bus = bus.clone();
            let (subject, payload) = (out.subject.clone(), out.payload.clone());
            tasks.spawn(async move {
                let mut sent = sent;
                let mut attempt = 1;
                loop {
                    let result = match sent {
                        Ok(ack) => ack.await.map(|_| ()),
                        Err(e) => Err(e),
                    };
                    match result {
                        Ok(()) => {
                            let result = if attempt == 1 { "ok" } else { "retried" };
                            ::metrics::counter!(m::LOG_PUBLISHED, "result" => result).increment(1);
                            return;
                        }
                        Err(e) if attempt >= LOG_PUBLISH_TRIES => {
                            ::metrics::counter!(m::LOG_PUBLISHED, "result" => "failed")
                                .increment(1);
                            m::bus_error("log", &e);
                            tracing::warn!(error = %e, "emit not stored in the recovery log");
                            return;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, attempt, "recovery log publish retried");
                            attempt += 1;
                            sent = bus
                                .log_publish(subject.clone(), payload.clone(), id.clone())
                                .await;
                        }
                    }
                }
            });
            if let Some(published) = out.published {
                let _ = published.send(());
            }
            continue;
        }
        publish_one(&bus, out).await;
    }
}

/// Publishes one message as itself, counted by kind, and says so.
async fn publish_one(bus: &Bus, out: Out) {
    let sent = bus.publish(out.subject, out.payload).await;
    published(sent, vec![(out.kind, out.published)]);
}

/// Counts what was `sent` (every message of it, by kind) and then tells whoever waits for one
/// of its messages that it was handed to the bus.
fn published(
    sent: Result<(), BusError>,
    messages: Vec<(&'static str, Option<oneshot::Sender<()>>)>,
) {
    let counter = if sent.is_ok() {
        m::BUS_PUBLISHED
    } else {
        m::BUS_OUT_DROPPED
    };
    if let Err(e) = &sent {
        m::bus_error("publish", e);
        tracing::debug!(error = %e, "publish failed");
    }
    for (kind, waiting) in messages {
        ::metrics::counter!(counter, "kind" => kind).increment(1);
        if let Some(waiting) = waiting {
            let _ = waiting.send(());
        }
    }
}

/// What [`gather`] took from the queue, to be published in this order.
struct Gathered {
    /// Membership messages, in queue order.
    batch: Vec<Out>,
    /// The life events queued among them, in queue order.
    passed: Vec<Out>,
    /// The message that ended the batch, if one was taken from the queue.
    next: Option<Out>,
}

/// `first` (a membership message) and the membership messages queued right behind it on its
/// subject, while they fit one bus message as a batch (`max_payload`) and number at most
/// [`MAX_BATCH_MESSAGES`]. Any other message ends the batch and goes next, so the bus sees
/// queue order, with one exception: workers' life events (`{prefix}.life.…`, queued right after
/// each connect and disconnect) are passed over, at most [`MAX_BATCH_MESSAGES`] of them, and go
/// right after the batch, in their order. Without that no connect or disconnect would ever
/// share a batch; and a membership message going ahead of a life event is what the brokers
/// would see anyway, the broker knowing of a socket before the workers hear of it. Never
/// waits: what is not queued yet is not in.
fn gather(rx: &mut mpsc::Receiver<Out>, first: Out, b: &Batches, max_payload: usize) -> Gathered {
    let mut entries = switchboard_proto::batch::entry_len(first.payload.len());
    let mut gathered = Gathered {
        batch: vec![first],
        passed: Vec::new(),
        next: None,
    };
    while gathered.batch.len() < MAX_BATCH_MESSAGES {
        let Ok(out) = rx.try_recv() else {
            break;
        };
        if out.kind == LIFE && !out.log && gathered.passed.len() < MAX_BATCH_MESSAGES {
            gathered.passed.push(out);
            continue;
        }
        let with = match out.member {
            Some(seq) if !out.log && out.subject == gathered.batch[0].subject => {
                let len = out.payload.len();
                switchboard_proto::batch::grow(&b.node, b.epoch, seq, entries, len, max_payload)
            }
            _ => None,
        };
        let Some(with) = with else {
            gathered.next = Some(out);
            break;
        };
        entries = with;
        gathered.batch.push(out);
    }
    gathered
}

/// Publishes `batch` (from [`gather`]): alone as itself, else as one `MemberBatch` whose `seq`
/// is its last entry's. Every entry is counted by its kind, as if published alone.
async fn publish_batch(bus: &Bus, b: &Batches, mut batch: Vec<Out>) {
    if batch.len() == 1 {
        if let Some(out) = batch.pop() {
            publish_one(bus, out).await;
        }
        return;
    }
    let seq = batch.last().and_then(|out| out.member).unwrap_or(0);
    let payload = switchboard_proto::batch::encode(
        &b.node,
        b.epoch,
        seq,
        batch.iter().map(|out| &out.payload[..]),
    );
    let subject = batch[0].subject.clone();
    let sent = bus.publish(subject, Bytes::from(payload)).await;
    if sent.is_ok() {
        ::metrics::counter!(m::MEMBER_BATCHES).increment(1);
        ::metrics::counter!(m::MEMBER_BATCHED).increment(batch.len() as u64);
    }
    let messages: Vec<_> = batch
        .into_iter()
        .map(|out| (out.kind, out.published))
        .collect();
    published(sent, messages);
}

async fn heartbeats(cluster: Cluster) {
    let mut tick = tokio::time::interval(cluster.inner.cfg.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        cluster.heartbeat();
    }
}

/// Says so (a `rejoined` heartbeat) whenever the link comes back after a loss: the brokers ask
/// for a snapshot when its turn comes, rather than every gateway sending one at once after a
/// NATS restart.
async fn link_watch(cluster: Cluster) {
    let mut link = cluster.inner.bus.link();
    let mut generation = link.borrow().generation;
    while link.changed().await.is_ok() {
        let now = *link.borrow();
        if now.up && now.generation != generation {
            generation = now.generation;
            tracing::info!("bus link back: announcing it");
            // The heartbeat also says which NATS server it is on now (the join barrier's).
            cluster.heartbeat_as(true);
        } else if !now.up {
            tracing::warn!("bus link down");
        }
    }
}

/// Follows the other gateways' heartbeats for the NATS servers they are on.
///
/// A gateway that hears of a node it did not know (just started, back after its lease, or moved
/// to another NATS server) answers with a heartbeat of its own at once, coalesced over
/// [`PROMPT_HEARTBEAT_DELAY`]: a new gateway sends its first heartbeat as soon as it listens, so
/// it learns where every other gateway is within a round trip, not a heartbeat interval, and its
/// joins' barrier ([`sync`]) covers their servers from then on.
async fn follow_servers(cluster: Cluster, mut sub: Subscription) {
    let subjects = &cluster.inner.cfg.subjects;
    let own = cluster.inner.cfg.node.as_str();
    let mut prompt: Option<tokio::time::Instant> = None;
    loop {
        let msg = tokio::select! {
            msg = sub.next() => msg,
            () = sleep_until(prompt) => {
                prompt = None;
                cluster.heartbeat();
                continue;
            }
        };
        let Some(msg) = msg else { return };
        if let Some((node, hb)) = crate::forward::heartbeat_of(subjects, msg)
            && node != own
        {
            let now = tokio::time::Instant::now();
            if cluster.inner.servers.heard(&node, &hb.nats_server, now) {
                prompt.get_or_insert(now + PROMPT_HEARTBEAT_DELAY);
            }
        }
    }
}

/// How long a gateway gathers news of other nodes before it answers them with one heartbeat.
const PROMPT_HEARTBEAT_DELAY: Duration = Duration::from_millis(20);

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn receive(cluster: Cluster, mut sub: Subscription, commands: bool) {
    while let Some(msg) = sub.next().await {
        cluster.on_message(msg, commands);
    }
}

/// Keeps one subscription per wanted room and namespace, following local membership.
async fn interests(cluster: Cluster) {
    // Each subscription's task and the token that ends it.
    let mut active: HashMap<Interest, (JoinHandle<()>, CancellationToken)> = HashMap::new();
    let mut seen = u64::MAX;
    loop {
        let (version, wanted) = cluster.wanted();
        if version == seen {
            cluster.inner.interest_changed.notified().await;
            continue;
        }
        active.retain(|interest, (task, stop)| {
            let keep = wanted.contains(interest) && !task.is_finished();
            if !keep {
                stop.cancel();
            }
            keep
        });
        let mut failed = false;
        for interest in wanted {
            if active.contains_key(&interest) {
                continue;
            }
            let Ok(subject) = cluster.subject_of(&interest) else {
                // Never subscribed (a name too long for a subject); asked again on the next change.
                m::limited(Limit::NameBytes);
                continue;
            };
            let commands = matches!(interest, Interest::Commands(_));
            match cluster.inner.bus.subscribe(subject).await {
                Ok(sub) => {
                    let stop = cluster.inner.stop.child_token();
                    let task =
                        cluster.spawn_until(stop.clone(), receive(cluster.clone(), sub, commands));
                    active.insert(interest, (task, stop));
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
                    // Then through the routes to every other NATS server with gateways (none on
                    // one nats-server), within what is left of the same bound.
                    let bus = &cluster.inner.bus;
                    let others = cluster
                        .inner
                        .servers
                        .others(bus.server_id().as_deref(), start);
                    let subjects = &cluster.inner.cfg.subjects;
                    sync::across(bus, subjects, &others, start + SETTLE_TIMEOUT).await;
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
    use crate::sio::{Config, ConnData};
    use switchboard_bus::Hub;
    use switchboard_codec::engineio::Payload;

    struct Node {
        io: Server,
        engine: Arc<Engine<Server>>,
        cluster: Cluster,
    }

    async fn node(hub: &Hub, id: &str, drop_seqs: Vec<u64>) -> Node {
        node_with(hub, id, drop_seqs, HashMap::new()).await
    }

    /// The log of the recovery tests, in the hub.
    fn test_log() -> LogConfig {
        LogConfig {
            stream: "t_log".into(),
            subjects: vec!["t.log.>".into()],
            max_age: Duration::from_secs(60),
            max_bytes: 1 << 20,
            replicas: 1,
            memory: true,
            duplicate_window: Duration::from_secs(30),
        }
    }

    async fn node_with(
        hub: &Hub,
        id: &str,
        drop_seqs: Vec<u64>,
        recovery: HashMap<String, RecoveryConfig>,
    ) -> Node {
        node_configured(hub, id, drop_seqs, recovery, true, HashMap::new()).await
    }

    async fn node_configured(
        hub: &Hub,
        id: &str,
        drop_seqs: Vec<u64>,
        recovery: HashMap<String, RecoveryConfig>,
        member_batches: bool,
        presence: HashMap<String, PresenceConfig>,
    ) -> Node {
        let io = Server::new(Config::default());
        let chat = io.of("/chat");
        if !recovery.is_empty() {
            chat.set_recovery(crate::sio::Recovery::default());
        }
        let log = (!recovery.is_empty()).then(test_log);
        let node = NodeId::parse(id).unwrap();
        let cfg = ClusterConfig {
            node: node.clone(),
            subjects: Subjects::new("t").unwrap(),
            heartbeat: Duration::from_secs(3600),
            lease: Duration::from_secs(3600),
            presence,
            connections: Arc::new(|| 0),
            recovery,
            log,
            member_batches,
            drop_seqs,
        };
        let cluster = Cluster::start(
            hub.client(),
            io.clone(),
            cfg,
            CancellationToken::new(),
            TaskTracker::new(),
        )
        .await
        .unwrap();
        let engine = Engine::new(Default::default(), io.clone(), node);
        Node {
            io,
            engine,
            cluster,
        }
    }

    impl Node {
        fn socket(&self) -> (Arc<Conn<ConnData>>, Socket) {
            self.socket_with(&http::HeaderMap::new())
        }

        fn socket_with(&self, headers: &http::HeaderMap) -> (Arc<Conn<ConnData>>, Socket) {
            let info = HandshakeInfo::new("127.0.0.1:1".parse().unwrap(), headers, None, 0);
            let before: HashSet<String> = self
                .io
                .all_sockets()
                .iter()
                .map(|s| s.id().to_owned())
                .collect();
            let (conn, _) = self
                .engine
                .open(Transport::WebSocket, info, tokio::time::Instant::now())
                .unwrap();
            self.engine
                .handler
                .on_message(&conn, Payload::Text(Bytes::from_static(b"0/chat,")));
            // The new one (the server's list has no order).
            let socket = self
                .io
                .all_sockets()
                .into_iter()
                .find(|s| !before.contains(s.id()))
                .unwrap();
            drain(&conn);
            (conn, socket)
        }
    }

    fn drain(conn: &Arc<Conn<ConnData>>) -> Vec<Bytes> {
        conn.lock()
            .drain()
            .into_iter()
            .map(|f| match f {
                Frame::Text(b, _) | Frame::Binary(b, _) => b,
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

    /// The member messages of a bus message: a batch's entries, or the message itself.
    fn entries(payload: Bytes) -> Vec<pb::MemberMessage> {
        let message = pb::MemberMessage::decode(payload).unwrap();
        match message.body {
            Some(member_message::Body::Batch(batch)) => batch.messages,
            _ => vec![message],
        }
    }

    /// What a broker hears of the nodes' member subjects: every member message as it would
    /// have been published alone (batches taken apart), with the length of the bus message it
    /// came in.
    struct Members {
        sub: Subscription,
        queued: std::collections::VecDeque<(usize, pb::MemberMessage)>,
    }

    impl Members {
        /// Every node's member messages (`subject`: one node's).
        async fn subscribe(bus: &Bus, subject: Option<String>) -> Self {
            let subject = subject.unwrap_or_else(|| Subjects::new("t").unwrap().all_members());
            Self {
                sub: bus.subscribe(subject).await.unwrap(),
                queued: Default::default(),
            }
        }

        async fn next_sized(&mut self) -> (usize, pb::MemberMessage) {
            if let Some(next) = self.queued.pop_front() {
                return next;
            }
            let msg = tokio::time::timeout(Duration::from_secs(5), self.sub.next())
                .await
                .unwrap()
                .unwrap();
            let len = msg.payload.len();
            self.queued
                .extend(entries(msg.payload).into_iter().map(|m| (len, m)));
            self.queued.pop_front().unwrap()
        }

        async fn next(&mut self) -> pb::MemberMessage {
            self.next_sized().await.1
        }
    }

    #[tokio::test]
    async fn a_join_settles_once_the_gateways_on_every_other_nats_server_answered() {
        let hub = Hub::new();
        let a = node(&hub, "a", vec![]).await;
        let (_ca, sa) = a.socket();
        // The connect's namespace subscription, settled while no other server is known.
        a.cluster.settled().await;
        let subjects = Subjects::new("t").unwrap();
        let probe = hub.client();
        // Gateway z says it is on NATS server NZ; this test answers for NZ's gateways. Gateway y
        // is on NY, where no gateway answers any more ("no responders": not waited for).
        let mut nz = probe.subscribe(subjects.sync("NZ").unwrap()).await.unwrap();
        for (node, server) in [("z", "NZ"), ("y", "NY")] {
            let hb = pb::Heartbeat {
                node: node.into(),
                nats_server: server.into(),
                ..Default::default()
            };
            probe
                .publish(
                    subjects.heartbeat(node).unwrap(),
                    Bytes::from(hb.encode_to_vec()),
                )
                .await
                .unwrap();
        }
        until("a knows both servers", || {
            a.cluster
                .inner
                .servers
                .others(None, tokio::time::Instant::now())
                == ["NY", "NZ"]
        })
        .await;

        sa.join("room");
        let settled = tokio::spawn(a.cluster.settled());
        let ask = tokio::time::timeout(Duration::from_secs(5), nz.next())
            .await
            .expect("a sync request to NZ")
            .unwrap();
        assert!(
            !settled.is_finished(),
            "the join settled before NZ's gateways answered"
        );
        probe
            .publish(ask.reply.expect("a request"), Bytes::new())
            .await
            .unwrap();
        settled.await.unwrap();
    }

    #[tokio::test]
    async fn a_gateway_answers_news_of_a_node_with_a_heartbeat_at_once() {
        let hub = Hub::new();
        let subjects = Subjects::new("t").unwrap();
        let probe = hub.client();
        let mut from_a = probe
            .subscribe(subjects.heartbeat("a").unwrap())
            .await
            .unwrap();
        // Its heartbeat interval is an hour: past the first one, only news makes it send.
        let _a = node(&hub, "a", vec![]).await;
        let next = async |sub: &mut Subscription| {
            let msg = tokio::time::timeout(switchboard_tests::WAIT, sub.next())
                .await
                .expect("a heartbeat from a")
                .unwrap();
            pb::Heartbeat::decode(msg.payload).unwrap()
        };
        assert_eq!(next(&mut from_a).await.node, "a");
        let hb = pb::Heartbeat {
            node: "z".into(),
            nats_server: "NZ".into(),
            ..Default::default()
        };
        probe
            .publish(
                subjects.heartbeat("z").unwrap(),
                Bytes::from(hb.encode_to_vec()),
            )
            .await
            .unwrap();
        assert_eq!(next(&mut from_a).await.node, "a");
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
                ..Default::default()
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
        assert_eq!(
            ack_request_args(&ack("ping", ""), vec![]),
            Some(Args::none())
        );
        assert!(ack_request_args(&ack("ping", &format!("[{ph}]")), one()).is_some());
        assert_eq!(
            ack_request_args(&ack("ping", &format!("[{ph}]")), vec![]),
            None
        );
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
        let subject = Subjects::new("t").unwrap().node("b").unwrap();
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
            let delivery = to_socket(&socket, Bytes::copy_from_slice(packet), attachments);
            let payload = delivery_payload(delivery);
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

    /// A delivery of `packet` to `socket` of `/chat`.
    fn to_socket(socket: &Socket, packet: Bytes, attachments: Vec<Bytes>) -> pb::Delivery {
        pb::Delivery {
            ns: "/chat".into(),
            target: Some(pb::Target {
                socket_ids: vec![socket.id().to_owned()],
                ..Default::default()
            }),
            packet,
            attachments,
            ..Default::default()
        }
    }

    /// A delivery in its envelope, as the bus carries it.
    fn delivery_payload(delivery: pb::Delivery) -> Bytes {
        let envelope = pb::Envelope {
            body: Some(envelope::Body::Delivery(delivery)),
        };
        Bytes::from(envelope.encode_to_vec())
    }

    /// The first `n` frames queued for `conn`, flags and all (bounded wait).
    async fn frames(conn: &Arc<Conn<ConnData>>, n: usize) -> Vec<Frame> {
        let mut got: Vec<Frame> = Vec::new();
        until("the frames", || {
            got.extend(conn.lock().drain());
            got.len() >= n
        })
        .await;
        got
    }

    /// Each frame's text (or bytes) and whether it may be compressed.
    fn flags(frames: &[Frame]) -> Vec<(String, Compress)> {
        frames
            .iter()
            .map(|f| {
                (
                    String::from_utf8_lossy(f.bytes()).into_owned(),
                    f.compress(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn an_uncompressed_delivery_is_queued_marked_off() {
        let hub = Hub::new();
        let b = node(&hub, "b", vec![]).await;
        let (conn, socket) = b.socket();
        let publisher = hub.client();
        let subject = Subjects::new("t").unwrap().node("b").unwrap();
        let attached = r#"451-/chat,["a",{"_placeholder":true,"num":0}]"#;
        let ack = pb::AckRequest {
            reply: "t.inbox.x".into(),
            timeout_ms: 60_000,
            event: "q".into(),
            args_json: "[]".into(),
        };
        // (packet, attachments, uncompressed, ack)
        let deliveries = [
            (attached, vec![Bytes::from_static(b"\x01")], true, None),
            (r#"42/chat,["on"]"#, vec![], false, None),
            ("", vec![], true, Some(ack)),
        ];
        for (packet, attachments, uncompressed, ack) in deliveries {
            let delivery = pb::Delivery {
                uncompressed,
                ack,
                ..to_socket(&socket, Bytes::from(packet), attachments)
            };
            let payload = delivery_payload(delivery);
            publisher.publish(subject.clone(), payload).await.unwrap();
        }
        let got = flags(&frames(&conn, 4).await);
        let off = Compress::Off;
        assert_eq!(
            got[..3].to_vec(),
            vec![
                (attached.to_owned(), off),
                ("\u{1}".to_owned(), off),
                (r#"42/chat,["on"]"#.to_owned(), Compress::Allowed),
            ]
        );
        // The emit with an ack is encoded here, with the socket's ack id.
        assert!(
            got[3].0.starts_with("42/chat,") && got[3].0.ends_with(r#"["q"]"#),
            "{got:?}"
        );
        assert_eq!(got[3].1, off);
    }

    #[tokio::test]
    async fn commands_count_only_on_command_subjects() {
        let hub = Hub::new();
        let a = node(&hub, "a", vec![]).await;
        let (conn, socket) = a.socket();
        a.cluster.settled().await;
        let subjects = Subjects::new("t").unwrap();
        let worker = hub.client();
        let join = |room: &str| {
            Bytes::from(
                pb::Envelope {
                    body: Some(envelope::Body::Command(pb::Command {
                        origin: "mallory".into(),
                        ns: "/chat".into(),
                        target: None,
                        action: Some(pb::command::Action::Join(pb::RoomList {
                            rooms: vec![room.into()],
                        })),
                    })),
                }
                .encode_to_vec(),
            )
        };
        let hello = |n: u8| {
            Bytes::from(
                pb::Envelope {
                    body: Some(envelope::Body::Delivery(pb::Delivery {
                        ns: "/chat".into(),
                        packet: Bytes::from(format!(r#"42/chat,["hello",{n}]"#)),
                        ..Default::default()
                    })),
                }
                .encode_to_vec(),
            )
        };
        // A command on each delivery subject, each followed on the same subject by a delivery:
        // once both deliveries are in, both commands were handled (and refused).
        for (n, subject) in [subjects.node("a"), subjects.namespace("/chat")]
            .into_iter()
            .enumerate()
        {
            let subject = subject.unwrap();
            worker
                .publish(subject.clone(), join("kicked"))
                .await
                .unwrap();
            worker.publish(subject, hello(n as u8)).await.unwrap();
        }
        let mut got = Vec::new();
        until("both deliveries", || {
            got.extend(drain(&conn));
            got.len() >= 2
        })
        .await;
        assert!(!socket.in_room("kicked"), "a command on a delivery subject");
        // A delivery on a command subject is refused too; a command there is applied.
        let command_node = subjects.command_node("a").unwrap();
        worker
            .publish(command_node.clone(), hello(9))
            .await
            .unwrap();
        worker.publish(command_node, join("joined")).await.unwrap();
        until("the join by command", || socket.in_room("joined")).await;
        let command_ns = subjects.command_namespace("/chat").unwrap();
        worker
            .publish(command_ns, join("by-selector"))
            .await
            .unwrap();
        until("the join by selector", || socket.in_room("by-selector")).await;
        assert!(drain(&conn).is_empty(), "the delivery on a command subject");
        assert!(!socket.in_room("kicked"));
    }

    /// Presence announcements reach the sockets the same whether they come alone or in a batch.
    /// Refused entries (a batch inside the batch, another namespace than the subject's, and what
    /// a reader older than batches makes of one: an event with every field empty) are counted
    /// and shown to nobody; the batch's other entries still are.
    #[tokio::test]
    async fn a_presence_batch_reaches_sockets_as_its_announcements_alone_would() {
        use presence_event::Kind;
        let hub = Hub::new();
        let shown = PresenceConfig {
            rooms: true,
            users: true,
            event: "presence".into(),
            to_clients: true,
        };
        let presence = HashMap::from([("/chat".to_owned(), shown)]);
        let a = node_configured(&hub, "a", vec![], HashMap::new(), true, presence).await;
        let (conn, socket) = a.socket();
        socket.join("lobby");
        let subject = Subjects::new("t").unwrap().presence("/chat").unwrap();
        let deliver = |message: pb::PresenceEvent| {
            let msg = switchboard_bus::Message {
                subject: subject.clone(),
                reply: None,
                payload: Bytes::from(message.encode_to_vec()),
            };
            a.cluster.on_message(msg, false);
        };
        let ev = |kind: Kind, room: &str, id: &str| pb::PresenceEvent {
            kind: kind as i32,
            ns: "/chat".into(),
            room: room.into(),
            user: Some("u".into()),
            socket_id: id.into(),
            ..Default::default()
        };
        let batch = |events: Vec<pb::PresenceEvent>| pb::PresenceEvent {
            batch: events,
            ..Default::default()
        };
        let events = vec![
            ev(Kind::MemberJoined, "lobby", "b.1"),
            ev(Kind::UserOnline, "", "b.2"),
            ev(Kind::MemberLeft, "lobby", "b.1"),
        ];
        for e in &events {
            deliver(e.clone());
        }
        let alone = drain(&conn);
        assert_eq!(alone.len(), 3, "{alone:?}");
        deliver(batch(events.clone()));
        assert_eq!(drain(&conn), alone);

        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let metrics = recorder.handle();
        let other = pb::PresenceEvent {
            ns: "/other".into(),
            ..events[0].clone()
        };
        ::metrics::with_local_recorder(&recorder, || {
            let nested = batch(vec![events[0].clone(), events[1].clone()]);
            deliver(batch(vec![nested, other.clone(), events[1].clone()]));
            deliver(other);
            deliver(pb::PresenceEvent::default());
        });
        assert_eq!(drain(&conn), alone[1..2]);
        let malformed = metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix("switchboard_gateway_bus_malformed_total "))
            .map(str::to_owned);
        assert_eq!(malformed.as_deref(), Some("4"));
    }

    #[tokio::test]
    async fn membership_is_sequenced_and_a_dropped_event_leaves_a_gap_a_snapshot_fills() {
        let hub = Hub::new();
        let broker = hub.client();
        let subjects = Subjects::new("t").unwrap();
        let mut members = Members::subscribe(&broker, None).await;
        let a = node(&hub, "a", vec![2]).await;
        let start = members.next().await;
        assert!(
            matches!(start.body, Some(member_message::Body::Snapshot(ref p)) if p.last && p.sockets.is_empty())
        );
        let (_c, s) = a.socket();
        s.join("r1");
        s.join("r2");
        let connect = members.next().await;
        assert_eq!(connect.seq, 1);
        assert!(matches!(
            connect.body,
            Some(member_message::Body::Connect(_))
        ));
        let join = members.next().await;
        assert_eq!(
            join.seq, 3,
            "seq 2 (the join of r1) was dropped by the fault injection"
        );
        broker
            .publish(
                subjects.snapshot("a").unwrap(),
                Bytes::from(
                    pb::SnapshotRequest {
                        broker: "x".into(),
                        request_id: 7,
                        ..Default::default()
                    }
                    .encode_to_vec(),
                ),
            )
            .await
            .unwrap();
        let snap = members.next().await;
        let Some(member_message::Body::Snapshot(part)) = snap.body else {
            panic!("a snapshot expected: {snap:?}");
        };
        assert_eq!((snap.seq, part.request_id, part.last), (3, 7, true));
        assert_eq!(part.sockets.len(), 1);
        let mut rooms = part.sockets[0].rooms.clone();
        rooms.sort();
        assert_eq!(rooms, vec!["r1".to_owned(), "r2".to_owned()]);
    }

    /// Every message a node publishes, in order: (subject, payload).
    struct Wire(Subscription);

    impl Wire {
        async fn new(hub: &Hub) -> Self {
            Self(hub.client().subscribe("t.>".to_owned()).await.unwrap())
        }

        /// The next message on a member or life subject, or a delivery (heartbeats skipped):
        /// what it is, in short (`batch 1..=5`, `join 6`, `life`, `delivery`), and its length.
        async fn next(&mut self) -> (String, usize) {
            loop {
                let msg = tokio::time::timeout(Duration::from_secs(5), self.0.next())
                    .await
                    .unwrap()
                    .unwrap();
                let len = msg.payload.len();
                let subject = msg.subject.as_str();
                if subject.starts_with("t.life.") {
                    return ("life".into(), len);
                }
                if subject.starts_with("t.room.") {
                    return ("delivery".into(), len);
                }
                if !subject.starts_with("t.member.") {
                    continue;
                }
                let message = pb::MemberMessage::decode(msg.payload).unwrap();
                let what = match message.body.unwrap() {
                    member_message::Body::Batch(b) => {
                        let seqs: Vec<u64> = b.messages.iter().map(|m| m.seq).collect();
                        for m in &b.messages {
                            assert_eq!((m.node.as_str(), m.epoch), ("a", message.epoch));
                            assert!(!matches!(m.body, Some(member_message::Body::Batch(_))));
                        }
                        let (first, last) = (seqs[0], *seqs.last().unwrap());
                        assert_eq!(message.seq, last, "the batch carries its last seq");
                        assert_eq!(message.node, "a");
                        assert_eq!(seqs, (first..=last).collect::<Vec<_>>(), "in order");
                        format!("batch {first}..={last}")
                    }
                    member_message::Body::Connect(_) => format!("connect {}", message.seq),
                    member_message::Body::Join(_) => format!("join {}", message.seq),
                    member_message::Body::Leave(_) => format!("leave {}", message.seq),
                    member_message::Body::Snapshot(_) => format!("snapshot {}", message.seq),
                    other => format!("{other:?}"),
                };
                return (what, len);
            }
        }

        async fn take(&mut self, n: usize) -> Vec<String> {
            let mut got = Vec::new();
            for _ in 0..n {
                got.push(self.next().await.0);
            }
            got
        }
    }

    /// Membership events queued together go out as one batch, in order, with consecutive
    /// sequence numbers, the life events queued among them right after it; a broadcast queued
    /// between membership events ends a batch where it stands; an event queued alone goes as
    /// itself.
    #[tokio::test]
    async fn membership_queued_together_goes_out_in_batches_in_queue_order() {
        let hub = Hub::new();
        let mut wire = Wire::new(&hub).await;
        let a = node(&hub, "a", vec![]).await;
        assert_eq!(wire.take(1).await, ["snapshot 0"]);
        // Queued before the publisher runs: nothing here awaits.
        let (_c1, s1) = a.socket();
        let (_c2, s2) = a.socket();
        s1.join("r1");
        s2.join("r1");
        s1.leave("r1");
        assert_eq!(wire.take(3).await, ["batch 1..=5", "life", "life"]);
        s2.join("r2");
        assert_eq!(wire.take(1).await, ["join 6"]);
        s1.join("r3");
        s1.join("r4");
        s1.to("r3").emit("hi", Args::new(vec![json!(1)]));
        s1.join("r5");
        s1.leave("r3");
        s1.join("r6");
        assert_eq!(
            wire.take(3).await,
            ["batch 7..=8", "delivery", "batch 9..=11"]
        );
    }

    /// A batch never exceeds the bus payload: the message that would not fit starts the next.
    #[tokio::test]
    async fn a_batch_never_exceeds_the_bus_payload() {
        const MAX: usize = 4096;
        // Connects of about 1.3 KB: three fit a payload, not four.
        let (hub, _broker, _subjects, _members, a, headers) = bounded_node(MAX, 300).await;
        let mut wire = Wire::new(&hub).await;
        let mut conns = Vec::new();
        for _ in 0..10 {
            conns.push(a.socket_with(&headers));
        }
        let mut got = Vec::new();
        while got
            .iter()
            .filter(|w: &&String| !w.starts_with("life"))
            .count()
            < 4
        {
            let (what, len) = wire.next().await;
            assert!(len <= MAX, "{what}: {len} bytes");
            got.push(what);
        }
        let batches: Vec<&String> = got.iter().filter(|w| !w.starts_with("life")).collect();
        assert_eq!(
            batches,
            ["batch 1..=3", "batch 4..=6", "batch 7..=9", "connect 10"]
        );
    }

    /// With `member_batches` off every membership message goes alone, as before batches.
    #[tokio::test]
    async fn without_batches_every_membership_message_goes_alone() {
        let hub = Hub::new();
        let mut wire = Wire::new(&hub).await;
        let a = node_configured(&hub, "a", vec![], HashMap::new(), false, HashMap::new()).await;
        assert_eq!(wire.take(1).await, ["snapshot 0"]);
        let (_c, s) = a.socket();
        s.join("r1");
        s.join("r2");
        assert_eq!(
            wire.take(4).await,
            ["connect 1", "life", "join 2", "join 3"]
        );
    }

    /// Bytes on the snapshot or resync subject that do not decode are dropped, not answered with
    /// a whole unpaced snapshot.
    #[tokio::test]
    async fn undecodable_snapshot_and_resync_requests_get_no_snapshot() {
        let hub = Hub::new();
        let broker = hub.client();
        let subjects = Subjects::new("t").unwrap();
        let mut members = Members::subscribe(&broker, None).await;
        let a = node(&hub, "a", vec![]).await;
        members.next().await; // the start snapshot
        let mut beats = broker
            .subscribe(subjects.heartbeat("a").unwrap())
            .await
            .unwrap();
        let garbage = Bytes::from_static(&[0xff]);
        for subject in [subjects.snapshot("a").unwrap(), subjects.resync()] {
            broker.publish(subject, garbage.clone()).await.unwrap();
        }
        // A paced broker's resync after the garbage: its answer (a heartbeat, no snapshot) says
        // the garbage before it was handled.
        let announce = pb::ResyncRequest {
            announce: true,
            ..Default::default()
        };
        broker
            .publish(subjects.resync(), Bytes::from(announce.encode_to_vec()))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), beats.next())
            .await
            .unwrap()
            .unwrap();
        let request = pb::SnapshotRequest {
            broker: "x".into(),
            request_id: 9,
            ..Default::default()
        };
        broker
            .publish(
                subjects.snapshot("a").unwrap(),
                Bytes::from(request.encode_to_vec()),
            )
            .await
            .unwrap();
        let answer = members.next().await;
        let Some(member_message::Body::Snapshot(part)) = answer.body else {
            panic!("a snapshot expected: {answer:?}");
        };
        assert_eq!(
            part.request_id, 9,
            "the first snapshot answers the valid request"
        );
        drop(a);
    }

    /// The member messages up to and including the last part of the next snapshot.
    async fn snapshot_messages(members: &mut Members) -> Vec<(usize, pb::SnapshotPart)> {
        let mut parts = Vec::new();
        loop {
            let (len, msg) = members.next_sized().await;
            if let Some(member_message::Body::Snapshot(part)) = msg.body {
                let last = part.last;
                parts.push((len, part));
                if last {
                    return parts;
                }
            }
        }
    }

    /// Node `a` on a hub whose payloads are at most `max` bytes, a client hearing its member
    /// messages (its start snapshot consumed), and handshake headers `header_bytes` long each.
    async fn bounded_node(
        max: usize,
        header_bytes: usize,
    ) -> (Hub, Bus, Subjects, Members, Node, http::HeaderMap) {
        let hub = Hub::with_max_payload(max);
        let broker = hub.client();
        let subjects = Subjects::new("t").unwrap();
        let mut members = Members::subscribe(&broker, None).await;
        let a = node(&hub, "a", vec![]).await;
        snapshot_messages(&mut members).await;
        let mut headers = http::HeaderMap::new();
        let value = "x".repeat(header_bytes);
        for name in HEADERS {
            headers.insert(name, value.parse().unwrap());
        }
        (hub, broker, subjects, members, a, headers)
    }

    /// The member messages up to a snapshot part that pauses or is the last: (seq, body).
    async fn window(members: &mut Members) -> Vec<(u64, Option<member_message::Body>)> {
        let mut got = Vec::new();
        loop {
            let msg = members.next().await;
            let end =
                matches!(&msg.body, Some(member_message::Body::Snapshot(p)) if p.paused || p.last);
            got.push((msg.seq, msg.body));
            if end {
                return got;
            }
        }
    }

    /// A paced request: one window of a snapshot cut once, the rest when asked, events between.
    #[tokio::test]
    async fn a_paced_snapshot_comes_in_windows_with_events_between_them() {
        const MAX: usize = 4096;
        // Big handshakes: a few sockets per part.
        let (_hub, broker, subjects, mut members, a, headers) = bounded_node(MAX, 300).await;
        let mut conns = Vec::new();
        for _ in 0..40 {
            conns.push(a.socket_with(&headers));
        }
        while members.next().await.seq < 40 {}
        let ask = |from_part: u32, window_bytes: u64| {
            let request = pb::SnapshotRequest {
                broker: "b".into(),
                request_id: 9,
                window_bytes,
                from_part,
            };
            let broker = broker.clone();
            let subject = subjects.snapshot("a").unwrap();
            async move {
                broker
                    .publish(subject, Bytes::from(request.encode_to_vec()))
                    .await
                    .unwrap();
            }
        };
        let snapshot = |got: &[(u64, Option<member_message::Body>)]| -> Vec<(u64, u32, usize)> {
            got.iter()
                .filter_map(|(seq, b)| match b {
                    Some(member_message::Body::Snapshot(p)) => {
                        assert_eq!((p.broker.as_str(), p.request_id), ("b", 9));
                        Some((*seq, p.part, p.sockets.len()))
                    }
                    _ => None,
                })
                .collect()
        };
        // A window smaller than one part still gets one part, paused.
        ask(0, 1).await;
        let first = window(&mut members).await;
        let first = snapshot(&first);
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].0, first[0].1), (40, 0));
        // A socket connects before the next window: its event (41) comes first, and the
        // snapshot goes on at the sequence it was cut at.
        conns.push(a.socket());
        ask(1, 2 * MAX as u64).await;
        let second = window(&mut members).await;
        assert!(
            matches!(second[0], (41, Some(member_message::Body::Connect(_)))),
            "{second:?}"
        );
        let second = snapshot(&second);
        assert!(!second.is_empty() && second.len() <= 2, "{second:?}");
        assert!(second.iter().all(|(seq, _, _)| *seq == 40), "{second:?}");
        assert_eq!(second[0].1, 1);
        // The rest at once; every socket of the cut, not the later one.
        let next = second.last().unwrap().1 + 1;
        ask(next, u64::MAX).await;
        let rest = snapshot(&window(&mut members).await);
        let count: usize = [first, second, rest].iter().flatten().map(|p| p.2).sum();
        assert_eq!(count, 40);
        // Asked again for a window it no longer keeps: a new cut, from part 0.
        ask(next, u64::MAX).await;
        let again = snapshot(&window(&mut members).await);
        assert_eq!((again[0].0, again[0].1), (41, 0));
        assert_eq!(again.iter().map(|p| p.2).sum::<usize>(), 41);
    }

    #[tokio::test]
    async fn a_join_that_completes_after_its_socket_left_leaves_no_ghost() {
        let hub = Hub::new();
        let a = node(&hub, "a", vec![]).await;
        let (_c, s) = a.socket();
        let (_c2, other) = a.socket();
        other.join("shared");
        s.disconnect();
        // What a join that waited for a broker reservation does once the answer comes.
        s.join("late");
        s.join("shared");
        let ns = a.io.get("/chat").unwrap();
        assert_eq!(ns.room_len("late"), 0, "the ghost is not in the room");
        assert_eq!(ns.room_len("shared"), 1, "only the live member is");
        let (_, wanted) = a.cluster.wanted();
        assert!(
            !wanted.contains(&Interest::Room("/chat".into(), "late".into())),
            "the room's subscription is released"
        );
        assert!(wanted.contains(&Interest::Room("/chat".into(), "shared".into())));
        other.disconnect();
        assert!(
            a.cluster.wanted().1.is_empty(),
            "{:?}",
            a.cluster.wanted().1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reservation_that_fails_on_the_gateway_is_released_in_sequence() {
        let hub = Hub::new();
        let broker = hub.client();
        let subjects = Subjects::new("t").unwrap();
        let mut members = Members::subscribe(&broker, None).await;
        // A broker that takes the request (and may grant it) but whose answer never arrives.
        let _silent = broker.subscribe(subjects.reserve()).await.unwrap();
        let a = node(&hub, "a", vec![]).await;
        let (_c, s) = a.socket();
        let refused = a.cluster.reserve(&s, "game", 2).await;
        assert!(refused.is_err(), "{refused:?}");
        loop {
            let msg = members.next().await;
            if let Some(member_message::Body::Leave(change)) = msg.body {
                assert_eq!((change.id.as_str(), change.room.as_str()), (s.id(), "game"));
                break;
            }
        }
        assert_eq!(s.rooms(), Vec::<Room>::new());
    }

    #[tokio::test]
    async fn snapshot_parts_fit_the_bus_payload_whatever_the_sessions_carry() {
        const MAX: usize = 16 * 1024;
        let (_hub, broker, subjects, mut members, a, headers) = bounded_node(MAX, 400 * 1024).await;
        let mut ids = Vec::new();
        let mut conns = Vec::new();
        for _ in 0..12 {
            let (c, s) = a.socket_with(&headers);
            ids.push(s.id().to_owned());
            conns.push(c);
        }
        // One socket in more rooms than one part holds.
        let (_c, crowded) = a.socket();
        for i in 0..2000 {
            crowded.join(format!("room-{i:04}"));
        }
        broker
            .publish(subjects.resync(), Bytes::from_static(b""))
            .await
            .unwrap();
        let parts = snapshot_messages(&mut members).await;
        assert!(parts.len() > 2, "{} parts", parts.len());
        let mut got: HashMap<String, usize> = HashMap::new();
        for (len, part) in &parts {
            assert!(*len <= MAX, "a part of {len} bytes");
            for rec in &part.sockets {
                *got.entry(rec.id.clone()).or_default() += rec.rooms.len();
            }
        }
        for id in &ids {
            assert!(got.contains_key(id), "{id} is in the snapshot");
        }
        assert_eq!(got[crowded.id()], 2000, "every room of the crowded socket");
    }

    #[tokio::test]
    async fn a_relay_longer_than_the_bus_payload_arrives_whole_on_every_node() {
        let hub = Hub::with_max_payload(4096);
        let a = node(&hub, "a", vec![]).await;
        let b = node(&hub, "b", vec![]).await;
        let (_ca, sa) = a.socket();
        let (_ca2, sa2) = a.socket();
        let (cb, sb) = b.socket();
        for s in [&sa, &sa2, &sb] {
            s.join("room");
        }
        b.cluster.settled().await;
        let attachment = Bytes::from(vec![7u8; 20_000]);
        sa.to("room").emit(
            "big",
            Args::new(vec![json!({"n": 1})]).with_attachments(vec![attachment.clone()]),
        );
        let mut got = Vec::new();
        until("the split relay on b", || {
            got.extend(drain(&cb));
            got.len() >= 2
        })
        .await;
        assert_eq!(got.len(), 2, "the packet and its attachment");
        assert_eq!(got[1], attachment);
    }

    #[tokio::test]
    async fn a_forward_longer_than_the_bus_payload_is_refused_to_the_client() {
        let hub = Hub::with_max_payload(4096);
        let a = node(&hub, "a", vec![]).await;
        let (_c, s) = a.socket();
        let args = Args::new(vec![json!(1)]).with_attachments(vec![Bytes::from(vec![0u8; 5000])]);
        let refused = a
            .cluster
            .forward(&s, "upload", args, Some(Duration::from_secs(1)))
            .await;
        assert_eq!(refused.unwrap_err(), "message too large");
    }

    #[test]
    fn reassembly_takes_fragments_in_order_and_forgets_broken_messages() {
        let frag = |id, index, count, data: &'static [u8]| pb::Fragment {
            origin: "a".into(),
            id,
            index,
            count,
            data: Bytes::from_static(data),
        };
        let mut r = Reassembly::default();
        assert_eq!(r.add(frag(1, 0, 2, b"ab")), None);
        assert_eq!(r.add(frag(1, 1, 2, b"c")), Some(b"abc".to_vec()));
        // A lost middle fragment drops the message; the next one starts clean.
        assert_eq!(r.add(frag(2, 0, 3, b"ab")), None);
        assert_eq!(r.add(frag(2, 2, 3, b"ef")), None);
        assert_eq!(r.add(frag(3, 0, 1, b"x")), Some(b"x".to_vec()));
        // A message whose end never comes is forgotten once room is needed.
        assert_eq!(r.add(frag(4, 0, 2, b"ab")), None);
        assert_eq!(r.bytes, 2);
        let big = vec![0u8; MAX_SPLIT_BYTES / 2];
        let big: &'static [u8] = Box::leak(big.into_boxed_slice());
        for id in 5..8 {
            assert_eq!(r.add(frag(id, 0, 2, big)), None);
        }
        assert!(r.bytes <= MAX_REASSEMBLY_BYTES, "{}", r.bytes);
        assert_eq!(
            r.add(frag(7, 1, 2, big)).map(|v| v.len()),
            Some(MAX_SPLIT_BYTES)
        );
        assert_eq!(
            r.add(frag(9, 0, u32::MAX, b"ab")),
            None,
            "too large to accept"
        );
        assert!(r.partial.keys().all(|(_, id)| *id != 9));
    }

    #[test]
    fn a_socket_record_is_bounded_whatever_the_handshake_holds() {
        let rec = pb::SocketInfo {
            id: "a.1".into(),
            rooms: (0..100).map(|i| format!("r{i}")).collect(),
            ..Default::default()
        };
        let parts = snapshot_parts(vec![rec], 200);
        let mut rooms = 0;
        for part in &parts {
            let len: usize = part
                .iter()
                .map(|r| r.encoded_len() + ELEMENT_OVERHEAD)
                .sum();
            assert!(len <= 200, "{len}");
            rooms += part.iter().map(|r| r.rooms.len()).sum::<usize>();
        }
        assert_eq!(rooms, 100);
        assert_eq!(snapshot_parts(Vec::new(), 200), vec![Vec::new()]);
        assert_eq!(cut("éé", 3), "é");
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
        let mut m: HashMap<&str, isize> = HashMap::new();
        assert!(bump(&mut m, "r"));
        assert!(!bump(&mut m, "r"));
        assert!(!unbump(&mut m, &"r"));
        assert!(unbump(&mut m, &"r"));
        assert!(m.is_empty());
        // A disconnect counted before the join it undoes: both orders end at nothing wanted.
        assert!(!unbump(&mut m, &"r"));
        assert!(!bump(&mut m, "r"));
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

    /// A stand-in for the broker's claims: it remembers every socket a gateway reports and hands
    /// a session to the first claim with its pid's hash.
    async fn claims(hub: &Hub) {
        let bus = hub.client();
        let subjects = Subjects::new("t").unwrap();
        let mut members = bus.subscribe(subjects.all_members()).await.unwrap();
        let mut claims = bus.subscribe(subjects.recover()).await.unwrap();
        tokio::spawn(async move {
            let mut known: Vec<pb::SocketInfo> = Vec::new();
            loop {
                tokio::select! {
                    Some(m) = members.next() => {
                        for m in entries(m.payload) {
                            match m.body {
                                Some(member_message::Body::Connect(info)) => known.push(info),
                                Some(member_message::Body::Join(j)) => {
                                    for s in known.iter_mut().filter(|s| s.id == j.id) {
                                        s.rooms.push(j.room.clone());
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    Some(c) = claims.next() => {
                        let req = pb::RecoverRequest::decode(c.payload).unwrap();
                        let found = known.iter().position(|s| {
                            s.recovery.as_ref().is_some_and(|r| r.pid_hash == req.pid_hash)
                        });
                        let reply = match found {
                            Some(i) => pb::RecoverReply {
                                outcome: pb::recover_reply::Outcome::Recovered as i32,
                                socket: Some(known.remove(i)),
                            },
                            None => pb::RecoverReply::default(),
                        };
                        let _ = bus
                            .publish(c.reply.unwrap(), Bytes::from(reply.encode_to_vec()))
                            .await;
                    }
                    else => return,
                }
            }
        });
    }

    fn text(frames: &[Bytes]) -> Vec<String> {
        frames
            .iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect()
    }

    /// Collects frames of `conn` until there are `n` (bounded).
    async fn collect(conn: &Arc<Conn<ConnData>>, n: usize) -> Vec<String> {
        let mut got = Vec::new();
        for _ in 0..2000 {
            got.extend(text(&drain(conn)));
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("timed out waiting for {n} frames; got {got:?}");
    }

    /// Two nodes `a` and `b` with recovery on `/chat` (replays of at most `max_replay_packets`)
    /// and the stand-in broker's claims.
    async fn recovery_pair(max_replay_packets: usize) -> (Hub, Node, Node) {
        let hub = Hub::new();
        claims(&hub).await;
        let rc = RecoveryConfig {
            window: Duration::from_secs(60),
            max_replay_packets,
            max_replay_bytes: 1 << 20,
        };
        let recovery = HashMap::from([("/chat".to_owned(), rc)]);
        let a = node_with(&hub, "a", vec![], recovery.clone()).await;
        let b = node_with(&hub, "b", vec![], recovery).await;
        (hub, a, b)
    }

    impl Node {
        /// A new session whose first packet is `connect` (`0/chat,…`); its frames so far drained.
        fn open_with(&self, connect: String) -> Arc<Conn<ConnData>> {
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
            drain(&conn);
            self.engine
                .handler
                .on_message(&conn, Payload::Text(Bytes::from(connect)));
            conn
        }

        /// A fresh socket of `/chat` in `room`: its session, sid and pid.
        fn recoverable(&self, room: &str) -> (Arc<Conn<ConnData>>, String, String) {
            let conn = self.open_with("0/chat,".to_owned());
            let reply = connect_reply(&text(&drain(&conn))[0]);
            let sid = reply["sid"].as_str().unwrap().to_owned();
            let pid = reply["pid"].as_str().unwrap().to_owned();
            self.io
                .get("/chat")
                .unwrap()
                .socket(&sid)
                .unwrap()
                .join(room);
            (conn, sid, pid)
        }

        /// A session coming back for `pid` with the last `offset` it saw.
        fn come_back(&self, pid: &str, offset: &str) -> Arc<Conn<ConnData>> {
            self.open_with(format!(r#"0/chat,{{"pid":"{pid}","offset":"{offset}"}}"#))
        }

        /// Emits `m` with `n` to `/chat`'s room `room`.
        fn emit_m(&self, room: &str, n: i64) {
            self.io
                .of("/chat")
                .to(room)
                .emit("m", Args::new(vec![json!(n)]));
        }
    }

    /// The JSON of a `/chat` CONNECT reply frame.
    fn connect_reply(frame: &str) -> Value {
        serde_json::from_str(&frame["40/chat,".len()..]).unwrap()
    }

    /// The last argument of a `/chat` EVENT frame: its offset.
    fn offset_of(frame: &str) -> String {
        let v: Value = serde_json::from_str(&frame["42/chat,".len()..]).unwrap();
        let last = v.as_array().and_then(|a| a.last()).and_then(Value::as_str);
        last.unwrap().to_owned()
    }

    #[tokio::test]
    async fn a_session_comes_back_on_another_node_with_what_it_missed_once_and_in_order() {
        let (_hub, a, b) = recovery_pair(100).await;
        let (conn, sid, pid) = a.recoverable("room");
        // Emits of a recovery-enabled namespace go through the log, from any node, to the
        // sender's node too; each carries its offset as its last argument.
        b.emit_m("room", 1);
        let first = collect(&conn, 1).await;
        assert!(first[0].starts_with(r#"42/chat,["m",1,""#), "{first:?}");
        let offset = offset_of(&first[0]);
        conn.close(CloseReason::TransportClose);
        b.emit_m("room", 2);
        b.emit_m("room", 3);
        // What the client missed, then the CONNECT reply with its old id and pid, then live.
        let back = b.come_back(&pid, &offset);
        let got = collect(&back, 3).await;
        assert!(got[0].starts_with(r#"42/chat,["m",2,""#), "{got:?}");
        assert!(got[1].starts_with(r#"42/chat,["m",3,""#), "{got:?}");
        assert_eq!(
            got[2],
            format!(r#"40/chat,{{"sid":"{sid}","pid":"{pid}"}}"#)
        );
        b.emit_m("room", 4);
        let live = collect(&back, 1).await;
        assert!(live[0].starts_with(r#"42/chat,["m",4,""#), "{live:?}");
        // Offsets grow along the one order.
        let seqs: Vec<u64> = [&first[0], &got[0], &got[1], &live[0]]
            .iter()
            .map(|f| recovery::parse_offset(&offset_of(f)).unwrap().1)
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        let recovered = b.io.get("/chat").unwrap().socket(&sid).unwrap();
        assert!(recovered.recovered());
        assert_eq!(recovered.rooms(), vec![Room::from("room")]);
        // The session is recovered once: the same pid again is a fresh socket.
        let again = b.come_back(&pid, &offset);
        let fresh = collect(&again, 1).await;
        assert_ne!(connect_reply(&fresh[0])["sid"], sid.as_str());
    }

    #[tokio::test]
    async fn a_replayed_emit_keeps_compress_off() {
        let (hub, a, b) = recovery_pair(100).await;
        let (conn, _sid, pid) = a.recoverable("room");
        b.emit_m("room", 1);
        let offset = offset_of(&collect(&conn, 1).await[0]);
        conn.close(CloseReason::TransportClose);
        // A worker's emits into the log while the client is away, one with compress(false).
        let subject = Subjects::new("t")
            .unwrap()
            .log_room("/chat", "room")
            .unwrap();
        for (packet, uncompressed) in [(r#"42/chat,["off"]"#, true), (r#"42/chat,["on"]"#, false)] {
            let delivery = pb::Delivery {
                origin: "w".into(),
                ns: "/chat".into(),
                target: Some(pb::Target {
                    rooms: vec!["room".into()],
                    ..Default::default()
                }),
                packet: Bytes::from(packet),
                uncompressed,
                ..Default::default()
            };
            let payload = delivery_payload(delivery);
            let bus = hub.client();
            let ack = bus.log_publish(subject.clone(), payload, String::new());
            ack.await.unwrap().await.unwrap();
        }
        let back = b.come_back(&pid, &offset);
        let got = flags(&frames(&back, 2).await);
        assert!(got[0].0.starts_with(r#"42/chat,["off","#), "{got:?}");
        assert_eq!(got[0].1, Compress::Off);
        assert!(got[1].0.starts_with(r#"42/chat,["on","#), "{got:?}");
        assert_eq!(got[1].1, Compress::Allowed);
    }

    #[tokio::test]
    async fn a_room_history_read_up_to_a_join_meets_live_traffic_exactly() {
        let hub = Hub::new();
        let rc = RecoveryConfig {
            window: Duration::from_secs(60),
            max_replay_packets: 100,
            max_replay_bytes: 1 << 20,
        };
        let a = node_with(&hub, "a", vec![], HashMap::from([("/chat".to_owned(), rc)])).await;
        let (_c1, speaker) = a.socket();
        speaker.join("room");
        speaker.join("other");
        let say = |room: &str, n: i64| speaker.to(room).emit("m", Args::new(vec![json!(n)]));
        for n in 1..=5 {
            say("room", n);
        }
        say("other", 99);
        // Wait until the follower has dispatched all six.
        let (_c2, probe) = a.socket();
        probe.join("other");
        let mut end = 0;
        until("six dispatched", || {
            end = a.cluster.hold("/chat", &mut || {}).unwrap();
            end >= 6
        })
        .await;
        let (conn, joiner) = a.socket();
        let at = a
            .cluster
            .hold("/chat", &mut || {
                joiner.join("room");
            })
            .unwrap();
        say("room", 6);
        let rule = crate::config::HistoryRule {
            last: 3,
            max_age: None,
        };
        let history = a
            .cluster
            .room_history("/chat", "room", at, rule)
            .await
            .unwrap();
        let ns: Vec<i64> = history
            .iter()
            .map(|h| h["args"][0].as_i64().unwrap())
            .collect();
        assert_eq!(
            ns,
            [3, 4, 5],
            "the newest three of the room, not the other room's"
        );
        assert!(history.iter().all(|h| h["event"] == "m"));
        let live = collect(&conn, 1).await;
        assert!(live[0].starts_with(r#"42/chat,["m",6,""#), "{live:?}");
        // An age bound that everything is older than gives nothing.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let young = crate::config::HistoryRule {
            last: 3,
            max_age: Some(Duration::from_millis(1)),
        };
        let none = a
            .cluster
            .room_history("/chat", "room", at, young)
            .await
            .unwrap();
        assert!(none.is_empty(), "{none:?}");
    }

    #[tokio::test]
    async fn a_claimed_session_that_cannot_be_replayed_is_handed_back_and_the_client_starts_afresh()
    {
        let (hub, a, b) = recovery_pair(1).await;
        let (conn, sid, pid) = a.recoverable("room");
        b.emit_m("room", 1);
        let offset = offset_of(&collect(&conn, 1).await[0]);
        conn.close(CloseReason::TransportClose);
        b.emit_m("room", 2);
        b.emit_m("room", 3);
        let b_subject = Subjects::new("t").unwrap().member("b").unwrap();
        let mut members = Members::subscribe(&hub.client(), Some(b_subject)).await;
        let back = b.come_back(&pid, &offset);
        // Two missed packets are over the bound of one: a fresh session…
        let got = collect(&back, 1).await;
        assert_ne!(connect_reply(&got[0])["sid"], sid.as_str(), "{got:?}");
        // …and the claimed one handed back: its connect on b, then a recoverable disconnect.
        let mut seen = Vec::new();
        while seen.len() < 2 {
            match members.next().await.body {
                Some(member_message::Body::Connect(i)) if i.id == sid => {
                    assert!(i.recovered);
                    seen.push("connect");
                }
                Some(member_message::Body::Disconnect(d)) if d.id == sid => {
                    assert!(d.recoverable);
                    seen.push("disconnect");
                }
                _ => {}
            }
        }
        assert_eq!(seen, ["connect", "disconnect"]);
    }
}
