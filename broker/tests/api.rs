//! The HTTP API and the API keys over real loopback sockets: the broker's HTTP port with the
//! API mounted and the gRPC port with the same keys. Scopes hold on both APIs (an emit-only key
//! can broadcast but neither kick nor read), errors carry gRPC's codes and messages, hostile
//! requests (huge, dribbled, malformed, mistyped, misrouted) get clear answers, and the checked-in
//! OpenAPI document is the one generated from the proto and the routes served.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_broker::api::{self, HttpApi};
use switchboard_broker::grpc::{self, AdminService, GrpcOptions};
use switchboard_broker::keys::{ApiKey, ApiKeys, Scope};
use switchboard_broker::state::{MemberEvent, SocketRecord};
use switchboard_broker::{Broker, BrokerConfig, LeaderMode, http};
use switchboard_bus::Hub;
use switchboard_proto::Message as _;
use switchboard_proto::admin as pb;
use switchboard_proto::admin::admin_client::AdminClient;
use switchboard_proto::subject::Subjects;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const ADMIN: &str = "admin-secret-0123456789";
const EMIT: &str = "emit-secret-0123456789";
const READ: &str = "read-secret-0123456789";

struct Served {
    http: SocketAddr,
    grpc: SocketAddr,
    stop: CancellationToken,
    _hub: Hub,
    _broker: Broker,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A broker knowing sockets `gw1.a` and `gw1.b` of `/chat` (both in `lobby`), serving HTTP with
/// the API and gRPC, both with an admin, an emit-only and a read-only key.
async fn serve() -> Served {
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
        for (seq, id) in [(1, "gw1.a"), (2, "gw1.b")] {
            let mut rec = SocketRecord::new(id, "/chat", "gw1");
            rec.rooms = BTreeSet::from(["lobby".to_owned()]);
            dir.apply("gw1", 1, seq, MemberEvent::Connect(rec), Instant::now());
        }
    }
    let keys = ApiKeys::new(vec![
        ApiKey::new("ops", &[Scope::Admin], ADMIN),
        ApiKey::new("chat-backend", &[Scope::Emit], EMIT),
        ApiKey::new("dashboard", &[Scope::Read], READ),
    ]);
    let service = AdminService::new(&broker, hub.client(), Subjects::new("t").unwrap());
    let stop = CancellationToken::new();
    let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = grpc_listener.local_addr().unwrap();
    let opts = GrpcOptions {
        keys: keys.clone(),
        tls: None,
    };
    tokio::spawn(grpc::serve(
        grpc_listener,
        service.clone(),
        opts,
        stop.clone(),
    ));
    let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = http_listener.local_addr().unwrap();
    let routes = http::Routes {
        broker: broker.clone(),
        metrics: None,
        api: Some(HttpApi::new(service, keys)),
    };
    tokio::spawn(http::serve(http_listener, routes, stop.clone()));
    Served {
        http,
        grpc,
        stop,
        _hub: hub,
        _broker: broker,
    }
}

/// Writes `raw` and reads the answer until the server closes: (status, body).
async fn exchange(addr: SocketAddr, raw: &[u8]) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(raw).await.unwrap();
    read_answer(&mut tcp).await
}

async fn read_answer(tcp: &mut tokio::net::TcpStream) -> (u16, String) {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), tcp.read_to_end(&mut got))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// `POST path` with a JSON `body` and, when given, `authorization: Bearer <key>`.
async fn post(addr: SocketAddr, path: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    let auth = key
        .map(|k| format!("authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let raw = format!(
        "POST {path} HTTP/1.1\r\nhost: b\r\nconnection: close\r\n{auth}content-type: \
         application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, body) = exchange(addr, raw.as_bytes()).await;
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    (status, value)
}

fn refused(code: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v: &Value| v["code"] == code && v["message"].as_str().is_some_and(|m| !m.is_empty())
}

async fn grpc_client(
    addr: SocketAddr,
    key: Option<&'static str>,
) -> AdminClient<
    tonic::service::interceptor::InterceptedService<
        Channel,
        impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone,
    >,
> {
    let url = format!("http://{addr}");
    let mut channel = None;
    for _ in 0..50 {
        if let Ok(c) = Channel::from_shared(url.clone()).unwrap().connect().await {
            channel = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let channel = channel.expect("gRPC port");
    AdminClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        if let Some(k) = key {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {k}").parse().unwrap());
        }
        Ok(req)
    })
}

fn lobby() -> Value {
    json!({"ns": "/chat", "rooms": ["lobby"]})
}

#[tokio::test]
async fn an_emit_only_key_broadcasts_but_cannot_kick_or_read_over_http() {
    let s = serve().await;
    let broadcast = json!({"selector": lobby(), "event": "news", "argsJson": "[1]"}).to_string();
    let (status, body) = post(s.http, "/api/broadcast", Some(EMIT), &broadcast).await;
    // uint64 is a string in the proto3 JSON mapping.
    assert_eq!((status, &body), (200, &json!({"targeted": "2"})));
    let kick = json!({"selector": lobby(), "reason": "bye"}).to_string();
    for (path, body) in [
        ("/api/disconnect", kick.as_str()),
        ("/api/fetch_sockets", r#"{"selector": {"ns": "/chat"}}"#),
        ("/api/stats", "{}"),
        (
            "/api/sockets_join",
            r#"{"selector": {"ns": "/chat"}, "rooms": ["x"]}"#,
        ),
    ] {
        let (status, answer) = post(s.http, path, Some(EMIT), body).await;
        assert_eq!(status, 403, "{path}: {answer}");
        assert!(refused("PERMISSION_DENIED")(&answer), "{path}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains("chat-backend"),
            "names the key, not the secret: {answer}"
        );
    }
    // Reading needs `read`; kicking needs `admin`.
    let (status, answer) = post(
        s.http,
        "/api/fetch_sockets",
        Some(READ),
        r#"{"selector": {"ns": "/chat"}}"#,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["total"], "2");
    assert_eq!(answer["sockets"][0]["id"], "gw1.a");
    let (status, answer) = post(s.http, "/api/disconnect", Some(READ), &kick).await;
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = post(s.http, "/api/disconnect", Some(ADMIN), &kick).await;
    assert_eq!((status, &answer), (200, &json!({"disconnected": "2"})));
    // No key, or an unknown one: 401.
    for key in [None, Some("not-a-key-0123456789"), Some("")] {
        let (status, answer) = post(s.http, "/api/stats", key, "{}").await;
        assert_eq!(status, 401, "{key:?}: {answer}");
        assert!(refused("UNAUTHENTICATED")(&answer), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emit_only_key_broadcasts_but_cannot_kick_or_read_over_grpc() {
    let s = serve().await;
    let mut emit = grpc_client(s.grpc, Some(EMIT)).await;
    let sel = || pb::Selector {
        ns: "/chat".into(),
        rooms: vec!["lobby".into()],
        ..Default::default()
    };
    let res = emit
        .broadcast(pb::BroadcastRequest {
            selector: Some(sel()),
            event: "news".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(res.into_inner().targeted, 2);
    let kick = || pb::DisconnectRequest {
        selector: Some(sel()),
        ..Default::default()
    };
    let err = emit.disconnect(kick()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let err = emit
        .fetch_sockets(pb::FetchSocketsRequest {
            selector: Some(sel()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let err = emit.stream_sockets(sel()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let mut read = grpc_client(s.grpc, Some(READ)).await;
    assert_eq!(
        read.stats(pb::StatsRequest {})
            .await
            .unwrap()
            .into_inner()
            .sockets,
        2
    );
    let err = read
        .broadcast(pb::BroadcastRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    for key in [None, Some("not-a-key-0123456789")] {
        let mut c = grpc_client(s.grpc, key).await;
        let err = c.stats(pb::StatsRequest {}).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{key:?}");
    }
    let mut admin = grpc_client(s.grpc, Some(ADMIN)).await;
    let res = admin.disconnect(kick()).await.unwrap().into_inner();
    assert_eq!(res.disconnected, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_the_grpc_code_and_message() {
    let s = serve().await;
    let (status, answer) = post(
        s.http,
        "/api/fetch_sockets",
        Some(ADMIN),
        r#"{"selector": {"ns": "chat"}}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(answer["code"], "INVALID_ARGUMENT");
    let mut c = grpc_client(s.grpc, Some(ADMIN)).await;
    let err = c
        .fetch_sockets(pb::FetchSocketsRequest {
            selector: Some(pb::Selector {
                ns: "chat".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        answer["message"],
        err.message(),
        "the same message on both APIs"
    );
    // A reserved event, over HTTP with the proto field names too.
    let (status, answer) = post(
        s.http,
        "/api/emit_to_socket",
        Some(EMIT),
        r#"{"ns": "/chat", "socket_id": "gw1.a", "event": "connect"}"#,
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("reserved"),
        "{answer}"
    );
    // An unknown socket is an answer, not an error.
    let (status, answer) = post(
        s.http,
        "/api/emit_to_socket",
        Some(EMIT),
        r#"{"ns": "/chat", "socketId": "gw9.zz", "event": "hi"}"#,
    )
    .await;
    assert_eq!(
        (status, answer),
        (200, json!({})),
        "found: false is the default"
    );
}

#[tokio::test]
async fn bad_requests_get_clear_answers() {
    let s = serve().await;
    let head = |path: &str, extra: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nhost: b\r\nconnection: close\r\nauthorization: Bearer \
             {ADMIN}\r\n{extra}"
        )
    };
    // Malformed JSON, an unknown field, a wrong type: 400 saying what is wrong.
    for (body, says) in [
        ("{\"selector\": ", "malformed JSON body"),
        ("{\"selektor\": {}}", "unknown field"),
        ("{\"pageSize\": \"ten\"}", "malformed JSON body"),
        ("[]", "malformed JSON body"),
    ] {
        let (status, answer) = post(s.http, "/api/fetch_sockets", Some(ADMIN), body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(refused("INVALID_ARGUMENT")(&answer), "{answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(says),
            "{body}: {answer}"
        );
    }
    // The wrong content type: 415.
    let raw = head(
        "/api/stats",
        "content-type: application/x-www-form-urlencoded\r\ncontent-length: 2\r\n\r\n{}",
    );
    let (status, body) = exchange(s.http, raw.as_bytes()).await;
    assert_eq!(status, 415, "{body}");
    assert!(body.contains("application/json"), "{body}");
    // No content type at all.
    let raw = head("/api/stats", "content-length: 2\r\n\r\n{}");
    assert_eq!(exchange(s.http, raw.as_bytes()).await.0, 415);
    // An unknown route and a wrong method: JSON 404 and 405.
    let (status, answer) = post(s.http, "/api/kick", Some(ADMIN), "{}").await;
    assert_eq!(status, 404);
    assert!(refused("NOT_FOUND")(&answer), "{answer}");
    let raw = "GET /api/broadcast HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n";
    let (status, body) = exchange(s.http, raw.as_bytes()).await;
    assert_eq!(status, 405, "{body}");
    assert!(body.contains("use POST"), "{body}");
    // The other routes of the port are still there.
    let raw = "GET /health HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n";
    assert_eq!(
        exchange(s.http, raw.as_bytes()).await,
        (200, "ok".to_owned())
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let s = serve().await;
    let big = api::MAX_BODY_BYTES + 1;
    // Declared: refused before a byte of it is read.
    let raw = format!(
        "POST /api/broadcast HTTP/1.1\r\nhost: b\r\nconnection: close\r\nauthorization: Bearer \
         {ADMIN}\r\ncontent-type: application/json\r\ncontent-length: {big}\r\n\r\n"
    );
    let (status, body) = exchange(s.http, raw.as_bytes()).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("RESOURCE_EXHAUSTED"), "{body}");
    // Chunked, without a length: refused once the bound is crossed.
    let mut tcp = tokio::net::TcpStream::connect(s.http).await.unwrap();
    let head = format!(
        "POST /api/broadcast HTTP/1.1\r\nhost: b\r\nconnection: close\r\nauthorization: Bearer \
         {ADMIN}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent <= api::MAX_BODY_BYTES {
        let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        if tcp.write_all(&frame).await.is_err() {
            break; // the server answered and closed
        }
        sent += chunk.len();
    }
    let (status, body) = read_answer(&mut tcp).await;
    assert_eq!(status, 413, "{body}");
}

#[tokio::test(start_paused = true)]
async fn a_dribbled_body_is_cut_off_with_408() {
    let s = serve().await;
    let mut tcp = tokio::net::TcpStream::connect(s.http).await.unwrap();
    let raw = format!(
        "POST /api/stats HTTP/1.1\r\nhost: b\r\nconnection: close\r\nauthorization: Bearer \
         {ADMIN}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
    );
    tcp.write_all(raw.as_bytes()).await.unwrap();
    // The paused clock runs ahead whenever nothing else can: without the body deadline this
    // waits until the read_answer timeout and fails.
    let (status, body) = read_answer(&mut tcp).await;
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("DEADLINE_EXCEEDED"), "{body}");
}

#[tokio::test(start_paused = true)]
async fn a_head_that_never_ends_is_still_cut_off_on_the_api_path() {
    let s = serve().await;
    let mut tcp = tokio::net::TcpStream::connect(s.http).await.unwrap();
    tcp.write_all(b"POST /api/stats HTTP/1.1\r\nHost: b\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3600), tcp.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the connection is still open");
    let got = String::from_utf8_lossy(&got);
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "{got:?}");
}

/// The OpenAPI document of the routes and the admin messages, generated from the proto's
/// descriptors (JSON names, proto3 JSON types) and [`api::ROUTES`].
fn openapi() -> Value {
    use prost_types::field_descriptor_proto::{Label, Type};
    let set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    let file = set
        .file
        .iter()
        .find(|f| f.package() == "switchboard.admin.v1")
        .unwrap();
    let short = |type_name: &str| type_name.rsplit('.').next().unwrap().to_owned();
    let mut schemas = serde_json::Map::new();
    for m in &file.message_type {
        let mut props = serde_json::Map::new();
        for f in &m.field {
            let one = match f.r#type() {
                Type::String => json!({"type": "string"}),
                Type::Bool => json!({"type": "boolean"}),
                Type::Uint32 => json!({"type": "integer", "format": "uint32"}),
                // 64-bit integers are strings in the proto3 JSON mapping (numbers are accepted).
                Type::Uint64 => json!({"type": "string", "format": "uint64"}),
                Type::Bytes => json!({"type": "string", "format": "byte"}),
                Type::Message => {
                    json!({"$ref": format!("#/components/schemas/{}", short(f.type_name()))})
                }
                other => panic!("{}.{}: no JSON schema for {other:?}", m.name(), f.name()),
            };
            let schema = if f.label() == Label::Repeated {
                json!({"type": "array", "items": one})
            } else {
                one
            };
            props.insert(f.json_name().to_owned(), schema);
        }
        schemas.insert(
            m.name().to_owned(),
            json!({"type": "object", "properties": props}),
        );
    }
    schemas.insert(
        "Error".to_owned(),
        json!({
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "the gRPC status name, e.g. INVALID_ARGUMENT"},
                "message": {"type": "string"}
            }
        }),
    );
    let service = &file.service[0];
    let error = |what: &str| json!({"description": what, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let mut paths = serde_json::Map::new();
    for (path, rpc) in api::ROUTES {
        let method = service.method.iter().find(|m| m.name() == rpc).unwrap();
        let body = |t: &str| json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", short(t))}}});
        paths.insert(
            path.to_owned(),
            json!({"post": {
                "operationId": rpc,
                "summary": format!("The {rpc} call of switchboard.admin.v1.Admin"),
                "x-scope": Scope::needed_by(rpc).name(),
                "security": [{"bearer": []}],
                "requestBody": {"required": false, "content": body(method.input_type())},
                "responses": {
                    "200": {"description": "the response message", "content": body(method.output_type())},
                    "400": error("INVALID_ARGUMENT (also malformed JSON)"),
                    "401": error("UNAUTHENTICATED: no or an unknown key"),
                    "403": error("PERMISSION_DENIED: the key lacks the scope"),
                    "408": error("DEADLINE_EXCEEDED: the body did not arrive in time"),
                    "413": error("RESOURCE_EXHAUSTED: the body is too large"),
                    "415": error("INVALID_ARGUMENT: the body is not application/json"),
                    "503": error("UNAVAILABLE: the cluster bus or the log"),
                    "504": error("DEADLINE_EXCEEDED: the call took too long"),
                    "default": error("another gRPC status")
                }
            }}),
        );
    }
    paths.insert(
        api::OPENAPI_PATH.to_owned(),
        json!({"get": {
            "operationId": "OpenApi",
            "summary": "This document",
            "responses": {"200": {"description": "the OpenAPI document", "content": {"application/json": {}}}}
        }}),
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Switchboard HTTP API",
            "version": "1",
            "description": "The broker's Admin API (proto/proto/admin.proto) as HTTP/JSON in the proto3 JSON mapping; see docs/admin-api.md. Generated by broker/tests/api.rs (UPDATE_OPENAPI=1)."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        }
    })
}

#[test]
fn the_checked_in_openapi_document_is_the_generated_one() {
    let generated = serde_json::to_string_pretty(&openapi()).unwrap() + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    assert_eq!(
        api::OPENAPI_JSON,
        generated,
        "broker/openapi.json is stale: regenerate with UPDATE_OPENAPI=1 cargo test -p \
         switchboard-broker --test api openapi"
    );
    // Every RPC has a route but StreamSockets (gRPC only: page with fetch_sockets).
    let set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    let file = set
        .file
        .iter()
        .find(|f| f.package() == "switchboard.admin.v1")
        .unwrap();
    let rpcs: BTreeSet<&str> = file.service[0].method.iter().map(|m| m.name()).collect();
    let mut routed: BTreeSet<&str> = api::ROUTES.iter().map(|(_, rpc)| *rpc).collect();
    routed.insert("StreamSockets");
    assert_eq!(rpcs, routed);
}

#[tokio::test]
async fn the_served_routes_are_exactly_the_documented_ones() {
    let s = serve().await;
    let doc: Value = serde_json::from_str(api::OPENAPI_JSON).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), api::ROUTES.len() + 1);
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let raw = format!(
                "{} {path} HTTP/1.1\r\nhost: b\r\nconnection: close\r\ncontent-type: \
                 application/json\r\ncontent-length: 2\r\n\r\n{{}}",
                method.to_uppercase()
            );
            let (status, body) = exchange(s.http, raw.as_bytes()).await;
            if op.get("security").is_some() {
                // Served, and guarded.
                assert_eq!(status, 401, "{method} {path}: {body}");
            } else {
                assert_eq!(status, 200, "{method} {path}");
                assert_eq!(body, api::OPENAPI_JSON);
            }
        }
    }
    // Each route answers no other method, and nothing else under /api/ is served.
    for (path, _) in api::ROUTES {
        let raw = format!("GET {path} HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n");
        assert_eq!(exchange(s.http, raw.as_bytes()).await.0, 405, "{path}");
    }
    for path in ["/api/stream_sockets", "/api", "/api/", "/api/stats/x"] {
        let (status, body) = post(s.http, path, Some(ADMIN), "{}").await;
        assert_eq!(status, 404, "{path}: {body}");
    }
}
