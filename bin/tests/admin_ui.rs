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
