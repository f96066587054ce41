//! A crowd of N client connections: each one task that connects (and optionally joins a room),
//! then listens, answering heartbeats and timing `say` deliveries, until told to stop.
//!
//! Per connection there is one task, one [`Conn`] (a socket or two and a small buffer) and a watch
//! receiver; everything else is shared in [`Shared`]. With several targets (gateways of one
//! cluster), connection `i` goes to target `i % targets`, and deliveries are also counted and
//! timed per target, so that loss or delay on one gateway shows. Handshakes in flight are bounded by a
//! semaphore, setup by a deadline, shutdown by a deadline after which the remaining tasks are
//! aborted. All tasks live in one `JoinSet`, so none outlives the crowd.
//!
//! With many rooms ([`Rooms::Many`], the `rooms` scenario) member `i` joins room `i / size`,
//! and the first member of each room is its speaker: besides listening, its task sends what the
//! scenario's scheduler hands it through a small bounded channel ([`Crowd::speakers`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::Value;
use switchboard_codec::socketio::{Packet, PacketType};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::client::{Conn, Event, Open, Say, Target, Transport};
use crate::histogram::Histogram;
use crate::report::Samples;

/// One connection's whole setup (TCP, upgrade, namespace, join) must finish within this.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Deliveries slower than this are also counted per message, to tell a stall (every delivery of
/// a few messages late) from trouble on a few sockets (some deliveries of many messages late).
pub(crate) const SLOW_DELIVERY: Duration = Duration::from_millis(100);
/// The event whose deliveries are timed.
pub(crate) const SAY: &str = "say";
/// Messages a speaker may have waiting before the scheduler waits for it.
const SPEAKER_QUEUE: usize = 16;

/// State shared by the crowd, the sender and the scenario.
pub(crate) struct Shared {
    /// Send timestamps are nanoseconds since this instant (one process, one clock).
    epoch: Instant,
    /// Connections in the crowd (each message is due once to each).
    members: u64,
    /// Deliveries that may be outstanding before the sender waits (rate 0 only).
    window: u64,
    /// Messages sent.
    pub(crate) sent: AtomicU64,
    /// Deliveries received, all members together.
    pub(crate) delivered: AtomicU64,
    /// When the last delivery arrived (ns since `epoch`).
    pub(crate) last_delivery_ns: AtomicU64,
    /// Latency of every delivery, ns.
    pub(crate) latency: Histogram,
    /// Set-up time of every connection that completed it (from its turn to connect to the
    /// namespace CONNECT, or the join ack), ns.
    pub(crate) connect_time: Histogram,
    /// With several targets: latency of the deliveries to each target's members (their counts
    /// are the deliveries per target). Empty with one target, to keep its hot path short.
    pub(crate) latency_by_target: Vec<Histogram>,
    /// Per message (by send time, ns) with a delivery slower than [`SLOW_DELIVERY`]: how many
    /// of its deliveries were, and the slowest (ns). At most one entry per message sent.
    pub(crate) slow: Mutex<BTreeMap<u64, (u64, u64)>>,
    /// Set by the sender before it waits for the window to open.
    sender_waiting: AtomicBool,
    /// Wakes the sender.
    pub(crate) wake: Notify,
    /// Connections that ended before being told to (closed by the server, errors).
    pub(crate) dropped: Mutex<Samples>,
    /// Packets that were not expected (anything but a `say` to a member).
    pub(crate) unexpected: Mutex<Samples>,
}

impl Shared {
    /// Shared state for `members` deliveries per message (the connections that receive each
    /// one) spread over `targets` servers and a window of `window` messages.
    pub(crate) fn new(members: usize, window: u64, targets: usize) -> Self {
        Self {
            epoch: Instant::now(),
            members: members as u64,
            window: window.saturating_mul(members as u64),
            sent: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            last_delivery_ns: AtomicU64::new(0),
            latency: Histogram::default(),
            connect_time: Histogram::default(),
            latency_by_target: if targets > 1 {
                (0..targets).map(|_| Histogram::default()).collect()
            } else {
                Vec::new()
            },
            slow: Mutex::new(BTreeMap::new()),
            sender_waiting: AtomicBool::new(false),
            wake: Notify::new(),
            dropped: Mutex::new(Samples::default()),
            unexpected: Mutex::new(Samples::default()),
        }
    }

    /// Nanoseconds since the epoch.
    pub(crate) fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// The instant `ns` after the epoch.
    pub(crate) fn instant(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }

    /// Deliveries due but not received yet.
    pub(crate) fn outstanding(&self) -> u64 {
        let due = self
            .sent
            .load(Ordering::SeqCst)
            .saturating_mul(self.members);
        due.saturating_sub(self.delivered.load(Ordering::SeqCst))
    }

    /// Whether the window lets the sender send another message.
    pub(crate) fn window_open(&self) -> bool {
        self.outstanding() < self.window
    }

    /// Called by the sender before it waits: after this, a delivery that opens the window wakes
    /// it. Returns whether the window is open already (then it must not wait).
    pub(crate) fn arm_wake(&self) -> bool {
        self.sender_waiting.store(true, Ordering::SeqCst);
        self.window_open()
    }

    /// Counts a delivery of the message sent at `sent_ns` to a member of target `target`.
    fn on_delivery(&self, sent_ns: u64, target: usize) {
        let now = self.now_ns();
        let latency = now.saturating_sub(sent_ns);
        self.latency.record(latency);
        if let Some(h) = self.latency_by_target.get(target) {
            h.record(latency);
        }
        if latency >= SLOW_DELIVERY.as_nanos() as u64 {
            let mut slow = self.slow.lock();
            let entry = slow.entry(sent_ns).or_default();
            entry.0 += 1;
            entry.1 = entry.1.max(latency);
        }
        self.delivered.fetch_add(1, Ordering::SeqCst);
        self.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
        if self.sender_waiting.load(Ordering::Relaxed)
            && self.window_open()
            && self.sender_waiting.swap(false, Ordering::SeqCst)
        {
            self.wake.notify_one();
        }
    }
}

/// The send time carried by a `say` delivery in namespace `nsp`, if `packet` is one.
pub(crate) fn say_time(packet: &Packet, nsp: &str) -> Option<u64> {
    if packet.kind != PacketType::Event || packet.nsp != nsp {
        return None;
    }
    match packet.data.as_ref()?.as_array()?.as_slice() {
        [Value::String(name), arg, ..] if name == SAY => arg.get("t")?.as_u64(),
        _ => None,
    }
}

/// Which rooms the connections join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Rooms {
    /// None: connect only.
    None,
    /// All the same room.
    One(String),
    /// `count` rooms of `size` members: member `i` joins `{prefix}{i / size}`, and member
    /// `k * size` is room `k`'s speaker.
    Many {
        count: usize,
        size: usize,
        prefix: String,
    },
}

impl Rooms {
    /// The room member `i` joins.
    pub(crate) fn room_of(&self, i: usize) -> Option<String> {
        match self {
            Self::None => None,
            Self::One(room) => Some(room.clone()),
            Self::Many { size, prefix, .. } => Some(format!("{prefix}{}", i / size.max(&1))),
        }
    }

    /// The room `member` speaks for, if it is a speaker.
    fn speaker_of(&self, i: usize) -> Option<usize> {
        match self {
            Self::Many { size, .. } if i.is_multiple_of(*size.max(&1)) => Some(i / size.max(&1)),
            _ => None,
        }
    }
}

/// What every connection of the crowd does.
pub(crate) struct Plan {
    /// The servers, never empty; member `i` connects to `targets[i % targets.len()]`.
    pub(crate) targets: Vec<Target>,
    pub(crate) nsp: String,
    /// The rooms to join after connecting.
    pub(crate) rooms: Rooms,
    /// How the members connect.
    pub(crate) transport: Transport,
    /// Handshakes in flight at once.
    pub(crate) concurrency: usize,
    /// Recognises `say` deliveries in `nsp` cheaply.
    pub(crate) say: Say,
}

/// Which of `targets` servers member `i` connects to.
pub(crate) fn target_of(i: usize, targets: usize) -> usize {
    i % targets.max(1)
}

/// How many of `members` connect to target `t` of `targets`.
pub(crate) fn members_of(t: usize, members: usize, targets: usize) -> usize {
    let targets = targets.max(1);
    members / targets + usize::from(t < members % targets)
}

/// What one connection reports when it ends.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Outcome {
    /// The index of the target it connected to.
    pub(crate) target: usize,
    /// `say` deliveries it received.
    pub(crate) deliveries: u64,
    /// Heartbeats it answered.
    pub(crate) pings: u64,
    /// Whether it was connected (setup succeeded).
    pub(crate) connected: bool,
}

/// The running crowd.
pub(crate) struct Crowd {
    tasks: JoinSet<Outcome>,
    stop: watch::Sender<bool>,
    /// Connections that completed setup.
    pub(crate) connected: usize,
    /// Why the others failed.
    pub(crate) failures: Samples,
    /// The first Engine.IO open packet seen (server heartbeat settings).
    pub(crate) open: Option<Open>,
    /// With [`Rooms::Many`]: room `k`'s speaker takes the texts to send from `speakers[k]`.
    pub(crate) speakers: Vec<mpsc::Sender<Bytes>>,
}

/// Opens `n` connections and waits until each is set up or failed, or `deadline` passes.
pub(crate) async fn start(
    n: usize,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    deadline: Instant,
) -> Crowd {
    let permits = Arc::new(Semaphore::new(plan.concurrency));
    let (ready_tx, mut ready_rx) = mpsc::channel(n.max(1));
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut speakers = Vec::new();
    for i in 0..n {
        let speak = plan.rooms.speaker_of(i).map(|_| {
            let (tx, rx) = mpsc::channel(SPEAKER_QUEUE);
            speakers.push(tx);
            rx
        });
        tasks.spawn(member(
            Member {
                index: i,
                target: target_of(i, plan.targets.len()),
                speak,
            },
            plan.clone(),
            shared.clone(),
            permits.clone(),
            ready_tx.clone(),
            stop_rx.clone(),
        ));
    }
    drop(ready_tx);

    let mut crowd = Crowd {
        tasks,
        stop,
        connected: 0,
        failures: Samples::default(),
        open: None,
        speakers,
    };
    let started = Instant::now();
    let mut next_progress = started + Duration::from_secs(1);
    while crowd.connected + (crowd.failures.count() as usize) < n {
        match tokio::time::timeout_at(deadline.into(), ready_rx.recv()).await {
            Ok(Some(Ok(open))) => {
                crowd.connected += 1;
                crowd.open.get_or_insert(open);
            }
            Ok(Some(Err(e))) => crowd.failures.push(e),
            Ok(None) => break,
            Err(_) => {
                let missing = n - crowd.connected - crowd.failures.count() as usize;
                for _ in 0..missing {
                    crowd
                        .failures
                        .push("not set up before the setup deadline".to_owned());
                }
                break;
            }
        }
        if Instant::now() >= next_progress {
            crate::progress::line(format_args!(
                "  {} of {n} connected, {} failed after {:.1} s",
                crowd.connected,
                crowd.failures.count(),
                started.elapsed().as_secs_f64()
            ));
            next_progress += Duration::from_secs(1);
        }
    }
    crowd
}

impl Crowd {
    /// Tells every connection to close, waits up to `within` for them, aborts the rest.
    pub(crate) async fn close(mut self, within: Duration) -> Vec<Outcome> {
        let _ = self.stop.send(true);
        let mut outcomes = Vec::with_capacity(self.tasks.len());
        let deadline = tokio::time::Instant::now() + within;
        while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, self.tasks.join_next()).await
        {
            if let Ok(outcome) = joined {
                outcomes.push(outcome);
            }
        }
        self.tasks.shutdown().await;
        outcomes
    }
}

async fn setup(plan: &Plan, index: usize, target: &Target) -> Result<(Conn, Open)> {
    let (mut conn, open) = Conn::connect(target, &plan.nsp, plan.transport).await?;
    if let Some(room) = plan.rooms.room_of(index) {
        conn.join(&plan.nsp, &room).await?;
    }
    Ok((conn, open))
}

/// Who one member is.
struct Member {
    /// Its index in the crowd.
    index: usize,
    /// The index of the target it connects to.
    target: usize,
    /// If it speaks for its room: what to send.
    speak: Option<mpsc::Receiver<Bytes>>,
}

/// What a speaker was handed next, or never for a member that is not one.
async fn next_speech(speak: &mut Option<mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match speak {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// One connection's life.
async fn member(
    who: Member,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    ready: mpsc::Sender<Result<Open, String>>,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let Member {
        index,
        target,
        mut speak,
    } = who;
    let mut outcome = Outcome {
        target,
        ..Outcome::default()
    };
    let setup = {
        let _permit = permits.acquire().await;
        let began = Instant::now();
        let setup = timeout(SETUP_TIMEOUT, setup(&plan, index, &plan.targets[target])).await;
        if matches!(setup, Ok(Ok(_))) {
            shared
                .connect_time
                .record(began.elapsed().as_nanos() as u64);
        }
        setup
    };
    let mut client = match setup {
        Ok(Ok((client, open))) => {
            outcome.connected = true;
            let _ = ready.send(Ok(open)).await;
            client
        }
        Ok(Err(e)) => {
            let _ = ready.send(Err(format!("{e:#}"))).await;
            return outcome;
        }
        Err(_) => {
            let _ = ready
                .send(Err(format!("setup took over {SETUP_TIMEOUT:?}")))
                .await;
            return outcome;
        }
    };
    drop(ready);

    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => {
                outcome.pings = client.pings();
                client.close().await;
                return outcome;
            }
            text = next_speech(&mut speak) => match text {
                Some(text) => {
                    if let Err(e) = client.send_text(&text).await {
                        shared.dropped.lock().push(format!("write error: {e:#}"));
                        break;
                    }
                    continue;
                }
                // The scheduler is done: listen only.
                None => speak = None,
            },
            read = client.fill() => match read {
                Ok(0) => {
                    shared.dropped.lock().push("server closed the connection (end of stream)".to_owned());
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    shared.dropped.lock().push(format!("read error: {e:#}"));
                    break;
                }
            },
        }
        match handle_buffered(&mut client, &plan, &shared, &mut outcome) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                shared.dropped.lock().push(format!("{e:#}"));
                break;
            }
        }
        if let Err(e) = client.flush().await {
            shared.dropped.lock().push(format!("write error: {e:#}"));
            break;
        }
    }
    outcome.pings = client.pings();
    outcome
}

/// Handles every buffered event; false when the server closed the session.
fn handle_buffered(
    client: &mut Conn,
    plan: &Plan,
    shared: &Shared,
    outcome: &mut Outcome,
) -> Result<bool> {
    while let Some(event) = client.next_buffered(Some(&plan.say))? {
        match event {
            Event::Say(t) => {
                outcome.deliveries += 1;
                shared.on_delivery(t, outcome.target);
            }
            Event::Packet(p) => match say_time(&p, &plan.nsp) {
                Some(t) => {
                    outcome.deliveries += 1;
                    shared.on_delivery(t, outcome.target);
                }
                None => shared.unexpected.lock().push(Event::Packet(p).to_string()),
            },
            Event::Closed(reason) => {
                shared
                    .dropped
                    .lock()
                    .push(format!("server closed the session: {reason}"));
                return Ok(false);
            }
            other => shared.unexpected.lock().push(other.to_string()),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_codec::socketio::{Decoded, decode};

    fn packet(text: &str) -> Packet {
        match decode(text).expect(text) {
            Decoded::Complete(p) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn say_times() {
        let table: &[(&str, Option<u64>)] = &[
            (
                r#"2/chat,["say",{"room":"bench","t":42,"p":"xx"}]"#,
                Some(42),
            ),
            (r#"2/chat,["say",{"t":7},"extra"]"#, Some(7)),
            (r#"2["say",{"t":42}]"#, None),
            (r#"2/chat,["said",{"t":42}]"#, None),
            (r#"2/chat,["say",{"t":-1}]"#, None),
            (r#"2/chat,["say"]"#, None),
            (r#"3/chat,1["say",{"t":42}]"#, None),
        ];
        for &(text, want) in table {
            assert_eq!(say_time(&packet(text), "/chat"), want, "{text}");
        }
    }

    #[test]
    fn room_grid() {
        let grid = Rooms::Many {
            count: 3,
            size: 4,
            prefix: "r-".to_owned(),
        };
        let rooms: Vec<_> = (0..12).map(|i| grid.room_of(i).expect("a room")).collect();
        assert_eq!(rooms[..5], ["r-0", "r-0", "r-0", "r-0", "r-1"]);
        assert_eq!(rooms[11], "r-2");
        let speakers: Vec<_> = (0..12).filter_map(|i| grid.speaker_of(i)).collect();
        assert_eq!(speakers, [0, 1, 2]);
        assert_eq!(grid.speaker_of(4), Some(1));
        let one = Rooms::One("bench".to_owned());
        assert_eq!(one.room_of(7).as_deref(), Some("bench"));
        assert_eq!(one.speaker_of(0), None);
        assert_eq!(Rooms::None.room_of(0), None);
    }

    #[test]
    fn window_accounting() {
        let shared = Shared::new(10, 2, 1);
        assert!(shared.window_open());
        shared.sent.store(2, Ordering::SeqCst);
        assert_eq!(shared.outstanding(), 20);
        assert!(!shared.arm_wake());
        for _ in 0..10 {
            shared.on_delivery(shared.now_ns(), 0);
        }
        assert_eq!(shared.outstanding(), 10);
        assert!(shared.window_open());
        // The delivery that opened the window disarmed the flag and left a wake-up permit.
        assert!(!shared.sender_waiting.load(Ordering::SeqCst));
        assert_eq!(shared.latency.count(), 10);
    }

    #[test]
    fn round_robin() {
        // (members, targets) → members per target.
        let table: &[(usize, usize, &[usize])] = &[
            (2000, 2, &[1000, 1000]),
            (5, 2, &[3, 2]),
            (5, 1, &[5]),
            (1, 3, &[1, 0, 0]),
            (7, 3, &[3, 2, 2]),
        ];
        for &(members, targets, want) in table {
            let got: Vec<_> = (0..targets)
                .map(|t| members_of(t, members, targets))
                .collect();
            assert_eq!(got, want, "{members} over {targets}");
        }
        assert_eq!(
            (0..5).map(|i| target_of(i, 2)).collect::<Vec<_>>(),
            [0, 1, 0, 1, 0]
        );
    }

    #[test]
    fn deliveries_per_target() {
        let single = Shared::new(4, 1, 1);
        single.on_delivery(single.now_ns(), 0);
        assert!(single.latency_by_target.is_empty());
        let shared = Shared::new(4, 1, 2);
        for target in [0, 1, 1, 1] {
            shared.on_delivery(shared.now_ns(), target);
        }
        let counts: Vec<_> = shared
            .latency_by_target
            .iter()
            .map(Histogram::count)
            .collect();
        assert_eq!(counts, [1, 3]);
        assert_eq!(shared.latency.count(), 4);
    }

    #[tokio::test]
    async fn wake_permit_is_not_lost() {
        let shared = Shared::new(1, 1, 1);
        shared.sent.store(1, Ordering::SeqCst);
        assert!(!shared.arm_wake());
        shared.on_delivery(shared.now_ns(), 0);
        timeout(Duration::from_secs(1), shared.wake.notified())
            .await
            .expect("woken");
    }
}
