//! The emitters' test vectors (`emitters/vectors.json`): what the Node and Python emitter packages
//! (`emitters/node`, `emitters/python`) must publish, byte for byte, produced here by the Rust code
//! the gateways and brokers run: `switchboard_proto::subject` for subjects, the prost types of
//! `proto/bus.proto` for payloads, and the codec's Socket.IO encoder for packets.
//!
//! The file is checked, not trusted: this test rebuilds it and fails when the checked-in copy
//! differs (a changed escape, field or frame must show up in the packages' tests too). Run it with
//! `UPDATE_VECTORS=1` to rewrite the file, then run the packages' unit tests.
//!
//! Binary arguments are written in the vectors as `{"$bin": "<base64>"}`: the packages turn such a
//! marker into a Buffer / bytes before encoding, and this test into an attachment with its
//! placeholder, in the order socket.io-parser's `deconstructPacket` visits them (arrays in order,
//! objects in key order).
//!
//! The routing of an emit (which subject, core NATS or the recovery log) follows the gateways'
//! `broadcast` (`gateway/src/cluster/mod.rs`): socket ids (`{node}.{16 URL-safe base64}`, the
//! shape every gateway issues) become `Target.socket_ids` and go to their owners' node subjects;
//! one room (exceptions or not) goes to the room's subject; anything else to the namespace's. In a
//! namespace with connection state recovery, a non-volatile emit goes into the log instead
//! (`log.{ns}.r.{room}`, `.s.{socket}`, `.n`), as a JetStream publish.

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Value, json};
use switchboard_codec::engineio::Frame;
use switchboard_codec::socketio;
use switchboard_proto::Message as _;
use switchboard_proto::bus::{self as pb, command, envelope};
use switchboard_proto::subject::{self, Subjects};

/// The origin the emit vectors are published with.
const ORIGIN: &str = "billing";

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// A binary argument as the vectors write it.
fn bin(bytes: &[u8]) -> Value {
    json!({ "$bin": b64(bytes) })
}

/// `value` with every `{"$bin": …}` marker replaced by the placeholder of the attachment it
/// becomes, appended to `out`.
fn deconstruct(value: &Value, out: &mut Vec<Bytes>) -> Value {
    match value {
        Value::Object(map) if map.len() == 1 && map.get("$bin").is_some_and(Value::is_string) => {
            let text = map["$bin"].as_str().expect("checked: a string");
            let bytes = STANDARD.decode(text).expect("the vectors' base64 is valid");
            out.push(Bytes::from(bytes));
            socketio::placeholder(out.len() - 1)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| deconstruct(v, out)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), deconstruct(v, out)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The Engine.IO text frame of the event and its attachments, as a gateway encodes it.
fn frame(ns: &str, event: &str, args: &Value) -> (Bytes, Vec<Bytes>) {
    let mut attachments = Vec::new();
    let data = deconstruct(args, &mut attachments);
    let frames = socketio::encode_event(ns, event, &data, None, &attachments);
    match frames.first() {
        Some(Frame::Text(packet, _)) => (packet.clone(), attachments),
        _ => panic!("encode_event starts with a text frame"),
    }
}

/// Whether a name given to `to()` / `except()` is a socket id: `{node}.{random}` as
/// `gateway/src/id.rs` issues them (node: 1 to 32 of `a-z0-9`; random: 16 URL-safe base64).
fn is_socket_id(name: &str) -> bool {
    let Some((node, random)) = name.split_once('.') else {
        return false;
    };
    (1..=32).contains(&node.len())
        && node
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && random.len() == 16
        && random
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn dedup(names: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if !out.iter().any(|o| o == n) {
            out.push((*n).to_owned());
        }
    }
    out
}

/// The Target of `to(…)` and `except(…)`: socket ids apart from rooms, each name once.
fn target(to: &[&str], except: &[&str]) -> pb::Target {
    let (ids, rooms): (Vec<&str>, Vec<&str>) = to.iter().partition(|n| is_socket_id(n));
    let (except_ids, except_rooms): (Vec<&str>, Vec<&str>) =
        except.iter().partition(|n| is_socket_id(n));
    pb::Target {
        rooms: dedup(&rooms),
        except_rooms: dedup(&except_rooms),
        except_sockets: dedup(&except_ids),
        socket_ids: dedup(&ids),
    }
}

/// Where an emit goes: (subject, into the log, target), as the gateways route their own.
fn route(
    s: &Subjects,
    ns: &str,
    t: &pb::Target,
    volatile: bool,
    recovery: bool,
) -> Vec<(String, bool, pb::Target)> {
    if recovery && !volatile {
        let subject = match (t.rooms.as_slice(), t.socket_ids.as_slice()) {
            ([room], []) => s.log_room(ns, room),
            ([], [id]) => s.log_socket(ns, id),
            _ => s.log_namespace(ns),
        };
        return vec![(subject.expect("bounded names"), true, t.clone())];
    }
    if t.rooms.is_empty() && !t.socket_ids.is_empty() {
        let mut owners: Vec<(&str, Vec<String>)> = Vec::new();
        for id in &t.socket_ids {
            let owner = id.split_once('.').map_or("", |(n, _)| n);
            match owners.iter_mut().find(|(o, _)| *o == owner) {
                Some((_, ids)) => ids.push(id.clone()),
                None => owners.push((owner, vec![id.clone()])),
            }
        }
        return owners
            .into_iter()
            .map(|(owner, ids)| {
                let t = pb::Target {
                    socket_ids: ids,
                    ..t.clone()
                };
                (s.node(owner).expect("bounded node id"), false, t)
            })
            .collect();
    }
    let subject = match t.rooms.as_slice() {
        [room] => s.room(ns, room),
        _ => s.namespace(ns),
    };
    vec![(subject.expect("bounded names"), false, t.clone())]
}

struct Emit<'a> {
    name: &'a str,
    prefix: &'a str,
    ns: &'a str,
    to: &'a [&'a str],
    except: &'a [&'a str],
    volatile: bool,
    /// `compress(false)` was called: the delivery says `uncompressed`.
    compress: bool,
    recovery: bool,
    event: &'a str,
    args: Value,
}

impl Default for Emit<'_> {
    fn default() -> Self {
        Self {
            name: "",
            prefix: "sio",
            ns: "/chat",
            to: &[],
            except: &[],
            volatile: false,
            compress: true,
            recovery: false,
            event: "news",
            args: json!([]),
        }
    }
}

fn emit_vector(e: &Emit<'_>) -> Value {
    let s = Subjects::new(e.prefix).expect("valid prefix");
    let t = target(e.to, e.except);
    let (packet, attachments) = frame(e.ns, e.event, &e.args);
    let publish: Vec<Value> = route(&s, e.ns, &t, e.volatile, e.recovery)
        .into_iter()
        .map(|(subject, log, target)| {
            let env = pb::Envelope {
                body: Some(envelope::Body::Delivery(pb::Delivery {
                    origin: ORIGIN.to_owned(),
                    ns: e.ns.to_owned(),
                    target: Some(target),
                    packet: packet.clone(),
                    attachments: attachments.clone(),
                    volatile: e.volatile,
                    ack: None,
                    uncompressed: !e.compress,
                })),
            };
            json!({ "subject": subject, "jetstream": log, "payload": b64(&env.encode_to_vec()) })
        })
        .collect();
    json!({
        "name": e.name,
        "prefix": e.prefix,
        "origin": ORIGIN,
        "ns": e.ns,
        "to": e.to,
        "except": e.except,
        "volatile": e.volatile,
        "compress": e.compress,
        "recovery": e.recovery,
        "event": e.event,
        "args": e.args,
        "packet": String::from_utf8(packet.to_vec()).expect("frames are UTF-8"),
        "attachments": attachments.iter().map(|a| b64(a)).collect::<Vec<_>>(),
        "publish": publish,
    })
}

fn emits() -> Vec<Value> {
    let cases = [
        Emit {
            name: "one room",
            to: &["lobby"],
            args: json!([1, "two", { "three": [3] }]),
            ..Emit::default()
        },
        Emit {
            name: "one room with an exception",
            to: &["lobby"],
            except: &["muted"],
            ..Emit::default()
        },
        Emit {
            name: "several rooms, each once",
            to: &["a", "b", "a"],
            ..Emit::default()
        },
        Emit {
            name: "the whole namespace, binary",
            args: json!([bin(b"\x00\x01\xff"), { "nested": [bin(b""), { "deep": bin(b"xyz") }] }, "end"]),
            ..Emit::default()
        },
        Emit {
            name: "the main namespace",
            ns: "/",
            to: &["room.with.dots"],
            args: json!(["é 日本 😀", null, true, -1, 1.5, 9_007_199_254_740_991_u64]),
            ..Emit::default()
        },
        Emit {
            name: "one socket id",
            to: &["gw1.AAAAAAAAAAAAAAAA"],
            args: json!(["hi"]),
            ..Emit::default()
        },
        Emit {
            name: "socket ids of two nodes",
            to: &[
                "gw2.abcdefghijklmn-_",
                "gw1.0123456789ABCDEF",
                "gw2.ZZZZZZZZZZZZZZZZ",
            ],
            except: &["banned"],
            ..Emit::default()
        },
        Emit {
            name: "a socket id and a room",
            to: &["gw1.AAAAAAAAAAAAAAAA", "lobby"],
            except: &["gw1.BBBBBBBBBBBBBBBB"],
            ..Emit::default()
        },
        Emit {
            name: "names shaped almost like socket ids are rooms",
            to: &["gw1.short", "GW1.AAAAAAAAAAAAAAAA", "a.b.cccccccccccccc"],
            ..Emit::default()
        },
        Emit {
            name: "volatile",
            to: &["lobby"],
            volatile: true,
            ..Emit::default()
        },
        Emit {
            name: "compress(false)",
            to: &["lobby"],
            compress: false,
            args: json!([bin(b"raw"), "x".repeat(40)]),
            ..Emit::default()
        },
        Emit {
            name: "recovery: compress(false) is logged, uncompressed",
            to: &["gw1.AAAAAAAAAAAAAAAA", "lobby"],
            recovery: true,
            volatile: false,
            compress: false,
            ..Emit::default()
        },
        Emit {
            name: "recovery: one room into the log",
            to: &["lobby"],
            recovery: true,
            args: json!([{ "text": "kept" }]),
            ..Emit::default()
        },
        Emit {
            name: "recovery: one socket into the log",
            to: &["gw1.AAAAAAAAAAAAAAAA"],
            recovery: true,
            ..Emit::default()
        },
        Emit {
            name: "recovery: the namespace into the log",
            recovery: true,
            args: json!([bin(b"log")]),
            ..Emit::default()
        },
        Emit {
            name: "recovery: a volatile emit is not logged",
            to: &["lobby"],
            recovery: true,
            volatile: true,
            ..Emit::default()
        },
        Emit {
            name: "another prefix and escaped names",
            prefix: "app.v1",
            ns: "/a.b",
            to: &["x_y*>"],
            event: "ev.1",
            ..Emit::default()
        },
        Emit {
            name: "strings JSON escapes",
            event: "q\"uote",
            args: json!(["line\nbreak\ttab\\ \u{1} \u{7f} \u{2028} </script>"]),
            ..Emit::default()
        },
    ];
    cases.iter().map(emit_vector).collect()
}

fn commands() -> Vec<Value> {
    let s = Subjects::default();
    let cases: [(&str, &[&str], &[&str], command::Action); 5] = [
        (
            "join a room, selected by room",
            &["lobby"],
            &[],
            command::Action::Join(pb::RoomList {
                rooms: vec!["vip".into()],
            }),
        ),
        (
            "leave rooms, the whole namespace but a room",
            &[],
            &["staff"],
            command::Action::Leave(pb::RoomList {
                rooms: vec!["a".into(), "b".into()],
            }),
        ),
        (
            "disconnect a socket",
            &["gw1.AAAAAAAAAAAAAAAA"],
            &[],
            command::Action::Disconnect(pb::Kick::default()),
        ),
        (
            "disconnect and close",
            &["lobby", "gw2.AAAAAAAAAAAAAAAA"],
            &[],
            command::Action::Disconnect(pb::Kick {
                close_connection: true,
                reason: String::new(),
            }),
        ),
        (
            "join, the whole namespace",
            &[],
            &[],
            command::Action::Join(pb::RoomList {
                rooms: vec!["all.of.them".into()],
            }),
        ),
    ];
    cases
        .into_iter()
        .map(|(name, to, except, action)| {
            let ns = "/chat";
            let t = target(to, except);
            let action_json = match &action {
                command::Action::Join(l) => json!({ "join": l.rooms }),
                command::Action::Leave(l) => json!({ "leave": l.rooms }),
                command::Action::Disconnect(k) => json!({ "disconnect": k.close_connection }),
                _ => unreachable!("the emitters send join, leave and disconnect only"),
            };
            let env = pb::Envelope {
                body: Some(envelope::Body::Command(pb::Command {
                    origin: ORIGIN.to_owned(),
                    ns: ns.to_owned(),
                    target: Some(t),
                    action: Some(action),
                })),
            };
            json!({
                "name": name,
                "prefix": s.prefix(),
                "origin": ORIGIN,
                "ns": ns,
                "to": to,
                "except": except,
                "action": action_json,
                "subject": s.command_namespace(ns).expect("bounded"),
                "payload": b64(&env.encode_to_vec()),
            })
        })
        .collect()
}

fn server_side() -> Vec<Value> {
    let s = Subjects::default();
    let cases = [
        ("/chat", "cache.flush", json!([])),
        ("/", "ping", json!([1, { "a": "b" }])),
        (
            "/chat",
            "upload",
            json!(["f", bin(b"\x01\x02"), [bin(b"\x03")]]),
        ),
    ];
    cases
        .into_iter()
        .map(|(ns, event, args)| {
            let mut attachments = Vec::new();
            let data = deconstruct(&args, &mut attachments);
            let msg = pb::ServerSideEmit {
                origin: ORIGIN.to_owned(),
                ns: ns.to_owned(),
                event: event.to_owned(),
                args_json: socketio::json_text(&data),
                attachments: attachments.clone(),
            };
            json!({
                "prefix": s.prefix(),
                "origin": ORIGIN,
                "ns": ns,
                "event": event,
                "args": args,
                "subject": s.server(ns, event).expect("bounded"),
                "payload": b64(&msg.encode_to_vec()),
            })
        })
        .collect()
}

fn escapes() -> Vec<Value> {
    let names = [
        "", "a", "Az-09", ".", "a.b", "_", "a_b", "*", ">", "a b", "\t", "/", "/chat", "é", "日本",
        "😀", "_2E", "-",
    ];
    names
        .iter()
        .map(|n| json!({ "name": n, "token": subject::escape(n) }))
        .collect()
}

fn subjects() -> Vec<Value> {
    let long_ok = "x".repeat(subject::MAX_NAME_BYTES);
    let long_ascii = "x".repeat(subject::MAX_NAME_BYTES + 1);
    // 129 two-byte characters: 258 bytes, though only 129 characters.
    let long_utf8 = "é".repeat(129);
    let mut out = Vec::new();
    for prefix in ["sio", "app.v1"] {
        let s = Subjects::new(prefix).expect("valid prefix");
        let cases: Vec<(&str, Vec<&str>, Result<String, subject::SubjectError>)> = vec![
            ("room", vec!["/chat", "a.b"], s.room("/chat", "a.b")),
            ("room", vec!["/", ""], s.room("/", "")),
            ("namespace", vec!["/chat"], s.namespace("/chat")),
            ("node", vec!["gw1"], s.node("gw1")),
            (
                "command_namespace",
                vec!["/chat"],
                s.command_namespace("/chat"),
            ),
            ("server", vec!["/chat", "ev.*>"], s.server("/chat", "ev.*>")),
            ("log_room", vec!["/chat", "r"], s.log_room("/chat", "r")),
            ("log_namespace", vec!["/chat"], s.log_namespace("/chat")),
            (
                "log_socket",
                vec!["/chat", "gw1.AAAAAAAAAAAAAAAA"],
                s.log_socket("/chat", "gw1.AAAAAAAAAAAAAAAA"),
            ),
            ("room", vec!["/chat", &long_ok], s.room("/chat", &long_ok)),
            (
                "room",
                vec!["/chat", &long_ascii],
                s.room("/chat", &long_ascii),
            ),
            ("namespace", vec![&long_utf8], s.namespace(&long_utf8)),
            (
                "server",
                vec!["/chat", &long_utf8],
                s.server("/chat", &long_utf8),
            ),
        ];
        for (kind, names, result) in cases {
            let mut v = json!({ "prefix": prefix, "kind": kind, "names": names });
            match result {
                Ok(subject) => v["subject"] = json!(subject),
                Err(subject::SubjectError::NameTooLong(n)) => v["too_long"] = json!(n),
                Err(e) => panic!("unexpected error {e}"),
            }
            out.push(v);
        }
        out.push(json!({ "prefix": prefix, "kind": "log_stream", "names": [], "subject": s.log_stream() }));
    }
    out
}

fn vectors() -> Value {
    json!({
        "about": "Generated by tests/tests/emitter_vectors.rs (UPDATE_VECTORS=1 cargo test -p switchboard-tests --test emitter_vectors): what the emitter packages must publish, byte for byte. Binary arguments are {\"$bin\": base64}. Payloads are base64 protobuf (proto/proto/bus.proto).",
        "max_name_bytes": subject::MAX_NAME_BYTES,
        "reserved_events": switchboard_proto::RESERVED_EVENTS,
        "escapes": escapes(),
        "subjects": subjects(),
        "emits": emits(),
        "commands": commands(),
        "server_side_emits": server_side(),
    })
}

#[test]
fn the_checked_in_vectors_are_what_the_rust_code_produces() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../emitters/vectors.json");
    let mut want = serde_json::to_string_pretty(&vectors()).expect("serializable");
    want.push('\n');
    if std::env::var_os("UPDATE_VECTORS").is_some() {
        std::fs::write(&path, &want).expect("write emitters/vectors.json");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "emitters/vectors.json differs from what the Rust code produces: run \
         `UPDATE_VECTORS=1 cargo test -p switchboard-tests --test emitter_vectors`, then the \
         emitter packages' tests (emitters/node, emitters/python)"
    );
}

#[test]
fn socket_ids_are_told_from_rooms_by_their_shape() {
    assert!(is_socket_id("gw1.AAAAAAAAAAAAAAAA"));
    assert!(is_socket_id("a.-_-_-_-_-_-_-_-_"));
    assert!(!is_socket_id("gw1.AAAAAAAAAAAAAAA"));
    assert!(!is_socket_id("GW1.AAAAAAAAAAAAAAAA"));
    assert!(!is_socket_id(".AAAAAAAAAAAAAAAA"));
    assert!(!is_socket_id("lobby"));
    assert!(!is_socket_id(&format!(
        "{}.AAAAAAAAAAAAAAAA",
        "a".repeat(33)
    )));
}
