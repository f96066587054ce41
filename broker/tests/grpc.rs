//! The gRPC server over real loopback HTTP/2 with the generated tonic client, on a broker fed
//! 10 000 sockets: pagination covers every socket exactly once and in order, streams too; the
//! health service answers without a token; reflection lists the services (with the token); a
//! broadcast carries `uncompressed` to the gateways.
//! The end-to-end tests with gateways and socket.io clients are in tests/e2e/test/grpc.test.js.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Instant;

use switchboard_broker::grpc::{self, AdminService, GrpcOptions};
use switchboard_broker::state::{MemberEvent, SocketRecord};
use switchboard_broker::{Broker, BrokerConfig, LeaderMode};
use switchboard_bus::Hub;
use switchboard_proto::admin as pb;
use switchboard_proto::admin::admin_client::AdminClient;
use switchboard_proto::subject::Subjects;
use tokio_util::sync::CancellationToken;
use tonic::Request;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const TOKEN: &str = "test-token-0123456789abcdef";
const SOCKETS: usize = 10_000;
const ROOMS: usize = 250;

struct Served {
    addr: std::net::SocketAddr,
    hub: Hub,
    stop: CancellationToken,
    _broker: Broker,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A broker whose directory holds `SOCKETS` sockets of `/big` over two nodes, all in room
/// `all`, socket i also in room `r{i % ROOMS:03}`, user `u{i % 100}`; served on a free port.
async fn serve() -> Served {
    let hub = Hub::new();
    let cfg = BrokerConfig {
        id: "b1".into(),
        prefix: "t".into(),
        lease: std::time::Duration::from_secs(600),
        heartbeat: std::time::Duration::from_secs(60),
        leader: LeaderMode::Always,
        presence_batches: true,
    };
    let broker = Broker::start(hub.client(), cfg).await.unwrap();
    {
        let dir = broker.directory();
        let mut dir = dir.lock();
        for i in 0..SOCKETS {
            let node = if i % 2 == 0 { "gw1" } else { "gw2" };
            let mut rec = SocketRecord::new(format!("{node}.s{i:05}"), "/big", node);
            rec.user = Some(format!("u{}", i % 100));
            rec.rooms = BTreeSet::from(["all".to_owned(), format!("r{:03}", i % ROOMS)]);
            let seq = (i / 2 + 1) as u64;
            dir.apply(node, 1, seq, MemberEvent::Connect(rec), Instant::now());
        }
        assert_eq!(dir.len(), SOCKETS);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = AdminService::new(&broker, hub.client(), Subjects::new("t").unwrap());
    let stop = CancellationToken::new();
    let opts = GrpcOptions {
        keys: switchboard_broker::keys::ApiKeys::admin("admin", TOKEN),
        tls: None,
    };
    tokio::spawn(grpc::serve(listener, service, opts, stop.clone()));
    Served {
        addr,
        hub,
        stop,
        _broker: broker,
    }
}

type Authed = InterceptedService<Channel, fn(Request<()>) -> Result<Request<()>, tonic::Status>>;

fn with_token(mut req: Request<()>) -> Result<Request<()>, tonic::Status> {
    req.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    Ok(req)
}

async fn channel(addr: std::net::SocketAddr) -> Channel {
    // The server task may not accept yet: retry the connect briefly.
    let url = format!("http://{addr}");
    let mut last = None;
    for _ in 0..50 {
        match Channel::from_shared(url.clone()).unwrap().connect().await {
            Ok(c) => return c,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("cannot connect to {url}: {last:?}");
}

async fn client(addr: std::net::SocketAddr) -> AdminClient<Authed> {
    AdminClient::with_interceptor(channel(addr).await, with_token as fn(_) -> _)
}

fn room(name: &str) -> pb::Selector {
    pb::Selector {
        ns: "/big".into(),
        rooms: vec![name.into()],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_sockets_paginates_ten_thousand_sockets_exactly_once_in_order() {
    let served = serve().await;
    let mut c = client(served.addr).await;
    for page_size in [1000u32, 3333, 10_000] {
        let mut ids = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let res = c
                .fetch_sockets(pb::FetchSocketsRequest {
                    selector: Some(room("all")),
                    page_size,
                    page_token: token.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(res.total, SOCKETS as u64);
            assert!(res.sockets.len() <= page_size as usize);
            ids.extend(res.sockets.into_iter().map(|s| s.id));
            pages += 1;
            if res.next_page_token.is_empty() {
                break;
            }
            token = res.next_page_token;
        }
        assert_eq!(
            pages,
            (SOCKETS as u32).div_ceil(page_size),
            "page size {page_size}"
        );
        let mut want: Vec<String> = (0..SOCKETS)
            .map(|i| format!("{}.s{i:05}", if i % 2 == 0 { "gw1" } else { "gw2" }))
            .collect();
        want.sort();
        assert_eq!(ids, want, "page size {page_size}");
    }
    // Pages of one room of 40, and of a user (100 sockets) intersected with it.
    let res = c
        .fetch_sockets(pb::FetchSocketsRequest {
            selector: Some(pb::Selector {
                user_ids: vec!["u7".into()],
                ..room("r007")
            }),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    // i ≡ 7 (mod 250) and i ≡ 7 (mod 100): i ≡ 7 (mod 500), 20 sockets.
    assert_eq!(res.total, 20);
    assert_eq!(res.sockets.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_rooms_and_members_cover_everything() {
    let served = serve().await;
    let mut c = client(served.addr).await;
    let mut stream = c.stream_sockets(room("all")).await.unwrap().into_inner();
    let mut n = 0;
    let mut last = String::new();
    while let Some(item) = stream.message().await.unwrap() {
        assert!(item.id > last, "in id order");
        last = item.id;
        n += 1;
    }
    assert_eq!(n, SOCKETS);

    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let res = c
            .rooms(pb::RoomsRequest {
                ns: "/big".into(),
                prefix: "r".into(),
                page_size: 100,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        for r in &res.rooms {
            assert_eq!(r.members, (SOCKETS / ROOMS) as u64, "{}", r.name);
            // Members i ≡ k (mod 250) have users i mod 100, which takes 2 values for each k.
            assert_eq!(r.users, 2, "{}", r.name);
        }
        names.extend(res.rooms.into_iter().map(|r| r.name));
        if res.next_page_token.is_empty() {
            break;
        }
        token = res.next_page_token;
    }
    let want: Vec<String> = (0..ROOMS).map(|k| format!("r{k:03}")).collect();
    assert_eq!(names, want);

    let mut members = Vec::new();
    let mut token = String::new();
    loop {
        let res = c
            .room_members(pb::RoomMembersRequest {
                ns: "/big".into(),
                room: "r042".into(),
                page_size: 7,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        members.extend(res.members.into_iter().map(|s| s.id));
        if res.next_page_token.is_empty() {
            break;
        }
        token = res.next_page_token;
    }
    assert_eq!(members.len(), SOCKETS / ROOMS);
    assert!(members.windows(2).all(|w| w[0] < w[1]));

    let stats = c.stats(pb::StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.sockets, SOCKETS as u64);
    assert_eq!(stats.rooms, ROOMS as u64 + 1);
    let big = stats.namespaces.iter().find(|n| n.ns == "/big").unwrap();
    assert_eq!(
        (big.sockets, big.rooms, big.users),
        (SOCKETS as u64, ROOMS as u64 + 1, 100)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_open_and_reflection_lists_the_services() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let served = serve().await;
    let ch = channel(served.addr).await;
    let mut health = HealthClient::new(ch.clone());
    let res = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "switchboard.admin.v1.Admin".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(res.status, ServingStatus::Serving as i32);

    let list = || {
        tokio_stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }])
    };
    let mut open = ServerReflectionClient::new(ch.clone());
    let err = open.server_reflection_info(list()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let mut authed = ServerReflectionClient::with_interceptor(ch, with_token as fn(_) -> _);
    let mut stream = authed
        .server_reflection_info(list())
        .await
        .unwrap()
        .into_inner();
    let msg = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(services)) = msg.message_response else {
        panic!("not a service list: {msg:?}");
    };
    let names: Vec<String> = services.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"switchboard.admin.v1.Admin".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
}

/// A served broker, a client, and what the broker publishes to gateway gw1.
async fn serve_watching_gw1() -> (Served, AdminClient<Authed>, switchboard_bus::Subscription) {
    let served = serve().await;
    let c = client(served.addr).await;
    let subjects = Subjects::new("t").unwrap();
    let on_gw1 = served
        .hub
        .client()
        .subscribe(subjects.node("gw1").unwrap())
        .await
        .unwrap();
    (served, c, on_gw1)
}

#[tokio::test]
async fn an_emit_over_the_bus_payload_is_refused_whole() {
    let (served, mut c, mut on_gw1) = serve_watching_gw1().await;
    let gateway = served.hub.client();
    let emit = |attachment: usize| pb::BroadcastRequest {
        selector: Some(room("r000")),
        event: "big".into(),
        args_json: r#"[{"_placeholder":true,"num":0}]"#.into(),
        attachments: vec![vec![0u8; attachment].into()],
        ..Default::default()
    };
    let refused = c
        .broadcast(emit(gateway.max_payload()))
        .await
        .expect_err("over the bus payload");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().starts_with("message too large"),
        "{refused:?}"
    );
    c.broadcast(emit(10)).await.expect("a small emit goes");
    // The refused emit reached no gateway: the first message gw1 sees is the small one.
    let first = on_gw1.next().await.unwrap();
    assert!(first.payload.len() < 10_000, "{}", first.payload.len());
}

#[tokio::test]
async fn a_broadcast_says_whether_it_may_be_compressed() {
    use switchboard_proto::Message as _;
    use switchboard_proto::bus::{Envelope, envelope};
    let (_served, mut c, mut on_gw1) = serve_watching_gw1().await;
    for uncompressed in [true, false] {
        let req = pb::BroadcastRequest {
            selector: Some(room("r000")),
            event: "e".into(),
            uncompressed,
            ..Default::default()
        };
        c.broadcast(req).await.expect("emitted");
        let msg = on_gw1.next().await.unwrap();
        let Ok(Envelope {
            body: Some(envelope::Body::Delivery(d)),
        }) = Envelope::decode(msg.payload)
        else {
            panic!("not a delivery");
        };
        assert_eq!(d.uncompressed, uncompressed);
    }
}

/// A call still waiting when its deadline passes ends in DEADLINE_EXCEEDED, as gRPC says, not in
/// the CANCELLED ("Timeout expired") that tonic's own timer answers with. The gateways here never
/// answer the acks, so only the deadline can end the call. The request goes over a raw HTTP/2
/// connection: a tonic client enforces the same deadline itself, first, and would hide the
/// server's answer.
#[tokio::test]
async fn a_call_past_its_deadline_ends_in_deadline_exceeded() {
    use http_body_util::{BodyExt as _, Full};
    use switchboard_proto::Message as _;
    let (served, _c, _on_gw1) = serve_watching_gw1().await;
    let tcp = tokio::net::TcpStream::connect(served.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let msg = pb::BroadcastRequest {
        selector: Some(room("r000")),
        event: "poll".into(),
        ack_timeout_ms: 10_000,
        ..Default::default()
    }
    .encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&msg);
    let req = hyper::Request::post(format!(
        "http://{}/switchboard.admin.v1.Admin/Broadcast",
        served.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("authorization", format!("Bearer {TOKEN}"))
    .header("grpc-timeout", "200m")
    .body(Full::new(bytes::Bytes::from(body)))
    .unwrap();
    let res = send.send_request(req).await.unwrap();
    let head = res.headers().clone();
    let trailers = res.into_body().collect().await.unwrap().trailers().cloned();
    let status = head
        .get("grpc-status")
        .or_else(|| trailers.as_ref().and_then(|t| t.get("grpc-status")))
        .expect("a grpc-status");
    assert_eq!(
        tonic::Code::from_bytes(status.as_bytes()),
        tonic::Code::DeadlineExceeded,
        "{head:?} {trailers:?}"
    );
}
