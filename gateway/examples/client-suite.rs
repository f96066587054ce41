//! The support servers of the official clients' own test suites (socket.io-client's
//! `test/support/server.ts` and engine.io-client's `test/support/hooks.js`, in the socket.io
//! monorepo), rebuilt on Switchboard's embedding API, so that those suites run unmodified against
//! Switchboard (`scripts/client-suites.sh`, docs/conformance.md):
//!
//! - 127.0.0.1:3210, `/socket.io/`: Socket.IO with pingInterval 2 s, a 10 ms pause before every
//!   handshake (the suite's `allowRequest`, for the client's connection timeout), namespaces `/`
//!   (a middleware refusing `?fail=…` and the suite's handlers), `/foo` (`getId`), `/abc` (emits
//!   `handshake` on connect), `/no` (a middleware refusing every connect), and the empty
//!   `/timeout_socket`, `/valid` and `/asd`; connection state recovery on every namespace with
//!   socket.io's defaults (2 minutes, middlewares skipped). It runs over the composition a
//!   standalone gateway uses (an in-process bus with the broker embedded, which keeps the
//!   sessions; the hub's log keeps the packets).
//! - 127.0.0.1:3000, `/engine.io/`: a bare Engine.IO echo with pingInterval 500 ms and
//!   maxPayload 100 bytes; it greets each client with `hi`, answers `give binary`, `give utf8`
//!   and `sendHeaders`, refuses handshakes with a `deny` query parameter and sets the suite's
//!   cookies on the handshake response.
//!
//! Prints `listening on http://127.0.0.1:3000`, then `listening on http://127.0.0.1:3210`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use switchboard_broker::{Broker, BrokerConfig, LeaderMode};
use switchboard_bus::{Hub, LogConfig};
use switchboard_codec::engineio::{Packet, Payload};
use switchboard_gateway::cluster::{Cluster, ClusterConfig, RecoveryConfig};
use switchboard_gateway::config::{DEFAULT_MAX_REPLAY_BYTES, DEFAULT_MAX_REPLAY_PACKETS};
use switchboard_gateway::engine::{self, CloseReason, Conn, Engine, HandshakeInfo};
use switchboard_gateway::http::{self, Cors, Router};
use switchboard_gateway::id::NodeId;
use switchboard_gateway::sio::{self, Args, ConnectError, Event, Server, Socket};
use switchboard_gateway::transport::{Body, Endpoint};
use switchboard_proto::subject::Subjects;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

// ---- engine.io-client's suite: a bare Engine.IO echo ------------------------------------------

/// The request headers of each session's latest polling POST, for `sendHeaders` (the suite
/// answers with the headers of the data request that carried the message).
#[derive(Default)]
struct SeenHeaders(Mutex<HashMap<String, Value>>);

/// Echoes every message, except the suite's three requests.
struct Echo(Arc<SeenHeaders>);

impl engine::Handler for Echo {
    type Data = ();

    fn on_open(&self, conn: &Arc<Conn<()>>) {
        conn.push(Packet::Message(Payload::Text(Bytes::from_static(b"hi"))).encode());
    }

    fn on_message(&self, conn: &Arc<Conn<()>>, message: Payload) {
        let reply = match &message {
            Payload::Text(t) if &t[..] == b"give binary" => {
                Payload::Binary(Bytes::from_static(&[0, 1, 2, 3, 4]))
            }
            Payload::Text(t) if &t[..] == b"give utf8" => {
                Payload::Text(Bytes::from("пойду спать всем спокойной ночи".as_bytes()))
            }
            Payload::Text(t) if &t[..] == b"sendHeaders" => {
                // Over WebSocket there is no data request: `undefined`, which JSON.stringify
                // leaves out of `send` — the suite only asks over polling.
                let seen = self.0.0.lock().get(&**conn.sid()).cloned();
                match seen {
                    Some(headers) => Payload::Text(Bytes::from(headers.to_string())),
                    None => return,
                }
            }
            _ => message,
        };
        conn.push(Packet::Message(reply).encode());
    }

    fn on_close(&self, conn: &Arc<Conn<()>>, _reason: CloseReason) {
        self.0.0.lock().remove(&**conn.sid());
    }
}

/// The suite's cookies, set on every handshake response (its `initial_headers` listener).
const COOKIES: [&str; 4] = [
    "1=1; Max-Age=86400",
    "2=2; Path=/; HttpOnly; Secure; SameSite=Strict",
    "3=3; Max-Age=0",
    // `expires: new Date()`: already expired when the client reads it.
    "4=4; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
];

/// What the suites' servers do around Engine.IO's own request handling: an `allowRequest`
/// (refuse `?deny`, or pause before accepting), the handshake's extra headers, and the headers
/// of each polling POST.
struct Around<H: engine::Handler> {
    engine: Arc<Engine<H>>,
    /// Refuse handshakes whose query has `deny` (engine.io-client's suite).
    deny: bool,
    /// Pause before every handshake (socket.io-client's suite).
    pause: Option<Duration>,
    /// Set-Cookie values for the handshake response.
    cookies: &'static [&'static str],
    /// Where polling POSTs' headers go, by sid.
    seen: Option<Arc<SeenHeaders>>,
}

fn query_param<'a>(req: &'a Request<impl Sized>, key: &str) -> Option<String> {
    let q: &'a str = req.uri().query()?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

impl<H: engine::Handler> Endpoint for Around<H> {
    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        remote: SocketAddr,
    ) -> BoxFuture<'static, Response<Body>> {
        Box::pin(async move {
            let sid = query_param(&req, "sid");
            if sid.is_none() {
                if self.deny && query_param(&req, "deny").is_some() {
                    let mut res = Response::new(Body::new(Bytes::from_static(
                        br#"{"code":4,"message":"Forbidden"}"#,
                    )));
                    *res.status_mut() = StatusCode::FORBIDDEN;
                    res.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    return res;
                }
                if let Some(pause) = self.pause {
                    tokio::time::sleep(pause).await;
                }
            } else if req.method() == hyper::Method::POST
                && let (Some(seen), Some(sid)) = (&self.seen, &sid)
            {
                let headers: Map<String, Value> = req
                    .headers()
                    .iter()
                    .filter_map(|(k, v)| Some((k.to_string(), Value::from(v.to_str().ok()?))))
                    .collect();
                seen.0.lock().insert(sid.clone(), Value::Object(headers));
            }
            let handshake = sid.is_none();
            let mut res = self.engine.clone().handle(req, remote).await;
            if handshake && res.status() == StatusCode::OK {
                for cookie in self.cookies {
                    res.headers_mut()
                        .append(header::SET_COOKIE, HeaderValue::from_static(cookie));
                }
            }
            res
        })
    }

    fn open_direct(
        self: Arc<Self>,
        req: &mut Request<()>,
        head_len: usize,
        tcp: TcpStream,
        remote: SocketAddr,
    ) -> Result<(), TcpStream> {
        // A WebSocket opening a session: through `handle` when something must happen first.
        if self.deny || self.pause.is_some() {
            return Err(tcp);
        }
        self.engine.clone().open_direct(req, head_len, tcp, remote)
    }
}

// ---- socket.io-client's suite ----------------------------------------------------------------

/// The CONNECT payload, kept for `socket.handshake.auth`.
struct Auth(Value);

/// Order checks of the suite's `abuff*` and `blob*` events.
#[derive(Default)]
struct Received {
    abuff1: AtomicBool,
    blob1: AtomicBool,
    blob2: AtomicBool,
}

/// JavaScript's `new Date()` as JSON: an ISO 8601 string with milliseconds.
fn now_json() -> Value {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Value::String(iso8601(u64::try_from(ms).unwrap_or(0)))
}

fn iso8601(ms: u64) -> String {
    let (secs, millis) = (ms / 1000, ms % 1000);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `socket.handshake` as Node's socket.io shows it (the fields a session keeps).
fn handshake(socket: &Socket) -> Value {
    let info: &HandshakeInfo = socket.handshake();
    let mut query = Map::new();
    for (k, v) in info.query_pairs() {
        query.entry(k).or_insert(Value::String(v));
    }
    let headers: Map<String, Value> = engine::KEPT_HEADERS
        .iter()
        .filter_map(|h| Some(((*h).to_owned(), Value::from(info.header(h)?))))
        .collect();
    let url = format!(
        "/socket.io/?{}",
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(info.query_pairs())
            .finish()
    );
    let auth = socket
        .get::<Auth>()
        .map_or_else(|| json!({}), |a| a.0.clone());
    json!({
        "headers": headers,
        "time": iso8601(info.issued_ms),
        "address": info.remote.ip().to_string(),
        "xdomain": info.header("origin").is_some(),
        "secure": false,
        "issued": info.issued_ms,
        "url": url,
        "query": query,
        "auth": auth,
    })
}

/// Whether an argument is a binary attachment (Node: `Buffer.isBuffer`).
fn is_binary(v: Option<&Value>) -> bool {
    v.and_then(|v| v.get("_placeholder"))
        .is_some_and(|p| p == &Value::Bool(true))
}

/// The suite's `expect(a.hello).to.eql("lol"); expect(Buffer.isBuffer(a.message)) …` checks.
fn is_mixed(a: Option<&Value>) -> bool {
    a.is_some_and(|a| {
        a.get("hello") == Some(&json!("lol"))
            && is_binary(a.get("message"))
            && a.get("goodbye") == Some(&json!("gotcha"))
    })
}

fn emit(socket: &Socket, event: &str, values: Vec<Value>) {
    socket.emit(event, Args::new(values));
}

/// Acks with the handler's one value.
fn answer(event: &mut Event, value: Value) {
    event.ack(Args::new(vec![value]));
}

fn received(socket: &Socket) -> Arc<Received> {
    socket.get::<Received>().unwrap_or_else(|| {
        socket.insert(Received::default());
        socket.get::<Received>().unwrap_or_default()
    })
}

fn main_namespace(io: &Server) {
    let ns = io.of("/");
    ns.use_middleware(|req| {
        let auth = req.auth().clone();
        req.insert(Auth(auth));
        if req.query("fail").is_some_and(|v| !v.is_empty()) {
            return Err(ConnectError::new("Auth failed (main namespace)"));
        }
        Ok(())
    });
    ns.on_connect(|socket| socket.insert(Received::default()));
    ns.on("hi", |socket, _| emit(socket, "hi", vec![]));
    ns.on("echo", |_, mut event| {
        let arg = event.args.first().cloned().unwrap_or(Value::Null);
        let attachments = std::mem::take(&mut event.attachments);
        event.ack(Args::new(vec![arg]).with_attachments(attachments));
    });
    ns.on("ack", |socket, _| {
        let pending = socket.emit_with_ack("ack", Args::none(), Duration::from_secs(3600));
        let socket2 = socket.clone();
        socket.spawn(async move {
            if let Ok(args) = pending.await
                && args.values.first() == Some(&json!(5))
                && args
                    .values
                    .get(1)
                    .and_then(|b| b.get("test"))
                    .is_some_and(truthy)
            {
                emit(&socket2, "got it", vec![]);
            }
        });
    });
    ns.on("getAckDate", |_, mut event| answer(&mut event, now_json()));
    ns.on("getDate", |socket, _| {
        emit(socket, "takeDate", vec![now_json()])
    });
    ns.on("getDateObj", |socket, _| {
        emit(socket, "takeDateObj", vec![json!({ "date": now_json() })]);
    });
    ns.on("getUtf8", |socket, _| {
        for s in [
            "てすと",
            "Я Б Г Д Ж Й",
            "Ä ä Ü ü ß",
            "utf8 — string",
            "utf8 — string",
        ] {
            emit(socket, "takeUtf8", vec![json!(s)]);
        }
    });
    ns.on("false", |socket, _| {
        emit(socket, "false", vec![json!(false)])
    });
    ns.on("doge", |socket, _| {
        socket.emit("doge", Args::none().binary(Bytes::from_static(b"asdfasdf")));
    });
    ns.on("buffa", |socket, event| {
        if is_binary(event.args.first()) {
            emit(socket, "buffack", vec![]);
        }
    });
    ns.on("jsonbuff", |socket, event| {
        if is_mixed(event.args.first()) {
            emit(socket, "jsonbuff-ack", vec![]);
        }
    });
    ns.on("abuff1", |socket, event| {
        if is_binary(event.args.first()) {
            received(socket).abuff1.store(true, Ordering::SeqCst);
        }
    });
    ns.on("abuff2", |socket, _| {
        if received(socket).abuff1.load(Ordering::SeqCst) {
            emit(socket, "abuff2-ack", vec![]);
        }
    });
    ns.on("blob", |socket, event| {
        if is_binary(event.args.first()) {
            emit(socket, "back", vec![]);
        }
    });
    ns.on("jsonblob", |socket, event| {
        if is_mixed(event.args.first()) {
            emit(socket, "jsonblob-ack", vec![]);
        }
    });
    ns.on("blob1", |socket, event| {
        if is_binary(event.args.first()) {
            received(socket).blob1.store(true, Ordering::SeqCst);
        }
    });
    ns.on("blob2", |socket, event| {
        let r = received(socket);
        if r.blob1.load(Ordering::SeqCst) && event.args.first() == Some(&json!("second")) {
            r.blob2.store(true, Ordering::SeqCst);
        }
    });
    ns.on("blob3", |socket, event| {
        let r = received(socket);
        if is_binary(event.args.first())
            && r.blob1.load(Ordering::SeqCst)
            && r.blob2.load(Ordering::SeqCst)
        {
            emit(socket, "blob3-ack", vec![]);
        }
    });
    ns.on("getbin", |socket, _| {
        socket.emit(
            "takebin",
            Args::none().binary(Bytes::from_static(b"asdfasdf")),
        );
    });
    ns.on("getHandshake", |socket, mut event| {
        answer(&mut event, handshake(socket));
    });
    ns.on("getId", |socket, mut event| {
        answer(&mut event, json!(socket.id()));
    });
}

/// JavaScript truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Every namespace of the support server: its `connectionStateRecovery: {}` is server-wide.
const NAMESPACES: [&str; 7] = [
    "/",
    "/foo",
    "/timeout_socket",
    "/valid",
    "/asd",
    "/abc",
    "/no",
];

/// socket.io's `connectionStateRecovery` defaults: 2 minutes, middlewares skipped.
const RECOVERY: sio::Recovery = sio::Recovery {
    max_disconnection: Duration::from_secs(120),
    skip_middlewares: true,
};

fn socketio_server() -> Server {
    let io = Server::new(sio::Config::default());
    main_namespace(&io);
    let named = io.of("/foo");
    named.on("getId", |socket, mut event| {
        answer(&mut event, json!(socket.id()));
    });
    for name in ["/timeout_socket", "/valid", "/asd"] {
        io.of(name);
    }
    let abc = io.of("/abc");
    abc.use_middleware(|req| {
        let auth = req.auth().clone();
        req.insert(Auth(auth));
        Ok(())
    });
    abc.on_connect(|socket| {
        let h = handshake(socket);
        emit(socket, "handshake", vec![h]);
    });
    io.of("/no")
        .use_middleware(|_| Err(ConnectError::new("Auth failed (custom namespace)")));
    for name in NAMESPACES {
        io.of(name).set_recovery(RECOVERY);
    }
    io
}

// ---- both ------------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let root = CancellationToken::new();
    let tasks = TaskTracker::new();
    let node = NodeId::random();

    // Engine.IO echo on 3000.
    let seen = Arc::new(SeenHeaders::default());
    let eio_config = engine::Config {
        ping_interval: Duration::from_millis(500),
        max_payload: 100,
        ..engine::Config::default()
    };
    let echo = Engine::new(eio_config, Echo(seen.clone()), node.clone());
    let eio_router = Router::new(Cors {
        origins: vec!["*".into()],
        credentials: true,
    })
    .endpoint(
        "/engine.io/",
        Arc::new(Around {
            engine: echo.clone(),
            deny: true,
            pause: None,
            cookies: &COOKIES,
            seen: Some(seen),
        }),
    );

    // Socket.IO on 3210, over an in-process bus with the broker embedded (a standalone
    // gateway's composition).
    let io = socketio_server();
    let hub = Hub::new();
    let subjects = Subjects::default();
    let heartbeat = Duration::from_secs(2);
    let _broker = Broker::start(
        hub.client(),
        BrokerConfig {
            id: format!("{node}-broker"),
            prefix: subjects.prefix().to_owned(),
            lease: heartbeat * 3,
            heartbeat,
            leader: LeaderMode::Always,
            presence_batches: true,
        },
    )
    .await
    .context("starting the embedded broker")?;
    let slot: Arc<std::sync::OnceLock<Arc<Engine<Server>>>> = Arc::default();
    let counter = slot.clone();
    let cluster = Cluster::start(
        hub.client(),
        io.clone(),
        ClusterConfig {
            node: node.clone(),
            subjects: subjects.clone(),
            heartbeat,
            lease: heartbeat * 3,
            presence: HashMap::new(),
            connections: Arc::new(move || counter.get().map_or(0, |e| e.all().len() as u64)),
            // The cluster side of recovery: the broker keeps the sessions, the log the packets.
            recovery: NAMESPACES
                .iter()
                .map(|ns| {
                    let rc = RecoveryConfig {
                        window: RECOVERY.max_disconnection,
                        max_replay_packets: DEFAULT_MAX_REPLAY_PACKETS,
                        max_replay_bytes: DEFAULT_MAX_REPLAY_BYTES,
                    };
                    ((*ns).to_owned(), rc)
                })
                .collect(),
            member_batches: true,
            log: Some(LogConfig {
                stream: subjects.log_stream(),
                subjects: vec![subjects.all_log()],
                max_age: RECOVERY.max_disconnection + Duration::from_secs(30),
                // The hub's own bound.
                max_bytes: 0,
                replicas: 1,
                memory: true,
                duplicate_window: Duration::from_secs(30),
            }),
            #[cfg(feature = "fault-injection")]
            drop_seqs: Vec::new(),
        },
        root.child_token(),
        tasks.clone(),
    )
    .await
    .context("joining the in-process bus")?;
    let sio_config = engine::Config {
        ping_interval: Duration::from_millis(2000),
        ..engine::Config::default()
    };
    let sio_engine = Engine::new(sio_config, io, node.clone());
    let _ = slot.set(sio_engine.clone());
    let sio_router = Router::new(Cors {
        origins: vec!["*".into()],
        credentials: false,
    })
    .endpoint(
        "/socket.io/",
        Arc::new(Around {
            engine: sio_engine.clone(),
            deny: false,
            pause: Some(Duration::from_millis(10)),
            cookies: &[],
            seen: None,
        }),
    );

    let eio_listener = http::listen(SocketAddr::from(([127, 0, 0, 1], 3000)))
        .context("listening on 127.0.0.1:3000")?;
    let sio_listener = http::listen(SocketAddr::from(([127, 0, 0, 1], 3210)))
        .context("listening on 127.0.0.1:3210")?;
    println!("listening on http://{}", eio_listener.local_addr()?);
    let sio_addr = sio_listener.local_addr()?;
    cluster.set_address(sio_addr.to_string());
    println!("listening on http://{sio_addr}");

    // SIGTERM or Ctrl-C.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = root.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        stop.cancel();
    });
    let eio_stop = root.clone();
    let eio = tokio::spawn(http::run(
        eio_listener,
        Arc::new(eio_router),
        async move { eio_stop.cancelled().await },
        async move || {
            for conn in echo.all() {
                conn.close(CloseReason::Shutdown);
            }
        },
    ));
    let sio_stop = root.clone();
    http::run(
        sio_listener,
        Arc::new(sio_router),
        async move { sio_stop.cancelled().await },
        async move || {
            for conn in sio_engine.all() {
                conn.close(CloseReason::Shutdown);
            }
        },
    )
    .await;
    let _ = eio.await;
    tasks.close();
    tasks.wait().await;
    Ok(())
}
