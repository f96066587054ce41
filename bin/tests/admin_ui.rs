//! The admin UI's cluster over a real broker's admin service, in-process and over loopback gRPC
//! with an API key: every socket of every namespace, the nodes, and the UI's commands answered
//! by the service (docs/admin-ui.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use switchboard::admin_ui::BrokerCluster;
use switchboard_broker::grpc::{self, AdminService, GrpcOptions};
use switchboard_broker::state::{MemberEvent, SocketRecord};
use switchboard_broker::{Broker, BrokerConfig, LeaderMode};
use switchboard_bus::Hub;
use switchboard_gateway::admin_ui::{Cluster, Command, Target};
use switchboard_proto::admin::admin_client::AdminClient;
use switchboard_proto::subject::Subjects;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-token-0123456789abcdef";

/// A broker holding sockets on three nodes in two namespaces: `/` s0..s5 (s0, s1 in `lobby`)
/// and `/chat` c0.
async fn broker() -> (Broker, Hub) {
    let hub = Hub::new();
    let cfg = BrokerConfig {
        id: "b1".into(),
        prefix: "t".into(),
        lease: Duration::from_secs(600),
        heartbeat: Duration::from_secs(60),
        leader: LeaderMode::Always,
        presence_batches: true,
    };
    let broker = Broker::start(hub.client(), cfg).await.unwrap();
    {
        let dir = broker.directory();
        let mut dir = dir.lock();
        let mut seq = [0u64; 3];
        let mut add = |id: &str, ns: &str, n: usize, rooms: &[&str]| {
            let node = format!("gw{n}");
            let mut rec = SocketRecord::new(id.to_owned(), ns, &node);
            rec.rooms = rooms
                .iter()
                .map(|r| (*r).to_owned())
                .collect::<BTreeSet<_>>();
            seq[n] += 1;
            dir.apply(&node, 1, seq[n], MemberEvent::Connect(rec), Instant::now());
        };
        for i in 0..6 {
            let rooms: &[&str] = if i < 2 { &["lobby"] } else { &[] };
            add(&format!("s{i}"), "/", i % 3, rooms);
        }
        add("c0", "/chat", 2, &[]);
    }
    (broker, hub)
}

async fn check(cluster: &BrokerCluster) {
    let mut ids: Vec<(String, String)> = cluster
        .sockets()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.ns, s.id))
        .collect();
    ids.sort();
    let mut want: Vec<(String, String)> = (0..6).map(|i| ("/".into(), format!("s{i}"))).collect();
    want.push(("/chat".into(), "c0".into()));
    assert_eq!(ids, want);

    let mut nodes: Vec<String> = cluster
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["gw0", "gw1", "gw2"]);

    let join = Command::Join {
        ns: "/".into(),
        room: "vip".into(),
        target: Target::Room("lobby".into()),
    };
    assert_eq!(cluster.run(join).await.unwrap(), 2);
    let kick = Command::Disconnect {
        ns: "/".into(),
        close: false,
        target: Target::Socket("s3".into()),
    };
    assert_eq!(cluster.run(kick).await.unwrap(), 1);
    let bad = Command::Leave {
        ns: "chat".into(),
        room: "vip".into(),
        target: Target::All,
    };
    let refused = cluster.run(bad).await.unwrap_err();
    assert!(refused.0.starts_with("InvalidArgument"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_the_ui_sees_every_socket_and_acts_through_the_service() {
    let (broker, hub) = broker().await;
    let service = AdminService::new(&broker, hub.client(), Subjects::new("t").unwrap());
    check(&BrokerCluster::InProcess(Box::new(service))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_grpc_with_an_api_key_the_same() {
    let (broker, hub) = broker().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = AdminService::new(&broker, hub.client(), Subjects::new("t").unwrap());
    let stop = CancellationToken::new();
    let opts = GrpcOptions {
        keys: switchboard_broker::keys::ApiKeys::admin("admin", TOKEN),
        tls: None,
    };
    let served = tokio::spawn(grpc::serve(listener, service, opts, stop.clone()));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let cluster = BrokerCluster::Remote {
        client: AdminClient::new(channel.clone()),
        authorization: format!("Bearer {TOKEN}").parse().unwrap(),
    };
    check(&cluster).await;

    let wrong = BrokerCluster::Remote {
        client: AdminClient::new(channel),
        authorization: "Bearer wrong-token-0123456789".parse().unwrap(),
    };
    let refused = wrong.sockets().await.unwrap_err();
    assert!(refused.0.starts_with("Unauthenticated"), "{refused}");
    stop.cancel();
    served.await.unwrap().unwrap();
}

/// An HTTP/1.1 exchange over its own connection: the status line and the body.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (String, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    tcp.read_to_end(&mut got).await.unwrap();
    let got = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = got.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// A long-polling Socket.IO client of `/admin` sending `auth`: the packets it got until one
/// starts with `until` (bounded by a number of polls: the failure path).
async fn admin_client(addr: std::net::SocketAddr, auth: &str, until: &str) -> Vec<String> {
    let (_, open) = http(addr, "GET", "/socket.io/?EIO=4&transport=polling", "").await;
    let v: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
    let sid = v["sid"].as_str().unwrap().to_owned();
    let at = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let (status, _) = http(addr, "POST", &at, &format!("40/admin,{auth}")).await;
    assert!(status.contains("200"), "{status}");
    let mut seen = Vec::new();
    for _ in 0..50 {
        let (_, body) = http(addr, "GET", &at, "").await;
        seen.extend(body.split('\u{1e}').map(str::to_owned));
        if seen.iter().any(|p| p.starts_with(until)) {
            return seen;
        }
    }
    panic!("no {until} in {seen:?}");
}

/// The `/admin` namespace refuses password `nope` and takes `s3cret`: what the client got until
/// `all_sockets`.
async fn log_in(addr: std::net::SocketAddr) -> Vec<String> {
    let refused = admin_client(
        addr,
        r#"{"username":"admin","password":"nope"}"#,
        "44/admin,",
    )
    .await;
    assert!(
        refused.iter().any(|p| p.contains("invalid credentials")),
        "{refused:?}"
    );
    admin_client(
        addr,
        r#"{"username":"admin","password":"s3cret"}"#,
        r#"42/admin,["all_sockets""#,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_gateway_serves_the_ui_and_its_namespace() {
    use std::sync::Arc;

    use switchboard::settings::{AdminUiSettings, DEFAULT_ADMIN_UI_PATH};
    use switchboard_gateway::admin_ui::Credentials;
    use switchboard_gateway::engine::{Config as EngineConfig, Engine};
    use switchboard_gateway::http::{self as gw_http, Cors, Router};
    use switchboard_gateway::id::NodeId;
    use switchboard_gateway::sio;
    use tokio_util::task::TaskTracker;

    let (broker, hub) = broker().await;
    let service = AdminService::new(&broker, hub.client(), Subjects::new("t").unwrap());
    let dir = std::env::temp_dir().join(format!("sb-admin-ui-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<title>Socket.IO Admin UI</title>").unwrap();
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let settings = AdminUiSettings {
        credentials: Credentials::new("admin", &hash).unwrap(),
        static_dir: Some(dir.clone()),
        path: DEFAULT_ADMIN_UI_PATH.to_owned(),
        remote: None,
    };
    let io = sio::Server::new(sio::Config::default());
    let engine = Engine::new(
        EngineConfig::default(),
        io.clone(),
        NodeId::parse("n1").unwrap(),
    );
    let router = Router::new(Cors::default()).endpoint("/socket.io/", engine);
    let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());

    // A configuration that declares /admin itself is refused.
    let taken = sio::Server::new(sio::Config::default());
    taken.of("/admin");
    let refused = switchboard::admin_ui::start(
        &settings,
        &taken,
        Router::new(Cors::default()),
        Some(service.clone()),
        &stop,
        &tasks,
    );
    let Err(refused) = refused else {
        panic!("a declared /admin was accepted")
    };
    assert!(refused.to_string().contains("/admin"), "{refused}");

    let router =
        switchboard::admin_ui::start(&settings, &io, router, Some(service), &stop, &tasks).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tasks.spawn(gw_http::serve(
        listener,
        Arc::new(router),
        stop.clone(),
        tasks.clone(),
    ));

    let (status, page) = http(addr, "GET", "/admin-ui/", "").await;
    assert!(
        status.contains("200") && page.contains("Admin UI"),
        "{status} {page}"
    );

    let seen = log_in(addr).await;
    let all = seen
        .iter()
        .find(|p| p.starts_with(r#"42/admin,["all_sockets""#))
        .unwrap();
    let all: serde_json::Value = serde_json::from_str(&all["42/admin,".len()..]).unwrap();
    let mut ids: Vec<&str> = all[1]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["c0", "s0", "s1", "s2", "s3", "s4", "s5"]);
    assert!(
        seen.iter().any(|p| p.starts_with(r#"42/admin,["session""#)),
        "{seen:?}"
    );
    stop.cancel();
    tasks.close();
    tasks.wait().await;
}

/// The gateway binary, killed on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standalone_binary_turns_the_ui_on_with_a_password_hash_and_no_api_keys() {
    use std::io::BufRead as _;
    use std::process::{Command as Process, Stdio};

    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let mut cmd = Process::new(env!("CARGO_BIN_EXE_switchboard-gateway"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SWITCHBOARD_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .env("SWITCHBOARD_HOST", "127.0.0.1")
        .env("SWITCHBOARD_PORT", "0")
        .env("SWITCHBOARD_OPERATOR_PORT", "0")
        .env("SWITCHBOARD_ADMIN_UI_PASSWORD_HASH", &hash)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the gateway starts");
    let stdout = child.stdout.take().unwrap();
    let _gateway = Child(child);
    let addr = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("listening on http://").map(str::to_owned))
            .expect("the gateway says where it listens")
    })
    .await
    .unwrap();
    let addr: std::net::SocketAddr = addr.parse().unwrap();

    let seen = log_in(addr).await;
    assert!(
        seen.iter().any(|p| p.starts_with(r#"42/admin,["session""#)),
        "{seen:?}"
    );
}
