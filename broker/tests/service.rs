//! The broker service over the in-process hub, driven by a fake gateway that speaks the wire
//! contract (membership messages, heartbeats, snapshots) and an observer that watches what the
//! broker publishes (resync and snapshot requests, presence). No NATS, no fixed sleeps: every
//! expectation waits for its condition with a deadline.

use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use serde_json::json;
use switchboard_broker::{Broker, BrokerConfig, LeaderMode, RebuildConfig, RecoveryConfig};
use switchboard_bus::{Bus, BusError, Hub, Subscription};
use switchboard_proto::Message as _;
use switchboard_proto::bus::{self, member_message::Body, presence_event::Kind};
use switchboard_proto::subject::Subjects;

const PREFIX: &str = "t";
/// How long any expectation may take before the test fails.
const WAIT: Duration = Duration::from_secs(5);

fn subjects() -> Subjects {
    Subjects::new(PREFIX).expect("valid prefix")
}

fn config(id: &str, leader: LeaderMode) -> BrokerConfig {
    BrokerConfig {
        id: id.to_owned(),
        prefix: PREFIX.to_owned(),
        lease: Duration::from_secs(30),
        heartbeat: Duration::from_millis(40),
        leader,
        presence_batches: true,
    }
}

async fn start(hub: &Hub, cfg: BrokerConfig) -> Broker {
    Broker::start(hub.client(), cfg)
        .await
        .expect("broker starts")
}

/// Polls `cond` until it holds, failing after [`WAIT`].
async fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    switchboard_tests::wait_until(what, WAIT, cond).await;
}

async fn recv<M: switchboard_proto::Message + Default>(sub: &mut Subscription, what: &str) -> M {
    let msg = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("subscription open");
    M::decode(msg.payload).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn socket(
    id: &str,
    ns: &str,
    user: Option<&str>,
    rooms: &[&str],
    presence: bool,
) -> bus::SocketInfo {
    bus::SocketInfo {
        id: id.to_owned(),
        ns: ns.to_owned(),
        user: user.map(str::to_owned),
        rooms: rooms.iter().map(|r| (*r).to_owned()).collect(),
        handshake: None,
        data_json: String::new(),
        presence: Some(bus::PresenceFlags {
            rooms: presence,
            users: presence,
        }),
        ..Default::default()
    }
}

/// A member message of `node`, encoded.
fn encoded(node: &str, epoch: u64, seq: u64, body: Body) -> Vec<u8> {
    bus::MemberMessage {
        node: node.to_owned(),
        epoch,
        seq,
        body: Some(body),
    }
    .encode_to_vec()
}

/// A gateway node as the broker sees it: a bus client publishing its membership stream.
struct Gateway {
    bus: Bus,
    node: String,
    epoch: u64,
    seq: u64,
    subjects: Subjects,
}

impl Gateway {
    fn new(hub: &Hub, node: &str, epoch: u64) -> Self {
        Self {
            bus: hub.client(),
            node: node.to_owned(),
            epoch,
            seq: 0,
            subjects: subjects(),
        }
    }

    async fn snapshot_requests(&self) -> Subscription {
        self.bus
            .subscribe(self.subjects.snapshot(&self.node).expect("bounded"))
            .await
            .expect("subscribe")
    }

    async fn send_at(&self, seq: u64, body: Body) {
        self.raw(Bytes::from(encoded(&self.node, self.epoch, seq, body)))
            .await;
    }

    /// Sends the next event of the sequence.
    async fn event(&mut self, body: Body) {
        self.seq += 1;
        self.send_at(self.seq, body).await;
    }

    /// Consumes a sequence number without sending it (a lost event).
    fn lose_event(&mut self) {
        self.seq += 1;
    }

    async fn connect(&mut self, info: bus::SocketInfo) {
        self.event(Body::Connect(info)).await;
    }

    async fn join(&mut self, id: &str, room: &str) {
        self.event(Body::Join(bus::RoomChange {
            id: id.to_owned(),
            room: room.to_owned(),
        }))
        .await;
    }

    async fn leave(&mut self, id: &str, room: &str) {
        self.event(Body::Leave(bus::RoomChange {
            id: id.to_owned(),
            room: room.to_owned(),
        }))
        .await;
    }

    async fn disconnect(&mut self, id: &str, reason: &str) {
        self.event(Body::Disconnect(bus::Disconnect {
            id: id.to_owned(),
            reason: reason.to_owned(),
            ..Default::default()
        }))
        .await;
    }

    async fn heartbeat(&self) {
        self.heartbeat_with(|_| {}).await;
    }

    /// A heartbeat as `change` makes it (e.g. an address as a marker a test can wait for in the
    /// state document).
    async fn heartbeat_with(&self, change: impl FnOnce(&mut bus::Heartbeat)) {
        let mut beat = bus::Heartbeat {
            node: self.node.clone(),
            epoch: self.epoch,
            seq: self.seq,
            connections: 3,
            sockets: 2,
            address: format!("{}.local:3000", self.node),
            ..Default::default()
        };
        change(&mut beat);
        self.bus
            .publish(
                self.subjects.heartbeat(&self.node).expect("bounded"),
                Bytes::from(beat.encode_to_vec()),
            )
            .await
            .expect("publish");
    }

    /// Sends a snapshot at the current sequence in the given parts (numbered as listed).
    async fn snapshot(&self, request_id: u64, parts: Vec<(u32, bool, Vec<bus::SocketInfo>)>) {
        for (part, last, sockets) in parts {
            self.send_at(
                self.seq,
                Body::Snapshot(bus::SnapshotPart {
                    part,
                    last,
                    sockets,
                    request_id,
                    ..Default::default()
                }),
            )
            .await;
        }
    }

    /// Answers snapshot request `request_id` with exactly socket `id`, and waits until `broker`
    /// holds just that.
    async fn repair_with(&self, broker: &Broker, request_id: u64, id: &str) {
        let only = vec![socket(id, "/", None, &[], false)];
        self.snapshot(request_id, vec![(0, true, only)]).await;
        wait_until("the snapshot", || socket_ids(broker) == [id]).await;
    }

    /// The message the next event of `body` would be alone (it takes the sequence number).
    fn entry(&mut self, body: Body) -> Vec<u8> {
        self.seq += 1;
        encoded(&self.node, self.epoch, self.seq, body)
    }

    /// Publishes `entries` (encoded member messages) as one batch, as a gateway's publisher
    /// writes it: the node's name and epoch, and the last sequence number taken.
    async fn batch(&self, entries: &[Vec<u8>]) {
        let payload = switchboard_proto::batch::encode(
            &self.node,
            self.epoch,
            self.seq,
            entries.iter().map(Vec::as_slice),
        );
        self.raw(Bytes::from(payload)).await;
    }

    async fn raw(&self, payload: Bytes) {
        self.bus
            .publish(self.subjects.member(&self.node).expect("bounded"), payload)
            .await
            .expect("publish");
    }

    async fn leaving(&self, epoch: u64) {
        let body = Body::Leaving(bus::NodeLeaving {});
        self.raw(Bytes::from(encoded(&self.node, epoch, self.seq, body)))
            .await;
    }
}

/// The sorted socket ids in a broker's state document.
fn socket_ids(broker: &Broker) -> Vec<String> {
    broker.state_json()["sockets"]
        .as_array()
        .expect("sockets array")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_owned())
        .collect()
}

fn node_ids(broker: &Broker) -> Vec<String> {
    broker.state_json()["nodes"]
        .as_array()
        .expect("nodes array")
        .iter()
        .map(|n| n["id"].as_str().expect("id").to_owned())
        .collect()
}

/// One presence event as (kind, ns, room, user, socket, reason), for comparing to tables.
type Seen = (Kind, String, String, Option<String>, String, String);

/// What a gateway hears on the presence subjects: every announcement in order, batches taken
/// apart by the readers' rule (`switchboard_proto::presence`), and the messages they came in.
struct Presence {
    sub: Subscription,
    queued: std::collections::VecDeque<bus::PresenceEvent>,
}

impl Presence {
    async fn subscribe(bus: &Bus) -> Self {
        let sub = bus
            .subscribe(subjects().all_presence())
            .await
            .expect("subscribe");
        Self {
            sub,
            queued: Default::default(),
        }
    }

    /// The next announcement.
    async fn next(&mut self) -> Seen {
        if self.queued.is_empty() {
            let msg = tokio::time::timeout(WAIT, self.sub.next())
                .await
                .expect("timed out waiting for a presence message")
                .expect("subscription open");
            self.queued.extend(heard(msg).events);
        }
        let e = self
            .queued
            .pop_front()
            .expect("a presence message announces something");
        (e.kind(), e.ns, e.room, e.user, e.socket_id, e.reason)
    }

    /// The messages already received, without waiting.
    fn received(&mut self) -> Vec<Heard> {
        assert!(self.queued.is_empty(), "announcements read half");
        let mut got = Vec::new();
        // Unconstrained: tokio's cooperative budget would end the loop after 128 messages.
        while let Some(Some(msg)) = tokio::task::unconstrained(self.sub.next()).now_or_never() {
            got.push(heard(msg));
        }
        got
    }
}

/// One presence message as a reader takes it.
#[derive(Debug, PartialEq)]
struct Heard {
    /// Its subject's namespace.
    ns: String,
    /// A batch (else one announcement alone).
    batch: bool,
    /// Its length.
    bytes: usize,
    /// Its announcements, each one checked well-formed.
    events: Vec<bus::PresenceEvent>,
}

fn heard(msg: switchboard_bus::Message) -> Heard {
    let ns = match subjects().parse(&msg.subject) {
        Ok(switchboard_proto::subject::Parsed::Presence { ns }) => ns,
        other => panic!("not a presence subject: {other:?}"),
    };
    let bytes = msg.payload.len();
    let message = bus::PresenceEvent::decode(msg.payload).expect("a presence message");
    let batch = !message.batch.is_empty();
    let events = switchboard_proto::presence::announcements(&ns, message)
        .map(|e| e.expect("a well-formed announcement"))
        .collect();
    Heard {
        ns,
        batch,
        bytes,
        events,
    }
}

fn seen(kind: Kind, ns: &str, room: &str, user: Option<&str>, socket: &str, reason: &str) -> Seen {
    (
        kind,
        ns.to_owned(),
        room.to_owned(),
        user.map(str::to_owned),
        socket.to_owned(),
        reason.to_owned(),
    )
}

#[tokio::test]
async fn resync_is_requested_on_start() {
    let hub = Hub::new();
    let observer = hub.client();
    let mut resync = observer
        .subscribe(subjects().resync())
        .await
        .expect("subscribe");
    let broker = start(&hub, config("b1", LeaderMode::Always)).await;
    let request: bus::ResyncRequest = recv(&mut resync, "resync request").await;
    assert_eq!(request.broker, "b1");
    broker.shutdown().await;
}

#[tokio::test]
async fn membership_events_build_the_state_document() {
    let hub = Hub::new();
    let broker = start(&hub, config("b1", LeaderMode::Always)).await;
    let mut gw = Gateway::new(&hub, "gw1", 7);
    gw.connect(socket(
        "gw1.a",
        "/chat",
        Some("alice"),
        &["zeta", "alpha"],
        false,
    ))
    .await;
    gw.connect(socket("gw1.b", "/", None, &[], false)).await;
    gw.connect(socket("gw1.c", "/", None, &[], false)).await;
    gw.join("gw1.b", "lobby").await;
    gw.join("gw1.a", "mid").await;
    gw.leave("gw1.a", "zeta").await;
    gw.disconnect("gw1.c", "transport close").await;
    gw.heartbeat().await;
    let expected = json!({
        "broker": "b1",
        "leader": true,
        "nodes": [{
            "id": "gw1", "epoch": 7, "seq": 7, "sockets": 2, "connections": 3,
            "address": "gw1.local:3000",
        }],
        "sockets": [
            {"id": "gw1.a", "ns": "/chat", "node": "gw1", "user": "alice", "rooms": ["alpha", "mid"]},
            {"id": "gw1.b", "ns": "/", "node": "gw1", "user": null, "rooms": ["lobby"]},
        ],
    });
    wait_until("the state document", || broker.state_json() == expected).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_lost_event_asks_for_a_snapshot_that_repairs_the_state() {
    let hub = Hub::new();
    let broker = start(&hub, config("b1", LeaderMode::Always)).await;
    let mut gw = Gateway::new(&hub, "gw1", 1);
    let mut requests = gw.snapshot_requests().await;
    gw.connect(socket("gw1.a", "/", None, &[], false)).await;
    gw.lose_event(); // the connect of gw1.b never arrives
    gw.join("gw1.a", "r").await;
    let request: bus::SnapshotRequest = recv(&mut requests, "snapshot request").await;
    assert_eq!(request.broker, "b1");
    assert_ne!(request.request_id, 0, "0 is reserved for resync snapshots");
    gw.snapshot(
        request.request_id,
        vec![(
            0,
            true,
            vec![
                socket("gw1.a", "/", None, &["r"], false),
                socket("gw1.b", "/", None, &[], false),
            ],
        )],
    )
    .await;
    wait_until("the repaired state", || {
        socket_ids(&broker) == ["gw1.a", "gw1.b"]
    })
    .await;
    // In-order events keep applying on top of the snapshot.
    gw.disconnect("gw1.a", "ping timeout").await;
    wait_until("the disconnect", || socket_ids(&broker) == ["gw1.b"]).await;
    assert_eq!(broker.state_json()["nodes"][0]["seq"], 4);
    broker.shutdown().await;
}

/// The gap rule: a heartbeat is compared with the directory only once every membership message
/// received before it has been applied. Thousands of events queued ahead of two heartbeats (a
/// broker starved of CPU) are not a gap, whatever order the worker's wake-ups come in.
#[tokio::test]
async fn heartbeats_behind_queued_events_are_not_a_gap() {
    const EVENTS: usize = 3000;
    let hub = Hub::new();
    let broker = start(&hub, config("b1", LeaderMode::Always)).await;
    let mut gw = Gateway::new(&hub, "gw1", 1);
    let mut requests = gw.snapshot_requests().await;
    // The node's start snapshot: its state is known, nothing needs asking. Then, before the
    // broker's worker runs at all (one thread; the hub queues at once), many events and the
    // heartbeats that count them, the last one marked by its address.
    gw.snapshot(0, vec![(0, true, Vec::new())]).await;
    for i in 0..EVENTS {
        gw.connect(socket(&format!("gw1.{i:05}"), "/", None, &[], false))
            .await;
    }
    for address in ["h1", "h2", "h3"] {
        gw.heartbeat_with(|b| address.clone_into(&mut b.address))
            .await;
    }
    wait_until("every event and heartbeat applied", || {
        let state = broker.state_json();
        state["sockets"].as_array().map(Vec::len) == Some(EVENTS)
            && state["nodes"][0]["address"] == "h3"
    })
    .await;
    // A request would have been published by the worker before it applied the last heartbeat.
    assert!(
        requests.next().now_or_never().is_none(),
        "a snapshot was asked for though nothing was lost"
    );
    broker.shutdown().await;
}

/// A gateway whose NATS link came back says so in a heartbeat (it may have lost messages): the
/// broker asks it for a paced snapshot, though its state had arrived before.
#[tokio::test]
async fn a_rejoined_node_is_asked_for_a_paced_snapshot() {
    let hub = Hub::new();
    let broker = start(&hub, config("b1", LeaderMode::Always)).await;
    let mut gw = Gateway::new(&hub, "gw1", 1);
    let mut requests = gw.snapshot_requests().await;
    gw.snapshot(0, vec![(0, true, Vec::new())]).await;
    gw.connect(socket("gw1.a", "/", None, &[], false)).await;
    wait_until("the connect", || socket_ids(&broker) == ["gw1.a"]).await;
    gw.heartbeat_with(|b| b.rejoined = true).await;
    let request: bus::SnapshotRequest = recv(&mut requests, "snapshot request").await;
    assert_eq!((request.broker.as_str(), request.from_part), ("b1", 0));
    assert!(request.window_bytes > 0, "a paced request");
    gw.repair_with(&broker, request.request_id, "gw1.b").await;
    broker.shutdown().await;
}

/// A node that keeps publishing while its paced snapshot arrives cannot make the broker hold its
/// events without bound: the event past `max_held_events` gives the snapshot up, what was held
/// is applied at once, and the node's next heartbeat gets it asked again.
#[tokio::test]
async fn events_held_past_the_limit_give_the_paced_snapshot_up() {
    let hub = Hub::new();
    // A stall (four heartbeat intervals) far longer than any wait here: only the limit can
    // release the held events in time.
    let cfg = BrokerConfig {
        heartbeat: WAIT,
        ..config("b1", LeaderMode::Always)
    };
    let rebuild = RebuildConfig {
        max_held_events: 8,
        ..RebuildConfig::default()
    };
    let broker = Broker::start_tuned(hub.client(), cfg, RecoveryConfig::default(), rebuild)
        .await
        .expect("broker starts");
    let mut gw = Gateway::new(&hub, "gw1", 1);
    let mut requests = gw.snapshot_requests().await;
    gw.heartbeat().await;
    let first: bus::SnapshotRequest = recv(&mut requests, "a paced snapshot request").await;
    assert!(first.window_bytes > 0, "a paced request");
    // The snapshot's first window (as of sequence 0); the rest would wait to be asked for.
    let window = |request_id, last, sockets| {
        Body::Snapshot(bus::SnapshotPart {
            part: 0,
            last,
            paused: !last,
            sockets,
            request_id,
            broker: "b1".to_owned(),
        })
    };
    let s = |id: &str| socket(id, "/", None, &[], false);
    gw.send_at(0, window(first.request_id, false, vec![s("gw1.s")]))
        .await;
    let next: bus::SnapshotRequest = recv(&mut requests, "the next window's request").await;
    assert_eq!((next.request_id, next.from_part), (first.request_id, 1));
    // Nine events meanwhile: eight are held, the ninth gives the snapshot up.
    let mut ids: Vec<String> = (0..9).map(|i| format!("gw1.e{i}")).collect();
    for id in &ids {
        gw.connect(s(id)).await;
    }
    wait_until("the held events applied", || socket_ids(&broker) == ids).await;
    gw.heartbeat().await;
    let again: bus::SnapshotRequest = recv(&mut requests, "the snapshot asked again").await;
    assert!(again.request_id > first.request_id, "a new request");
    assert_eq!(again.from_part, 0, "from the start");
    ids.push("gw1.s".to_owned());
    let whole = ids.iter().map(|id| s(id)).collect();
    gw.send_at(gw.seq, window(again.request_id, true, whole))
        .await;
    wait_until("the whole state", || socket_ids(&broker) == ids).await;
    broker.shutdown().await;
}

/// The events of one node's busy moment, in order: connects with rooms and a user, joins,
/// leaves, a data change and a disconnect.
fn busy_moment() -> Vec<Body> {
    let change = |id: &str, room: &str| bus::RoomChange {
        id: id.to_owned(),
        room: room.to_owned(),
    };
    vec![
        Body::Connect(socket("gw1.a", "/chat", Some("alice"), &["lobby"], true)),
        Body::Connect(socket("gw1.b", "/chat", Some("bob"), &[], true)),
        Body::Join(change("gw1.b", "lobby")),
        Body::Join(change("gw1.a", "games")),
        Body::Data(bus::DataChange {
            id: "gw1.a".to_owned(),
            data_json: r#"{"away":true}"#.to_owned(),
        }),
        Body::Leave(change("gw1.a", "lobby")),
        Body::Connect(socket("gw1.c", "/", None, &["x"], false)),
        Body::Disconnect(bus::Disconnect {
            id: "gw1.b".to_owned(),
            reason: "transport close".to_owned(),
            ..Default::default()
        }),
    ]
}

/// A batch is applied as its messages would be one by one: the same directory, the same
/// presence announcements in the same order.
#[tokio::test]
async fn a_batch_is_applied_like_its_messages_one_by_one() {
    let mut seen = Vec::new();
    for batched in [false, true] {
        let hub = Hub::new();
        let observer = hub.client();
        let mut events = Presence::subscribe(&observer).await;
        let broker = start(&hub, config("b1", LeaderMode::Always)).await;
        let mut gw = Gateway::new(&hub, "gw1", 3);
        if batched {
            // Two batches and a lone message, as a publisher cuts them.
            let mut entries: Vec<Vec<u8>> =
                busy_moment().into_iter().map(|b| gw.entry(b)).collect();
            let last = entries.pop().expect("events");
            let second = entries.split_off(3);
            gw.batch(&entries).await;
            gw.batch(&second).await;
            gw.raw(Bytes::from(last)).await;
        } else {
            for body in busy_moment() {
                gw.event(body).await;
            }
        }
        gw.heartbeat().await;
        // The heartbeat is applied after every message before it, and their announcements.
        wait_until("every event applied", || {
            let state = broker.state_json();
            state["nodes"][0]["seq"] == 8 && state["nodes"][0]["address"] == "gw1.local:3000"
        })
        .await;
        let announced: Vec<_> = events
            .received()
            .into_iter()
            .flat_map(|heard| heard.events)
            .map(|e| (e.kind(), e.room, e.socket_id, e.reason))
            .collect();
        let data = broker
            .directory()
            .lock()
            .socket("gw1.a")
            .map(|s| s.data_json().to_owned());
        seen.push((broker.state_json(), announced, data));
        broker.shutdown().await;
    }
    assert_eq!(seen[0].2.as_deref(), Some(r#"{"away":true}"#));
    assert!(!seen[0].1.is_empty(), "presence was announced");
    assert_eq!(seen[0], seen[1]);
}

/// What a gateway does, step by step, in the presence tests.
enum Step {
    /// Membership messages: one alone, several in one batch (a publisher never makes a batch
    /// of one).
    Send(Vec<Body>),
    /// The node leaves (its sockets are purged with `node_left`).
    Leaving,
}

/// The presence messages a broker publishes, with presence batches on or off, on a bus taking
/// `max_payload` bytes, while node `gw1` goes through `steps`.
async fn announced(batches: bool, max_payload: usize, steps: Vec<Step>) -> Vec<Heard> {
    let hub = Hub::with_max_payload(max_payload);
    let observer = hub.client();
    let mut events = Presence::subscribe(&observer).await;
    let cfg = BrokerConfig {
        presence_batches: batches,
        ..config("b1", LeaderMode::Always)
    };
    let broker = start(&hub, cfg).await;
    let mut gw = Gateway::new(&hub, "gw1", 1);
    for step in steps {
        match step {
            Step::Send(mut bodies) if bodies.len() == 1 => {
                gw.event(bodies.remove(0)).await;
            }
            Step::Send(bodies) => {
                let entries: Vec<_> = bodies.into_iter().map(|b| gw.entry(b)).collect();
                gw.batch(&entries).await;
            }
            Step::Leaving => gw.leaving(1).await,
        }
    }
    // Another node's heartbeat is applied after every membership message before it, and so
    // after their announcements.
    let marker = Gateway::new(&hub, "gw9", 1);
    marker.heartbeat().await;
    wait_until("every step applied", || {
        node_ids(&broker).contains(&"gw9".to_owned())
    })
    .await;
    let heard = events.received();
    broker.shutdown().await;
    heard
}

/// Each namespace's announcements, in order, whatever messages they came in.
fn by_namespace(heard: &[Heard]) -> std::collections::BTreeMap<&str, Vec<&bus::PresenceEvent>> {
    let mut by_ns = std::collections::BTreeMap::<&str, Vec<_>>::new();
    for h in heard {
        by_ns.entry(&h.ns).or_default().extend(&h.events);
    }
    by_ns
}

fn join(id: &str, room: &str) -> Body {
    Body::Join(bus::RoomChange {
        id: id.to_owned(),
        room: room.to_owned(),
    })
}

/// A membership batch of joins is announced in one presence message, a batch holding what the
/// same joins one by one announce, in the same order; a lone join without a user (one
/// announcement) goes as itself, unwrapped; with `presence_batches` off every announcement goes
/// alone, as readers older than batches need.
#[tokio::test]
async fn a_membership_batch_is_announced_in_one_presence_message() {
    let users = ["u1", "u2", "u3", "u4"];
    let steps = |batched: bool| {
        let mut steps: Vec<Step> = users
            .iter()
            .map(|u| Step::Send(vec![Body::Connect(socket(u, "/chat", Some(u), &[], true))]))
            .collect();
        let anon = socket("anon", "/chat", None, &[], true);
        steps.push(Step::Send(vec![Body::Connect(anon)]));
        let joins = users.iter().map(|u| join(u, "lobby"));
        if batched {
            steps.push(Step::Send(joins.collect()));
        } else {
            steps.extend(joins.map(|j| Step::Send(vec![j])));
        }
        steps.push(Step::Send(vec![join("anon", "lobby")]));
        steps
    };
    let batched = announced(true, 1 << 20, steps(true)).await;
    let one_by_one = announced(true, 1 << 20, steps(false)).await;
    let off = announced(false, 1 << 20, steps(true)).await;
    // (batch, announcements) of each message.
    let shape = |heard: &[Heard]| -> Vec<(bool, usize)> {
        heard.iter().map(|h| (h.batch, h.events.len())).collect()
    };
    let online = [(false, 1); 4];
    // The four connects' user_online each, the batch's member_joined + user_joined of each
    // join, anon's member_joined.
    assert_eq!(
        shape(&batched),
        [&online[..], &[(true, 8), (false, 1)]].concat()
    );
    // One by one, each join's two announcements make a batch of their own.
    assert_eq!(
        shape(&one_by_one),
        [&online[..], &[(true, 2); 4], &[(false, 1)]].concat()
    );
    assert_eq!(shape(&off), [(false, 1); 13]);
    let all = |heard: &[Heard]| -> Vec<bus::PresenceEvent> {
        heard.iter().flat_map(|h| h.events.clone()).collect()
    };
    assert_eq!(all(&batched), all(&one_by_one));
    assert_eq!(all(&batched), all(&off));
    let kinds: Vec<_> = batched[4]
        .events
        .iter()
        .map(|e| (e.kind(), e.socket_id.as_str()))
        .collect();
    assert_eq!(
        kinds,
        users
            .iter()
            .flat_map(|u| [(Kind::MemberJoined, *u), (Kind::UserJoined, *u)])
            .collect::<Vec<_>>()
    );
}

/// A node's purge announces every departure in batches per namespace, none longer than the
/// bus's `max_payload`, each namespace's announcements in the order they come one by one.
#[tokio::test]
async fn a_purge_is_announced_in_batches_that_fit_the_bus_payload() {
    const MAX: usize = 1024;
    let steps = || {
        let mut steps: Vec<Step> = (0..40)
            .map(|i| {
                let ns = if i % 4 == 0 { "/game" } else { "/chat" };
                let (id, user) = (format!("gw1.s{i}"), format!("user{i}"));
                let info = socket(&id, ns, Some(&user), &["lobby", "second-room"], true);
                Step::Send(vec![Body::Connect(info)])
            })
            .collect();
        steps.push(Step::Leaving);
        steps
    };
    let batched = announced(true, MAX, steps()).await;
    let alone = announced(false, MAX, steps()).await;
    // Each connect: user_online, then member_joined and user_joined of both rooms, in one
    // batch; the purge: the same five departures of each socket.
    let purge: Vec<&Heard> = batched[40..].iter().collect();
    assert!(batched[..40].iter().all(|h| h.batch && h.events.len() == 5));
    assert!(purge.len() > 2, "the purge is split: {}", purge.len());
    for h in &purge {
        assert!(h.batch && h.bytes <= MAX, "{} bytes", h.bytes);
    }
    // The namespaces one after the other (in the order of their first departure).
    let mut order: Vec<&str> = purge.iter().map(|h| h.ns.as_str()).collect();
    order.dedup();
    assert_eq!(order.len(), 2, "{order:?}");
    let departures: usize = purge.iter().map(|h| h.events.len()).sum();
    assert_eq!(departures, 40 * 5);
    assert!(alone.iter().all(|h| !h.batch));
    assert_eq!(by_namespace(&batched), by_namespace(&alone));
}

/// A hole in the sequence inside a batch is a gap like one between lone messages: the broker
/// asks for a snapshot, and the entries around the hole are applied.
#[tokio::test]
async fn a_gap_inside_a_batch_asks_for_a_snapshot() {
    let hub = Hub::new();
    let broker = start(&hub, config("b1", LeaderMode::Always)).await;
    let mut gw = Gateway::new(&hub, "gw1", 1);
    let mut requests = gw.snapshot_requests().await;
    gw.snapshot(0, vec![(0, true, Vec::new())]).await;
    let s = |id: &str| Body::Connect(socket(id, "/", None, &[], false));
    let first = gw.entry(s("gw1.a"));
    gw.lose_event();
    let third = gw.entry(s("gw1.c"));
    gw.batch(&[first, third]).await;
    let request: bus::SnapshotRequest = recv(&mut requests, "snapshot request").await;
    assert_eq!(request.broker, "b1");
    wait_until("both entries applied", || {
        socket_ids(&broker) == ["gw1.a", "gw1.c"]
    })
    .await;
    broker.shutdown().await;
}

/// Batches that break the contract are counted as malformed and change nothing, not even the
/// entries that alone would be fine: a batch inside a batch, an entry of another node or epoch,
/// an empty batch, an entry that does not decode, a batch whose node disagrees with its subject.
#[tokio::test]
async fn malformed_batches_change_nothing() {
    let hub = Hub::new();
    let broker = start(&hub, config("b1", LeaderMode::Always)).await;
    let gw = Gateway::new(&hub, "gw1", 1);
    let connect = |id: &str| Body::Connect(socket(id, "/", None, &[], false));
    let good = encoded("gw1", 1, 1, connect("gw1.good"));
    let inner = switchboard_proto::batch::encode("gw1", 1, 2, [good.as_slice()]);
    let nested = bus::MemberMessage::decode(inner.as_slice()).expect("a batch decodes");
    let batch = |node: &str, epoch: u64, entries: &[&[u8]]| {
        Bytes::from(switchboard_proto::batch::encode(
            node,
            epoch,
            2,
            entries.iter().copied(),
        ))
    };
    let bad = [
        batch("gw1", 1, &[&good, &nested.encode_to_vec()]),
        batch("gw1", 1, &[&good, &encoded("gw2", 1, 2, connect("gw2.x"))]),
        batch("gw1", 1, &[&good, &encoded("gw1", 2, 2, connect("gw1.x"))]),
        batch("gw1", 1, &[&good, &encoded("", 1, 2, connect("gw1.x"))]),
        batch("gw1", 1, &[]),
        batch("gw1", 1, &[&good, b"\xff\xff\xff\xff"]),
        batch("gw2", 1, &[&encoded("gw2", 1, 1, connect("gw2.x"))]),
    ];
    for payload in bad {
        gw.raw(payload).await;
    }
    // A valid message after them: once it is in, they have been handled.
    // (At the same epoch and sequence number as the good entry, which therefore must not have
    // been applied before.)
    gw.raw(batch(
        "gw1",
        1,
        &[&encoded("gw1", 1, 1, connect("gw1.after"))],
    ))
    .await;
    wait_until("the valid batch", || socket_ids(&broker) == ["gw1.after"]).await;
    assert_eq!(broker.state_json()["nodes"][0]["seq"], 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_heartbeat_ahead_of_the_broker_asks_for_a_snapshot_and_retries() {
    let hub = Hub::new();
    let broker = start(&hub, config("b1", LeaderMode::Always)).await;
    let mut gw = Gateway::new(&hub, "gw1", 1);
    let mut requests = gw.snapshot_requests().await;
    gw.connect(socket("gw1.a", "/", None, &[], false)).await;
    gw.lose_event(); // the last event is lost: only the heartbeats can tell
    gw.heartbeat().await;
    // The first heartbeat ahead may have overtaken the event; the second one shows the loss.
    gw.heartbeat().await;
    let first: bus::SnapshotRequest = recv(&mut requests, "snapshot request").await;
    // Unanswered: later heartbeats ask again once the retry interval has passed.
    let heartbeats = async {
        loop {
            gw.heartbeat().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let second: bus::SnapshotRequest = tokio::select! {
        r = recv(&mut requests, "retried snapshot request") => r,
        () = heartbeats => unreachable!(),
    };
    assert!(second.request_id > first.request_id);
    gw.repair_with(&broker, second.request_id, "gw1.z").await;
    broker.shutdown().await;
}

#[tokio::test]
async fn multi_part_snapshots_are_assembled_and_broken_ones_dropped() {
    let hub = Hub::new();
    let broker = start(&hub, config("b1", LeaderMode::Always)).await;
    let mut gw = Gateway::new(&hub, "gw1", 1);
    let mut requests = gw.snapshot_requests().await;
    let s = |id: &str| socket(id, "/", None, &[], false);

    // A resync answer (request id 0) in three parts.
    gw.seq = 5;
    gw.snapshot(
        0,
        vec![
            (0, false, vec![s("gw1.a")]),
            (1, false, vec![s("gw1.b"), s("gw1.c")]),
            (2, true, vec![]),
        ],
    )
    .await;
    wait_until("the assembled snapshot", || {
        socket_ids(&broker) == ["gw1.a", "gw1.b", "gw1.c"]
    })
    .await;
    assert_eq!(broker.state_json()["nodes"][0]["seq"], 5);

    // Events are lost; the heartbeat asks for a snapshot, whose middle part goes missing.
    gw.seq = 9;
    gw.heartbeat().await;
    gw.heartbeat().await;
    let request: bus::SnapshotRequest = recv(&mut requests, "snapshot request").await;
    gw.snapshot(
        request.request_id,
        vec![(0, false, vec![s("gw1.x")]), (2, true, vec![s("gw1.y")])],
    )
    .await;
    // Nothing applied; the next heartbeats ask again, and a whole snapshot repairs.
    let heartbeats = async {
        loop {
            gw.heartbeat().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let again: bus::SnapshotRequest = tokio::select! {
        r = recv(&mut requests, "snapshot request after the broken snapshot") => r,
        () = heartbeats => unreachable!(),
    };
    assert_eq!(
        socket_ids(&broker),
        ["gw1.a", "gw1.b", "gw1.c"],
        "a broken snapshot is not applied"
    );
    gw.snapshot(
        again.request_id,
        vec![(0, false, vec![s("gw1.x")]), (1, true, vec![s("gw1.y")])],
    )
    .await;
    wait_until("the repaired state", || {
        socket_ids(&broker) == ["gw1.x", "gw1.y"]
    })
    .await;
    assert_eq!(broker.state_json()["nodes"][0]["seq"], 9);

    // A node with no sockets sends one empty last part.
    gw.snapshot(0, vec![(0, true, vec![])]).await;
    wait_until("the empty snapshot", || socket_ids(&broker).is_empty()).await;
    assert_eq!(node_ids(&broker), ["gw1"]);
    broker.shutdown().await;
}

/// A broker that starts (empty) and rebuilds from the gateways' snapshots learns what was
/// already true: it announces none of it (every user online and in every room again, to every
/// gateway and its clients), but it announces what happens next, and a later snapshot of a node
/// it has followed repairs with announcements as always.
#[tokio::test]
async fn a_restarted_broker_announces_no_presence_for_what_its_rebuild_finds() {
    let hub = Hub::new();
    let observer = hub.client();
    let mut events = Presence::subscribe(&observer).await;
    let mut gw = Gateway::new(&hub, "gw1", 1);
    let mut requests = gw.snapshot_requests().await;
    for _ in 0..5 {
        gw.lose_event(); // history from before the broker started
    }
    let broker = start(&hub, config("b1", LeaderMode::Always)).await;
    gw.heartbeat().await;
    let request: bus::SnapshotRequest = recv(&mut requests, "snapshot request").await;
    let alice = socket("gw1.a", "/chat", Some("alice"), &["lobby"], true);
    gw.snapshot(request.request_id, vec![(0, true, vec![alice])])
        .await;
    wait_until("the rebuild", || socket_ids(&broker) == ["gw1.a"]).await;
    gw.connect(socket("gw1.b", "/chat", Some("bob"), &[], true))
        .await;
    let b = Some("bob");
    assert_eq!(
        events.next().await,
        seen(Kind::UserOnline, "/chat", "", b, "gw1.b", ""),
        "the first announcement is the live connect, not the rebuilt alice"
    );
    // Followed from here on: a lost event's repair is announced.
    gw.lose_event(); // bob joins "lobby"
    gw.join("gw1.b", "x").await; // reveals the gap
    let request: bus::SnapshotRequest = recv(&mut requests, "repair request").await;
    let alice = socket("gw1.a", "/chat", Some("alice"), &["lobby"], true);
    let bob = socket("gw1.b", "/chat", Some("bob"), &["lobby", "x"], true);
    gw.snapshot(request.request_id, vec![(0, true, vec![alice, bob])])
        .await;
    let want = seen(Kind::MemberJoined, "/chat", "lobby", b, "gw1.b", "");
    let mut got = Vec::new();
    while got.len() < 5 && !got.contains(&want) {
        got.push(events.next().await);
    }
    assert!(got.contains(&want), "{got:?}");
    broker.shutdown().await;
}

#[tokio::test]
async fn presence_is_announced_by_the_leader_only_in_order() {
    let hub = Hub::new();
    let observer = hub.client();
    let mut events = Presence::subscribe(&observer).await;
    let leader = start(&hub, config("lead", LeaderMode::Always)).await;
    let follower = start(&hub, config("follow", LeaderMode::Never)).await;
    assert!(leader.is_leader());
    assert!(!follower.is_leader());

    let mut gw = Gateway::new(&hub, "gw1", 1);
    // A socket whose namespace wants no presence: nothing is announced for it.
    gw.connect(socket("gw1.q", "/quiet", Some("bob"), &["r"], false))
        .await;
    gw.connect(socket("gw1.a", "/chat", Some("alice"), &["r"], true))
        .await;
    gw.join("gw1.a", "s").await;
    gw.leave("gw1.a", "r").await;
    gw.disconnect("gw1.a", "transport close").await;

    use Kind::*;
    let a = Some("alice");
    let expected = [
        seen(UserOnline, "/chat", "", a, "gw1.a", ""),
        seen(MemberJoined, "/chat", "r", a, "gw1.a", ""),
        seen(UserJoined, "/chat", "r", a, "gw1.a", ""),
        seen(MemberJoined, "/chat", "s", a, "gw1.a", ""),
        seen(UserJoined, "/chat", "s", a, "gw1.a", ""),
        seen(MemberLeft, "/chat", "r", a, "gw1.a", "leave"),
        seen(UserLeft, "/chat", "r", a, "gw1.a", "leave"),
        seen(MemberLeft, "/chat", "s", a, "gw1.a", "transport close"),
        seen(UserLeft, "/chat", "s", a, "gw1.a", "transport close"),
        seen(UserOffline, "/chat", "", a, "gw1.a", "transport close"),
    ];
    for want in expected {
        assert_eq!(events.next().await, want);
    }
    // The follower applied everything too, announcing nothing: had it published, its copies would
    // precede this marker's events.
    wait_until("the follower's state", || {
        socket_ids(&follower) == ["gw1.q"]
    })
    .await;
    assert_eq!(follower.state_json()["leader"], false);
    gw.connect(socket("gw1.m", "/chat", None, &["marker"], true))
        .await;
    assert_eq!(
        events.next().await,
        seen(MemberJoined, "/chat", "marker", None, "gw1.m", "")
    );
    leader.shutdown().await;
    follower.shutdown().await;
}

#[tokio::test]
async fn a_silent_node_is_lost_with_node_lost() {
    let hub = Hub::new();
    let observer = hub.client();
    let mut events = Presence::subscribe(&observer).await;
    let cfg = BrokerConfig {
        lease: Duration::from_millis(150),
        heartbeat: Duration::from_millis(40),
        ..config("b1", LeaderMode::Always)
    };
    let broker = start(&hub, cfg).await;
    let mut gw = Gateway::new(&hub, "gw1", 1);
    let mut other = Gateway::new(&hub, "gw2", 1);
    gw.connect(socket("gw1.a", "/chat", Some("alice"), &["r"], true))
        .await;
    other
        .connect(socket("gw2.a", "/chat", None, &[], false))
        .await;
    use Kind::*;
    let a = Some("alice");
    assert_eq!(
        events.next().await,
        seen(UserOnline, "/chat", "", a, "gw1.a", "")
    );
    assert_eq!(
        events.next().await,
        seen(MemberJoined, "/chat", "r", a, "gw1.a", "")
    );
    assert_eq!(
        events.next().await,
        seen(UserJoined, "/chat", "r", a, "gw1.a", "")
    );
    // gw2 keeps beating; gw1 falls silent.
    let beats = async {
        loop {
            other.heartbeat().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let lost = async {
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(events.next().await);
        }
        got
    };
    let got = tokio::select! {
        got = lost => got,
        () = beats => unreachable!(),
    };
    assert_eq!(
        got,
        [
            seen(MemberLeft, "/chat", "r", a, "gw1.a", "node_lost"),
            seen(UserLeft, "/chat", "r", a, "gw1.a", "node_lost"),
            seen(UserOffline, "/chat", "", a, "gw1.a", "node_lost"),
        ]
    );
    assert_eq!(node_ids(&broker), ["gw2"]);
    assert_eq!(socket_ids(&broker), ["gw2.a"]);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_leaving_node_departs_with_node_left_for_its_own_epoch_only() {
    let hub = Hub::new();
    let observer = hub.client();
    let mut events = Presence::subscribe(&observer).await;
    let broker = start(&hub, config("b1", LeaderMode::Always)).await;
    let mut gw = Gateway::new(&hub, "gw1", 5);
    gw.connect(socket("gw1.a", "/chat", Some("alice"), &[], true))
        .await;
    assert_eq!(events.next().await.0, Kind::UserOnline);
    gw.leaving(4).await; // a stale epoch: ignored
    gw.join("gw1.a", "r").await;
    assert_eq!(events.next().await.0, Kind::MemberJoined);
    assert_eq!(events.next().await.0, Kind::UserJoined);
    assert_eq!(socket_ids(&broker), ["gw1.a"]);
    gw.leaving(5).await;
    let a = Some("alice");
    assert_eq!(
        events.next().await,
        seen(Kind::MemberLeft, "/chat", "r", a, "gw1.a", "node_left")
    );
    assert_eq!(
        events.next().await,
        seen(Kind::UserLeft, "/chat", "r", a, "gw1.a", "node_left")
    );
    assert_eq!(
        events.next().await,
        seen(Kind::UserOffline, "/chat", "", a, "gw1.a", "node_left")
    );
    wait_until("the node gone", || node_ids(&broker).is_empty()).await;
    broker.shutdown().await;
}

async fn reserve(
    bus: &Bus,
    ns: &str,
    room: &str,
    id: &str,
    max: u32,
) -> Result<bus::reserve_reply::Outcome, BusError> {
    let request = bus::ReserveRequest {
        ns: ns.to_owned(),
        room: room.to_owned(),
        socket_id: id.to_owned(),
        max_members: max,
    };
    let reply = bus
        .request(
            subjects().reserve(),
            Bytes::from(request.encode_to_vec()),
            WAIT,
        )
        .await?;
    Ok(bus::ReserveReply::decode(reply)
        .expect("reply decodes")
        .outcome())
}

#[tokio::test]
async fn reservations_are_answered_by_the_leader() {
    use bus::reserve_reply::Outcome::*;
    let hub = Hub::new();
    let observer = hub.client();
    let mut events = Presence::subscribe(&observer).await;
    let broker = start(&hub, config("b1", LeaderMode::Always)).await;
    let _follower = start(&hub, config("b2", LeaderMode::Never)).await;
    let mut gw = Gateway::new(&hub, "gw1", 1);
    gw.connect(socket("gw1.a", "/chat", None, &[], true)).await;
    gw.connect(socket("gw1.b", "/chat", None, &[], false)).await;
    wait_until("both sockets", || socket_ids(&broker).len() == 2).await;

    let cases = [
        ("/chat", "vip", "gw1.a", 1, Joined),
        ("/chat", "vip", "gw1.a", 1, AlreadyMember),
        ("/chat", "vip", "gw1.b", 1, Full),
        ("/chat", "vip", "gw1.b", 2, Joined),
        ("/chat", "vip", "gw1.nope", 0, UnknownSocket),
        ("/other", "vip", "gw1.a", 0, UnknownSocket),
        ("/chat", "open", "gw1.b", 0, Joined),
    ];
    for (ns, room, id, max, want) in cases {
        let got = reserve(&gw.bus, ns, room, id, max)
            .await
            .expect("an answer");
        assert_eq!(got, want, "reserve {ns} {room} {id} max {max}");
    }
    // Only gw1.a announces presence: its reservation's join.
    assert_eq!(
        events.next().await,
        seen(Kind::MemberJoined, "/chat", "vip", None, "gw1.a", "")
    );
    let rooms = |id: &str| {
        broker.state_json()["sockets"]
            .as_array()
            .expect("sockets")
            .iter()
            .find(|s| s["id"] == id)
            .map(|s| s["rooms"].clone())
    };
    assert_eq!(rooms("gw1.b"), Some(json!(["open", "vip"])));
    // The gateway's own join event that follows a reservation is a duplicate.
    gw.join("gw1.a", "vip").await;
    gw.join("gw1.a", "after").await;
    assert_eq!(
        events.next().await,
        seen(Kind::MemberJoined, "/chat", "after", None, "gw1.a", "")
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn only_a_leader_takes_reservations() {
    let hub = Hub::new();
    let follower = start(&hub, config("b2", LeaderMode::Never)).await;
    let gw = Gateway::new(&hub, "gw1", 1);
    let got = reserve(&gw.bus, "/chat", "vip", "gw1.a", 1).await;
    assert!(matches!(got, Err(BusError::NoResponders)), "{got:?}");
    follower.shutdown().await;
}

#[tokio::test]
async fn malformed_messages_are_ignored() {
    let hub = Hub::new();
    let broker = start(&hub, config("b1", LeaderMode::Always)).await;
    let s = subjects();
    let junk = hub.client();
    let garbage = Bytes::from_static(b"\xff\xff\xff\xffnot protobuf");
    for subject in [
        s.member("gw1").unwrap(),
        s.heartbeat("gw1").unwrap(),
        s.reserve(),
        s.recover(),
        s.member("_2E").unwrap(),
    ] {
        junk.publish(subject, garbage.clone())
            .await
            .expect("publish");
    }
    // A message whose node disagrees with its subject, one without a body, and a request
    // that does not decode.
    let liar = bus::MemberMessage {
        node: "gw2".into(),
        epoch: 1,
        seq: 1,
        body: Some(Body::Connect(socket("gw2.a", "/", None, &[], false))),
    };
    junk.publish(s.member("gw1").unwrap(), Bytes::from(liar.encode_to_vec()))
        .await
        .expect("publish");
    let empty = bus::MemberMessage {
        node: "gw1".into(),
        epoch: 1,
        seq: 1,
        body: None,
    };
    junk.publish(s.member("gw1").unwrap(), Bytes::from(empty.encode_to_vec()))
        .await
        .expect("publish");
    let reply = junk
        .request(s.reserve(), garbage.clone(), Duration::from_millis(50))
        .await;
    assert!(matches!(reply, Err(BusError::Timeout)), "{reply:?}");

    let mut gw = Gateway::new(&hub, "gw1", 1);
    gw.connect(socket("gw1.a", "/", None, &[], false)).await;
    wait_until("the valid message", || socket_ids(&broker) == ["gw1.a"]).await;
    assert_eq!(broker.state_json()["nodes"][0]["seq"], 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn bad_configuration_is_refused() {
    let hub = Hub::new();
    let cases = [
        BrokerConfig {
            prefix: "a b".into(),
            ..config("b1", LeaderMode::Always)
        },
        BrokerConfig {
            id: String::new(),
            ..config("b1", LeaderMode::Always)
        },
        BrokerConfig {
            lease: Duration::from_millis(40),
            ..config("b1", LeaderMode::Always)
        },
        BrokerConfig {
            heartbeat: Duration::ZERO,
            ..config("b1", LeaderMode::Always)
        },
    ];
    for cfg in cases {
        let got = Broker::start(hub.client(), cfg.clone()).await;
        assert!(
            matches!(got, Err(switchboard_broker::BrokerError::Config(_))),
            "{cfg:?}"
        );
    }
    // The KV lease needs JetStream, which the in-process hub has not.
    let got = Broker::start(hub.client(), config("b1", LeaderMode::KvLease)).await;
    let err = got.expect_err("no JetStream");
    assert!(err.to_string().contains("JetStream is required"), "{err}");
}

// ---- connection state recovery --------------------------------------------------------------

const PID: [u8; 32] = [1; 32];

/// A socket of `/chat` with presence and recovery settings (pid hash [`PID`]).
fn recoverable(id: &str, user: &str, window_ms: u64) -> bus::SocketInfo {
    bus::SocketInfo {
        recovery: Some(bus::Recovery {
            pid_hash: PID.to_vec().into(),
            window_ms,
        }),
        ..socket(id, "/chat", Some(user), &["r"], true)
    }
}

impl Gateway {
    async fn drop_socket(&mut self, id: &str, reason: &str) {
        self.event(Body::Disconnect(bus::Disconnect {
            id: id.to_owned(),
            reason: reason.to_owned(),
            recoverable: true,
        }))
        .await;
    }
}

async fn claim(bus: &Bus, pid: &[u8], node: &str) -> bus::RecoverReply {
    let request = bus::RecoverRequest {
        ns: "/chat".to_owned(),
        pid_hash: pid.to_vec().into(),
        node: node.to_owned(),
    };
    let reply = bus
        .request(
            subjects().recover(),
            Bytes::from(request.encode_to_vec()),
            WAIT,
        )
        .await
        .expect("a claim is answered");
    bus::RecoverReply::decode(reply).expect("reply decodes")
}

/// Waits for the three presence events of alice's socket `id` connecting into `r`.
async fn alice_arrives(events: &mut Presence, id: &str) {
    use Kind::*;
    let a = Some("alice");
    for expected in [
        seen(UserOnline, "/chat", "", a, id, ""),
        seen(MemberJoined, "/chat", "r", a, id, ""),
        seen(UserJoined, "/chat", "r", a, id, ""),
    ] {
        assert_eq!(events.next().await, expected);
    }
}

/// Connects bob on `gw` and checks that his arrival is the next presence event: nothing was
/// announced in between.
async fn nothing_announced_before_bob(gw: &mut Gateway, events: &mut Presence) {
    gw.connect(socket("bob.1", "/chat", Some("bob"), &[], true))
        .await;
    assert_eq!(
        events.next().await,
        seen(Kind::UserOnline, "/chat", "", Some("bob"), "bob.1", "")
    );
}

#[tokio::test]
async fn a_kept_session_is_claimed_over_broker_recover_and_resumed_silently() {
    use bus::recover_reply::Outcome::*;
    let hub = Hub::new();
    let client = hub.client();
    let mut events = Presence::subscribe(&client).await;
    let broker = start(&hub, config("b1", LeaderMode::Always)).await;
    let mut gw1 = Gateway::new(&hub, "gw1", 1);
    let mut gw2 = Gateway::new(&hub, "gw2", 1);
    gw1.connect(recoverable("gw1.a", "alice", 60_000)).await;
    alice_arrives(&mut events, "gw1.a").await;
    gw1.drop_socket("gw1.a", "transport close").await;
    wait_until("the session is kept", || socket_ids(&broker).is_empty()).await;
    assert_eq!(claim(&client, &[2; 32], "gw2").await.outcome(), Unknown);
    let granted = claim(&client, &PID, "gw2").await;
    assert_eq!(granted.outcome(), Recovered);
    let session = granted.socket.expect("the session");
    assert_eq!(session.id, "gw1.a");
    assert_eq!(session.user.as_deref(), Some("alice"));
    assert_eq!(session.rooms, ["r"]);
    assert_eq!(
        session.recovery.map(|r| r.pid_hash.to_vec()),
        Some(PID.to_vec())
    );
    assert_eq!(claim(&client, &PID, "gw3").await.outcome(), Busy);
    gw2.connect(bus::SocketInfo {
        recovered: true,
        ..recoverable("gw1.a", "alice", 60_000)
    })
    .await;
    wait_until("the session is back, on gw2", || {
        broker.state_json()["sockets"]
            == json!([
                {"id": "gw1.a", "ns": "/chat", "node": "gw2", "user": "alice", "rooms": ["r"]},
            ])
    })
    .await;
    nothing_announced_before_bob(&mut gw2, &mut events).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_claim_takes_over_a_socket_still_connected_on_its_old_node() {
    use bus::recover_reply::Outcome::*;
    let hub = Hub::new();
    let client = hub.client();
    let mut commands = client
        .subscribe(subjects().command_node("gw1").expect("bounded"))
        .await
        .expect("subscribe");
    // A long takeover timeout and heartbeat (so a 1 s sessions tick and a 5 s lease tick): the
    // answer must come with the old node's disconnect, not with a later tick. Three rounds, so
    // a tick cannot pass for it.
    let broker = Broker::start_with(
        hub.client(),
        BrokerConfig {
            heartbeat: Duration::from_secs(10),
            ..config("b1", LeaderMode::Always)
        },
        switchboard_broker::RecoveryConfig {
            takeover_timeout: Duration::from_secs(60),
        },
    )
    .await
    .expect("broker starts");
    let mut gw1 = Gateway::new(&hub, "gw1", 1);
    for n in 1..=3u8 {
        let id = format!("gw1.{n}");
        let pid = [n; 32];
        gw1.connect(bus::SocketInfo {
            recovery: Some(bus::Recovery {
                pid_hash: pid.to_vec().into(),
                window_ms: 60_000,
            }),
            ..recoverable(&id, "alice", 60_000)
        })
        .await;
        wait_until("the socket", || socket_ids(&broker).contains(&id)).await;
        let claimed = tokio::spawn({
            let client = client.clone();
            async move { claim(&client, &pid, "gw2").await }
        });
        let envelope: bus::Envelope = recv(&mut commands, "the takeover command").await;
        let Some(bus::envelope::Body::Command(command)) = envelope.body else {
            panic!("not a command: {envelope:?}");
        };
        assert_eq!(command.ns, "/chat");
        assert_eq!(command.target.map(|t| t.socket_ids), Some(vec![id.clone()]));
        assert!(matches!(
            command.action,
            Some(bus::command::Action::Takeover(_))
        ));
        assert!(!claimed.is_finished(), "answered before the takeover");
        gw1.drop_socket(&id, "transport close").await;
        let dropped = tokio::time::Instant::now();
        let reply = claimed.await.expect("claim task");
        assert!(
            dropped.elapsed() < Duration::from_millis(300),
            "answered {:?} after the disconnect",
            dropped.elapsed()
        );
        assert_eq!(reply.outcome(), Recovered);
        assert_eq!(reply.socket.map(|s| s.id), Some(id));
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn a_takeover_that_gets_no_answer_is_granted_after_the_timeout() {
    use bus::recover_reply::Outcome::*;
    let hub = Hub::new();
    let client = hub.client();
    let timeout = Duration::from_millis(300);
    let broker = Broker::start_with(
        hub.client(),
        config("b1", LeaderMode::Always),
        switchboard_broker::RecoveryConfig {
            takeover_timeout: timeout,
        },
    )
    .await
    .expect("broker starts");
    let mut gw1 = Gateway::new(&hub, "gw1", 1);
    gw1.connect(recoverable("gw1.a", "alice", 60_000)).await;
    wait_until("the socket", || socket_ids(&broker) == ["gw1.a"]).await;
    let asked = tokio::time::Instant::now();
    let reply = claim(&client, &PID, "gw2").await;
    assert!(asked.elapsed() >= timeout, "answered before the timeout");
    assert_eq!(reply.outcome(), Recovered);
    let kept = &broker.state_json()["kept_sessions"];
    assert_eq!(kept[0]["id"], "gw1.a");
    assert_eq!(kept[0]["state"], "claimed");
    assert_eq!(kept[0]["reason"], "node_lost");
    broker.shutdown().await;
}

#[tokio::test]
async fn the_end_of_a_window_announces_the_departure_once() {
    use Kind::*;
    let hub = Hub::new();
    let client = hub.client();
    let mut events = Presence::subscribe(&client).await;
    let broker = start(&hub, config("b1", LeaderMode::Always)).await;
    let mut gw1 = Gateway::new(&hub, "gw1", 1);
    gw1.connect(recoverable("gw1.a", "alice", 300)).await;
    alice_arrives(&mut events, "gw1.a").await;
    gw1.drop_socket("gw1.a", "ping timeout").await;
    let a = Some("alice");
    for expected in [
        seen(MemberLeft, "/chat", "r", a, "gw1.a", "ping timeout"),
        seen(UserLeft, "/chat", "r", a, "gw1.a", "ping timeout"),
        seen(UserOffline, "/chat", "", a, "gw1.a", "ping timeout"),
    ] {
        assert_eq!(events.next().await, expected);
    }
    // A few sweeps later, nothing more about it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(broker.state_json().get("kept_sessions").is_none());
    nothing_announced_before_bob(&mut gw1, &mut events).await;
    broker.shutdown().await;
}
