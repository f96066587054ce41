//! `broker_bench`: the capacity of one broker process, fed by simulated gateways over NATS.
//!
//! It starts `switchboard-broker` itself (pinned with `taskset` to `--broker-cpu`), connects
//! `--gateways` simulated gateways to NATS (one connection each, as real gateways have) and has
//! them publish real membership messages — the protobuf `MemberMessage`s, on the member subjects,
//! with per-node sequence numbers and heartbeats, exactly as `gateway/src/cluster` sends them — so
//! the broker runs its real decode and apply path. Each gateway publishes its events in
//! membership batches of `--batch` (64 by default), as a loaded gateway's publisher does with
//! what is queued (`MemberBatch`, written around the encoded messages by
//! `switchboard_proto::batch`, within the bus payload); `--batch 1` publishes every event alone,
//! as before batches. A gateway holds at most `--batch` − 1 events unpublished, and publishes
//! them before it answers a snapshot request and at the end of each phase; its heartbeats carry
//! the last sequence number it published. The gateways also answer the broker's resync
//! (a heartbeat at once when it asks only for an announcement) and its snapshot requests
//! (snapshot parts cut to the bus payload, sent a window at a time when the request is paced,
//! the rest kept until asked for), as real ones do. Phases:
//!
//! 1. **connect**: `--sockets` sockets connect (each in its user's room `user:{sub}` and one chat
//!    room of ~100 members), spread round-robin over the gateways;
//! 2. **churn**: `--churn` join + leave pairs of a topic room by random sockets;
//! 3. **queries** at that size, over gRPC: FetchSockets of the namespace and Rooms of the
//!    namespace, 10 000 per page (walking the pages), and Stats, `--queries` calls each;
//! 4. **restart**: the broker is killed with SIGKILL and started again; the time until the new
//!    process holds every socket again, rebuilt from the gateways' snapshots.
//!
//! Definitions (what the numbers mean):
//! - events applied per broker CPU second: membership messages the broker counted as applied
//!   (`switchboard_broker_messages_applied_total`, heartbeats and snapshots excluded) during a
//!   phase / the broker process's CPU time (user + system, from `/proc`) during that phase;
//! - memory per socket: (broker RSS after the connect phase − RSS before it) / sockets;
//! - presence announcements per second: `switchboard_broker_presence_events_total` during the churn
//!   phase / its wall time (and per broker CPU second);
//! - presence messages per second: `switchboard_broker_presence_messages_total` (the bus
//!   messages carrying those announcements, alone or in batches: `--presence-batches`, the
//!   broker's `SWITCHBOARD_PRESENCE_BATCHES`) during the churn phase / its wall time;
//! - rebuild: from spawning the new broker process until its `switchboard_broker_sockets` gauge
//!   equals the socket count.
//!
//! Flow control: a broker that falls more than `WINDOW` messages behind would overflow its
//! subscription buffer and drop (then ask for snapshots), which is not a capacity but a failure
//! mode; so publishing pauses while events published − applied exceeds the window (read from the
//! broker's `/metrics`; counted in events, so with batches far fewer bus messages are in
//! flight). Any sequence gap, slow-consumer drop or malformed message is a problem
//! (exit 1), and so is a directory that does not hold exactly the sockets connected (its gauge
//! after each phase, Stats at the queries). Output: a table on stderr and one JSON line on stdout. Exit: 0 ok, 1 problems, 2
//! set-up failed.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_bus::{Bus, NatsOptions};
use switchboard_proto::Message as _;
use switchboard_proto::admin as api;
use switchboard_proto::admin::admin_client::AdminClient;
use switchboard_proto::batch;
use switchboard_proto::bus as pb;
use switchboard_proto::subject::Subjects;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, Error>;

/// At most this many messages published and not yet applied (the broker's subscription buffer,
/// `switchboard_bus::SUBSCRIPTION_CAPACITY`, is 8192).
const WINDOW: u64 = 6000;
/// How often the broker's counters are read while publishing.
const SCRAPE_EVERY: Duration = Duration::from_millis(5);
/// The gateways' heartbeat interval (the broker's default).
const HEARTBEAT: Duration = Duration::from_secs(2);
/// What a snapshot part leaves of the bus payload for the envelope (the gateway's own margin).
const MESSAGE_OVERHEAD: usize = 1024;
/// A phase that has not converged after this long has failed.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(120);
/// The query client's HTTP/2 windows.
const QUERY_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// A restarted broker that has not rebuilt after this long has failed to.
const REBUILD_TIMEOUT: Duration = Duration::from_secs(60);
/// The namespace every simulated socket is in.
const NS: &str = "/chat";
/// Members per chat room.
const ROOM_MEMBERS: usize = 100;
/// A browser's user agent, as the gateway would record it.
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

#[derive(Debug, Clone)]
struct Args {
    nats: String,
    broker: PathBuf,
    broker_cpu: Option<String>,
    sockets: usize,
    gateways: usize,
    churn: usize,
    queries: usize,
    rate: u64,
    /// Events per membership batch (1: every event alone).
    batch: usize,
    presence: bool,
    /// Whether the broker publishes presence in batches (`SWITCHBOARD_PRESENCE_BATCHES`).
    presence_batches: bool,
    headers: bool,
    restart: bool,
    prefix: String,
    log: PathBuf,
    /// Where the running broker's PID is written, so that a script can stop it if the bench
    /// itself is killed (the broker would outlive it).
    pidfile: Option<PathBuf>,
}

fn usage() -> ! {
    eprintln!(
        "usage: broker_bench --nats URL --broker PATH [--broker-cpu N] [--sockets N] [--gateways N] \
         [--churn N] [--queries N] [--rate EVENTS_PER_S (0: as fast as the broker applies)] \
         [--batch EVENTS (1 to 4096, default 64; 1: no batches)] [--presence on|off] [--presence-batches on|off] [--headers browser|none] [--restart on|off] [--prefix P] [--log FILE] \
         [--pidfile FILE]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        nats: String::new(),
        broker: PathBuf::new(),
        broker_cpu: None,
        sockets: 100_000,
        gateways: 50,
        churn: 100_000,
        queries: 100,
        rate: 0,
        batch: 64,
        presence: true,
        presence_batches: true,
        headers: true,
        restart: true,
        prefix: "benchbroker".into(),
        log: PathBuf::from("target/bench/broker-process.log"),
        pidfile: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(key) = it.next() {
        let Some(value) = it.next() else { usage() };
        let num = |v: &str| v.parse::<usize>().unwrap_or_else(|_| usage());
        let on = |v: &str| match v {
            "on" | "browser" => true,
            "off" | "none" => false,
            _ => usage(),
        };
        match key.as_str() {
            "--nats" => a.nats = value,
            "--broker" => a.broker = value.into(),
            "--broker-cpu" => a.broker_cpu = Some(value),
            "--sockets" => a.sockets = num(&value),
            "--gateways" => a.gateways = num(&value),
            "--churn" => a.churn = num(&value),
            "--queries" => a.queries = num(&value),
            "--rate" => a.rate = num(&value) as u64,
            "--batch" => a.batch = num(&value),
            "--presence" => a.presence = on(&value),
            "--presence-batches" => a.presence_batches = on(&value),
            "--headers" => a.headers = on(&value),
            "--restart" => a.restart = on(&value),
            "--prefix" => a.prefix = value,
            "--log" => a.log = value.into(),
            "--pidfile" => a.pidfile = Some(value.into()),
            _ => usage(),
        }
    }
    if a.nats.is_empty()
        || a.broker.as_os_str().is_empty()
        || a.sockets == 0
        || a.gateways == 0
        || a.gateways > 999
        || !(1..=4096).contains(&a.batch)
    {
        usage()
    }
    a
}

// ---- the broker process ------------------------------------------------------------------------

struct BrokerProc {
    child: Child,
    http: String,
    grpc: String,
}

impl BrokerProc {
    fn spawn(args: &Args, token: &str) -> Result<Self> {
        let mut cmd = match &args.broker_cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu).arg(&args.broker);
                c
            }
            None => Command::new(&args.broker),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&args.log)?;
        cmd.env("SWITCHBOARD_NATS_URL", &args.nats)
            .env("SWITCHBOARD_SUBJECT_PREFIX", &args.prefix)
            .env("SWITCHBOARD_BROKER_HTTP_PORT", "0")
            .env("SWITCHBOARD_GRPC_PORT", "0")
            .env("SWITCHBOARD_BROKER_LEADER", "always")
            .env(
                "SWITCHBOARD_PRESENCE_BATCHES",
                if args.presence_batches {
                    "true"
                } else {
                    "false"
                },
            )
            .env("SWITCHBOARD_ADMIN_TOKEN", token)
            .env(
                "RUST_LOG",
                std::env::var("BROKER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        // taskset execs the broker, so the child's PID is the broker's.
        let mut child = cmd.spawn()?;
        if let Some(path) = &args.pidfile {
            std::fs::write(path, child.id().to_string())?;
        }
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout)
                .lines()
                .map_while(std::result::Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut http, mut grpc) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .map_err(|_| "the broker did not start (see its log)")?;
            if let Some(addr) = line.strip_prefix("grpc on ") {
                grpc = Some(addr.trim().to_owned());
            } else if let Some(addr) = line.strip_prefix("listening on http://") {
                http = Some(addr.trim().to_owned());
            }
        }
        Ok(Self {
            child,
            http: http.ok_or("no HTTP address")?,
            grpc: grpc.ok_or("no gRPC address (is the admin token set?)")?,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU seconds so far.
    fn cpu_s(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name (which ends with the last ')'): utime is the 12th, stime
        // the 13th of those; clock ticks are 100 per second on Linux.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (tick(11) + tick(12)) / 100.0
    }

    fn rss_bytes(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill();
    }
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// The broker's counters, from its `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    /// Membership events applied (not heartbeats or snapshots).
    events: u64,
    snapshots: u64,
    /// Presence announcements published.
    presence: u64,
    /// The bus messages that carried them.
    presence_messages: u64,
    gaps: u64,
    drops: u64,
    malformed: u64,
    /// Resyncs the broker sent (one at start, one more per reconnection to NATS).
    reconnects: u64,
    sockets: u64,
}

async fn scrape(http: &str) -> Result<Counters> {
    let mut stream = tokio::net::TcpStream::connect(http).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: broker\r\n\r\n")
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    let mut c = Counters::default();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value = value.parse::<f64>().unwrap_or(0.0) as u64;
        let name = key.split('{').next().unwrap_or(key);
        match name {
            "switchboard_broker_messages_applied_total" => {
                if key.contains("kind=\"snapshot\"") {
                    c.snapshots += value;
                } else if !key.contains("kind=\"heartbeat\"") {
                    c.events += value;
                }
            }
            "switchboard_broker_presence_events_total" => c.presence += value,
            "switchboard_broker_presence_messages_total" => c.presence_messages += value,
            "switchboard_broker_sequence_gaps_total" => c.gaps += value,
            "switchboard_bus_slow_consumer_drops_total" => c.drops += value,
            "switchboard_broker_messages_malformed_total" => c.malformed += value,
            "switchboard_broker_sockets" => c.sockets = value,
            "switchboard_broker_resyncs_total" => c.reconnects += value,
            _ => {}
        }
    }
    Ok(c)
}

// ---- the simulated gateways -------------------------------------------------------------------

struct Gateway {
    node: String,
    epoch: u64,
    /// The latest sequence number published, shared with the heartbeat task.
    seq: Arc<AtomicU64>,
    /// The latest sequence number taken: events up to it are published or in `pending`.
    taken: u64,
    /// Encoded events not yet published (fewer than `batch`).
    pending: Vec<Bytes>,
    /// Events per batch.
    batch: usize,
    bus: Bus,
    member: String,
    heartbeat: String,
    /// The paced snapshot being sent, a window at a time, as the real gateway keeps it.
    held: Option<Held>,
}

/// A paced snapshot cut for a broker's request (see `SnapshotRequest` in bus.proto).
struct Held {
    broker: String,
    request_id: u64,
    seq: u64,
    parts: Vec<Vec<pb::SocketInfo>>,
    sizes: Vec<usize>,
}

/// Bytes a part's message takes besides its sockets, counted against a window (the gateway's
/// `PART_ENVELOPE_BYTES`).
const PART_ENVELOPE_BYTES: usize = 192;

/// The workload: socket `i` lives on gateway `i % gateways`, belongs to user `i / 2` (so a user
/// has two sockets, on two gateways) and is in `user:{user}` and one chat room.
#[derive(Clone, Copy)]
struct Workload {
    gateways: usize,
    rooms: usize,
    presence: bool,
    headers: bool,
}

impl Workload {
    fn node(g: usize) -> String {
        format!("bench{g:03}")
    }

    fn id(&self, i: usize) -> String {
        // `{node}.{random}`: 16 characters standing for the gateway's ≥ 96 random bits.
        let mixed = (i as u64 ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        format!("{}.{mixed:016x}", Self::node(i % self.gateways))
    }

    fn info(&self, i: usize) -> pb::SocketInfo {
        let user = format!("user-{}", i / 2);
        let headers = if self.headers {
            vec![
                pb::Header {
                    name: "user-agent".into(),
                    value: USER_AGENT.into(),
                },
                pb::Header {
                    name: "origin".into(),
                    value: "https://chat.example.com".into(),
                },
            ]
        } else {
            Vec::new()
        };
        pb::SocketInfo {
            id: self.id(i),
            ns: NS.into(),
            rooms: vec![format!("user:{user}"), format!("room-{}", i % self.rooms)],
            handshake: Some(pb::Handshake {
                address: format!("10.0.{}.{}:{}", (i >> 8) & 255, i & 255, 1024 + i % 60000),
                headers,
                query: "EIO=4&transport=websocket".into(),
                claims_json: format!("{{\"sub\":\"{user}\"}}"),
                connected_at_ms: 1_765_000_000_000 + i as u64,
            }),
            user: Some(user),
            data_json: "null".into(),
            presence: Some(pb::PresenceFlags {
                rooms: self.presence,
                users: self.presence,
            }),
            recovery: None,
            recovered: false,
        }
    }
}

impl Gateway {
    /// The message at `seq` (an event's own, or the state's for a snapshot part).
    fn encode_at(&self, seq: u64, body: pb::member_message::Body) -> Bytes {
        Bytes::from(
            pb::MemberMessage {
                node: self.node.clone(),
                epoch: self.epoch,
                seq,
                body: Some(body),
            }
            .encode_to_vec(),
        )
    }

    /// A snapshot part's message, at the latest sequence number published (call [`flush`]
    /// first, so that it is the latest taken).
    ///
    /// [`flush`]: Gateway::flush
    fn encode(&self, body: pb::member_message::Body) -> Bytes {
        self.encode_at(self.seq.load(Ordering::Relaxed), body)
    }

    /// Takes the next sequence number for an event; publishes the pending events once there are
    /// `batch` of them. Returns the events published.
    async fn event(&mut self, body: pb::member_message::Body) -> Result<usize> {
        self.taken += 1;
        let message = self.encode_at(self.taken, body);
        self.pending.push(message);
        if self.pending.len() >= self.batch {
            return self.flush().await;
        }
        Ok(0)
    }

    /// Publishes the pending events: alone if one, else in batches that fit the bus payload, as
    /// the gateway's publisher cuts them. Returns the events published.
    async fn flush(&mut self) -> Result<usize> {
        let pending = std::mem::take(&mut self.pending);
        let n = pending.len();
        let first_seq = self.taken + 1 - n as u64;
        let max = self.bus.max_payload();
        let mut i = 0;
        while i < n {
            let mut entries = batch::entry_len(pending[i].len());
            let mut j = i + 1;
            while j < n {
                let last_seq = first_seq + j as u64;
                let len = pending[j].len();
                let Some(with) = batch::grow(&self.node, self.epoch, last_seq, entries, len, max)
                else {
                    break;
                };
                entries = with;
                j += 1;
            }
            let payload = if j - i == 1 {
                pending[i].clone()
            } else {
                let last_seq = first_seq + (j - 1) as u64;
                let entries = pending[i..j].iter().map(|m| &m[..]);
                Bytes::from(batch::encode(&self.node, self.epoch, last_seq, entries))
            };
            self.bus.publish(self.member.clone(), payload).await?;
            i = j;
        }
        self.seq.store(self.taken, Ordering::Relaxed);
        Ok(n)
    }

    /// The full state as snapshot parts (as of the current sequence number), cut to the bus
    /// payload like the gateway's `snapshot_parts`, with each part's size as counted against a
    /// window.
    fn cut(&self, w: &Workload, connected: usize) -> (Vec<Vec<pb::SocketInfo>>, Vec<usize>) {
        let budget = self.bus.max_payload().saturating_sub(MESSAGE_OVERHEAD);
        let g = self.index();
        let mut parts: Vec<Vec<pb::SocketInfo>> = vec![Vec::new()];
        let mut sizes = vec![PART_ENVELOPE_BYTES];
        let mut used = 0;
        for i in (g..connected).step_by(w.gateways) {
            let info = w.info(i);
            let len = info.encoded_len() + 11;
            if used + len > budget && used > 0 {
                parts.push(Vec::new());
                sizes.push(PART_ENVELOPE_BYTES);
                used = 0;
            }
            used += len;
            *sizes.last_mut().expect("never empty") += len;
            parts.last_mut().expect("never empty").push(info);
        }
        (parts, sizes)
    }

    /// The whole snapshot at once (at start, and for a broker that does not pace).
    async fn snapshot(&self, w: &Workload, connected: usize, request_id: u64) -> Result<usize> {
        let (parts, _) = self.cut(w, connected);
        let last = parts.len() - 1;
        let count = parts.len();
        for (n, sockets) in parts.into_iter().enumerate() {
            let body = pb::member_message::Body::Snapshot(pb::SnapshotPart {
                part: n as u32,
                last: n == last,
                sockets,
                request_id,
                ..Default::default()
            });
            self.bus
                .publish(self.member.clone(), self.encode(body))
                .await?;
        }
        Ok(count)
    }

    /// Answers a snapshot request as the gateway's `send_window` does: the next window of the
    /// kept snapshot, or a new cut's first window; unpaced requests get everything. Returns the
    /// parts sent.
    async fn answer(
        &mut self,
        w: &Workload,
        connected: usize,
        req: &pb::SnapshotRequest,
    ) -> Result<usize> {
        if req.window_bytes == 0 {
            return self.snapshot(w, connected, req.request_id).await;
        }
        let window = usize::try_from(req.window_bytes).unwrap_or(usize::MAX);
        let from = req.from_part as usize;
        let kept = self.held.as_ref().is_some_and(|h| {
            h.broker == req.broker
                && h.request_id == req.request_id
                && from > 0
                && from < h.parts.len()
        });
        let from = if kept {
            from
        } else {
            let (parts, sizes) = self.cut(w, connected);
            self.held = Some(Held {
                broker: req.broker.clone(),
                request_id: req.request_id,
                seq: self.seq.load(Ordering::Relaxed),
                parts,
                sizes,
            });
            0
        };
        let h = self.held.as_mut().expect("set above");
        let total = h.parts.len();
        let (mut end, mut used) = (from, 0);
        while end < total && (end == from || used + h.sizes[end] <= window) {
            used += h.sizes[end];
            end += 1;
        }
        let mut payloads = Vec::new();
        for i in from..end {
            let body = pb::member_message::Body::Snapshot(pb::SnapshotPart {
                part: i as u32,
                last: i + 1 == total,
                sockets: std::mem::take(&mut h.parts[i]),
                request_id: req.request_id,
                paused: i + 1 == end && end < total,
                broker: req.broker.clone(),
            });
            payloads.push(Bytes::from(
                pb::MemberMessage {
                    node: self.node.clone(),
                    epoch: self.epoch,
                    seq: h.seq,
                    body: Some(body),
                }
                .encode_to_vec(),
            ));
        }
        if end == total {
            self.held = None;
        }
        for payload in payloads {
            self.bus.publish(self.member.clone(), payload).await?;
        }
        Ok(end - from)
    }

    /// A heartbeat now (the answer to a paced broker's resync).
    async fn heartbeat_now(&self, connected: usize, gateways: usize) -> Result<()> {
        let sockets = (connected / gateways) as u64;
        let beat = pb::Heartbeat {
            node: self.node.clone(),
            epoch: self.epoch,
            seq: self.seq.load(Ordering::Relaxed),
            connections: sockets,
            sockets,
            address: "127.0.0.1:3000".into(),
            ..Default::default()
        };
        self.bus
            .publish(self.heartbeat.clone(), Bytes::from(beat.encode_to_vec()))
            .await?;
        Ok(())
    }

    fn index(&self) -> usize {
        self.node
            .trim_start_matches("bench")
            .parse()
            .expect("bench node names end with their index")
    }
}

/// What the gateways are asked over the bus: a snapshot of one node (its index and the
/// request), or a resync of all of them (announce only, or full snapshots for a broker that
/// does not pace).
enum Ask {
    Snapshot(usize, pb::SnapshotRequest),
    Resync { announce: bool },
}

struct Bench {
    args: Args,
    w: Workload,
    gws: Vec<Gateway>,
    asks: mpsc::UnboundedReceiver<Ask>,
    connected: usize,
    /// Sockets connected, shared with the heartbeat task.
    connected_now: Arc<AtomicU64>,
    snapshot_parts: usize,
    snapshot_requests: usize,
    /// Events published so far (batched ones when their batch went out).
    published: u64,
}

impl Bench {
    /// Answers snapshot requests, each after the gateway's pending events (its snapshot is cut
    /// at its latest sequence number, as a gateway's is).
    async fn housekeeping(&mut self) -> Result<()> {
        self.connected_now
            .store(self.connected as u64, Ordering::Relaxed);
        while let Ok(ask) = self.asks.try_recv() {
            self.snapshot_requests += 1;
            match ask {
                Ask::Snapshot(g, req) => {
                    self.published += self.gws[g].flush().await? as u64;
                    self.snapshot_parts +=
                        self.gws[g].answer(&self.w, self.connected, &req).await?;
                }
                Ask::Resync { announce: true } => {
                    for gw in &self.gws {
                        gw.heartbeat_now(self.connected, self.w.gateways).await?;
                    }
                }
                Ask::Resync { announce: false } => {
                    for gw in &mut self.gws {
                        self.published += gw.flush().await? as u64;
                        self.snapshot_parts += gw.snapshot(&self.w, self.connected, 0).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Publishes `count` events made by `make` (gateway index → body), paced at `--rate` and
    /// the window; returns when the broker has applied them all: (wall seconds, broker CPU s,
    /// counters before, counters after). `connects`: the events connect sockets `connected..`
    /// in order, and a snapshot cut meanwhile must hold the ones published so far (it is cut at
    /// the gateway's current sequence number: without them the broker, rightly, drops sockets
    /// it had applied).
    async fn phase(
        &mut self,
        broker: &BrokerProc,
        count: usize,
        connects: bool,
        mut make: impl FnMut(usize) -> (usize, pb::member_message::Body),
    ) -> Result<(f64, f64, Counters, Counters)> {
        let first = self.connected;
        let before = scrape(&broker.http).await?;
        let cpu0 = broker.cpu_s();
        let start = Instant::now();
        let target = before.events + count as u64;
        let published0 = self.published;
        let mut sent = 0usize;
        let mut applied = before;
        let mut last_scrape = Instant::now();
        while sent < count {
            self.housekeeping().await?;
            if last_scrape.elapsed() >= SCRAPE_EVERY {
                applied = scrape(&broker.http).await?;
                last_scrape = Instant::now();
            }
            let published = self.published - published0;
            let in_flight = (before.events + published).saturating_sub(applied.events);
            let mut allowed = WINDOW.saturating_sub(in_flight) as usize;
            if self.args.rate > 0 {
                let due = (start.elapsed().as_secs_f64() * self.args.rate as f64) as usize;
                allowed = allowed.min(due.saturating_sub(sent));
            }
            let burst = allowed.min(count - sent).min(2000);
            if burst == 0 {
                tokio::time::sleep(Duration::from_micros(500)).await;
                continue;
            }
            for _ in 0..burst {
                let (g, body) = make(sent);
                self.published += self.gws[g].event(body).await? as u64;
                sent += 1;
            }
            if connects {
                self.connected = first + sent;
            }
            tokio::task::yield_now().await;
        }
        // What the gateways still hold, in batches smaller than `--batch`.
        for gw in &mut self.gws {
            self.published += gw.flush().await? as u64;
        }
        let deadline = Instant::now() + CONVERGE_TIMEOUT;
        loop {
            self.housekeeping().await?;
            applied = scrape(&broker.http).await?;
            if applied.events >= target || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let wall = start.elapsed().as_secs_f64();
        let cpu = broker.cpu_s() - cpu0;
        if applied.events < target {
            return Err(format!(
                "the broker applied {} of {count} events in {CONVERGE_TIMEOUT:?}",
                applied.events - before.events
            )
            .into());
        }
        Ok((wall, cpu, before, applied))
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn request<T>(token: &str, message: T) -> Result<tonic::Request<T>> {
    let mut req = tonic::Request::new(message);
    req.set_timeout(Duration::from_secs(30));
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(req)
}

/// Latencies in ms, sorted: p50, p99, max; and the items the last call returned.
struct Timed {
    sorted_ms: Vec<f64>,
    items: usize,
}

impl Timed {
    fn json(&self, key: &str) -> String {
        format!(
            "\"{key}_p50_ms\":{:.2},\"{key}_p99_ms\":{:.2},\"{key}_max_ms\":{:.2},\"{key}_items\":{}",
            quantile(&self.sorted_ms, 0.5),
            quantile(&self.sorted_ms, 0.99),
            self.sorted_ms.last().copied().unwrap_or(0.0),
            self.items
        )
    }
}

async fn queries(broker: &BrokerProc, token: &str, calls: usize) -> Result<[Timed; 3]> {
    // Windows large enough for a 10 000-socket page, so a page is not paced by window updates
    // (h2's default window is 64 KiB).
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", broker.grpc))?
        .initial_stream_window_size(Some(QUERY_WINDOW_BYTES))
        .initial_connection_window_size(Some(QUERY_WINDOW_BYTES))
        .connect()
        .await?;
    let mut client = AdminClient::new(channel).max_decoding_message_size(256 * 1024 * 1024);
    let selector = api::Selector {
        ns: NS.into(),
        ..Default::default()
    };
    let mut out = Vec::new();
    // FetchSockets, 10 000 a page, walking the pages (back to the first after the last).
    let (mut times, mut token_at, mut items) = (Vec::new(), String::new(), 0);
    for _ in 0..calls {
        let req = api::FetchSocketsRequest {
            selector: Some(selector.clone()),
            page_size: 10_000,
            page_token: token_at.clone(),
        };
        let t = Instant::now();
        let res = client
            .fetch_sockets(request(token, req)?)
            .await
            .map_err(|e| format!("FetchSockets: {e}"))?
            .into_inner();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        items = res.sockets.len();
        token_at = res.next_page_token;
    }
    out.push((times, items));
    let (mut times, mut token_at, mut items) = (Vec::new(), String::new(), 0);
    for _ in 0..calls {
        let req = api::RoomsRequest {
            ns: NS.into(),
            prefix: String::new(),
            page_size: 10_000,
            page_token: token_at.clone(),
        };
        let t = Instant::now();
        let res = client
            .rooms(request(token, req)?)
            .await
            .map_err(|e| format!("Rooms: {e}"))?
            .into_inner();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        items = res.rooms.len();
        token_at = res.next_page_token;
    }
    out.push((times, items));
    let (mut times, mut items) = (Vec::new(), 0);
    for _ in 0..calls {
        let t = Instant::now();
        let res = client
            .stats(request(token, api::StatsRequest {})?)
            .await
            .map_err(|e| format!("Stats: {e}"))?
            .into_inner();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        items = res.sockets as usize;
    }
    out.push((times, items));
    let mut timed = out.into_iter().map(|(mut t, items)| {
        t.sort_by(f64::total_cmp);
        Timed {
            sorted_ms: t,
            items,
        }
    });
    Ok([
        timed.next().ok_or("fetch")?,
        timed.next().ok_or("rooms")?,
        timed.next().ok_or("stats")?,
    ])
}

async fn run(args: Args) -> Result<bool> {
    let token = format!("bench-broker-{:016x}", rand::random::<u64>());
    if let Some(dir) = args.log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let subjects = Subjects::new(&args.prefix)?;
    let mut broker = BrokerProc::spawn(&args, &token)?;
    let opts = |name: String| NatsOptions {
        url: args.nats.clone(),
        name,
        ..Default::default()
    };
    // The gateways, and one connection that hears the brokers' resync and snapshot requests.
    let (ask_tx, asks) = mpsc::unbounded_channel();
    let mut gws = Vec::new();
    for g in 0..args.gateways {
        let node = Workload::node(g);
        let bus = Bus::connect(&opts(format!("broker-bench {node}"))).await?;
        let mut requests = bus.subscribe(subjects.snapshot(&node)?).await?;
        let tx = ask_tx.clone();
        tokio::spawn(async move {
            while let Some(msg) = requests.next().await {
                let req = pb::SnapshotRequest::decode(msg.payload).unwrap_or_default();
                if tx.send(Ask::Snapshot(g, req)).is_err() {
                    break;
                }
            }
        });
        gws.push(Gateway {
            member: subjects.member(&node)?,
            heartbeat: subjects.heartbeat(&node)?,
            node,
            epoch: rand::random::<u64>() >> 1,
            seq: Arc::new(AtomicU64::new(0)),
            taken: 0,
            pending: Vec::new(),
            batch: args.batch,
            bus,
            held: None,
        });
    }
    let control = Bus::connect(&opts("broker-bench control".into())).await?;
    let mut resyncs = control.subscribe(subjects.resync()).await?;
    tokio::spawn(async move {
        while let Some(msg) = resyncs.next().await {
            let announce = pb::ResyncRequest::decode(msg.payload).is_ok_and(|r| r.announce);
            if ask_tx.send(Ask::Resync { announce }).is_err() {
                break;
            }
        }
    });
    for gw in &gws {
        gw.bus.flush().await?;
    }
    control.flush().await?;
    let w = Workload {
        gateways: args.gateways,
        rooms: (args.sockets / ROOM_MEMBERS).max(1),
        presence: args.presence,
        headers: args.headers,
    };
    let connected_now = Arc::new(AtomicU64::new(0));
    let beats: Vec<(Bus, String, String, u64, Arc<AtomicU64>)> = gws
        .iter()
        .map(|g| {
            (
                g.bus.clone(),
                g.heartbeat.clone(),
                g.node.clone(),
                g.epoch,
                g.seq.clone(),
            )
        })
        .collect();
    let gateways = args.gateways as u64;
    let connected = connected_now.clone();
    // Heartbeats from their own task, every interval whatever the bench is doing.
    let heartbeats = tokio::spawn(async move {
        let mut every = tokio::time::interval(HEARTBEAT);
        loop {
            every.tick().await;
            let sockets = connected.load(Ordering::Relaxed) / gateways;
            for (bus, subject, node, epoch, seq) in &beats {
                let beat = pb::Heartbeat {
                    node: node.clone(),
                    epoch: *epoch,
                    seq: seq.load(Ordering::Relaxed),
                    connections: sockets,
                    sockets,
                    address: "127.0.0.1:3000".into(),
                    ..Default::default()
                };
                let _ = bus
                    .publish(subject.clone(), Bytes::from(beat.encode_to_vec()))
                    .await;
            }
        }
    });
    let mut bench = Bench {
        args: args.clone(),
        w,
        gws,
        asks,
        connected: 0,
        connected_now,
        snapshot_parts: 0,
        snapshot_requests: 0,
        published: 0,
    };
    // Each gateway starts with an empty snapshot, as a real one does.
    for g in 0..bench.gws.len() {
        bench.gws[g].snapshot(&bench.w, 0, 0).await?;
    }
    bench.housekeeping().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss0 = broker.rss_bytes();

    // 1. connect
    let n = args.sockets;
    let (wall_c, cpu_c, before_c, after_c) = {
        let w = bench.w;
        let infos = move |i: usize| (i % w.gateways, pb::member_message::Body::Connect(w.info(i)));
        bench.phase(&broker, n, true, infos).await?
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss1 = broker.rss_bytes();
    eprintln!("connected {n} sockets in {wall_c:.2} s, broker CPU {cpu_c:.2} s");

    // 2. churn: join and leave a topic room
    let churn = args.churn * 2;
    let (wall_j, cpu_j, before_j, after_j) = {
        let (gateways, sockets, w) = (args.gateways, args.sockets, bench.w);
        let make = move |k: usize| {
            let i = (k / 2).wrapping_mul(7919) % sockets;
            let change = pb::RoomChange {
                id: w.id(i),
                room: format!("topic-{}", (k / 2) % 1000),
            };
            let body = if k.is_multiple_of(2) {
                pb::member_message::Body::Join(change)
            } else {
                pb::member_message::Body::Leave(change)
            };
            (i % gateways, body)
        };
        bench.phase(&broker, churn, false, make).await?
    };

    eprintln!("churned {churn} events in {wall_j:.2} s, broker CPU {cpu_j:.2} s");
    // 3. queries
    let [fetch, rooms, stats] = queries(&broker, &token, args.queries).await?;

    // 4. restart
    let (mut rebuild_s, mut rebuild_cpu_s) = (0.0, 0.0);
    let mut rebuilt = n as u64;
    let mut restart_problem = None;
    if args.restart {
        broker.kill();
        let t0 = Instant::now();
        broker = BrokerProc::spawn(&args, &token)?;
        let spawned_s = t0.elapsed().as_secs_f64();
        let deadline = Instant::now() + REBUILD_TIMEOUT;
        loop {
            bench.housekeeping().await?;
            let c = scrape(&broker.http).await?;
            if c.sockets as usize >= n {
                rebuild_s = t0.elapsed().as_secs_f64();
                // The new process's CPU since it started: its start-up and the rebuild.
                rebuild_cpu_s = broker.cpu_s();
                break;
            }
            if Instant::now() > deadline {
                restart_problem = Some(format!(
                    "only {} of {n} sockets rebuilt after {REBUILD_TIMEOUT:?}",
                    c.sockets
                ));
                rebuilt = c.sockets;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        eprintln!(
            "broker restarted in {spawned_s:.3} s; rebuilt in {rebuild_s:.3} s, broker CPU {rebuild_cpu_s:.2} s"
        );
    }
    let end = scrape(&broker.http).await?;
    heartbeats.abort();
    broker.stop();

    let events_c = after_c.events - before_c.events;
    let events_j = after_j.events - before_j.events;
    let presence_j = after_j.presence - before_j.presence;
    let presence_msgs_j = after_j.presence_messages - before_j.presence_messages;
    let per_core = |e: u64, cpu: f64| if cpu > 0.0 { e as f64 / cpu } else { 0.0 };
    let mem_per_socket = rss1.saturating_sub(rss0) as f64 / n as f64;
    // The directory must hold exactly the sockets connected, after each phase and at the
    // queries (a socket lost or invented is a problem, not a capacity).
    let held = [after_c.sockets, after_j.sockets, stats.items as u64];
    let miscount = held.iter().any(|&h| h != n as u64);
    let problems =
        end.gaps + end.drops + end.malformed + after_j.gaps + after_j.drops + u64::from(miscount);
    let ok = problems == 0 && restart_problem.is_none();
    eprintln!(
        "batches: up to {} events per membership message{}",
        args.batch,
        if args.batch == 1 {
            " (every event alone)"
        } else {
            ""
        }
    );
    eprintln!(
        "connect: {events_c} events in {wall_c:.2} s wall, {cpu_c:.2} broker CPU s: {:.0} events/CPU s, {:.0}/s wall",
        per_core(events_c, cpu_c),
        events_c as f64 / wall_c
    );
    eprintln!(
        "churn:   {events_j} events in {wall_j:.2} s wall, {cpu_j:.2} broker CPU s: {:.0} events/CPU s, {:.0}/s wall; {presence_j} presence announcements: {:.0}/s, in {presence_msgs_j} messages: {:.0}/s",
        per_core(events_j, cpu_j),
        events_j as f64 / wall_j,
        presence_j as f64 / wall_j,
        presence_msgs_j as f64 / wall_j
    );
    eprintln!(
        "memory:  RSS {:.1} → {:.1} MB: {mem_per_socket:.0} B per socket",
        rss0 as f64 / 1e6,
        rss1 as f64 / 1e6
    );
    for (name, t) in [
        ("FetchSockets", &fetch),
        ("Rooms", &rooms),
        ("Stats", &stats),
    ] {
        eprintln!(
            "{name}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} items)",
            quantile(&t.sorted_ms, 0.5),
            quantile(&t.sorted_ms, 0.99),
            t.sorted_ms.last().copied().unwrap_or(0.0),
            t.items
        );
    }
    if let Some(p) = &restart_problem {
        eprintln!("PROBLEM: {p}");
    }
    if miscount {
        eprintln!(
            "PROBLEM: the broker held {} sockets after connecting, {} after the churn and {} at the queries, of {n}",
            held[0], held[1], held[2]
        );
    }
    if problems > u64::from(miscount) {
        eprintln!(
            "PROBLEM: {} sequence gaps, {} slow-consumer drops, {} malformed",
            end.gaps + after_j.gaps,
            end.drops + after_j.drops,
            end.malformed
        );
    }
    println!(
        "{{\"sockets\":{n},\"gateways\":{},\"batch\":{},\"presence\":{},\"presence_batches\":{},\"headers\":{},\"connect_events\":{events_c},\"connect_wall_s\":{wall_c:.3},\"connect_cpu_s\":{cpu_c:.3},\"connect_events_per_cpu_s\":{:.0},\"churn_events\":{events_j},\"churn_wall_s\":{wall_j:.3},\"churn_cpu_s\":{cpu_j:.3},\"churn_events_per_cpu_s\":{:.0},\"presence_events\":{presence_j},\"presence_per_s\":{:.0},\"presence_per_cpu_s\":{:.0},\"presence_messages\":{presence_msgs_j},\"presence_messages_per_s\":{:.0},\"rss_before_bytes\":{rss0},\"rss_after_bytes\":{rss1},\"bytes_per_socket\":{mem_per_socket:.0},{},{},{},\"rebuild_s\":{rebuild_s:.3},\"rebuild_cpu_s\":{rebuild_cpu_s:.3},\"rebuilt_sockets\":{rebuilt},\"broker_resyncs\":{},\"snapshot_requests\":{},\"snapshot_parts\":{},\"problems\":{problems},\"ok\":{ok}}}",
        args.gateways,
        args.batch,
        args.presence,
        args.presence_batches,
        args.headers,
        per_core(events_c, cpu_c),
        per_core(events_j, cpu_j),
        presence_j as f64 / wall_j,
        per_core(presence_j, cpu_j),
        presence_msgs_j as f64 / wall_j,
        fetch.json("fetch"),
        rooms.json("rooms"),
        stats.json("stats"),
        end.reconnects,
        bench.snapshot_requests,
        bench.snapshot_parts,
    );
    Ok(ok)
}

fn main() -> std::process::ExitCode {
    let args = parse_args();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("broker_bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("broker_bench: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
