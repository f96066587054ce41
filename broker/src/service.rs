//! The broker service: the NATS adapter around the [`Directory`].
//!
//! One task (the worker) owns the bus side: it reads every gateway's membership messages and
//! heartbeats, reassembles snapshots, asks for snapshots when a node's sequence shows a gap,
//! expires silent nodes every half heartbeat, ends kept sessions past their window every second
//! (connection state recovery), broadcasts one resync per link generation (at start if the link
//! is up, else when it comes up; again whenever it comes back), and — while this broker leads —
//! answers room capacity reservations and session claims (`broker.recover`, with a `Takeover`
//! command to the node still holding the socket, answered when that settles) and announces
//! presence changes in the order the directory produced them. Because a single task applies
//! everything, the directory sees one node's messages in bus order and reservations and claims
//! serialised with them.
//!
//! The rebuild is paced (docs/cluster.md, "Snapshots and the paced rebuild"): the resync only
//! asks the gateways to announce themselves (a heartbeat at once); every node heard from that has
//! not sent its state since the resync — and every node whose sequence shows a gap — is queued in
//! the [`Pacer`], which asks for snapshots a few nodes at a time in windows, with at most
//! [`RebuildConfig::budget_bytes`] of parts in flight. While a node's paced snapshot (taken at
//! sequence S) is arriving, that node's membership events (sequence > S, published between the
//! windows) are held back, and applied in order right after the snapshot; held events past
//! [`RebuildConfig::max_held_events`] give the snapshot up instead (they are applied, the gap
//! asks again).
//!
//! A membership batch (`MemberBatch`: several messages of one node in one bus message) is
//! checked whole first (`convert::member_batch`: no nested batch, every entry of the batch's
//! node and epoch; otherwise it is malformed and none of it is applied), then its entries are
//! handled in order, each exactly as if it had come alone: sequence numbers, gaps, held events
//! and presence are per entry. A batch is one bus message, so at most `max_payload` of work.
//!
//! Presence goes out in batches too (docs/cluster.md, "Presence in batches";
//! [`BrokerConfig::presence_batches`]): the announcements of one call to `announce` are
//! published per namespace, in order, as few messages as `max_payload` allows, a lone one
//! unwrapped. The changes of a whole membership batch, and of held events released together,
//! are gathered while they are applied and announced once after them, in the order they were
//! made; gathering and each round of publishing are bounded by `MAX_CHANGES_A_ROUND` changes.
//!
//! Gaps are not guessed from queueing: a heartbeat is applied only after every membership message
//! already received has been (the membership subscription is drained first; a gateway publishes
//! both through one connection, in order), so a heartbeat can be "ahead" only of messages that
//! were lost.
//!
//! The directory lives behind a std mutex shared with readers ([`Broker::state_json`], the admin
//! API); the lock is never held across an `.await`. Leadership comes from [`crate::leader`].
//!
//! Start order matters: the membership and heartbeat subscriptions exist before the first resync
//! request goes out, so no gateway's answer can be missed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt as _;
use parking_lot::Mutex;
use switchboard_bus::{Bus, Link, Message, Subscription};
use switchboard_proto::Message as _;
use switchboard_proto::bus;
use switchboard_proto::subject::{Parsed, Subjects};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::convert;
use crate::error::BrokerError;
use crate::leader::{self, LeaderMode};
use crate::metrics as m;
use crate::snapshot::{self, Assembler, Outcome, Paced, Pacer};
use crate::state::{
    Applied, Change, Claim, Directory, MemberEvent, NodeInfo, PID_HASH_BYTES, Reason, ReserveError,
    Reserved, SocketState,
};

/// The longest `RecoverRequest` payload answered (bytes); longer ones are malformed.
pub const MAX_RECOVER_REQUEST_BYTES: usize = 1024;
/// The sessions tick: kept sessions' windows, claims' leases and takeovers' deadlines are checked
/// this often (or more often, for a takeover timeout under 2 s).
const SESSIONS_TICK: Duration = Duration::from_secs(1);
/// Membership events of one node held back while its paced snapshot arrives, by default; past
/// this the snapshot is given up (the events are applied, and the gap asks again).
pub const MAX_HELD_EVENTS: usize = 100_000;
/// Membership messages applied ahead of one heartbeat at most; past this the heartbeat renews
/// the lease but its sequence number is not compared (the subscription was not drained).
const MAX_DRAIN: usize = 65_536;
/// Changes turned into presence messages at once at most: a purge of a large node announces in
/// rounds of this many (each round's messages built and published before the next), and
/// [gathering](Worker::gather) holds no more than this many before they go out.
const MAX_CHANGES_A_ROUND: usize = 4096;
/// A started snapshot with no part for this long (and at least 4 heartbeat intervals) is given
/// up and asked again: its request or a part was lost.
const MIN_STALL: Duration = Duration::from_secs(2);

/// How a broker paces its rebuild (docs/configuration.md, `[broker] snapshot_budget_bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RebuildConfig {
    /// Snapshot bytes asked of the gateways and not yet received, at most (raised to one bus
    /// payload if smaller: a gateway always sends at least one part).
    pub budget_bytes: usize,
    /// Membership events of one node held back while its paced snapshot arrives, at most
    /// ([`MAX_HELD_EVENTS`] by default); one more gives the snapshot up (the held events are
    /// applied, and the gap asks again), so a node that keeps publishing cannot make the
    /// broker hold an unbounded queue.
    pub max_held_events: usize,
}

impl Default for RebuildConfig {
    fn default() -> Self {
        Self {
            budget_bytes: snapshot::DEFAULT_BUDGET_BYTES,
            max_held_events: MAX_HELD_EVENTS,
        }
    }
}

/// What the paced rebuild is doing, for tests and embedders (the same figures are metrics:
/// docs/operations.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RebuildStats {
    /// The budget in force (bytes).
    pub budget_bytes: usize,
    /// Snapshot bytes asked for and not yet received.
    pub in_flight_bytes: usize,
    /// The most snapshot bytes ever in flight at once.
    pub max_in_flight_bytes: usize,
    /// Nodes waiting for their snapshot turn or sending.
    pub nodes_pending: usize,
    /// Resyncs broadcast.
    pub resyncs: u64,
    /// Rebuilds completed (a resync, then every node's state received).
    pub rebuilds: u64,
    /// How long the last completed rebuild took.
    pub last_rebuild: Option<Duration>,
}

/// Connection state recovery settings of a broker (docs/recovery.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// How long a claim for a socket still connected on its old node waits for that node's
    /// recoverable disconnect before the socket is treated as lost (`node_lost`) and granted.
    pub takeover_timeout: Duration,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            takeover_timeout: Duration::from_secs(2),
        }
    }
}

/// What a broker needs to start.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// This broker's id (in snapshot and resync requests, and the leader lease).
    pub id: String,
    /// The cluster's subject prefix.
    pub prefix: String,
    /// A node silent for this long is lost; also the leader lease's TTL.
    pub lease: Duration,
    /// The gateways' heartbeat interval: paces expiry checks and snapshot request retries.
    pub heartbeat: Duration,
    /// How the leader is chosen.
    pub leader: LeaderMode,
    /// Whether the leader publishes the announcements of one change as batches, one bus
    /// message per namespace (`[cluster] presence_batches`; off while gateways or workers older
    /// than presence batches run: they drop batches).
    pub presence_batches: bool,
}

/// A running broker (cheap to clone; every clone is the same broker).
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    bus: Bus,
    directory: Arc<Mutex<Directory>>,
    leader: watch::Receiver<bool>,
    presence_batches: bool,
    stats: Arc<Mutex<RebuildStats>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("id", &self.inner.id)
            .field("leader", &self.is_leader())
            .finish()
    }
}

impl Broker {
    /// Subscribes, asks every gateway for its state, and spawns the broker's tasks (recovery
    /// settings by default).
    pub async fn start(bus: Bus, cfg: BrokerConfig) -> Result<Broker, BrokerError> {
        Self::start_with(bus, cfg, RecoveryConfig::default()).await
    }

    /// [`Broker::start`] with recovery settings.
    pub async fn start_with(
        bus: Bus,
        cfg: BrokerConfig,
        recovery: RecoveryConfig,
    ) -> Result<Broker, BrokerError> {
        Self::start_tuned(bus, cfg, recovery, RebuildConfig::default()).await
    }

    /// [`Broker::start_with`] with rebuild settings.
    pub async fn start_tuned(
        bus: Bus,
        cfg: BrokerConfig,
        recovery: RecoveryConfig,
        rebuild: RebuildConfig,
    ) -> Result<Broker, BrokerError> {
        let subjects =
            Subjects::new(&cfg.prefix).map_err(|e| BrokerError::Config(e.to_string()))?;
        if cfg.id.is_empty() {
            return Err(BrokerError::Config("empty broker id".into()));
        }
        if cfg.heartbeat.is_zero() || cfg.lease <= cfg.heartbeat {
            return Err(BrokerError::Config(format!(
                "the lease ({:?}) must exceed the heartbeat interval ({:?}), which must not be 0",
                cfg.lease, cfg.heartbeat
            )));
        }
        if recovery.takeover_timeout.is_zero()
            || recovery.takeover_timeout > Duration::from_secs(60)
        {
            return Err(BrokerError::Config(format!(
                "the takeover timeout ({:?}) must be over 0 and at most 60 s",
                recovery.takeover_timeout
            )));
        }
        let store = match cfg.leader {
            LeaderMode::KvLease => Some(leader::open(&bus, &cfg.prefix, cfg.lease).await?),
            LeaderMode::Always | LeaderMode::Never => None,
        };
        let (leader_tx, leader_rx) = watch::channel(cfg.leader == LeaderMode::Always);
        let leader_tx = Arc::new(leader_tx);

        let members = bus.subscribe(subjects.all_members()).await?;
        let heartbeats = bus.subscribe(subjects.all_heartbeats()).await?;
        let (reserve, recover) = if *leader_rx.borrow() {
            (
                Some(bus.subscribe(subjects.reserve()).await?),
                Some(bus.subscribe(subjects.recover()).await?),
            )
        } else {
            (None, None)
        };
        let link = bus.link();
        let first_link = *link.borrow();
        let pacer = Pacer::new(rebuild.budget_bytes, bus.max_payload());
        let stats = Arc::new(Mutex::new(RebuildStats {
            budget_bytes: pacer.budget(),
            ..RebuildStats::default()
        }));

        let directory = Arc::new(Mutex::new(Directory::new(cfg.lease)));
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut worker = Worker {
            id: cfg.id.clone(),
            bus: bus.clone(),
            subjects,
            heartbeat: cfg.heartbeat,
            directory: directory.clone(),
            assembler: Assembler::new(),
            pacer,
            held: HashMap::new(),
            max_held: rebuild.max_held_events,
            synced: HashSet::new(),
            rebuild_since: None,
            cold: true,
            unheard: HashSet::new(),
            stall: (cfg.heartbeat * 4).max(MIN_STALL),
            stats: stats.clone(),
            leader: leader_rx.clone(),
            presence_batches: cfg.presence_batches,
            gathered: None,
            reserve,
            recover,
            takeover_timeout: recovery.takeover_timeout,
            pending: HashMap::new(),
            link,
            resynced: None,
            _leader_tx: leader_tx.clone(),
        };
        if resync_due(&mut worker.resynced, first_link) {
            worker.resync().await;
        }
        metrics::gauge!(m::LEADER).set(if *leader_rx.borrow() { 1.0 } else { 0.0 });
        tracker.spawn(worker.run(members, heartbeats, cancel.clone()));
        if let Some(store) = store {
            let (id, ttl, cancel) = (cfg.id.clone(), cfg.lease, cancel.clone());
            tracker.spawn(async move { leader::run(store, id, ttl, &leader_tx, cancel).await });
        }
        tracing::info!(broker = %cfg.id, prefix = %cfg.prefix, leader = ?cfg.leader, "broker started");
        Ok(Broker {
            inner: Arc::new(Inner {
                id: cfg.id,
                bus,
                directory,
                leader: leader_rx,
                presence_batches: cfg.presence_batches,
                stats,
                cancel,
                tracker,
            }),
        })
    }

    /// What the paced rebuild is doing now.
    pub fn rebuild_stats(&self) -> RebuildStats {
        *self.inner.stats.lock()
    }

    /// This broker's id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The `/v1/state` document: this broker, its nodes and every connected socket, sorted by
    /// id, and (when there are any) the kept sessions, as `kept_sessions`.
    pub fn state_json(&self) -> serde_json::Value {
        let dir = self.inner.directory.lock();
        let nodes: Vec<serde_json::Value> = dir
            .stats()
            .nodes
            .into_iter()
            .map(|n| {
                serde_json::json!({
                    "id": n.id,
                    "epoch": n.epoch,
                    "seq": n.last_seq,
                    "sockets": n.sockets,
                    "connections": n.connections,
                    "address": n.address,
                })
            })
            .collect();
        let mut sockets: Vec<_> = dir.sockets().collect();
        sockets.sort_unstable_by(|a, b| a.id().cmp(b.id()));
        let sockets: Vec<serde_json::Value> = sockets
            .into_iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id(),
                    "ns": s.ns(),
                    "node": s.node(),
                    "user": s.user(),
                    "rooms": s.rooms().collect::<Vec<_>>(),
                })
            })
            .collect();
        // Kept sessions: never their pid hash.
        let now = now();
        let mut kept: Vec<_> = dir.kept_sessions().collect();
        kept.sort_unstable_by(|a, b| a.0.id().cmp(b.0.id()));
        let kept: Vec<serde_json::Value> = kept
            .into_iter()
            .map(|(s, k)| {
                serde_json::json!({
                    "id": s.id(),
                    "ns": s.ns(),
                    "last_node": s.node(),
                    "user": s.user(),
                    "rooms": s.rooms().collect::<Vec<_>>(),
                    "state": if k.claim.is_some() { "claimed" } else { "disconnected" },
                    "reason": k.reason.as_str(),
                    "expires_in_ms": u64::try_from(
                        k.expires.saturating_duration_since(now).as_millis()
                    ).unwrap_or(u64::MAX),
                })
            })
            .collect();
        let mut doc = serde_json::json!({
            "broker": self.inner.id,
            "leader": self.is_leader(),
            "nodes": nodes,
            "sockets": sockets,
        });
        // Only when there are some, so the document is unchanged without recovery.
        if !kept.is_empty() {
            doc["kept_sessions"] = serde_json::Value::Array(kept);
        }
        doc
    }

    /// Sets the directory gauges (sockets, rooms, users, nodes) from the directory as it is now;
    /// called before every render of `/metrics`, so a scrape shows the state, not an estimate.
    pub fn record_gauges(&self) {
        record_gauges(&self.inner.directory.lock());
    }

    /// The directory, for queries (never hold the lock across an `.await`).
    pub fn directory(&self) -> Arc<Mutex<Directory>> {
        self.inner.directory.clone()
    }

    /// Whether this broker announces presence in batches ([`BrokerConfig::presence_batches`]).
    pub fn presence_batches(&self) -> bool {
        self.inner.presence_batches
    }

    /// Whether this broker leads now.
    pub fn is_leader(&self) -> bool {
        *self.inner.leader.borrow()
    }

    /// Watches leadership changes.
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.inner.leader.clone()
    }

    /// Stops the broker's tasks (releasing the leader lease) and flushes the bus. Idempotent.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        // With NATS gone a flush waits for a reconnect that may never come: bounded.
        match tokio::time::timeout(Duration::from_secs(2), self.inner.bus.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "flush at shutdown failed"),
            Err(_) => tracing::warn!("bus not flushed at shutdown: NATS unreachable"),
        }
        tracing::info!(broker = %self.inner.id, "broker stopped");
    }
}

/// The clock, from tokio so that tests with a paused clock control leases.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The task that owns the bus side. See the module docs.
struct Worker {
    id: String,
    bus: Bus,
    subjects: Subjects,
    heartbeat: Duration,
    directory: Arc<Mutex<Directory>>,
    assembler: Assembler,
    /// Who is asked for a snapshot next, and how much.
    pacer: Pacer,
    /// Events held back per node while its paced snapshot arrives.
    held: HashMap<String, Held>,
    /// The most events held for one node ([`RebuildConfig::max_held_events`]).
    max_held: usize,
    /// Nodes whose full state arrived since the last resync; any other node heard from is
    /// queued for a snapshot.
    synced: HashSet<String>,
    /// When the rebuild under way began (the resync).
    rebuild_since: Option<Instant>,
    /// This broker's first rebuild (its directory started empty) is not complete yet.
    cold: bool,
    /// Nodes first heard of while `cold` with their history behind them (a heartbeat past
    /// sequence 0, an event past 1, a snapshot): their first snapshot tells this broker what was
    /// already true, not what changed, so its presence changes are not announced (a restarted
    /// broker would otherwise announce every user online and in every room again). Emptied when
    /// the first rebuild completes.
    unheard: HashSet<String>,
    /// How long a started snapshot may go without a part.
    stall: Duration,
    stats: Arc<Mutex<RebuildStats>>,
    leader: watch::Receiver<bool>,
    /// [`BrokerConfig::presence_batches`].
    presence_batches: bool,
    /// While a membership batch is applied (or held events released), the changes to announce
    /// once it is done, in order; `None` otherwise (changes are announced as they come).
    gathered: Option<Vec<Change>>,
    /// Held while leading.
    reserve: Option<Subscription>,
    /// Held while leading.
    recover: Option<Subscription>,
    takeover_timeout: Duration,
    /// Claims waiting for a takeover: socket id → where to answer.
    pending: HashMap<String, Option<String>>,
    link: watch::Receiver<Link>,
    /// The link generation the last resync was sent for.
    resynced: Option<u64>,
    /// Keeps the leadership watch open whatever the election does.
    _leader_tx: Arc<watch::Sender<bool>>,
}

impl Worker {
    async fn run(
        mut self,
        mut members: Subscription,
        mut heartbeats: Subscription,
        cancel: CancellationToken,
    ) {
        let mut expiry = tokio::time::interval(self.heartbeat / 2);
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let tick = SESSIONS_TICK
            .min(self.takeover_timeout / 2)
            .max(Duration::from_millis(10));
        let mut sessions = tokio::time::interval(tick);
        sessions.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut link_open = true;
        let mut leader_open = true;
        loop {
            // Every branch is cancel-safe: subscription reads, watch changes, interval ticks.
            tokio::select! {
                () = cancel.cancelled() => break,
                msg = members.next() => match msg {
                    Some(msg) => self.on_member(msg).await,
                    None => {
                        tracing::warn!("membership subscription closed; broker worker stops");
                        break;
                    }
                },
                msg = heartbeats.next() => match msg {
                    Some(msg) => {
                        let drained = self.drain(&mut members).await;
                        self.on_heartbeat(msg, drained).await;
                    }
                    None => {
                        tracing::warn!("heartbeat subscription closed; broker worker stops");
                        break;
                    }
                },
                msg = next_or_pending(&mut self.reserve) => match msg {
                    Some(msg) => self.on_reserve(msg).await,
                    None => {
                        tracing::warn!("reserve subscription closed");
                        self.reserve = None;
                    }
                },
                msg = next_or_pending(&mut self.recover) => match msg {
                    Some(msg) => self.on_recover(msg).await,
                    None => {
                        tracing::warn!("recover subscription closed");
                        self.recover = None;
                    }
                },
                _ = expiry.tick() => self.expire().await,
                _ = sessions.tick() => self.expire_sessions().await,
                changed = self.link.changed(), if link_open => match changed {
                    Ok(()) => self.on_link().await,
                    Err(_) => link_open = false,
                },
                changed = self.leader.changed(), if leader_open => match changed {
                    Ok(()) => self.on_leadership().await,
                    Err(_) => leader_open = false,
                },
            }
        }
    }

    fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    async fn on_member(&mut self, msg: Message) {
        let node = match self.subjects.parse(&msg.subject) {
            Ok(Parsed::Member { node }) => node,
            _ => return malformed("member subject", &msg.subject),
        };
        let bytes = msg.payload.len();
        let message = match bus::MemberMessage::decode(msg.payload) {
            Ok(message) => message,
            Err(e) => return malformed("member message", &e),
        };
        if !message.node.is_empty() && message.node != node {
            return malformed("member message node", &message.node);
        }
        use bus::member_message::Body;
        let bus::MemberMessage {
            node: named,
            epoch,
            seq,
            body,
        } = message;
        let Some(Body::Batch(batch)) = body else {
            return self.on_member_message(&node, epoch, seq, body, bytes).await;
        };
        // Checked whole before any of it is applied: a batch is applied entirely or not at all.
        let entries = match convert::member_batch(&named, epoch, batch) {
            Ok(entries) => entries,
            Err(e) => return malformed("member batch", &e),
        };
        metrics::counter!(m::MEMBER_BATCHES).increment(1);
        // The batch's announcements go out together once it is applied, in the order its
        // entries made them.
        let outer = self.gather();
        for entry in entries {
            // A snapshot part counts against its window by the bytes it takes alone.
            let bytes = match entry.body {
                Some(Body::Snapshot(_)) => entry.encoded_len(),
                _ => 0,
            };
            self.on_member_message(&node, entry.epoch, entry.seq, entry.body, bytes)
                .await;
        }
        self.gathered(outer).await;
    }

    /// One membership message of `node` (alone on the bus, or an entry of a batch), `bytes`
    /// long as it was sent.
    async fn on_member_message(
        &mut self,
        node: &str,
        epoch: u64,
        seq: u64,
        body: Option<bus::member_message::Body>,
        bytes: usize,
    ) {
        let Some(body) = body else {
            return malformed("member message body", &"missing");
        };
        let now = now();
        use bus::member_message::Body;
        self.first_heard(node, seq > 1 || matches!(body, Body::Snapshot(_)));
        match body {
            Body::Snapshot(part) => {
                self.on_part(node.to_owned(), epoch, seq, part, bytes, now)
                    .await;
            }
            // Only an entry can reach here as a batch, and entries are checked not to be.
            Body::Batch(_) => malformed("member batch", &convert::BatchError::Nested),
            Body::Leaving(_) => {
                self.forget_node(node);
                let changes = {
                    let mut dir = self.directory.lock();
                    (dir.node_epoch(node) == Some(epoch))
                        .then(|| dir.remove_node(node, Reason::NodeLeft, now))
                };
                if let Some(changes) = changes {
                    metrics::counter!(m::MESSAGES_APPLIED, "kind" => "leaving").increment(1);
                    metrics::counter!(m::NODES_LEFT).increment(1);
                    tracing::info!(%node, epoch, "gateway node left");
                    self.announce(changes).await;
                }
                self.settle().await;
                self.grant(now).await;
            }
            body => {
                let kind = match &body {
                    Body::Connect(_) => "connect",
                    Body::Disconnect(_) => "disconnect",
                    Body::Join(_) => "join",
                    Body::Data(_) => "data",
                    _ => "leave",
                };
                let Some(event) = convert::member_event(node, body) else {
                    return malformed("member event", &kind);
                };
                // While the node's paced snapshot arrives, its events (after the snapshot's
                // sequence number) wait for it.
                let event = match self.held.get_mut(node) {
                    Some(held) if held.epoch == epoch && held.events.len() < self.max_held => {
                        held.events.push((seq, event, kind));
                        return;
                    }
                    Some(_) => {
                        // Another epoch (the node restarted) or too many held: the snapshot is
                        // given up, what was held is applied first.
                        tracing::debug!(%node, epoch, "paced snapshot given up for held events");
                        self.give_up(node, now).await;
                        event
                    }
                    None => event,
                };
                // By the contract no event falls between two parts of a snapshot that was not
                // paced.
                self.assembler.forget(node);
                self.apply_event(node, epoch, seq, event, kind, now).await;
                self.grant(now).await;
            }
        }
    }

    /// Applies one membership event to the directory and follows up.
    async fn apply_event(
        &mut self,
        node: &str,
        epoch: u64,
        seq: u64,
        event: MemberEvent,
        kind: &'static str,
        now: Instant,
    ) {
        let (applied, resumed) = {
            let mut dir = self.directory.lock();
            let was_kept = match &event {
                MemberEvent::Connect(rec) => matches!(
                    dir.state(&rec.id),
                    Some(SocketState::Kept(_) | SocketState::Claimed(_))
                )
                .then(|| rec.id.clone()),
                _ => None,
            };
            let applied = dir.apply(node, epoch, seq, event, now);
            let resumed =
                was_kept.is_some_and(|id| matches!(dir.state(&id), Some(SocketState::Connected)));
            (applied, resumed)
        };
        if resumed {
            metrics::counter!(m::SESSIONS_RECOVERED).increment(1);
        }
        metrics::counter!(m::MESSAGES_APPLIED, "kind" => kind).increment(1);
        if applied.need_snapshot {
            metrics::counter!(m::SEQUENCE_GAPS).increment(1);
            tracing::debug!(%node, epoch, seq, "sequence gap");
        }
        self.after(node, applied).await;
    }

    /// One snapshot part: accounted by the pacer if it answers this broker's request, assembled,
    /// and applied (then the events held meanwhile) once whole.
    async fn on_part(
        &mut self,
        node: String,
        epoch: u64,
        seq: u64,
        part: bus::SnapshotPart,
        bytes: usize,
        now: Instant,
    ) {
        // Another broker's paced snapshot comes in windows this one does not ask for.
        if !part.broker.is_empty() && part.broker != self.id {
            return;
        }
        metrics::counter!(m::SNAPSHOT_BYTES).increment(bytes as u64);
        let got = snapshot::Received {
            request_id: part.request_id,
            part: part.part,
            bytes,
            paused: part.paused,
            last: part.last,
        };
        let paced = self.pacer.part(&node, got, now);
        // A part of one of this broker's own earlier requests (given up since) is stale.
        if paced == Paced::Other && part.broker == self.id {
            return;
        }
        let first = part.part == 0;
        let part = convert::snapshot_part(&node, epoch, seq, part);
        let request_id = part.request_id;
        match self.assembler.part(&node, part) {
            Outcome::Pending => {
                if paced == Paced::Ours && first {
                    // From here on the node's events are newer than the snapshot: held back.
                    self.assembler.forget_except(&node, epoch, request_id);
                    let earlier = self.held.insert(
                        node.clone(),
                        Held {
                            epoch,
                            events: Vec::new(),
                        },
                    );
                    if let Some(earlier) = earlier {
                        self.release(&node, earlier, now).await;
                    }
                }
            }
            Outcome::Dropped => {
                metrics::counter!(m::SNAPSHOTS_DROPPED).increment(1);
                tracing::debug!(%node, "snapshot part out of order; snapshot dropped");
                if paced == Paced::Ours {
                    self.give_up(&node, now).await;
                    self.pacer.want(&node);
                }
            }
            Outcome::Complete {
                epoch,
                seq,
                sockets,
            } => {
                let count = sockets.len();
                // What was already true when this broker started is not news, and a broker that
                // does not lead announces nothing: then no changes are made at all.
                let quiet = self.unheard.remove(&node) || !self.is_leader();
                let applied = {
                    let mut directory = self.directory.lock();
                    if quiet {
                        directory.snapshot_quietly(&node, epoch, seq, sockets, now)
                    } else {
                        directory.snapshot(&node, epoch, seq, sockets, now)
                    }
                };
                metrics::counter!(m::MESSAGES_APPLIED, "kind" => "snapshot").increment(1);
                tracing::debug!(%node, epoch, seq, sockets = count, quiet, "snapshot applied");
                self.synced.insert(node.clone());
                self.after(&node, applied).await;
                if paced == Paced::Ours
                    && let Some(held) = self.held.remove(&node)
                {
                    self.release(&node, held, now).await;
                }
            }
        }
        self.grant(now).await;
        self.check_rebuild(now);
    }

    /// Applies the events held for `node`, in order (their announcements gathered).
    async fn release(&mut self, node: &str, held: Held, now: Instant) {
        let outer = self.gather();
        for (seq, event, kind) in held.events {
            self.apply_event(node, held.epoch, seq, event, kind, now)
                .await;
        }
        self.gathered(outer).await;
    }

    /// Gives up `node`'s paced snapshot: its assembly and turn end, its held events are applied.
    async fn give_up(&mut self, node: &str, now: Instant) {
        self.assembler.forget(node);
        self.pacer.finish(node);
        if let Some(held) = self.held.remove(node) {
            self.release(node, held, now).await;
        }
    }

    /// Forgets everything about a node that went away.
    fn forget_node(&mut self, node: &str) {
        self.assembler.forget(node);
        self.pacer.finish(node);
        self.held.remove(node);
        self.synced.remove(node);
    }

    /// Applies every membership message already received, so that a heartbeat is compared with
    /// a directory that is not behind merely because messages are queued. Whether the
    /// subscription was drained (not if more than [`MAX_DRAIN`] kept coming).
    async fn drain(&mut self, members: &mut Subscription) -> bool {
        for _ in 0..MAX_DRAIN {
            // `next` is cancel-safe: a message is either returned or left queued. Unconstrained:
            // tokio's cooperative budget would otherwise report an empty queue after a hundred
            // or so messages.
            match tokio::task::unconstrained(members.next()).now_or_never() {
                Some(Some(msg)) => self.on_member(msg).await,
                Some(None) | None => return true,
            }
        }
        false
    }

    async fn on_heartbeat(&mut self, msg: Message, drained: bool) {
        let node = match self.subjects.parse(&msg.subject) {
            Ok(Parsed::Heartbeat { node }) => node,
            _ => return malformed("heartbeat subject", &msg.subject),
        };
        let beat = match bus::Heartbeat::decode(msg.payload) {
            Ok(beat) => beat,
            Err(e) => return malformed("heartbeat", &e),
        };
        if !beat.node.is_empty() && beat.node != node {
            return malformed("heartbeat node", &beat.node);
        }
        let now = now();
        self.first_heard(&node, beat.seq > 0);
        let info = NodeInfo {
            address: beat.address,
            connections: beat.connections,
        };
        let mut applied = self
            .directory
            .lock()
            .heartbeat(&node, beat.epoch, beat.seq, info, now);
        metrics::counter!(m::MESSAGES_APPLIED, "kind" => "heartbeat").increment(1);
        // Not drained: messages the heartbeat counts may still be queued.
        applied.need_snapshot &= drained;
        // A node heard from whose state has not arrived since the resync, or whose link came
        // back (it may have lost messages): its turn comes.
        if beat.rejoined {
            self.synced.remove(&node);
        }
        if !self.synced.contains(&node) && self.directory.lock().node_epoch(&node).is_some() {
            self.pacer.want(&node);
        }
        self.after(&node, applied).await;
        self.grant(now).await;
    }

    async fn on_reserve(&mut self, msg: Message) {
        let request = match bus::ReserveRequest::decode(msg.payload) {
            Ok(request) => request,
            Err(e) => return malformed("reserve request", &e),
        };
        let max = usize::try_from(request.max_members).unwrap_or(usize::MAX);
        let result =
            self.directory
                .lock()
                .reserve(&request.ns, &request.room, &request.socket_id, max);
        use bus::reserve_reply::Outcome as Wire;
        let (outcome, label, changes) = match result {
            Ok(Reserved::Joined(changes)) => (Wire::Joined, "joined", changes),
            Ok(Reserved::AlreadyMember) => (Wire::AlreadyMember, "already_member", Vec::new()),
            Err(ReserveError::RoomFull) => (Wire::Full, "full", Vec::new()),
            Err(ReserveError::UnknownSocket) => (Wire::UnknownSocket, "unknown_socket", Vec::new()),
        };
        metrics::counter!(m::RESERVATIONS, "outcome" => label).increment(1);
        if let Some(reply) = msg.reply {
            let payload = bus::ReserveReply {
                outcome: outcome as i32,
            }
            .encode_to_vec();
            self.publish(reply, payload).await;
        }
        self.announce(changes).await;
    }

    async fn expire(&mut self) {
        let now = now();
        let lost = {
            let mut dir = self.directory.lock();
            let lost = dir.expire(now);
            record_gauges(&dir);
            lost
        };
        for (node, changes) in lost {
            metrics::counter!(m::NODES_LOST).increment(1);
            tracing::info!(%node, purged = changes.len(), "gateway node lost (lease expired)");
            self.forget_node(&node);
            self.announce(changes).await;
        }
        self.settle().await;
        // A request or part that was lost: the node is asked again from the start.
        for node in self.pacer.stalled(now, self.stall) {
            tracing::debug!(%node, "snapshot stalled; asking again");
            self.give_up(&node, now).await;
            if self.directory.lock().node_epoch(&node).is_some() {
                self.pacer.want(&node);
            }
        }
        self.grant(now).await;
        self.check_rebuild(now);
    }

    /// Ends kept sessions past their window (announcing their departure), lapses claims and
    /// times out takeovers. Every broker applies it; only the leader announces and answers.
    async fn expire_sessions(&mut self) {
        let (changes, ended) = self.directory.lock().expire_sessions(now());
        if ended > 0 {
            metrics::counter!(m::SESSIONS_EXPIRED).increment(ended as u64);
            tracing::debug!(ended, "kept sessions expired");
        }
        self.announce(changes).await;
        self.settle().await;
    }

    /// Answers a claim on a kept session (`broker.recover`, leader only). A socket still
    /// connected elsewhere is taken over first: its node is told to close it, and the claim is
    /// answered when that settles ([`Worker::settle`]).
    async fn on_recover(&mut self, msg: Message) {
        if msg.payload.len() > MAX_RECOVER_REQUEST_BYTES {
            return malformed("recover request size", &msg.payload.len());
        }
        let request = match bus::RecoverRequest::decode(msg.payload) {
            Ok(request) => request,
            Err(e) => return malformed("recover request", &e),
        };
        // The claimant must be a node name a subject can carry, the hash a SHA-256.
        if request.pid_hash.len() != PID_HASH_BYTES
            || request.ns.is_empty()
            || self.subjects.command_node(&request.node).is_err()
        {
            return malformed("recover request fields", &request.node.len());
        }
        let claim = self.directory.lock().claim(
            &request.ns,
            &request.pid_hash,
            &request.node,
            now(),
            self.takeover_timeout,
        );
        match claim {
            Claim::Takeover { id, old_node } => {
                tracing::debug!(socket = %id, %old_node, "claim needs a takeover");
                self.pending.insert(id.clone(), msg.reply);
                let command = bus::Envelope {
                    body: Some(bus::envelope::Body::Command(bus::Command {
                        origin: self.id.clone(),
                        ns: request.ns,
                        target: Some(bus::Target {
                            socket_ids: vec![id],
                            ..Default::default()
                        }),
                        action: Some(bus::command::Action::Takeover(bus::Takeover {})),
                    })),
                };
                // `old_node` is a registered node: its name came from a parsed subject.
                if let Ok(subject) = self.subjects.command_node(&old_node) {
                    self.publish(subject, command.encode_to_vec()).await;
                }
            }
            claim => self.answer_claim(msg.reply, claim).await,
        }
    }

    /// Answers the claims whose takeover settled.
    async fn settle(&mut self) {
        let grants = self.directory.lock().take_grants();
        for grant in grants {
            if let Some(reply) = self.pending.remove(&grant.id) {
                tracing::debug!(socket = %grant.id, node = %grant.node, "takeover settled");
                self.answer_claim(reply, grant.claim).await;
            }
        }
    }

    async fn answer_claim(&self, reply: Option<String>, claim: Claim) {
        use bus::recover_reply::Outcome as Wire;
        let (outcome, label, socket) = match claim {
            Claim::Recovered(rec) => (
                Wire::Recovered,
                "recovered",
                Some(convert::socket_info(&rec)),
            ),
            Claim::Unknown => (Wire::Unknown, "unknown", None),
            Claim::Expired => (Wire::Expired, "expired", None),
            Claim::Busy | Claim::Takeover { .. } => (Wire::Busy, "busy", None),
        };
        metrics::counter!(m::RECOVER_REQUESTS, "outcome" => label).increment(1);
        if let Some(reply) = reply {
            let payload = bus::RecoverReply {
                outcome: outcome as i32,
                socket,
            }
            .encode_to_vec();
            self.publish(reply, payload).await;
        }
    }

    async fn on_link(&mut self) {
        let link = *self.link.borrow_and_update();
        if resync_due(&mut self.resynced, link) {
            tracing::info!(generation = link.generation, "bus link up; resyncing");
            self.resync().await;
        }
    }

    async fn on_leadership(&mut self) {
        let leading = *self.leader.borrow_and_update();
        metrics::gauge!(m::LEADER).set(if leading { 1.0 } else { 0.0 });
        if leading && self.reserve.is_none() {
            match self.bus.subscribe(self.subjects.reserve()).await {
                Ok(sub) => self.reserve = Some(sub),
                Err(e) => tracing::warn!(error = %e, "cannot take the reserve subscription"),
            }
        } else if !leading {
            self.reserve = None;
        }
        if leading && self.recover.is_none() {
            match self.bus.subscribe(self.subjects.recover()).await {
                Ok(sub) => self.recover = Some(sub),
                Err(e) => tracing::warn!(error = %e, "cannot take the recover subscription"),
            }
        } else if !leading {
            self.recover = None;
            // Claims waiting for a takeover go unanswered: their gateways time out and start
            // fresh sessions.
            self.pending.clear();
        }
    }

    /// Notes `node` as [unheard](Worker::unheard) if this broker is cold, does not know it yet,
    /// and `behind` (the message shows history this broker did not see).
    fn first_heard(&mut self, node: &str, behind: bool) {
        if self.cold && behind && self.directory.lock().node_epoch(node).is_none() {
            self.unheard.insert(node.to_owned());
        }
    }

    /// Follows up on what a node's message did: a snapshot queued if needed, announcements.
    async fn after(&mut self, node: &str, applied: Applied) {
        if applied.need_snapshot {
            self.pacer.want(node);
        }
        self.announce(applied.changes).await;
        self.settle().await;
    }

    /// Sends the snapshot requests the budget allows now.
    async fn grant(&mut self, now: Instant) {
        for ask in self.pacer.grant(now) {
            let payload = bus::SnapshotRequest {
                broker: self.id.clone(),
                request_id: ask.request_id,
                window_bytes: ask.window_bytes,
                from_part: ask.from_part,
            }
            .encode_to_vec();
            metrics::counter!(m::SNAPSHOT_REQUESTS).increment(1);
            tracing::debug!(node = %ask.node, request_id = ask.request_id, from_part = ask.from_part, "asking for a snapshot window");
            // `node` came from a parsed subject, so it is a bounded name.
            if let Ok(subject) = self.subjects.snapshot(&ask.node) {
                self.publish(subject, payload).await;
            }
        }
        self.record_rebuild();
    }

    /// Ends the rebuild under way once every node heard from has sent its state and a heartbeat
    /// interval has passed since the resync (every live node had its chance to announce itself).
    fn check_rebuild(&mut self, now: Instant) {
        let Some(since) = self.rebuild_since else {
            return;
        };
        if !self.pacer.is_idle() || now.saturating_duration_since(since) < self.heartbeat {
            return;
        }
        let all = {
            let dir = self.directory.lock();
            dir.stats()
                .nodes
                .iter()
                .all(|n| self.synced.contains(&n.id))
        };
        if !all {
            return;
        }
        self.rebuild_since = None;
        self.cold = false;
        self.unheard = HashSet::new();
        let took = now.saturating_duration_since(since);
        metrics::gauge!(m::REBUILD_SECONDS).set(took.as_secs_f64());
        metrics::counter!(m::REBUILDS).increment(1);
        tracing::info!(seconds = took.as_secs_f64(), "rebuild complete");
        let mut stats = self.stats.lock();
        stats.rebuilds += 1;
        stats.last_rebuild = Some(took);
    }

    /// Publishes the pacer's figures (gauges and [`RebuildStats`]).
    fn record_rebuild(&self) {
        let (in_flight, max, pending) = (
            self.pacer.in_flight(),
            self.pacer.max_in_flight(),
            self.pacer.pending(),
        );
        metrics::gauge!(m::SNAPSHOT_BYTES_IN_FLIGHT).set(in_flight as f64);
        metrics::gauge!(m::SNAPSHOT_BYTES_IN_FLIGHT_MAX).set(max as f64);
        metrics::gauge!(m::SNAPSHOT_NODES_PENDING).set(pending as f64);
        let mut stats = self.stats.lock();
        stats.in_flight_bytes = in_flight;
        stats.max_in_flight_bytes = max;
        stats.nodes_pending = pending;
    }

    /// Asks every gateway to announce itself; each one heard from is then asked for its state.
    async fn resync(&mut self) {
        let payload = bus::ResyncRequest {
            broker: self.id.clone(),
            announce: true,
        }
        .encode_to_vec();
        metrics::counter!(m::RESYNCS).increment(1);
        self.synced.clear();
        self.rebuild_since = Some(now());
        self.stats.lock().resyncs += 1;
        self.publish(self.subjects.resync(), payload).await;
    }

    /// Publishes the presence events of `changes`, in order, if this broker leads. While
    /// announcements are [gathered](Worker::gather) they are kept to go out with the rest, up
    /// to [`MAX_CHANGES_A_ROUND`] (then what is kept goes out, and gathering goes on).
    async fn announce(&mut self, changes: Vec<Change>) {
        if !self.is_leader() {
            return;
        }
        if let Some(gathered) = &mut self.gathered {
            gathered.extend(changes);
            if gathered.len() < MAX_CHANGES_A_ROUND {
                return;
            }
            let changes = std::mem::take(gathered);
            self.publish_presence(&changes).await;
        } else {
            self.publish_presence(&changes).await;
        }
    }

    async fn publish_presence(&self, changes: &[Change]) {
        if self.is_leader() {
            announce(&self.bus, &self.subjects, changes, self.presence_batches).await;
        }
    }

    /// Starts gathering announcements, so that the changes of several messages (a membership
    /// batch's entries, held events) go out in as few presence messages as they fit; whether
    /// this call started it, to be passed to [`Worker::gathered`] (nested calls gather into the
    /// outermost).
    fn gather(&mut self) -> bool {
        let outer = self.gathered.is_none();
        if outer {
            self.gathered = Some(Vec::new());
        }
        outer
    }

    /// Ends the gathering [`Worker::gather`] started (`outer`): what was kept goes out.
    async fn gathered(&mut self, outer: bool) {
        if outer && let Some(changes) = self.gathered.take() {
            self.publish_presence(&changes).await;
        }
    }

    async fn publish(&self, subject: String, payload: Vec<u8>) {
        publish(&self.bus, subject, payload).await;
    }
}

/// Publishes the presence events of `changes` (the caller leads): per namespace, in order, in
/// as few messages as `max_payload` allows with `batches` (docs/cluster.md, "Presence in
/// batches"), else one message per event; in rounds of [`MAX_CHANGES_A_ROUND`] changes, so
/// that what is built before it is published stays bounded.
pub(crate) async fn announce(bus: &Bus, subjects: &Subjects, changes: &[Change], batches: bool) {
    for round in changes.chunks(MAX_CHANGES_A_ROUND) {
        for (ns, message) in convert::presence_messages(round, bus.max_payload(), batches) {
            let Ok(subject) = subjects.presence(&ns) else {
                malformed("presence namespace", &ns.len());
                continue;
            };
            metrics::counter!(m::PRESENCE_EVENTS).increment(message.events as u64);
            metrics::counter!(m::PRESENCE_MESSAGES).increment(1);
            publish(bus, subject, message.payload).await;
        }
    }
}

async fn publish(bus: &Bus, subject: String, payload: Vec<u8>) {
    if let Err(e) = bus.publish(subject, Bytes::from(payload)).await {
        metrics::counter!(m::PUBLISH_ERRORS).increment(1);
        tracing::debug!(error = %e, "publish failed");
    }
}

/// Events of one node held back while its paced snapshot arrives: (sequence, event, kind).
struct Held {
    epoch: u64,
    events: Vec<(u64, MemberEvent, &'static str)>,
}

/// Whether a resync is due for `link`: once per link generation, and only while the link is up
/// (a resync published while it is down would go out when it comes up, and then again for the
/// new generation). Records the generation when it is.
fn resync_due(resynced: &mut Option<u64>, link: Link) -> bool {
    if link.up && *resynced != Some(link.generation) {
        *resynced = Some(link.generation);
        true
    } else {
        false
    }
}

/// The next message of an optional subscription; never resolves without one.
async fn next_or_pending(sub: &mut Option<Subscription>) -> Option<Message> {
    match sub {
        Some(sub) => sub.next().await,
        None => std::future::pending().await,
    }
}

/// Sets the directory gauges from `dir`.
fn record_gauges(dir: &Directory) {
    let stats = dir.stats();
    metrics::gauge!(m::SOCKETS).set(stats.sockets as f64);
    metrics::gauge!(m::ROOMS).set(stats.rooms as f64);
    metrics::gauge!(m::USERS).set(stats.users as f64);
    metrics::gauge!(m::NODES).set(stats.nodes.len() as f64);
    metrics::gauge!(m::SESSIONS_KEPT).set(stats.kept as f64);
}

fn malformed(what: &str, detail: &dyn std::fmt::Display) {
    metrics::counter!(m::MESSAGES_MALFORMED).increment(1);
    tracing::debug!(%detail, "malformed {what}; ignored");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_resync_per_link_generation() {
        // (link states seen in order, starting from no resync; whether each one resyncs).
        let link = |up, generation| Link { up, generation };
        let cases: Vec<(&str, Vec<Link>, Vec<bool>)> = vec![
            ("up at start", vec![link(true, 1)], vec![true]),
            (
                // The start-up case that used to send two: down at start, then up.
                "down at start, then up",
                vec![link(false, 0), link(true, 1)],
                vec![false, true],
            ),
            (
                "the same generation seen twice",
                vec![link(true, 1), link(true, 1)],
                vec![true, false],
            ),
            (
                "lost and back",
                vec![link(true, 1), link(false, 1), link(true, 2)],
                vec![true, false, true],
            ),
            (
                "a generation skipped while down",
                vec![link(true, 1), link(false, 2), link(true, 3)],
                vec![true, false, true],
            ),
        ];
        for (name, links, expected) in cases {
            let mut resynced = None;
            let got: Vec<bool> = links
                .into_iter()
                .map(|l| resync_due(&mut resynced, l))
                .collect();
            assert_eq!(got, expected, "{name}");
        }
    }
}
