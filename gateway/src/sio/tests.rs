//! The embedding API driven through real Engine.IO sessions with no I/O: packets go in through
//! the handler, frames come out of the connections' queues.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use switchboard_codec::engineio::{Compress, Frame};
use tokio::time::Instant;

use super::*;
use crate::engine::{Config as EngineConfig, Engine, Handler as _, HandshakeInfo, Transport};
use crate::id::NodeId;

type Io = Arc<Engine<Server>>;

fn setup() -> (Server, Io) {
    setup_with(Limits::default())
}

fn setup_with(limits: Limits) -> (Server, Io) {
    let io = Server::new(Config {
        limits,
        ..Config::default()
    });
    let engine = Engine::new(
        EngineConfig::default(),
        io.clone(),
        NodeId::parse("n1").expect("node id"),
    );
    (io, engine)
}

fn open(engine: &Io) -> Arc<Conn<ConnData>> {
    let info = HandshakeInfo::new(
        "127.0.0.1:1".parse().expect("addr"),
        &http::HeaderMap::new(),
        Some("k=v"),
        0,
    );
    let (conn, _) = engine
        .open(Transport::WebSocket, info, Instant::now())
        .expect("open");
    conn
}

/// Sends an Engine.IO message frame (`4…`) as the transport would deliver it.
fn send(engine: &Io, conn: &Arc<Conn<ConnData>>, frame: &str) {
    let text = frame.strip_prefix('4').expect("a message frame");
    engine
        .handler
        .on_message(conn, Payload::Text(Bytes::copy_from_slice(text.as_bytes())));
}

fn send_bin(engine: &Io, conn: &Arc<Conn<ConnData>>, data: &'static [u8]) {
    engine
        .handler
        .on_message(conn, Payload::Binary(Bytes::from_static(data)));
}

/// Takes the queued frames, as text (binary frames as `<bin:len>`).
fn out(conn: &Arc<Conn<ConnData>>) -> Vec<String> {
    conn.lock()
        .drain()
        .into_iter()
        .map(|f| match f {
            Frame::Text(t, _) => String::from_utf8(t.to_vec()).expect("utf8"),
            Frame::Binary(b, _) => format!("<bin:{}>", b.len()),
        })
        .collect()
}

fn connect(engine: &Io, conn: &Arc<Conn<ConnData>>, nsp: &str) -> String {
    send(engine, conn, &format!("40{nsp},"));
    let frames = out(conn);
    let prefix = if nsp == "/" {
        "40".to_owned()
    } else {
        format!("40{nsp},")
    };
    let reply = frames
        .iter()
        .find(|f| f.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no connect reply in {frames:?}"));
    let v: serde_json::Value = serde_json::from_str(&reply[prefix.len()..]).expect("json");
    v["sid"].as_str().expect("sid").to_owned()
}

#[test]
fn connect_reply_then_handler_frames_in_order() {
    let (io, engine) = setup();
    io.of("/")
        .on_connect(|s| s.emit("welcome", Args::new(vec![json!(1)])));
    let conn = open(&engine);
    out(&conn);
    send(&engine, &conn, "40");
    let frames = out(&conn);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert!(frames[0].starts_with("40{\"sid\":\"n1."), "{frames:?}");
    assert_eq!(frames[1], r#"42["welcome",1]"#);
}

#[test]
fn unknown_namespace_and_middleware_errors() {
    let (io, engine) = setup();
    io.of("/private").use_middleware(|req| {
        if req.auth().get("token").and_then(|t| t.as_str()) == Some("good") {
            Ok(())
        } else {
            Err(ConnectError::new("not authorized").with_data(json!({"retry": false})))
        }
    });
    let conn = open(&engine);
    out(&conn);
    send(&engine, &conn, "40/random");
    assert_eq!(
        out(&conn),
        vec![r#"44/random,{"message":"Invalid namespace"}"#]
    );
    send(&engine, &conn, r#"40/private,{"token":"bad"}"#);
    assert_eq!(
        out(&conn),
        vec![r#"44/private,{"message":"not authorized","data":{"retry":false}}"#]
    );
    send(&engine, &conn, r#"40/private,{"token":"good"}"#);
    assert!(out(&conn)[0].starts_with("40/private,{\"sid\":"));
    assert!(!conn.is_closed());
}

#[test]
fn dynamic_namespaces_share_handlers() {
    let (io, engine) = setup();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    io.of_pattern(regex::Regex::new(r"^/tenant-\d+$").expect("regex"))
        .on_connect(move |_| {
            h.fetch_add(1, Ordering::SeqCst);
        });
    let conn = open(&engine);
    connect(&engine, &conn, "/tenant-1");
    connect(&engine, &conn, "/tenant-22");
    send(&engine, &conn, "40/tenant-x,");
    assert_eq!(
        out(&conn),
        vec![r#"44/tenant-x,{"message":"Invalid namespace"}"#]
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_eq!(io.get("/tenant-22").map(|n| n.len()), Some(1));
}

#[test]
fn events_acks_and_binary() {
    let (io, engine) = setup();
    let ns = io.of("/");
    ns.on("echo", |s, mut e| {
        let args = Args::new(e.args.clone()).with_attachments(e.attachments.clone());
        e.ack(args.clone());
        s.emit("echoed", args);
    });
    let conn = open(&engine);
    connect(&engine, &conn, "/");
    send(&engine, &conn, r#"427["echo",{"b":1,"a":[true]},"x"]"#);
    assert_eq!(
        out(&conn),
        vec![
            r#"437[{"b":1,"a":[true]},"x"]"#,
            r#"42["echoed",{"b":1,"a":[true]},"x"]"#
        ]
    );
    send(
        &engine,
        &conn,
        r#"451-9["echo",{"_placeholder":true,"num":0}]"#,
    );
    assert!(out(&conn).is_empty(), "waits for the attachment");
    send_bin(&engine, &conn, b"\x01\x02");
    assert_eq!(
        out(&conn),
        vec![
            r#"461-9[{"_placeholder":true,"num":0}]"#.to_owned(),
            "<bin:2>".to_owned(),
            r#"451-["echoed",{"_placeholder":true,"num":0}]"#.to_owned(),
            "<bin:2>".to_owned(),
        ]
    );
}

#[test]
fn invalid_packets_close_the_connection() {
    let too_many = r#"4565-["x",{"_placeholder":true,"num":0}]"#.to_owned();
    for bad in [
        "4abc",
        "42{}",
        r#"42abc["x"]"#,
        too_many.as_str(),
        r#"42["x"]"#,
    ] {
        let (io, engine) = setup();
        io.of("/");
        let conn = open(&engine);
        if bad != r#"42["x"]"# {
            connect(&engine, &conn, "/");
        }
        // The last case: an event for a namespace the client never connected.
        send(&engine, &conn, bad);
        assert!(conn.is_closed(), "{bad} must close");
    }
}

#[test]
fn namespace_disconnect_keeps_the_others() {
    let (io, engine) = setup();
    let reasons = Arc::new(Mutex::new(Vec::new()));
    let r = reasons.clone();
    io.of("/");
    io.of("/custom")
        .on_disconnect(move |_, reason| r.lock().push(reason.to_string()));
    io.of("/")
        .on("ping-me", |s, _| s.emit("pong-you", Args::none()));
    let conn = open(&engine);
    connect(&engine, &conn, "/");
    connect(&engine, &conn, "/custom");
    send(&engine, &conn, "41/custom,");
    assert!(out(&conn).is_empty(), "no reply to a client disconnect");
    send(&engine, &conn, r#"42["ping-me"]"#);
    assert_eq!(out(&conn), vec![r#"42["pong-you"]"#]);
    assert_eq!(*reasons.lock(), vec!["client namespace disconnect"]);
    assert_eq!(io.get("/custom").map(|n| n.len()), Some(0));
}

#[test]
fn rooms_broadcasts_and_exclusions() {
    let (io, engine) = setup();
    let ns = io.of("/");
    ns.on("join", |s, e| {
        let room = e.args[0].as_str().expect("room").to_owned();
        s.join(room);
    });
    ns.on("say", |s, e| {
        let room = e.args[0].as_str().expect("room").to_owned();
        s.to(room).emit("said", e.into_args());
    });
    let conns: Vec<_> = (0..4).map(|_| open(&engine)).collect();
    for c in &conns {
        connect(&engine, c, "/");
    }
    for c in &conns[..3] {
        send(&engine, c, r#"42["join","a"]"#);
    }
    send(&engine, &conns[2], r#"42["join","b"]"#);
    send(&engine, &conns[0], r#"42["say","a"]"#);
    let got: Vec<usize> = conns.iter().map(|c| out(c).len()).collect();
    assert_eq!(got, vec![0, 1, 1, 0], "members except the sender");
    assert_eq!(ns.room_len("a"), 3);
    // Union of rooms reaches each socket once; except removes members of a room.
    assert_eq!(ns.to("a").to("b").emit("x", Args::none()), 3);
    assert_eq!(ns.to("a").except("b").emit("x", Args::none()), 2);
    assert_eq!(ns.emit("all", Args::none()), 4);
    for c in &conns {
        out(c);
    }
    // Leaving and disconnecting clean up the indexes.
    conns[1].close(CloseReason::TransportClose);
    assert_eq!(ns.room_len("a"), 2);
    send(&engine, &conns[2], r#"42["say","b"]"#);
    assert_eq!(ns.rooms().len(), 2);
    conns[2].close(CloseReason::TransportClose);
    assert_eq!(ns.room_len("b"), 0);
    assert_eq!(ns.rooms().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn server_acks_resolve_or_time_out() {
    let (io, engine) = setup();
    let ns = io.of("/");
    let conn = open(&engine);
    let sid = connect(&engine, &conn, "/");
    let socket = ns.socket(&sid).expect("socket");
    let answered = socket.emit_with_ack("q", Args::new(vec![json!("?")]), Duration::from_secs(5));
    assert_eq!(out(&conn), vec![r#"420["q","?"]"#]);
    send(&engine, &conn, r#"430["yes"]"#);
    assert_eq!(answered.await, Ok(Args::new(vec![json!("yes")])));
    let unanswered = socket.emit_with_ack("q", Args::none(), Duration::from_secs(5));
    assert_eq!(out(&conn), vec![r#"421["q"]"#]);
    assert_eq!(unanswered.await, Err(AckError::Timeout));
    let orphan = socket.emit_with_ack("q", Args::none(), Duration::from_secs(5));
    conn.close(CloseReason::TransportClose);
    assert_eq!(orphan.await, Err(AckError::Disconnected));
}

#[test]
fn middleware_data_and_rooms_reach_the_socket() {
    let (io, engine) = setup();
    struct User(String);
    let ns = io.of("/");
    ns.use_middleware(|req| {
        let name = req.query("k").unwrap_or("?".into()).into_owned();
        req.join(format!("user:{name}"));
        req.insert(User(name));
        Ok(())
    });
    let conn = open(&engine);
    let sid = connect(&engine, &conn, "/");
    let socket = ns.socket(&sid).expect("socket");
    assert_eq!(
        socket.get::<User>().map(|u| u.0.clone()),
        Some("v".to_owned())
    );
    assert!(socket.in_room("user:v"));
    assert_eq!(ns.room_len("user:v"), 1);
}

#[test]
fn server_namespace_disconnect_tells_the_client() {
    let (io, engine) = setup();
    let ns = io.of("/custom");
    let conn = open(&engine);
    let sid = connect(&engine, &conn, "/custom");
    ns.socket(&sid).expect("socket").disconnect();
    assert_eq!(out(&conn), vec!["41/custom,"]);
    assert!(ns.socket(&sid).is_none());
    assert!(!conn.is_closed());
    // Events the client sent before it saw the DISCONNECT are dropped, not a protocol error.
    send(&engine, &conn, r#"42/custom,["late"]"#);
    assert!(!conn.is_closed());
    assert!(out(&conn).is_empty());
    // Connecting again works, and afterwards unknown-namespace packets close again.
    connect(&engine, &conn, "/custom");
    send(&engine, &conn, r#"42/other,["x"]"#);
    assert!(conn.is_closed());
}

#[test]
fn room_capacity_is_checked_under_the_lock() {
    let (io, engine) = setup();
    let ns = io.of("/");
    let sockets: Vec<Socket> = (0..3)
        .map(|_| {
            let conn = open(&engine);
            let sid = connect(&engine, &conn, "/");
            ns.socket(&sid).expect("socket")
        })
        .collect();
    assert_eq!(sockets[0].join_within("r", 2), Ok(true));
    assert_eq!(
        sockets[0].join_within("r", 2),
        Ok(false),
        "already a member"
    );
    assert_eq!(sockets[1].join_within("r", 2), Ok(true));
    assert_eq!(sockets[2].join_within("r", 2), Err(RoomFull));
    assert_eq!(sockets[2].join_within("r", 0), Ok(true), "0 means no limit");
    assert_eq!(ns.room_len("r"), 3);
}

/// Records what the server reports to its adapter.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Adapter for Recorder {
    fn connected(&self, socket: &Socket) {
        self.push(format!(
            "connect {} {:?}",
            socket.namespace().name(),
            socket.rooms()
        ));
    }
    fn disconnected(&self, socket: &Socket, rooms: &[Room], reason: DisconnectReason) {
        self.push(format!("disconnect {rooms:?} {reason}"));
        assert!(
            socket.rooms().is_empty(),
            "memberships are gone when reported"
        );
    }
    fn joined(&self, _: &Socket, room: &Room) {
        self.push(format!("join {room}"));
    }
    fn left(&self, _: &Socket, room: &Room) {
        self.push(format!("leave {room}"));
    }
    fn broadcast(&self, ns: &str, target: &Target, frames: &[Frame], volatile: bool) {
        let first = match frames.first() {
            Some(Frame::Text(t, _)) => String::from_utf8_lossy(t).into_owned(),
            _ => String::new(),
        };
        let off = if frames.iter().all(|f| !f.compress().allowed()) {
            " uncompressed"
        } else {
            ""
        };
        self.push(format!(
            "broadcast {ns} {:?} {first} {volatile}{off}",
            target.rooms
        ));
    }
}

impl Recorder {
    fn push(&self, s: String) {
        self.0.lock().push(s);
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock())
    }
}

#[test]
fn the_adapter_hears_every_membership_change_and_broadcast_once() {
    let (io, engine) = setup();
    let rec = Arc::new(Recorder::default());
    assert!(io.set_adapter(rec.clone()));
    assert!(!io.set_adapter(rec.clone()), "an adapter is set once");
    io.of("/chat").use_middleware(|req| {
        req.join("auto");
        Ok(())
    });
    let conn = open(&engine);
    let id = connect(&engine, &conn, "/chat");
    let socket = io
        .get("/chat")
        .and_then(|ns| ns.socket(&id))
        .expect("socket");
    assert!(socket.join("r1"));
    assert!(!socket.join("r1"), "a second join changes nothing");
    assert!(socket.leave("r1"));
    assert!(!socket.leave("r1"));
    io.get("/chat")
        .expect("ns")
        .to("auto")
        .emit("hi", Args::new(vec![json!(1)]));
    io.get("/chat")
        .expect("ns")
        .to("auto")
        .local()
        .emit("quiet", Args::none());
    socket.disconnect();
    assert_eq!(
        rec.take(),
        vec![
            r#"connect /chat ["auto"]"#.to_owned(),
            "join r1".to_owned(),
            "leave r1".to_owned(),
            r#"broadcast /chat ["auto"] 42/chat,["hi",1] false"#.to_owned(),
            r#"disconnect ["auto"] server namespace disconnect"#.to_owned(),
        ]
    );
}

/// Takes the queued frames' compression flags.
fn flags(conn: &Arc<Conn<ConnData>>) -> Vec<Compress> {
    conn.lock().drain().iter().map(Frame::compress).collect()
}

#[test]
fn compress_false_reaches_the_transport_and_the_adapter() {
    let (io, engine) = setup();
    let rec = Arc::new(Recorder::default());
    io.set_adapter(rec.clone());
    let ns = io.of("/chat");
    let conn = open(&engine);
    let id = connect(&engine, &conn, "/chat");
    let socket = ns.socket(&id).expect("socket");
    socket.join("r");
    rec.take();
    let raw = Args::none().binary(Bytes::from_static(b"\x01"));
    socket.emit_with("raw", raw, Compress::Off);
    // A binary event: the placeholder packet and its attachment, both off.
    assert_eq!(flags(&conn), [Compress::Off, Compress::Off]);
    socket.emit("chat", Args::none());
    assert_eq!(flags(&conn), [Compress::Allowed]);
    ns.to("r").compress(false).emit("jpeg", Args::none());
    assert_eq!(flags(&conn), [Compress::Off]);
    ns.to("r").emit("text", Args::none());
    assert_eq!(flags(&conn), [Compress::Allowed]);
    assert_eq!(
        rec.take(),
        [
            r#"broadcast /chat ["r"] 42/chat,["jpeg"] false uncompressed"#,
            r#"broadcast /chat ["r"] 42/chat,["text"] false"#,
        ]
    );
}

#[test]
fn remote_deliveries_follow_the_target_and_are_not_reported_again() {
    let (io, engine) = setup();
    let rec = Arc::new(Recorder::default());
    io.set_adapter(rec.clone());
    io.of("/");
    let conns: Vec<_> = (0..4).map(|_| open(&engine)).collect();
    let ids: Vec<String> = conns.iter().map(|c| connect(&engine, c, "/")).collect();
    let sockets: Vec<Socket> = ids
        .iter()
        .map(|id| io.get("/").and_then(|ns| ns.socket(id)).expect("socket"))
        .collect();
    sockets[0].join("a");
    sockets[1].join("a");
    sockets[1].join("b");
    sockets[2].join("b");
    for c in &conns {
        out(c);
    }
    rec.take();
    let frames = vec![Frame::text(Bytes::from_static(br#"42["x"]"#))];
    let target = Target {
        rooms: vec!["a".into(), "b".into()],
        except_rooms: vec![],
        except_sockets: vec![ids[2].as_str().into()],
        sockets: vec![ids[3].as_str().into(), ids[0].as_str().into()],
    };
    assert_eq!(io.deliver_remote("/", &target, &frames, false), 3);
    let got: Vec<usize> = conns.iter().map(|c| out(c).len()).collect();
    assert_eq!(
        got,
        vec![1, 1, 0, 1],
        "each selected socket once, the excepted one never"
    );
    let except_room = Target {
        except_rooms: vec!["b".into()],
        ..Target::default()
    };
    assert_eq!(io.deliver_remote("/", &except_room, &frames, false), 2);
    assert_eq!(
        io.deliver_remote("/nowhere", &Target::default(), &frames, false),
        0
    );
    assert!(
        rec.take().is_empty(),
        "remote deliveries are not published again"
    );
    let selected: Vec<String> = io
        .select(
            "/",
            &Target {
                rooms: vec!["b".into()],
                ..Target::default()
            },
        )
        .iter()
        .map(|s| s.id().to_owned())
        .collect();
    assert_eq!(selected.len(), 2);
    assert!(selected.contains(&ids[1]) && selected.contains(&ids[2]));
    assert_eq!(io.all_sockets().len(), 4);
}

/// Small limits, so that each is reached in a few packets.
fn small_limits() -> Limits {
    Limits {
        max_name_bytes: 8,
        max_attachments: 2,
        max_attachment_bytes: 4,
        binary_timeout: Duration::from_millis(500),
        max_namespaces: 2,
        connects_per_interval: 4,
        connect_interval: Duration::from_secs(10),
        max_pending_acks: 1,
    }
}

#[tokio::test(start_paused = true)]
async fn connects_are_bounded_per_connection() {
    // (packets sent on one connection, the answer to the last one)
    let table: &[(&[&str], &str)] = &[
        (&["40/a,"], "40/a,{\"sid\""),
        (&["40/abcdefg,"], "40/abcdefg,{\"sid\""),
        (
            &["40/abcdefgh,"],
            r#"44/abcdefgh,{"message":"namespace name too long"}"#,
        ),
        (
            &["40/a,", "40/b,", "40/c,"],
            r#"44/c,{"message":"too many namespaces"}"#,
        ),
        // Leaving frees the place.
        (&["40/a,", "40/b,", "41/a,", "40/c,"], "40/c,{\"sid\""),
        // Five CONNECTs in the window, whatever became of the first four.
        (
            &["40/a,", "41/a,", "40/a,", "40/x,", "40/y,", "40/b,"],
            r#"44/b,{"message":"too many connects"}"#,
        ),
    ];
    for (packets, want) in table {
        let (io, engine) = setup_with(small_limits());
        for name in ["/a", "/b", "/c", "/abcdefg", "/abcdefgh"] {
            io.of(name);
        }
        let conn = open(&engine);
        out(&conn);
        let mut last = Vec::new();
        for p in *packets {
            send(&engine, &conn, p);
            last = out(&conn);
        }
        assert!(
            last.last().is_some_and(|f| f.starts_with(want)),
            "{packets:?}: {last:?}"
        );
        assert!(!conn.is_closed(), "{packets:?}");
    }
    // The window reopens after the interval.
    let (io, engine) = setup_with(small_limits());
    io.of("/a");
    let conn = open(&engine);
    for _ in 0..4 {
        send(&engine, &conn, "40/x,");
    }
    send(&engine, &conn, "40/a,");
    assert!(
        out(&conn)
            .last()
            .is_some_and(|f| f.contains("too many connects"))
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    connect(&engine, &conn, "/a");
}

#[test]
fn dynamic_namespaces_live_while_accepted_sockets_are_in_them() {
    let (io, engine) = setup_with(Limits {
        connects_per_interval: 1000,
        ..Limits::default()
    });
    io.of_pattern(regex::Regex::new(r"^/tenant-\d+$").expect("regex"))
        .use_middleware(|req| {
            if req.auth().get("token").is_some() {
                Ok(())
            } else {
                Err(ConnectError::new("no token"))
            }
        });
    let a = open(&engine);
    let b = open(&engine);
    for i in 0..100 {
        send(&engine, &a, &format!("40/tenant-{i},"));
    }
    assert!(out(&a).iter().all(|f| f.contains("no token")));
    assert!(
        io.get("/tenant-1").is_none(),
        "refused connects create nothing"
    );
    send(&engine, &a, r#"40/tenant-1,{"token":1}"#);
    send(&engine, &b, r#"40/tenant-1,{"token":1}"#);
    assert_eq!(io.get("/tenant-1").map(|n| n.len()), Some(2));
    send(&engine, &a, "41/tenant-1,");
    assert_eq!(io.get("/tenant-1").map(|n| n.len()), Some(1));
    b.close(CloseReason::TransportClose);
    assert!(
        io.get("/tenant-1").is_none(),
        "removed with its last socket"
    );
    // And comes back with the next accepted socket.
    send(&engine, &a, r#"40/tenant-1,{"token":1}"#);
    assert_eq!(io.get("/tenant-1").map(|n| n.len()), Some(1));
}

#[test]
fn long_event_names_and_too_many_pending_acks_are_refused() {
    let (io, engine) = setup_with(small_limits());
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    io.of("/").on_any(move |_, mut e| {
        if let Some(acker) = e.take_ack() {
            h.lock().push(acker);
        }
    });
    let conn = open(&engine);
    connect(&engine, &conn, "/");
    // (packet, frames answered at once)
    let table: &[(&str, &[&str])] = &[
        (
            r#"421["abcdefghi"]"#,
            &[r#"431[{"ok":false,"error":"event name too long"}]"#],
        ),
        (r#"42["abcdefghi"]"#, &[]),
        // The handler keeps this one's ack: one pending.
        (r#"422["abcdefgh"]"#, &[]),
        (
            r#"423["x"]"#,
            &[r#"433[{"ok":false,"error":"too many pending acks"}]"#],
        ),
        // Events without ack are not affected.
        (r#"42["x"]"#, &[]),
    ];
    for (packet, want) in table {
        send(&engine, &conn, packet);
        assert_eq!(out(&conn), *want, "{packet}");
    }
    assert_eq!(held.lock().len(), 1);
    // Answering the held ack frees the place.
    let acker = held.lock().pop().expect("held");
    acker.send(Args::none());
    assert_eq!(out(&conn), vec!["432[]"]);
    send(&engine, &conn, r#"424["x"]"#);
    assert!(out(&conn).is_empty());
    assert!(!conn.is_closed());
}

#[tokio::test(start_paused = true)]
async fn binary_packets_are_bounded_in_count_bytes_and_time() {
    let header = |n: usize| {
        let ph: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"_placeholder":true,"num":{i}}}"#))
            .collect();
        format!(r#"45{n}-["x",{}]"#, ph.join(","))
    };
    // (header's attachment count, attachments sent, wait before the last, expected close)
    type Case = (usize, &'static [&'static [u8]], u64, Option<Limit>);
    let table: &[Case] = &[
        (2, &[b"ab", b"cd"], 499, None),
        (3, &[], 0, Some(Limit::Attachments)),
        (2, &[b"abc", b"de"], 0, Some(Limit::AttachmentBytes)),
        (2, &[b"a", b"b"], 500, Some(Limit::AttachmentTime)),
    ];
    for (n, attachments, wait, want) in table {
        let (io, engine) = setup_with(small_limits());
        let got = Arc::new(AtomicUsize::new(0));
        let g = got.clone();
        io.of("/").on("x", move |_, _| {
            g.fetch_add(1, Ordering::SeqCst);
        });
        let conn = open(&engine);
        connect(&engine, &conn, "/");
        send(&engine, &conn, &header(*n));
        for (i, a) in attachments.iter().enumerate() {
            if i + 1 == attachments.len() && *wait > 0 {
                tokio::time::advance(Duration::from_millis(*wait)).await;
            }
            send_bin(&engine, &conn, a);
        }
        let closed = conn.lock().closed;
        assert_eq!(
            closed,
            want.map(CloseReason::Limited),
            "{n} {attachments:?}"
        );
        assert_eq!(got.load(Ordering::SeqCst), usize::from(want.is_none()));
    }
}

#[tokio::test(start_paused = true)]
async fn the_session_timer_closes_an_incomplete_binary_packet() {
    let (io, engine) = setup_with(small_limits());
    io.of("/");
    let conn = open(&engine);
    connect(&engine, &conn, "/");
    let start = Instant::now();
    assert!(
        conn.tick(start)
            .is_some_and(|t| t > start + Duration::from_millis(500))
    );
    send(&engine, &conn, r#"451-["x",{"_placeholder":true,"num":0}]"#);
    assert!(conn.take_retick(), "the timer is told to look again");
    assert_eq!(conn.tick(start), Some(start + Duration::from_millis(500)));
    assert_eq!(conn.tick(start + Duration::from_millis(500)), None);
    assert_eq!(
        conn.lock().closed,
        Some(CloseReason::Limited(Limit::AttachmentTime))
    );
    // A completed packet clears the deadline.
    let conn = open(&engine);
    connect(&engine, &conn, "/");
    send(&engine, &conn, r#"451-["x",{"_placeholder":true,"num":0}]"#);
    send_bin(&engine, &conn, b"a");
    assert!(
        conn.tick(start)
            .is_some_and(|t| t > start + Duration::from_millis(500))
    );
}

/// State kept with [`ConnectRequest::keep`], counting the connects that saw it.
struct Visits(AtomicUsize);

#[test]
fn kept_state_survives_reentry_and_is_bounded() {
    let (io, engine) = setup_with(Limits {
        connects_per_interval: 100,
        ..small_limits()
    });
    for name in ["/a", "/b", "/c", "/d"] {
        let ns = io.of(name);
        ns.use_middleware(|req| {
            req.keep(|| Visits(AtomicUsize::new(0)));
            Ok(())
        });
        ns.on_connect(|s| {
            s.get::<Visits>()
                .expect("kept")
                .0
                .fetch_add(1, Ordering::SeqCst);
        });
    }
    let visits = |conn: &Arc<Conn<ConnData>>, nsp: &str| {
        io.get(nsp)
            .and_then(|ns| {
                let sid = conn
                    .data
                    .state
                    .lock()
                    .sockets
                    .iter()
                    .find(|s| &*s.ns.name == nsp)?
                    .id
                    .clone();
                ns.socket(&sid)
            })
            .and_then(|s| s.get::<Visits>())
            .map(|v| v.0.load(Ordering::SeqCst))
    };
    let conn = open(&engine);
    for _ in 0..3 {
        connect(&engine, &conn, "/a");
        send(&engine, &conn, "41/a,");
    }
    connect(&engine, &conn, "/a");
    assert_eq!(visits(&conn, "/a"), Some(4), "one value across re-entries");
    // Another connection has its own.
    let other = open(&engine);
    connect(&engine, &other, "/a");
    assert_eq!(visits(&other, "/a"), Some(1));
    // At most max_namespaces (2) namespaces are remembered, connected ones never forgotten.
    connect(&engine, &conn, "/b");
    send(&engine, &conn, "41/b,");
    connect(&engine, &conn, "/c");
    assert_eq!(conn.data.state.lock().kept.len(), 2);
    send(&engine, &conn, "41/c,");
    connect(&engine, &conn, "/b");
    assert_eq!(visits(&conn, "/b"), Some(1), "/b was forgotten for /c");
    assert_eq!(visits(&conn, "/a"), Some(4), "/a stayed connected");
}

/// An adapter that logs `/r` and holds one session, `p1`, to recover: what it hands back is
/// what the server must write, in this order: the missed packets, the CONNECT reply, the
/// packets that arrived meanwhile.
struct Sessions {
    broadcasts: Mutex<Vec<String>>,
}

impl Adapter for Sessions {
    fn connected(&self, _: &Socket) {}
    fn disconnected(&self, _: &Socket, _: &[Room], _: DisconnectReason) {}
    fn joined(&self, _: &Socket, _: &Room) {}
    fn left(&self, _: &Socket, _: &Room) {}
    fn broadcast(&self, ns: &str, target: &Target, frames: &[Frame], _volatile: bool) {
        let first = match frames.first() {
            Some(Frame::Text(t, _)) => String::from_utf8_lossy(t).into_owned(),
            _ => String::new(),
        };
        self.broadcasts.lock().push(format!(
            "{ns} {:?} {:?} {first}",
            target.rooms, target.sockets
        ));
    }
    fn logged(&self, ns: &str) -> bool {
        ns == "/r"
    }
    fn recover(
        &self,
        _ns: &str,
        pid: &str,
        offset: &str,
    ) -> futures_util::future::BoxFuture<'static, Option<Restored>> {
        // Any pid that starts with `p1`: what the server refuses to look up is its own doing.
        let found = pid.starts_with("p1") && offset.starts_with("t.4");
        Box::pin(async move {
            found.then(|| Restored {
                id: "n0.old".into(),
                rooms: vec!["room1".into()],
                init: Box::new(|s: &Socket| s.insert(7u32)),
                missed: vec![vec![Frame::text(Bytes::from_static(
                    b"42/r,[\"m\",1,\"t.5\"]",
                ))]],
                handover: Box::new(Meanwhile),
            })
        })
    }
}

struct Meanwhile;

impl Handover for Meanwhile {
    fn complete(self: Box<Self>, attach: &mut dyn FnMut(Vec<Vec<Frame>>)) -> Result<(), ()> {
        attach(vec![vec![Frame::text(Bytes::from_static(
            b"42/r,[\"m\",2,\"t.6\"]",
        ))]]);
        Ok(())
    }
}

/// Waits for the connection's queue to hold `n` frames (the recovery runs on a task).
async fn frames(conn: &Arc<Conn<ConnData>>, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..200 {
        got.extend(out(conn));
        if got.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    got
}

#[tokio::test]
async fn a_recovered_session_gets_its_id_rooms_and_missed_packets_before_the_connect_reply() {
    let (io, engine) = setup();
    let adapter = Arc::new(Sessions {
        broadcasts: Mutex::new(Vec::new()),
    });
    assert!(io.set_adapter(adapter.clone()));
    let ns = io.of("/r");
    ns.set_recovery(Recovery::default());
    ns.on_connect(|s| {
        if s.recovered() {
            assert_eq!(s.get::<u32>().as_deref(), Some(&7), "init ran first");
        }
    });

    // A fresh socket of a logged namespace gets a pid.
    let fresh = open(&engine);
    out(&fresh);
    send(&engine, &fresh, "40/r,");
    let reply = out(&fresh).remove(0);
    let v: serde_json::Value = serde_json::from_str(&reply["40/r,".len()..]).expect("json");
    assert_eq!(v["pid"].as_str().map(str::len), Some(22), "{reply}");

    // The session comes back.
    let conn = open(&engine);
    out(&conn);
    send(
        &engine,
        &conn,
        r#"40/r,{"pid":"p1","offset":"t.4","token":"x"}"#,
    );
    assert_eq!(
        frames(&conn, 3).await,
        [
            r#"42/r,["m",1,"t.5"]"#,
            r#"40/r,{"sid":"n0.old","pid":"p1"}"#,
            r#"42/r,["m",2,"t.6"]"#,
        ]
    );
    let socket = ns
        .socket("n0.old")
        .expect("the socket is live under its old id");
    assert!(socket.recovered());
    assert_eq!(socket.rooms(), vec![Room::from("room1")]);

    // Emits of a logged namespace go through the adapter only, the socket's own too.
    assert_eq!(ns.to("room1").emit("e", Args::new(vec![json!(1)])), 0);
    socket.emit("own", Args::none());
    assert!(out(&conn).is_empty(), "nothing written but by the log");
    assert_eq!(
        *adapter.broadcasts.lock(),
        [
            r#"/r ["room1"] [] 42/r,["e",1]"#,
            r#"/r [] ["n0.old"] 42/r,["own"]"#,
        ]
    );

    // A pid or an offset over 64 bytes is not looked up: a fresh connect.
    for auth in [
        format!(r#"{{"pid":"p1{}","offset":"t.4"}}"#, "x".repeat(100)),
        format!(r#"{{"pid":"p1","offset":"t.4{}"}}"#, "9".repeat(100)),
    ] {
        let long = open(&engine);
        out(&long);
        send(&engine, &long, &format!("40/r,{auth}"));
        let got = frames(&long, 1).await;
        assert_eq!(got.len(), 1, "only a CONNECT reply, no replay: {got:?}");
        let v: serde_json::Value = serde_json::from_str(&got[0]["40/r,".len()..]).expect("json");
        assert_ne!(v["sid"], "n0.old", "{auth}");
    }

    // An unknown session is a fresh connect, with a new id and pid.
    let other = open(&engine);
    out(&other);
    send(&engine, &other, r#"40/r,{"pid":"nope","offset":"t.4"}"#);
    let got = frames(&other, 1).await;
    let v: serde_json::Value = serde_json::from_str(&got[0]["40/r,".len()..]).expect("json");
    assert_ne!(v["sid"], "n0.old");
    assert_ne!(v["pid"], "nope");
    assert!(v["pid"].is_string());
}
