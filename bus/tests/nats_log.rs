//! The durable log on a real `nats-server` with JetStream (`$NATS_SERVER`, on `PATH`, or
//! `/usr/sbin/nats-server`): the contract `bus/src/log/tests.rs` checks on the in-process hub,
//! plus what only a server can do to a reader — order across publishers and subjects, eviction
//! by the store, and a restart (SIGKILL) in the middle of following. Without `nats-server`
//! these tests print a notice and pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod log_support;

use bytes::Bytes;
use log_support::{next, publish, seqs};
use switchboard_bus::{Bus, BusError, LogConfig, LogReader};
use switchboard_tests::{WAIT, connect, free_port, nats_server_bin, unique};

const STREAM: &str = "t_log";

/// A JetStream server that can be killed and started again on the same port and store.
struct Server {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
}

impl Server {
    /// `None` (with a notice) if there is no `nats-server` to run.
    fn start() -> Option<Self> {
        let bin = nats_server_bin();
        if !bin.is_file() {
            eprintln!(
                "SKIPPED: no nats-server ({}); set NATS_SERVER",
                bin.display()
            );
            return None;
        }
        let store = std::env::temp_dir().join(unique("switchboard-log-"));
        std::fs::create_dir_all(&store).expect("a temporary JetStream store");
        let mut server = Self {
            child: None,
            port: free_port(),
            store,
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let child = Command::new(nats_server_bin())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (by its pid, through its `Child`): no clean shutdown of the store.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill nats-server");
            child.wait().expect("reap nats-server");
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

fn config() -> LogConfig {
    LogConfig {
        stream: STREAM.into(),
        subjects: vec!["t.log.>".into()],
        max_age: Duration::from_secs(600),
        max_bytes: 64 << 20,
        replicas: 1,
        memory: false,
        duplicate_window: Duration::from_secs(60),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_info_publish_and_dedup() {
    let Some(server) = Server::start() else {
        return;
    };
    let bus = connect(&server.url(), "log").await;
    assert!(matches!(bus.log_info(STREAM).await, Err(BusError::NoLog)));
    let fresh = bus.log_ensure(&config()).await.expect("ensure");
    assert_eq!((fresh.first_seq, fresh.last_seq), (1, 0));
    assert!(
        fresh.tag > 1_600_000_000_000,
        "a creation time in ms: {}",
        fresh.tag
    );
    assert_eq!(bus.log_ensure(&config()).await.expect("again"), fresh);

    assert_eq!(publish(&bus, "t.log.a", "1", "m1").await, 1);
    assert_eq!(publish(&bus, "t.log.b", "2", "m2").await, 2);
    assert_eq!(publish(&bus, "t.log.a", "1", "m1").await, 1, "dedup");
    let info = bus.log_info(STREAM).await.expect("info");
    assert_eq!((info.tag, info.first_seq, info.last_seq), (fresh.tag, 1, 2));

    // Other settings: updated in place, entries and tag kept.
    let longer = LogConfig {
        max_age: Duration::from_secs(900),
        ..config()
    };
    assert_eq!(bus.log_ensure(&longer).await.expect("update"), info);
    let js = async_nats::jetstream::new(bus.nats_client().expect("nats"));
    let stored = js.get_stream(STREAM).await.expect("stream");
    assert_eq!(
        stored.cached_info().config.max_age,
        Duration::from_secs(900)
    );

    // A subject outside the stream: the ack says so.
    let ack = bus
        .log_publish("nowhere.x".into(), Bytes::new(), String::new())
        .await
        .expect("sent");
    assert!(matches!(ack.await, Err(BusError::NoLog)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ensures_agree() {
    let Some(server) = Server::start() else {
        return;
    };
    let (a, b) = (
        connect(&server.url(), "a").await,
        connect(&server.url(), "b").await,
    );
    let cfg = config();
    let (x, y) = tokio::join!(a.log_ensure(&cfg), b.log_ensure(&cfg));
    assert_eq!(x.expect("a"), y.expect("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_from_now_and_from_a_sequence_and_read_ranges() {
    let Some(server) = Server::start() else {
        return;
    };
    let bus = connect(&server.url(), "log").await;
    bus.log_ensure(&config()).await.expect("ensure");
    for i in 1..=8 {
        let subject = if i % 4 == 0 {
            "t.log.other"
        } else {
            "t.log.mine.x"
        };
        publish(&bus, subject, &i.to_string(), &i.to_string()).await;
    }
    // From now on: nothing of the 8 before; its own client's publishes come (no echo does not
    // apply to JetStream consumers).
    let mut now = bus
        .log_follow(STREAM, "t.log.>".into(), None)
        .await
        .expect("follow");
    let mut mine = bus
        .log_follow(STREAM, "t.log.mine.*".into(), Some(5))
        .await
        .expect("follow");
    assert_eq!(publish(&bus, "t.log.mine.x", "9", "9").await, 9);
    assert_eq!(
        next(&mut now).await,
        Some((9, "t.log.mine.x".into(), "9".into()))
    );
    for seq in [6, 7, 9] {
        assert_eq!(next(&mut mine).await.map(|e| e.0), Some(seq));
    }

    let read = |after, until| bus.log_read(STREAM, "t.log.mine.>".into(), after, until);
    assert_eq!(seqs(read(2, 6).await.expect("read")).await, vec![3, 5, 6]);
    assert_eq!(
        seqs(read(0, 9).await.expect("read")).await,
        vec![1, 2, 3, 5, 6, 7, 9]
    );
    assert_eq!(
        seqs(read(5, 5).await.expect("read")).await,
        Vec::<u64>::new()
    );
    assert_eq!(seqs(read(7, 100).await.expect("read")).await, vec![9]);
    assert_eq!(
        seqs(read(9, 100).await.expect("read")).await,
        Vec::<u64>::new()
    );
    let others = bus
        .log_read(STREAM, "t.log.other".into(), 0, 9)
        .await
        .expect("read");
    assert_eq!(seqs(others).await, vec![4, 8]);
    assert!(matches!(
        bus.log_read("t_none", "t.log.>".into(), 0, 9).await,
        Err(BusError::NoLog)
    ));
}

/// Two publishers interleave on ten subjects; one follower must see every sequence, strictly
/// consecutive (docs/recovery.md: order across subjects is what offsets rely on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_across_publishers_and_subjects() {
    const PER_PUBLISHER: u64 = 1500;
    let Some(server) = Server::start() else {
        return;
    };
    let reader = connect(&server.url(), "reader").await;
    reader.log_ensure(&config()).await.expect("ensure");
    let mut follower = reader
        .log_follow(STREAM, "t.log.>".into(), None)
        .await
        .expect("follow");
    let mut publishers = Vec::new();
    for p in 0..2u64 {
        let bus = connect(&server.url(), &format!("publisher{p}")).await;
        publishers.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..PER_PUBLISHER {
                let subject = format!("t.log.s{}", (i + p) % 10);
                let ack = bus
                    .log_publish(subject, Bytes::from(format!("{p}.{i}")), format!("{p}.{i}"))
                    .await
                    .expect("publish");
                acks.push(ack);
            }
            let mut seqs = Vec::new();
            for ack in acks {
                seqs.push(ack.await.expect("ack"));
            }
            seqs
        }));
    }
    let mut acked = Vec::new();
    for p in publishers {
        let seqs = p.await.expect("publisher");
        // One publisher's messages are stored in the order it sent them.
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "per-publisher order");
        acked.extend(seqs);
    }
    acked.sort_unstable();
    let total = 2 * PER_PUBLISHER;
    assert_eq!(acked, (1..=total).collect::<Vec<_>>());
    let mut per_publisher = [None::<u64>; 2];
    for seq in 1..=total {
        let (got, _, payload) = next(&mut follower).await.expect("an entry");
        assert_eq!(got, seq, "consecutive stream sequences");
        let (p, i) = payload.split_once('.').expect("p.i");
        let (p, i): (usize, u64) = (p.parse().unwrap(), i.parse().unwrap());
        assert_eq!(per_publisher[p].map_or(0, |last| last + 1), i);
        per_publisher[p] = Some(i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_range_fails_a_read_and_a_follower_skips_it() {
    let Some(server) = Server::start() else {
        return;
    };
    let bus = connect(&server.url(), "log").await;
    bus.log_ensure(&LogConfig {
        max_bytes: 4096,
        ..config()
    })
    .await
    .expect("ensure");
    let payload = "p".repeat(200);
    for i in 0..100 {
        publish(&bus, "t.log.a", &payload, &i.to_string()).await;
    }
    let info = bus.log_info(STREAM).await.expect("info");
    assert_eq!(info.last_seq, 100);
    assert!(info.first_seq > 2 && info.first_seq <= 100, "{info:?}");
    let mut read = bus
        .log_read(STREAM, "t.log.>".into(), 1, 100)
        .await
        .expect("read");
    assert!(matches!(read.next().await, Some(Err(BusError::LogEvicted))));
    assert!(read.next().await.is_none());
    // Nothing after first - 1 was evicted: that range reads whole.
    let whole = bus
        .log_read(STREAM, "t.log.>".into(), info.first_seq - 1, 100)
        .await
        .expect("read");
    assert_eq!(
        seqs(whole).await,
        (info.first_seq..=100).collect::<Vec<_>>()
    );
    let mut follower = bus
        .log_follow(STREAM, "t.log.>".into(), Some(0))
        .await
        .expect("follow");
    assert_eq!(next(&mut follower).await.map(|e| e.0), Some(info.first_seq));
}

/// A client of `server` with the log ensured and a follower on all of it from the start.
async fn following_from_the_start(server: &Server) -> (Bus, LogReader) {
    let bus = connect(&server.url(), "log").await;
    bus.log_ensure(&config()).await.expect("ensure");
    let follower = bus
        .log_follow(STREAM, "t.log.>".into(), Some(0))
        .await
        .expect("follow");
    (bus, follower)
}

/// Publishes `seqs` (each payload and id its number, on one of three subjects) into a log
/// holding `seqs.start() - 1` entries, checking the sequences.
async fn publish_range(bus: &Bus, seqs: std::ops::RangeInclusive<u64>) {
    for i in seqs {
        let subject = format!("t.log.s{}", i % 3);
        let seq = publish(bus, &subject, &i.to_string(), &i.to_string()).await;
        assert_eq!(seq, i);
    }
}

/// Reads `seqs` from `follower`, in order.
async fn expect_range(follower: &mut LogReader, seqs: std::ops::RangeInclusive<u64>) {
    for seq in seqs {
        let (got, _, payload) = next(follower).await.expect("an entry");
        assert_eq!((got, payload), (seq, seq.to_string()));
    }
}

/// A follower keeps its place across a SIGKILL of the server and its restart on the same port
/// and store: every entry once, in order, with what was published after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_resumes_across_a_server_restart() {
    let Some(mut server) = Server::start() else {
        return;
    };
    let (bus, mut follower) = following_from_the_start(&server).await;
    publish_range(&bus, 1..=100).await;
    expect_range(&mut follower, 1..=60).await;

    let mut link = bus.link();
    let generation = link.borrow().generation;
    server.kill();
    server.spawn();
    tokio::time::timeout(WAIT, link.wait_for(|l| l.up && l.generation > generation))
        .await
        .expect("reconnected in time")
        .expect("link watch");

    // JetStream may need a moment after the restart: retry each publish with its id (dedup
    // makes a retry of a stored message harmless).
    for i in 101..=200u64 {
        let subject = format!("t.log.s{}", i % 3);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let sent = bus
                .log_publish(subject.clone(), Bytes::from(i.to_string()), i.to_string())
                .await;
            match sent {
                Ok(ack) => match ack.await {
                    Ok(seq) => {
                        assert_eq!(seq, i);
                        break;
                    }
                    Err(e) => assert!(tokio::time::Instant::now() < deadline, "{e}"),
                },
                Err(e) => assert!(tokio::time::Instant::now() < deadline, "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    expect_range(&mut follower, 61..=200).await;
}

/// A follower whose consumer disappears (deleted by an operator, or by the server after
/// inactivity) makes a new one where it stood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_resumes_when_its_consumer_is_deleted() {
    let Some(server) = Server::start() else {
        return;
    };
    let (bus, mut follower) = following_from_the_start(&server).await;
    publish_range(&bus, 1..=10).await;
    expect_range(&mut follower, 1..=10).await;
    let js = async_nats::jetstream::new(bus.nats_client().expect("nats"));
    let stream = js.get_stream(STREAM).await.expect("stream");
    let names: Vec<String> = futures_util::TryStreamExt::try_collect(stream.consumer_names())
        .await
        .expect("consumer names");
    assert_eq!(names.len(), 1, "one consumer per follower");
    for name in names {
        stream.delete_consumer(&name).await.expect("delete");
    }
    publish_range(&bus, 11..=20).await;
    expect_range(&mut follower, 11..=20).await;
}

/// Three JetStream nats-servers joined by routes (a clustered JetStream), each on its own
/// client port and store; killed and removed on drop.
struct Cluster {
    children: Vec<Child>,
    ports: Vec<u16>,
    store: PathBuf,
}

impl Cluster {
    fn start() -> Option<Self> {
        if !nats_server_bin().is_file() {
            eprintln!("SKIPPED: no nats-server; set NATS_SERVER");
            return None;
        }
        let store = std::env::temp_dir().join(unique("switchboard-logcluster-"));
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route_list = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            children: Vec::new(),
            ports: ports.clone(),
            store: store.clone(),
        };
        for (i, (port, route)) in ports.iter().zip(&routes).enumerate() {
            let dir = store.join(format!("n{i}"));
            std::fs::create_dir_all(&dir).expect("a temporary JetStream store");
            let child = Command::new(nats_server_bin())
                .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
                .args(["-n", &format!("n{i}"), "--cluster_name", "t"])
                .args(["--cluster", &format!("nats://127.0.0.1:{route}")])
                .args(["--routes", &route_list, "-sd"])
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server starts");
            cluster.children.push(child);
        }
        for port in &ports {
            let deadline = std::time::Instant::now() + WAIT;
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "nats-server did not come up"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Some(cluster)
    }

    fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.ports[i])
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// `log_ensure` until JetStream answers (a new cluster elects its meta leader first).
async fn ensure_when_ready(bus: &Bus, cfg: &LogConfig) -> switchboard_bus::LogInfo {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match bus.log_ensure(cfg).await {
            Ok(info) => return info,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "JetStream never became available: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The log's tag is the stream's identity in every offset a client keeps: gateways on different
/// nodes of a NATS cluster that create the R3 stream at the same moment must all get it, up to
/// the few ms by which the replicas of a new stream differ (the gateway compares tags within a
/// second: `gateway/src/cluster/recovery.rs`), and every ensure must succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ensures_agree_on_a_nats_cluster() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let buses = [
        connect(&cluster.url(0), "a").await,
        connect(&cluster.url(1), "b").await,
        connect(&cluster.url(2), "c").await,
    ];
    for round in 0..8 {
        let cfg = LogConfig {
            stream: format!("t_log_{round}"),
            subjects: vec![format!("t.log{round}.>")],
            replicas: 3,
            memory: true,
            ..config()
        };
        let got =
            futures_util::future::join_all(buses.iter().map(|b| ensure_when_ready(b, &cfg))).await;
        eprintln!(
            "round {round}: ensures done at {:?}",
            std::time::Instant::now()
        );
        let stored = buses[0].log_info(&cfg.stream).await.expect("stream info");
        for (i, info) in got.iter().enumerate() {
            assert!(
                info.tag.abs_diff(stored.tag) <= 1_000,
                "round {round}: node {i}'s ensure reported tag {} for the stream's {}",
                info.tag,
                stored.tag
            );
        }
    }
}
