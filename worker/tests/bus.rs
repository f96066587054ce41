//! The worker crate against a real `nats-server`: the exact subjects and payloads it publishes,
//! checked with the gateway's own decoders (`delivery_frames`, `worker_reply`), and the typed
//! streams it reads, garbage included.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use switchboard_codec::engineio::{Compress, Frame};
use switchboard_gateway::cluster::{delivery_frames, worker_reply};
use switchboard_proto::Message as _;
use switchboard_proto::subject::Subjects;
use switchboard_tests::{NatsServer, WAIT, connect};
use switchboard_worker::switchboard_bus::{Bus, LogConfig, Message, Subscription};
use switchboard_worker::{
    Args, EventReply, LifeEvent, PresenceKind, Reservation, Sent, Worker, WorkerError, pb,
};

const NS: &str = "/chat";

fn subjects() -> Subjects {
    Subjects::new("sio").expect("a valid prefix")
}

/// A worker and a separate client playing the gateways and brokers (NATS does not echo a
/// client's own messages).
async fn pair(server: &NatsServer) -> (Worker, Bus) {
    let worker = Worker::with_bus(connect(&server.url(), "worker").await, subjects(), "w1");
    let peer = connect(&server.url(), "peer").await;
    (worker, peer)
}

async fn next(sub: &mut Subscription) -> Message {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a message in time")
        .expect("the subscription is open")
}

async fn within<F: std::future::Future>(what: F) -> F::Output {
    tokio::time::timeout(WAIT, what).await.expect("in time")
}

async fn settle(bus: &Bus) {
    bus.barrier(WAIT)
        .await
        .expect("the server took the subscriptions");
}

fn delivery(msg: Message) -> pb::Delivery {
    match pb::Envelope::decode(msg.payload) {
        Ok(pb::Envelope {
            body: Some(pb::envelope::Body::Delivery(d)),
        }) => d,
        other => panic!("a delivery expected, got {other:?}"),
    }
}

fn command(msg: Message) -> pb::Command {
    match pb::Envelope::decode(msg.payload) {
        Ok(pb::Envelope {
            body: Some(pb::envelope::Body::Command(c)),
        }) => c,
        other => panic!("a command expected, got {other:?}"),
    }
}

fn client_event(event: &str, args_json: &str, attachments: Vec<Bytes>) -> pb::ClientEvent {
    pb::ClientEvent {
        node: "gw1".into(),
        socket_id: "gw1.abc".into(),
        ns: NS.into(),
        event: event.into(),
        args_json: args_json.into(),
        attachments,
        claims_json: r#"{"sub":"alice","role":"admin"}"#.into(),
        user: Some("alice".into()),
        wants_ack: true,
        rooms: vec!["gw1.abc".into(), "lobby".into()],
    }
}

async fn ask(peer: &Bus, ev: &pb::ClientEvent) -> pb::EventReply {
    let subject = subjects().event(NS, &ev.event).expect("a subject");
    let reply = peer
        .request(subject, Bytes::from(ev.encode_to_vec()), WAIT)
        .await
        .expect("the worker answers");
    pb::EventReply::decode(reply).expect("an EventReply")
}

#[tokio::test]
async fn a_forwarded_event_is_typed_and_its_ack_reaches_the_gateway() {
    let server = NatsServer::start();
    let (worker, peer) = pair(&server).await;
    let mut events = worker.of(NS).events(Some("g")).await.expect("subscribed");
    worker.ready(WAIT).await.expect("ready");

    let ev = client_event(
        "upload",
        r#"[{"name":"a.png","data":{"_placeholder":true,"num":0}}]"#,
        vec![Bytes::from_static(b"\x89PNG")],
    );
    let asking = tokio::spawn({
        let (peer, ev) = (peer.clone(), ev.clone());
        async move { ask(&peer, &ev).await }
    });
    let mut got = tokio::time::timeout(WAIT, events.next())
        .await
        .expect("an event in time")
        .expect("the stream is open");
    assert_eq!(
        (
            got.node.as_str(),
            got.socket_id.as_str(),
            got.ns.as_str(),
            got.event.as_str()
        ),
        ("gw1", "gw1.abc", NS, "upload")
    );
    assert_eq!(got.args.first()["name"], "a.png");
    assert_eq!(got.args.attachments, vec![Bytes::from_static(b"\x89PNG")]);
    assert_eq!(got.claims, json!({"sub": "alice", "role": "admin"}));
    assert_eq!(got.user.as_deref(), Some("alice"));
    assert_eq!(got.rooms, vec!["gw1.abc".to_owned(), "lobby".to_owned()]);
    assert!(got.wants_ack());

    let mut answer = Args::new().arg(json!({ "ok": true }));
    let receipt = answer.attach(&b"thumb"[..]);
    let answer = answer.arg(json!({ "thumb": receipt }));
    let reply = EventReply::ok(answer).join("uploads").leave("lobby");
    assert!(got.reply(reply).await.expect("answered"));
    // Used once: a second answer has no handle to go through.
    assert!(!got.reply(EventReply::error("twice")).await.expect("no-op"));

    let reply = asking.await.expect("the asking task");
    assert_eq!(reply.join, vec!["uploads".to_owned()]);
    assert_eq!(reply.leave, vec!["lobby".to_owned()]);
    assert_eq!(reply.error, "");
    let ack = worker_reply(reply).expect("the gateway accepts the reply");
    assert_eq!(
        ack.values,
        vec![
            json!({ "ok": true }),
            json!({ "thumb": { "_placeholder": true, "num": 0 } })
        ]
    );
    assert_eq!(ack.attachments, vec![Bytes::from_static(b"thumb")]);
}

#[tokio::test]
async fn errors_unanswered_acks_and_events_without_ack() {
    let server = NatsServer::start();
    let (worker, peer) = pair(&server).await;
    let mut events = worker.of(NS).events(None).await.expect("subscribed");
    worker.ready(WAIT).await.expect("ready");

    // A refusal.
    let asking = tokio::spawn({
        let peer = peer.clone();
        async move { ask(&peer, &client_event("a", "[]", vec![])).await }
    });
    let mut ev = events.next().await.expect("an event");
    let ack = ev.take_ack().expect("it wants an ack");
    ack.send(EventReply::error("nope").join("ignored"))
        .await
        .expect("sent");
    let reply = asking.await.expect("the asking task");
    assert_eq!(reply.error, "nope");
    assert!(reply.join.is_empty(), "no rooms change with an error");
    assert_eq!(worker_reply(reply), Err("nope".to_owned()));

    // Dropped unanswered: the client hears "no reply" at once.
    let asking = tokio::spawn({
        let peer = peer.clone();
        async move { ask(&peer, &client_event("b", "[]", vec![])).await }
    });
    drop(events.next().await.expect("an event"));
    assert_eq!(asking.await.expect("the asking task").error, "no reply");

    // An answer whose placeholder names no attachment is refused here, and "no reply" goes.
    let asking = tokio::spawn({
        let peer = peer.clone();
        async move { ask(&peer, &client_event("c", "[]", vec![])).await }
    });
    let mut ev = events.next().await.expect("an event");
    let bad = Args::from(json!([{ "_placeholder": true, "num": 0 }]));
    assert!(ev.reply(EventReply::ok(bad)).await.is_err());
    assert_eq!(asking.await.expect("the asking task").error, "no reply");

    // Without an ack: a plain publish, nothing to answer.
    let mut note = client_event("note", r#"["hi"]"#, vec![]);
    note.wants_ack = false;
    let subject = subjects().event(NS, "note").expect("a subject");
    peer.publish(subject, Bytes::from(note.encode_to_vec()))
        .await
        .expect("published");
    let mut ev = events.next().await.expect("an event");
    assert!(!ev.wants_ack());
    assert_eq!(ev.args.values, vec![json!("hi")]);
    assert!(!ev.reply(EventReply::ok(json!(1))).await.expect("no-op"));
}

#[tokio::test]
async fn emits_take_the_gateways_routes_and_packets() {
    let server = NatsServer::start();
    let (worker, peer) = pair(&server).await;
    let mut spy = peer.subscribe("sio.>".to_owned()).await.expect("spy");
    settle(&peer).await;
    let s = subjects();
    let chat = worker.of(NS);

    // One room: the room's subject.
    let sent = chat
        .to("lobby")
        .except("muted")
        .except_socket("gw1.abc")
        .emit("say", json!({ "text": "hi" }))
        .await
        .expect("emitted");
    assert_eq!(sent, Sent { log_seq: None });
    let msg = next(&mut spy).await;
    assert_eq!(msg.subject, s.room(NS, "lobby").expect("subject"));
    let d = delivery(msg);
    assert_eq!(&d.packet[..], br#"42/chat,["say",{"text":"hi"}]"#);
    assert_eq!(
        (d.origin.as_str(), d.ns.as_str(), d.volatile),
        ("w1", NS, false)
    );
    assert_eq!(
        d.target,
        Some(pb::Target {
            rooms: vec!["lobby".into()],
            except_rooms: vec!["muted".into()],
            except_sockets: vec!["gw1.abc".into()],
            socket_ids: vec![],
        })
    );
    assert!(!d.uncompressed);
    let frames = delivery_frames(NS, d.packet, d.attachments, Compress::Allowed)
        .expect("a gateway writes it");
    assert_eq!(frames.len(), 1);

    // compress(false): the delivery says so, and the gateway's frames carry it.
    chat.to("lobby")
        .compress(false)
        .emit("file", Args::new().binary(&b"\x01"[..]))
        .await
        .expect("emitted");
    let d = delivery(next(&mut spy).await);
    assert!(d.uncompressed);
    let compress = Compress::from_allowed(!d.uncompressed);
    let frames =
        delivery_frames(NS, d.packet, d.attachments, compress).expect("a gateway writes it");
    assert_eq!(frames.len(), 2);
    assert!(
        frames.iter().all(|f| f.compress() == Compress::Off),
        "{frames:?}"
    );
    assert!(matches!(frames[1], Frame::Binary(..)));

    // Two rooms, socket ids, or nobody named: the namespace's subject, with the target.
    chat.to("a")
        .to("b")
        .volatile()
        .emit("x", json!(1))
        .await
        .expect("emitted");
    let msg = next(&mut spy).await;
    assert_eq!(msg.subject, s.namespace(NS).expect("subject"));
    let d = delivery(msg);
    assert!(d.volatile);
    assert_eq!(
        d.target.expect("a target").rooms,
        vec!["a".to_owned(), "b".to_owned()]
    );

    chat.to("a")
        .to_socket("gw2.xyz")
        .emit("x", Args::new())
        .await
        .expect("emitted");
    let msg = next(&mut spy).await;
    assert_eq!(msg.subject, s.namespace(NS).expect("subject"));
    assert_eq!(
        delivery(msg).target.expect("a target").socket_ids,
        vec!["gw2.xyz".to_owned()]
    );

    // Binary: a BINARY_EVENT header and the attachment, accepted as the gateways' own.
    chat.emit("file", Args::new().arg("n").binary(&b"\x00\x01"[..]))
        .await
        .expect("emitted");
    let msg = next(&mut spy).await;
    assert_eq!(msg.subject, s.namespace(NS).expect("subject"));
    let d = delivery(msg);
    assert_eq!(
        &d.packet[..],
        br#"451-/chat,["file","n",{"_placeholder":true,"num":0}]"#
    );
    assert_eq!(d.attachments, vec![Bytes::from_static(b"\x00\x01")]);
    assert_eq!(
        delivery_frames(NS, d.packet, d.attachments, Compress::Allowed).map(|f| f.len()),
        Some(2)
    );

    // Refused before anything is published.
    assert!(chat.emit("disconnect", json!(null)).await.is_err());
    assert!(worker.of("chat").emit("x", json!(null)).await.is_err());
    let ph = Args::from(json!([{ "_placeholder": true, "num": 3 }]));
    assert!(chat.emit("x", ph).await.is_err());
    chat.emit("last", json!(null)).await.expect("emitted");
    let d = delivery(next(&mut spy).await);
    assert_eq!(&d.packet[..], br#"42/chat,["last",null]"#);
}

/// The delivery the fragments of one split envelope make, checking they belong together.
fn reassemble(fragments: Vec<Message>) -> pb::Delivery {
    let mut whole = Vec::new();
    let mut first: Option<(String, u64, u32)> = None;
    for (index, msg) in fragments.into_iter().enumerate() {
        let f = match pb::Envelope::decode(msg.payload) {
            Ok(pb::Envelope {
                body: Some(pb::envelope::Body::Fragment(f)),
            }) => f,
            other => panic!("a fragment expected, got {other:?}"),
        };
        assert_eq!(f.index as usize, index);
        let key = (f.origin.clone(), f.id, f.count);
        assert_eq!(first.get_or_insert(key.clone()), &key);
        whole.extend_from_slice(&f.data);
    }
    let (_, _, count) = first.expect("fragments");
    assert_eq!(count as usize, whole.len().div_ceil(1024 * 1024 - 1024));
    delivery(Message {
        subject: String::new(),
        reply: None,
        payload: Bytes::from(whole),
    })
}

#[tokio::test]
async fn emits_longer_than_the_bus_takes_go_in_fragments() {
    let server = NatsServer::start();
    let (worker, peer) = pair(&server).await;
    let mut spy = peer.subscribe("sio.>".to_owned()).await.expect("spy");
    settle(&peer).await;
    let chat = worker.of(NS);
    let blob: Bytes = (0..(5 * 1024 * 1024 / 2)).map(|i: u32| i as u8).collect();
    assert!(blob.len() > worker.bus().max_payload());

    chat.to("lobby")
        .emit("file", Args::new().binary(blob.clone()))
        .await
        .expect("emitted");
    let mut fragments = Vec::new();
    for _ in 0..3 {
        let msg = next(&mut spy).await;
        assert_eq!(msg.subject, subjects().room(NS, "lobby").expect("subject"));
        fragments.push(msg);
    }
    let d = reassemble(fragments);
    assert_eq!(
        &d.packet[..],
        br#"451-/chat,["file",{"_placeholder":true,"num":0}]"#
    );
    assert_eq!(d.attachments, vec![blob]);
    assert!(delivery_frames(NS, d.packet, d.attachments, Compress::Allowed).is_some());

    let huge = Args::new().binary(vec![0_u8; 17 * 1024 * 1024]);
    assert!(chat.emit("file", huge).await.is_err());
    chat.emit("after", json!(null)).await.expect("emitted");
    let d = delivery(next(&mut spy).await);
    assert_eq!(&d.packet[..], br#"42/chat,["after",null]"#);
}

#[tokio::test]
async fn commands_go_on_the_namespace_command_subject() {
    let server = NatsServer::start();
    let (worker, peer) = pair(&server).await;
    let mut spy = peer.subscribe("sio.>".to_owned()).await.expect("spy");
    settle(&peer).await;
    let chat = worker.of(NS);
    let subject = subjects().command_namespace(NS).expect("subject");

    chat.to("lobby")
        .sockets_join(&["vip", "news"])
        .await
        .expect("sent");
    let msg = next(&mut spy).await;
    assert_eq!(msg.subject, subject);
    let c = command(msg);
    assert_eq!((c.origin.as_str(), c.ns.as_str()), ("w1", NS));
    assert_eq!(c.target.expect("target").rooms, vec!["lobby".to_owned()]);
    assert_eq!(
        c.action,
        Some(pb::command::Action::Join(pb::RoomList {
            rooms: vec!["vip".into(), "news".into()]
        }))
    );

    chat.all().sockets_leave(&["news"]).await.expect("sent");
    let c = command(next(&mut spy).await);
    assert_eq!(c.target, Some(pb::Target::default()));
    assert!(matches!(c.action, Some(pb::command::Action::Leave(_))));

    chat.to_socket("gw1.abc")
        .disconnect_sockets(true, "bye")
        .await
        .expect("sent");
    let msg = next(&mut spy).await;
    assert_eq!(msg.subject, subject);
    let c = command(msg);
    assert_eq!(
        c.target.expect("target").socket_ids,
        vec!["gw1.abc".to_owned()]
    );
    assert_eq!(
        c.action,
        Some(pb::command::Action::Disconnect(pb::Kick {
            close_connection: true,
            reason: "bye".into()
        }))
    );
}

/// A presence batch is yielded entry by entry, in order, between lone announcements; its
/// malformed entries (a batch inside it, another namespace) are skipped and counted, the rest
/// yielded, and what a reader older than batches makes of one (an announcement with every field
/// empty) is skipped too.
#[tokio::test]
async fn a_presence_batch_yields_its_announcements_in_order() {
    use pb::presence_event::Kind;
    let server = NatsServer::start();
    let (worker, peer) = pair(&server).await;
    let mut presence = worker.of(NS).presence(None).await.expect("subscribed");
    worker.ready(WAIT).await.expect("ready");
    let ev = |kind: Kind, room: &str, id: &str| pb::PresenceEvent {
        kind: kind as i32,
        ns: NS.into(),
        room: room.into(),
        user: Some(format!("user-{id}")),
        socket_id: id.into(),
        ..Default::default()
    };
    let batch = |events: Vec<pb::PresenceEvent>| pb::PresenceEvent {
        batch: events,
        ..Default::default()
    };
    let other = pb::PresenceEvent {
        ns: "/other".into(),
        ..ev(Kind::MemberJoined, "r", "gw1.o")
    };
    let messages = [
        ev(Kind::UserOnline, "", "gw1.a"),
        batch(vec![
            ev(Kind::MemberJoined, "lobby", "gw1.b"),
            ev(Kind::UserJoined, "lobby", "gw1.b"),
            ev(Kind::MemberLeft, "lobby", "gw1.c"),
        ]),
        batch(vec![
            batch(vec![ev(Kind::UserOnline, "", "gw1.n")]),
            other,
            ev(Kind::UserOffline, "", "gw1.d"),
        ]),
        pb::PresenceEvent::default(),
        ev(Kind::UserLeft, "lobby", "gw1.e"),
    ];
    for m in &messages {
        peer.publish(
            subjects().presence(NS).expect("subject"),
            Bytes::from(m.encode_to_vec()),
        )
        .await
        .expect("published");
    }
    let mut got = Vec::new();
    for _ in 0..6 {
        let e = tokio::time::timeout(WAIT, presence.next())
            .await
            .expect("in time")
            .expect("presence");
        got.push((e.kind, e.room, e.socket_id));
    }
    let room = |r: &str| Some(r.to_owned());
    assert_eq!(
        got,
        [
            (PresenceKind::UserOnline, None, "gw1.a".to_owned()),
            (
                PresenceKind::MemberJoined,
                room("lobby"),
                "gw1.b".to_owned()
            ),
            (PresenceKind::UserJoined, room("lobby"), "gw1.b".to_owned()),
            (PresenceKind::MemberLeft, room("lobby"), "gw1.c".to_owned()),
            (PresenceKind::UserOffline, None, "gw1.d".to_owned()),
            (PresenceKind::UserLeft, room("lobby"), "gw1.e".to_owned()),
        ]
    );
    assert_eq!(presence.skipped(), 3);
}

#[tokio::test]
async fn presence_and_life_events_are_decoded() {
    let server = NatsServer::start();
    let (worker, peer) = pair(&server).await;
    let chat = worker.of(NS);
    let mut presence = chat.presence(None).await.expect("subscribed");
    let mut life = chat.life(Some("g")).await.expect("subscribed");
    worker.ready(WAIT).await.expect("ready");
    let s = subjects();

    let p = pb::PresenceEvent {
        kind: pb::presence_event::Kind::UserLeft as i32,
        ns: NS.into(),
        room: "lobby".into(),
        user: Some("al".into()),
        socket_id: "gw1.x".into(),
        reason: "node_lost".into(),
        batch: Vec::new(),
    };
    let online = pb::PresenceEvent {
        kind: pb::presence_event::Kind::UserOnline as i32,
        room: String::new(),
        reason: String::new(),
        ..p.clone()
    };
    for ev in [&p, &online] {
        peer.publish(
            s.presence(NS).expect("subject"),
            Bytes::from(ev.encode_to_vec()),
        )
        .await
        .expect("published");
    }
    let got = presence.next().await.expect("presence");
    assert_eq!(got.kind, PresenceKind::UserLeft);
    assert_eq!(got.room.as_deref(), Some("lobby"));
    assert_eq!(got.user.as_deref(), Some("al"));
    assert_eq!(
        (got.socket_id.as_str(), got.reason.as_str()),
        ("gw1.x", "node_lost")
    );
    let got = presence.next().await.expect("presence");
    assert_eq!((got.kind, got.room), (PresenceKind::UserOnline, None));

    let socket = pb::SocketInfo {
        id: "gw1.x".into(),
        ns: NS.into(),
        user: Some("al".into()),
        rooms: vec!["gw1.x".into()],
        handshake: Some(pb::Handshake {
            address: "10.0.0.1:5000".into(),
            headers: vec![pb::Header {
                name: "user-agent".into(),
                value: "t".into(),
            }],
            query: "a=1".into(),
            claims_json: r#"{"sub":"al"}"#.into(),
            connected_at_ms: 42,
        }),
        data_json: r#"{"k":1}"#.into(),
        ..Default::default()
    };
    let connect = pb::LifeEvent {
        node: "gw1".into(),
        socket: Some(socket.clone()),
        recovered: true,
        ..Default::default()
    };
    let disconnect = pb::LifeEvent {
        node: "gw1".into(),
        socket: Some(socket),
        reason: "transport close".into(),
        recoverable: true,
        recovered: false,
    };
    peer.publish(
        s.connect(NS).expect("subject"),
        Bytes::from(connect.encode_to_vec()),
    )
    .await
    .expect("published");
    let got = life.next().await.expect("life");
    let LifeEvent::Connect {
        node,
        socket,
        recovered,
    } = got
    else {
        panic!("a connect expected: {got:?}");
    };
    assert_eq!((node.as_str(), recovered), ("gw1", true));
    assert_eq!(socket.id, "gw1.x");
    assert_eq!(socket.data, json!({"k": 1}));
    assert_eq!(socket.claims, json!({"sub": "al"}));
    assert_eq!(
        socket.headers,
        vec![("user-agent".to_owned(), "t".to_owned())]
    );
    assert_eq!(
        (socket.address.as_str(), socket.query.as_str()),
        ("10.0.0.1:5000", "a=1")
    );
    assert_eq!(socket.connected_at_ms, 42);

    peer.publish(
        s.disconnect(NS).expect("subject"),
        Bytes::from(disconnect.encode_to_vec()),
    )
    .await
    .expect("published");
    let got = life.next().await.expect("life");
    assert!(
        matches!(&got, LifeEvent::Disconnect { reason, recoverable: true, .. } if reason == "transport close"),
        "{got:?}"
    );
    assert_eq!(got.socket().user.as_deref(), Some("al"));
}

#[tokio::test]
async fn server_side_emit_goes_round() {
    let server = NatsServer::start();
    let (worker, peer) = pair(&server).await;
    let other = Worker::with_bus(peer.clone(), subjects(), "w2");
    let mut received = other
        .of(NS)
        .server_events(Some("g"))
        .await
        .expect("subscribed");
    let spy = connect(&server.url(), "spy").await;
    let mut all = spy.subscribe("sio.srv.>".to_owned()).await.expect("spy");
    settle(&spy).await;
    other.ready(WAIT).await.expect("ready");

    worker
        .of(NS)
        .server_side_emit("cache:flush", Args::new().arg("users").binary(&b"k"[..]))
        .await
        .expect("published");
    let msg = next(&mut all).await;
    assert_eq!(
        msg.subject,
        subjects().server(NS, "cache:flush").expect("subject")
    );
    let raw = pb::ServerSideEmit::decode(msg.payload).expect("a ServerSideEmit");
    assert_eq!(raw.args_json, r#"["users",{"_placeholder":true,"num":0}]"#);

    let got = tokio::time::timeout(WAIT, received.next())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(
        (got.origin.as_str(), got.ns.as_str(), got.event.as_str()),
        ("w1", NS, "cache:flush")
    );
    assert_eq!(got.args.values[0], json!("users"));
    assert_eq!(got.args.attachments, vec![Bytes::from_static(b"k")]);
}

#[tokio::test]
async fn reservations_ask_the_broker() {
    let server = NatsServer::start();
    let (worker, broker) = pair(&server).await;
    let mut requests = broker
        .subscribe(subjects().reserve())
        .await
        .expect("subscribed");
    settle(&broker).await;
    let answers: Vec<Bytes> = vec![
        Bytes::from(
            pb::ReserveReply {
                outcome: pb::reserve_reply::Outcome::Full as i32,
            }
            .encode_to_vec(),
        ),
        Bytes::from(
            pb::ReserveReply {
                outcome: pb::reserve_reply::Outcome::Joined as i32,
            }
            .encode_to_vec(),
        ),
        Bytes::from_static(b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"),
        Bytes::from(pb::ReserveReply { outcome: 99 }.encode_to_vec()),
    ];
    let responder = tokio::spawn(async move {
        let mut seen = Vec::new();
        for answer in answers {
            let msg = next(&mut requests).await;
            seen.push(pb::ReserveRequest::decode(msg.payload).expect("a ReserveRequest"));
            broker
                .publish(msg.reply.expect("a request"), answer)
                .await
                .expect("answered");
        }
        // The client closes when this task drops it: not before the last answer is out.
        broker.flush().await.expect("flushed");
        seen
    });
    let chat = worker.of(NS);
    let ask = || chat.reserve("room", "gw1.abc", 3, WAIT);
    assert_eq!(ask().await.expect("an answer"), Reservation::Full);
    assert_eq!(ask().await.expect("an answer"), Reservation::Joined);
    let garbage = ask().await.expect_err("garbage is an error");
    assert!(matches!(garbage, WorkerError::Reply(_)), "{garbage:?}");
    let unknown = ask().await.expect_err("an unknown outcome is an error");
    assert!(matches!(unknown, WorkerError::Reply(_)), "{unknown:?}");
    let seen = responder.await.expect("the responder");
    assert_eq!(
        seen[0],
        pb::ReserveRequest {
            ns: NS.into(),
            room: "room".into(),
            socket_id: "gw1.abc".into(),
            max_members: 3,
        }
    );
}

#[tokio::test]
async fn logged_emits_are_stored_with_a_jetstream_ack() {
    let server = NatsServer::start_jetstream();
    let (worker, gateway) = pair(&server).await;
    let s = subjects();
    let chat = worker.of(NS).recovery(true);

    // No stream yet (the gateways make it): an error, not a silent loss.
    assert!(chat.to("lobby").emit("x", json!(1)).await.is_err());

    gateway
        .log_ensure(&LogConfig {
            stream: s.log_stream(),
            subjects: vec![s.all_log()],
            max_age: Duration::from_secs(60),
            max_bytes: 0,
            replicas: 1,
            memory: true,
            duplicate_window: Duration::ZERO,
        })
        .await
        .expect("the log stream");
    let mut spy = gateway
        .subscribe("sio.room.>".to_owned())
        .await
        .expect("spy");
    settle(&gateway).await;

    let first = chat
        .to("lobby")
        .emit("say", json!("a"))
        .await
        .expect("stored");
    let second = chat
        .to_socket("gw1.abc")
        .emit("say", json!("b"))
        .await
        .expect("stored");
    let (Some(a), Some(b)) = (first.log_seq, second.log_seq) else {
        panic!("stream sequences expected: {first:?} {second:?}");
    };
    assert!(b > a);
    // Volatile emits are not logged: the core room subject.
    assert_eq!(
        chat.to("lobby")
            .volatile()
            .emit("v", json!(null))
            .await
            .expect("sent"),
        Sent { log_seq: None }
    );
    assert_eq!(
        next(&mut spy).await.subject,
        s.room(NS, "lobby").expect("subject")
    );

    let mut reader = gateway
        .log_read(&s.log_stream(), s.all_log_in(NS).expect("filter"), 0, b)
        .await
        .expect("a reader");
    let mut entries = Vec::new();
    while let Some(entry) = reader.next().await {
        entries.push(entry.expect("an entry"));
    }
    assert_eq!(
        entries
            .iter()
            .map(|e| (e.seq, e.subject.clone()))
            .collect::<Vec<_>>(),
        vec![
            (a, s.log_room(NS, "lobby").expect("subject")),
            (b, s.log_namespace(NS).expect("subject")),
        ]
    );
    let d = delivery(Message {
        subject: entries[1].subject.clone(),
        reply: None,
        payload: entries[1].payload.clone(),
    });
    assert_eq!(&d.packet[..], br#"42/chat,["say","b"]"#);
    assert_eq!(
        d.target.expect("target").socket_ids,
        vec!["gw1.abc".to_owned()]
    );
}

#[tokio::test]
async fn garbage_on_every_subscribed_subject_is_skipped() {
    let server = NatsServer::start();
    let (worker, peer) = pair(&server).await;
    let chat = worker.of(NS);
    let mut events = chat.events(None).await.expect("subscribed");
    let mut presence = chat.presence(None).await.expect("subscribed");
    let mut life = chat.life(None).await.expect("subscribed");
    let mut server_events = chat.server_events(None).await.expect("subscribed");
    worker.ready(WAIT).await.expect("ready");
    let s = subjects();

    let other_ns = |mut ev: pb::ClientEvent| {
        ev.ns = "/other".into();
        ev
    };
    let garbage: Vec<Bytes> = vec![
        Bytes::new(),
        Bytes::from_static(b"\xff\xfe\xfd garbage"),
        Bytes::from_static(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        Bytes::from(vec![0xff; 4096]),
    ];
    let bad_events: Vec<Bytes> = [
        client_event("e", "not json", vec![]),
        client_event("e", r#"{"an":"object"}"#, vec![]),
        client_event(
            "e",
            r#"[{"_placeholder":true,"num":1}]"#,
            vec![Bytes::new()],
        ),
        pb::ClientEvent {
            claims_json: "{broken".into(),
            ..client_event("e", "[]", vec![])
        },
        other_ns(client_event("e", "[]", vec![])),
    ]
    .iter()
    .map(|e| Bytes::from(e.encode_to_vec()))
    .collect();
    let bad_presence = Bytes::from(
        pb::PresenceEvent {
            kind: 77,
            ns: NS.into(),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let bad_life = Bytes::from(pb::LifeEvent::default().encode_to_vec());
    let bad_server = Bytes::from(
        pb::ServerSideEmit {
            ns: NS.into(),
            event: "e".into(),
            args_json: "[".into(),
            ..Default::default()
        }
        .encode_to_vec(),
    );

    let event_subject = s.event(NS, "e").expect("subject");
    let targets = [
        (event_subject.clone(), bad_events.clone()),
        (s.presence(NS).expect("subject"), vec![bad_presence]),
        (s.connect(NS).expect("subject"), vec![bad_life.clone()]),
        (s.disconnect(NS).expect("subject"), vec![bad_life]),
        (s.server(NS, "e").expect("subject"), vec![bad_server]),
    ];
    for (subject, specific) in &targets {
        for payload in garbage.iter().chain(specific) {
            peer.publish(subject.clone(), payload.clone())
                .await
                .expect("published");
        }
    }
    // A garbage request gets a prompt error rather than a wait for the gateway's timeout.
    let inbox = peer.new_inbox();
    let mut replies = peer.subscribe(inbox.clone()).await.expect("subscribed");
    settle(&peer).await;
    peer.publish_with_reply(event_subject.clone(), inbox, Bytes::from_static(b"\xff"))
        .await
        .expect("published");

    // Then one good message each: it is what the streams yield, after skipping the rest.
    let good_event = client_event("e", r#"["ok"]"#, vec![]);
    peer.publish(event_subject, Bytes::from(good_event.encode_to_vec()))
        .await
        .expect("published");
    let good_presence = pb::PresenceEvent {
        ns: NS.into(),
        room: "r".into(),
        ..Default::default()
    };
    peer.publish(
        s.presence(NS).expect("subject"),
        Bytes::from(good_presence.encode_to_vec()),
    )
    .await
    .expect("published");
    let good_life = pb::LifeEvent {
        socket: Some(pb::SocketInfo {
            id: "gw1.ok".into(),
            ns: NS.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    for subject in [s.connect(NS), s.disconnect(NS)] {
        peer.publish(
            subject.expect("subject"),
            Bytes::from(good_life.encode_to_vec()),
        )
        .await
        .expect("published");
    }
    let good_server = pb::ServerSideEmit {
        ns: NS.into(),
        event: "e".into(),
        ..Default::default()
    };
    peer.publish(
        s.server(NS, "e").expect("subject"),
        Bytes::from(good_server.encode_to_vec()),
    )
    .await
    .expect("published");

    let ev = within(events.next()).await.expect("open");
    assert_eq!(ev.args.values, vec![json!("ok")]);
    let reply = pb::EventReply::decode(next(&mut replies).await.payload).expect("an EventReply");
    assert_eq!(reply.error, "malformed event");
    // Garbage (4) + malformed events (5) + the garbage request (1).
    assert_eq!(events.skipped(), 10);
    let p = within(presence.next()).await.expect("open");
    assert_eq!(p.kind, PresenceKind::MemberJoined);
    assert_eq!(presence.skipped(), 5);
    // One good message on each of its two subjects: once both are read, so is the garbage
    // before them (each subject in order; between the two, no order).
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let l = within(life.next()).await.expect("open");
        assert_eq!(l.socket().id, "gw1.ok");
        assert_eq!(l.socket().data, Value::Null);
        kinds.push(matches!(l, LifeEvent::Connect { .. }));
    }
    kinds.sort_unstable();
    assert_eq!(kinds, vec![false, true]);
    assert_eq!(life.skipped(), 10);
    let e = within(server_events.next()).await.expect("open");
    assert_eq!(e.args, Args::new());
    assert_eq!(server_events.skipped(), 5);
}
