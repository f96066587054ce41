//! The broker against a real `nats-server` (JetStream leader lease) and the `switchboard-broker`
//! binary as a process (configuration errors, HTTP surface, SIGTERM). Tests that need
//! `nats-server` fail when it is missing, saying how to install it (see `switchboard_tests`).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_broker::{Broker, BrokerConfig, LeaderMode};
use switchboard_bus::Bus;
use switchboard_proto::Message as _;
use switchboard_proto::bus;
use switchboard_proto::subject::Subjects;
use switchboard_tests::{NatsServer, WAIT, connect, unique};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-broker");

async fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    switchboard_tests::wait_until(what, WAIT, cond).await;
}

async fn reserve_answered(bus: &Bus, subjects: &Subjects) -> bool {
    let request = bus::ReserveRequest {
        ns: "/".into(),
        room: "r".into(),
        socket_id: "gw1.none".into(),
        max_members: 1,
    };
    match bus
        .request(
            subjects.reserve(),
            Bytes::from(request.encode_to_vec()),
            Duration::from_secs(2),
        )
        .await
    {
        Ok(reply) => {
            let reply = bus::ReserveReply::decode(reply).expect("reply decodes");
            assert_eq!(reply.outcome(), bus::reserve_reply::Outcome::UnknownSocket);
            true
        }
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_lease_elects_one_leader_and_fails_over() {
    let nats = NatsServer::start_jetstream();
    let prefix = unique("kv");
    let subjects = Subjects::new(&prefix).expect("prefix");
    let cfg = |id: &str| BrokerConfig {
        id: id.to_owned(),
        prefix: prefix.clone(),
        lease: Duration::from_millis(1500),
        heartbeat: Duration::from_millis(300),
        leader: LeaderMode::KvLease,
        presence_batches: true,
    };
    let a = Broker::start(connect(&nats.url(), "a").await, cfg("a"))
        .await
        .expect("a starts");
    let b = Broker::start(connect(&nats.url(), "b").await, cfg("b"))
        .await
        .expect("b starts");
    let client = connect(&nats.url(), "client").await;

    wait_until("a leader", || a.is_leader() || b.is_leader()).await;
    // Exactly one, and it stays that way for a few lease renewals.
    for _ in 0..20 {
        assert!(!(a.is_leader() && b.is_leader()), "two leaders");
        assert!(
            a.is_leader() || b.is_leader(),
            "leader lost without a cause"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (leader, follower) = if a.is_leader() { (a, b) } else { (b, a) };
    assert_eq!(leader.state_json()["leader"], true);
    assert_eq!(follower.state_json()["leader"], false);
    // The leader holds the reserve subscription.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !reserve_answered(&client, &subjects).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reservation answer"
        );
    }

    leader.shutdown().await;
    wait_until("the follower to take over", || follower.is_leader()).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !reserve_answered(&client, &subjects).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reservation answer after failover"
        );
    }
    follower.shutdown().await;
}

/// The binary as a child process, killed on drop.
struct Process {
    child: Child,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(env: &[(&str, &str)]) -> (Process, std::sync::mpsc::Receiver<String>) {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("SWITCHBOARD_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the broker binary starts");
    let (out_tx, out_rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = out_tx.send(line);
        }
    });
    let (err_tx, err_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        let _ = err_tx.send(text);
    });
    (
        Process {
            child,
            stderr: err_rx,
        },
        out_rx,
    )
}

/// Waits for the exit; (code, stderr).
fn finish(mut p: Process) -> (Option<i32>, String) {
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = p.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the broker did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = p.stderr.recv_timeout(WAIT).unwrap_or_default();
    (status.code(), stderr)
}

fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the HTTP port");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn bad_configuration_exits_naming_the_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "SWITCHBOARD_NATS_URL"),
        (
            &[
                ("SWITCHBOARD_NATS_URL", "nats://127.0.0.1:1"),
                ("SWITCHBOARD_BROKER_HTTP_PORT", "x"),
            ],
            "SWITCHBOARD_BROKER_HTTP_PORT",
        ),
        (
            &[
                ("SWITCHBOARD_NATS_URL", "nats://127.0.0.1:1"),
                ("SWITCHBOARD_LEASE_MS", "100"),
                ("SWITCHBOARD_HEARTBEAT_MS", "200"),
            ],
            "SWITCHBOARD_LEASE_MS",
        ),
        (
            &[
                ("SWITCHBOARD_NATS_URL", "nats://127.0.0.1:1"),
                ("SWITCHBOARD_BROKER_LEADER", "x"),
            ],
            "SWITCHBOARD_BROKER_LEADER",
        ),
    ];
    for (env, var) in cases {
        let (p, _) = spawn(env);
        let (code, stderr) = finish(p);
        assert!(code.is_some_and(|c| c != 0), "{var}: exit {code:?}");
        assert!(stderr.contains(var), "{var}: {stderr}");
    }
}

#[test]
fn without_jetstream_the_kv_leader_refuses_to_start() {
    let nats = NatsServer::start();
    let (p, _) = spawn(&[
        ("SWITCHBOARD_NATS_URL", &nats.url()),
        ("SWITCHBOARD_BROKER_HTTP_PORT", "0"),
    ]);
    let (code, stderr) = finish(p);
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}");
    assert!(stderr.contains("JetStream is required"), "{stderr}");
    assert!(
        stderr.contains("SWITCHBOARD_BROKER_LEADER=always"),
        "{stderr}"
    );

    // One broker without JetStream is fine when told so.
    let (p, stdout) = spawn(&[
        ("SWITCHBOARD_NATS_URL", &nats.url()),
        ("SWITCHBOARD_BROKER_HTTP_PORT", "0"),
        ("SWITCHBOARD_BROKER_LEADER", "always"),
    ]);
    let line = stdout.recv_timeout(WAIT).expect("the listening line");
    assert!(line.starts_with("listening on http://127.0.0.1:"), "{line}");
    drop(p);
}

#[test]
fn the_binary_serves_http_and_stops_on_sigterm() {
    let nats = NatsServer::start_jetstream();
    let prefix = unique("bin");
    let (p, stdout) = spawn(&[
        ("SWITCHBOARD_NATS_URL", &nats.url()),
        ("SWITCHBOARD_BROKER_HTTP_PORT", "0"),
        ("SWITCHBOARD_BROKER_ID", "bin1"),
        ("SWITCHBOARD_SUBJECT_PREFIX", &prefix),
        ("SWITCHBOARD_LEASE_MS", "1200"),
        ("SWITCHBOARD_HEARTBEAT_MS", "200"),
    ]);
    let line = stdout.recv_timeout(WAIT).expect("the listening line");
    let addr = line
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    assert!(!addr.ends_with(":0"), "the real port: {addr}");

    assert_eq!(get(&addr, "/health"), (200, "ok".to_owned()));
    assert_eq!(get(&addr, "/nope").0, 404);
    let deadline = Instant::now() + WAIT;
    let state = loop {
        let (status, body) = get(&addr, "/v1/state");
        assert_eq!(status, 200);
        let state: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        if state["leader"] == true {
            break state;
        }
        assert!(Instant::now() < deadline, "never became leader: {state}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        state,
        serde_json::json!({"broker": "bin1", "leader": true, "nodes": [], "sockets": []})
    );
    let (status, metrics) = get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("switchboard_broker_leader 1"), "{metrics}");
    assert!(
        metrics.contains("switchboard_broker_resyncs_total"),
        "{metrics}"
    );

    let pid = p.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let (code, stderr) = finish(p);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("released the leader lease"), "{stderr}");
}
