//! The paced rebuild against a real `nats-server` whose `max_pending` (what it buffers for one
//! client before cutting it off as a slow consumer) is small: many simulated gateways hold
//! snapshots that together are several times that, a broker rebuilds, stops, and a new one
//! rebuilds again. It must converge to exactly the nodes' truth — including sockets that
//! connected between the windows of a node's paced snapshot — never have more than its budget of
//! snapshot bytes in flight, and never be cut off (its NATS link stays on its first
//! generation). Sizes are small enough for a debug build; the small `max_pending` and budget make
//! the storm reproducible at these sizes (with the budget lifted, all nodes send at once and
//! NATS cuts the broker off).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use switchboard_broker::{Broker, BrokerConfig, LeaderMode, RebuildConfig, RecoveryConfig};
use switchboard_bus::Bus;
use switchboard_proto::Message as _;
use switchboard_proto::bus::{self, member_message::Body};
use switchboard_proto::subject::Subjects;
use switchboard_tests::{NatsServer, connect, wait_until};

const PREFIX: &str = "rb";
const NODES: usize = 16;
const SOCKETS_PER_NODE: usize = 1500;
/// Sockets per snapshot part (~45 KB: under the server's 64 KiB `max_payload`).
const PART_SOCKETS: usize = 150;
/// What the server buffers for one client before calling it a slow consumer.
const MAX_PENDING_BYTES: usize = 1 << 20;
/// The broker's budget: a quarter of `max_pending`; windows of one part.
const BUDGET_BYTES: usize = 256 << 10;
const HEARTBEAT: Duration = Duration::from_millis(100);
const WAIT: Duration = Duration::from_secs(60);

/// Every socket id the simulated nodes hold now: the truth.
type Truth = Arc<Mutex<BTreeSet<String>>>;

fn socket(id: String) -> bus::SocketInfo {
    bus::SocketInfo {
        ns: "/chat".into(),
        user: Some(format!("user-{id}")),
        rooms: vec![format!("user:{id}"), "lobby".into()],
        handshake: Some(bus::Handshake {
            address: "127.0.0.1:50000".into(),
            headers: vec![bus::Header {
                name: "user-agent".into(),
                value: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
                    .into(),
            }],
            query: "EIO=4&transport=websocket".into(),
            claims_json: "{}".into(),
            connected_at_ms: 1,
        }),
        data_json: "null".into(),
        id,
        ..Default::default()
    }
}

/// One simulated gateway: its own NATS connection, its sockets, and the paced snapshot it is
/// sending (parts not yet sent), answering requests the way `gateway/src/cluster` does.
struct Node {
    bus: Bus,
    subjects: Subjects,
    name: String,
    epoch: u64,
    seq: u64,
    sockets: Vec<bus::SocketInfo>,
    /// (broker, request id, sequence it was cut at, the parts not sent yet by number).
    kept: Option<(String, u64, u64, Vec<Vec<bus::SocketInfo>>)>,
    truth: Truth,
    /// Every window a broker asked of this node, for the test to check.
    windows: Arc<Mutex<Vec<u64>>>,
}

impl Node {
    fn message(&self, seq: u64, body: Body) -> Bytes {
        Bytes::from(
            bus::MemberMessage {
                node: self.name.clone(),
                epoch: self.epoch,
                seq,
                body: Some(body),
            }
            .encode_to_vec(),
        )
    }

    async fn send(&self, payload: Bytes) {
        let subject = self.subjects.member(&self.name).expect("bounded");
        self.bus.publish(subject, payload).await.expect("publish");
    }

    async fn beat(&self) {
        let beat = bus::Heartbeat {
            node: self.name.clone(),
            epoch: self.epoch,
            seq: self.seq,
            ..Default::default()
        };
        let subject = self.subjects.heartbeat(&self.name).expect("bounded");
        let payload = Bytes::from(beat.encode_to_vec());
        self.bus.publish(subject, payload).await.expect("publish");
    }

    /// A socket connects (a sequenced event), known to the truth at once.
    async fn connect_one(&mut self) {
        let id = format!("{}.x{}", self.name, self.seq + 1);
        self.truth.lock().insert(id.clone());
        let info = socket(id);
        self.sockets.push(info.clone());
        self.seq += 1;
        self.send(self.message(self.seq, Body::Connect(info))).await;
    }

    async fn answer(&mut self, req: bus::SnapshotRequest) {
        self.windows.lock().push(req.window_bytes);
        let resume = matches!(&self.kept, Some((b, r, _, parts))
            if *b == req.broker && *r == req.request_id && req.from_part > 0
                && (req.from_part as usize) < parts.len());
        if resume {
            // Between two windows of its snapshot, the node's life goes on.
            self.connect_one().await;
        } else {
            let parts = self.sockets.chunks(PART_SOCKETS).map(<[_]>::to_vec);
            let parts: Vec<_> = parts.collect();
            self.kept = Some((req.broker.clone(), req.request_id, self.seq, parts));
        }
        let from = if resume { req.from_part as usize } else { 0 };
        let Some((broker, request_id, seq, parts)) = self.kept.take() else {
            return;
        };
        let window = usize::try_from(req.window_bytes).unwrap_or(usize::MAX);
        let part = |i: usize, paused: bool| bus::SnapshotPart {
            part: i as u32,
            last: i + 1 == parts.len(),
            sockets: parts[i].clone(),
            request_id,
            broker: broker.clone(),
            paused,
        };
        // Parts from `from` while their payloads fit the window (always one).
        let (mut end, mut used) = (from, 0);
        while end < parts.len() {
            let len = self.message(seq, Body::Snapshot(part(end, true))).len();
            if end > from && used + len > window {
                break;
            }
            used += len;
            end += 1;
        }
        for i in from..end {
            let paused = i + 1 == end && end < parts.len();
            self.send(self.message(seq, Body::Snapshot(part(i, paused))))
                .await;
        }
        if end < parts.len() {
            self.kept = Some((broker, request_id, seq, parts));
        }
    }

    /// Serves the node until the test ends: heartbeats, resyncs and snapshot requests.
    async fn run(mut self) {
        let mut requests = self
            .bus
            .subscribe(self.subjects.snapshot(&self.name).expect("bounded"))
            .await
            .expect("subscribe");
        let mut resyncs = self
            .bus
            .subscribe(self.subjects.resync())
            .await
            .expect("subscribe");
        self.bus.flush().await.expect("flush");
        let mut tick = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                _ = tick.tick() => self.beat().await,
                Some(msg) = resyncs.next() => {
                    let resync = bus::ResyncRequest::decode(msg.payload).unwrap_or_default();
                    assert!(resync.announce, "a broker asked every node for everything at once");
                    self.beat().await;
                }
                Some(msg) = requests.next() => {
                    let req = bus::SnapshotRequest::decode(msg.payload).expect("a request");
                    self.answer(req).await;
                }
            }
        }
    }
}

fn ids(broker: &Broker) -> BTreeSet<String> {
    broker
        .directory()
        .lock()
        .sockets()
        .map(|s| s.id().to_owned())
        .collect()
}

async fn start_broker(url: &str, id: &str) -> (Broker, Bus) {
    let bus = connect(url, id).await;
    let cfg = BrokerConfig {
        id: id.to_owned(),
        prefix: PREFIX.to_owned(),
        lease: Duration::from_secs(10),
        heartbeat: HEARTBEAT,
        leader: LeaderMode::Always,
        presence_batches: true,
    };
    let rebuild = RebuildConfig {
        budget_bytes: BUDGET_BYTES,
        ..RebuildConfig::default()
    };
    let broker = Broker::start_tuned(bus.clone(), cfg, RecoveryConfig::default(), rebuild)
        .await
        .expect("broker starts");
    (broker, bus)
}

/// Waits until `broker` holds exactly the truth (as it stands once the broker has caught up),
/// then checks the budget and the link.
async fn converges(broker: &Broker, bus: &Bus, truth: &Truth, what: &str) {
    wait_until(what, WAIT, || {
        let want = truth.lock().clone();
        ids(broker) == want && broker.rebuild_stats().rebuilds >= 1
    })
    .await;
    let stats = broker.rebuild_stats();
    assert!(
        stats.max_in_flight_bytes <= BUDGET_BYTES,
        "{what}: {} bytes in flight over a budget of {BUDGET_BYTES}",
        stats.max_in_flight_bytes
    );
    assert!(stats.max_in_flight_bytes > 0, "{what}: nothing was paced");
    assert_eq!(
        bus.link().borrow().generation,
        1,
        "{what}: the broker's NATS link was cut (a slow consumer) and came back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_rebuilds_many_large_nodes_within_its_budget() {
    let server = NatsServer::start_configured(&format!(
        "max_pending: {MAX_PENDING_BYTES}\nmax_payload: 65536\n"
    ));
    let url = server.url();
    let subjects = Subjects::new(PREFIX).expect("valid prefix");
    let truth: Truth = Arc::default();
    let windows: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut total_bytes = 0;
    for n in 0..NODES {
        let name = format!("n{n:02}");
        let sockets: Vec<_> = (0..SOCKETS_PER_NODE)
            .map(|i| socket(format!("{name}.{i:05}")))
            .collect();
        total_bytes += sockets.iter().map(|s| s.encoded_len()).sum::<usize>();
        truth.lock().extend(sockets.iter().map(|s| s.id.clone()));
        let node = Node {
            bus: connect(&url, &name).await,
            subjects: subjects.clone(),
            name,
            epoch: 1 + n as u64,
            seq: 0,
            sockets,
            kept: None,
            truth: truth.clone(),
            windows: windows.clone(),
        };
        tokio::spawn(node.run());
    }
    assert!(
        total_bytes > 4 * MAX_PENDING_BYTES,
        "the snapshots ({total_bytes} bytes) must dwarf max_pending"
    );

    let (first, first_bus) = start_broker(&url, "b1").await;
    converges(&first, &first_bus, &truth, "the first broker's rebuild").await;
    first.shutdown().await;
    drop(first_bus);

    // A broker restarted (a new process: a new connection, an empty directory).
    let (second, second_bus) = start_broker(&url, "b2").await;
    converges(
        &second,
        &second_bus,
        &truth,
        "the restarted broker's rebuild",
    )
    .await;
    assert!(
        windows
            .lock()
            .iter()
            .all(|&w| w > 0 && w as usize <= BUDGET_BYTES),
        "every request is paced, within the budget"
    );
    // Sockets connected between windows were held back and applied after their snapshot.
    assert!(
        truth.lock().iter().any(|id| id.contains(".x")),
        "some sockets connected during a paced snapshot"
    );
    second.shutdown().await;
}
