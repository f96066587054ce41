//! Conversions between the bus envelopes (`switchboard_proto::bus`) and the directory's types.
//!
//! It owns the mapping only: no I/O, no state. Wire defaults are normalised here so the
//! directory never sees them: an empty `data_json` is `null`, empty `claims_json` is `{}`, a
//! missing handshake or presence message is the empty one. Which changes become presence events
//! (the socket's flags decide) is decided here too, so the broker and its tests agree.

use std::collections::{BTreeSet, HashMap};

use switchboard_proto::bus;

use crate::snapshot;
use crate::state::{
    Change, Handshake, MAX_WINDOW, MemberEvent, PID_HASH_BYTES, PresenceFlags, Recovery,
    SocketRecord,
};

/// The longest `data_json` a `DataChange` may carry (bytes).
pub const MAX_DATA_JSON_BYTES: usize = 1 << 20;

/// The directory's recovery settings of a wire `Recovery`; `None` (no recovery) unless the hash
/// is a SHA-256 and the window is 1 ms ..= [`MAX_WINDOW`].
pub fn recovery(wire: Option<bus::Recovery>) -> Option<Recovery> {
    let wire = wire?;
    let window = std::time::Duration::from_millis(wire.window_ms);
    (wire.pid_hash.len() == PID_HASH_BYTES && !window.is_zero() && window <= MAX_WINDOW).then_some(
        Recovery {
            pid_hash: wire.pid_hash.to_vec(),
            window,
        },
    )
}

/// The wire form of recovery settings.
pub fn recovery_info(recovery: &Recovery) -> bus::Recovery {
    bus::Recovery {
        pid_hash: recovery.pid_hash.clone().into(),
        window_ms: u64::try_from(recovery.window.as_millis()).unwrap_or(u64::MAX),
    }
}

/// A snapshot part of gateway `node`, sent at (`epoch`, `seq`), as the assembler takes it.
pub fn snapshot_part(node: &str, epoch: u64, seq: u64, part: bus::SnapshotPart) -> snapshot::Part {
    snapshot::Part {
        epoch,
        seq,
        request_id: part.request_id,
        part: part.part,
        last: part.last,
        sockets: part
            .sockets
            .into_iter()
            .map(|s| socket_record(node, s))
            .collect(),
    }
}

/// A socket of gateway `node`, as the directory records it.
pub fn socket_record(node: &str, info: bus::SocketInfo) -> SocketRecord {
    let bus::SocketInfo {
        id,
        ns,
        user,
        rooms,
        handshake,
        data_json,
        presence,
        recovery: wire_recovery,
        recovered: _,
    } = info;
    let handshake = handshake.unwrap_or_default();
    let presence = presence.unwrap_or_default();
    SocketRecord {
        id,
        ns,
        node: node.to_owned(),
        user,
        rooms: rooms.into_iter().collect::<BTreeSet<_>>(),
        handshake: Handshake {
            address: handshake.address,
            headers: handshake
                .headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
            query: handshake.query,
            claims_json: or(handshake.claims_json, "{}"),
            connected_at_ms: handshake.connected_at_ms,
        },
        data_json: or(data_json, "null"),
        presence: PresenceFlags {
            rooms: presence.rooms,
            users: presence.users,
        },
        recovery: recovery(wire_recovery),
    }
}

/// A directory socket as a bus `SocketInfo` (rooms in order).
pub fn socket_info(rec: &SocketRecord) -> bus::SocketInfo {
    bus::SocketInfo {
        id: rec.id.clone(),
        ns: rec.ns.clone(),
        user: rec.user.clone(),
        rooms: rec.rooms.iter().cloned().collect(),
        handshake: Some(bus::Handshake {
            address: rec.handshake.address.clone(),
            headers: rec
                .handshake
                .headers
                .iter()
                .map(|(name, value)| bus::Header {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            query: rec.handshake.query.clone(),
            claims_json: rec.handshake.claims_json.clone(),
            connected_at_ms: rec.handshake.connected_at_ms,
        }),
        data_json: rec.data_json.clone(),
        presence: Some(bus::PresenceFlags {
            rooms: rec.presence.rooms,
            users: rec.presence.users,
        }),
        recovery: rec.recovery.as_ref().map(recovery_info),
        recovered: false,
    }
}

/// The directory event of a member message body, for the bodies that are events (not snapshot
/// parts or departures). A `DataChange` whose `data_json` is over [`MAX_DATA_JSON_BYTES`] or not
/// JSON is `None` too (malformed).
pub fn member_event(node: &str, body: bus::member_message::Body) -> Option<MemberEvent> {
    use bus::member_message::Body;
    match body {
        Body::Connect(info) => Some(MemberEvent::Connect(socket_record(node, info))),
        Body::Disconnect(d) => Some(MemberEvent::Disconnect {
            id: d.id,
            reason: d.reason,
            recoverable: d.recoverable,
        }),
        Body::Data(d) => {
            let data_json = or(d.data_json, "null");
            (data_json.len() <= MAX_DATA_JSON_BYTES
                && serde_json::from_str::<serde_json::Value>(&data_json).is_ok())
            .then_some(MemberEvent::Data {
                id: d.id,
                data_json,
            })
        }
        Body::Join(r) => Some(MemberEvent::Join {
            id: r.id,
            room: r.room,
        }),
        Body::Leave(r) => Some(MemberEvent::Leave {
            id: r.id,
            room: r.room,
        }),
        Body::Snapshot(_) | Body::Leaving(_) | Body::Batch(_) => None,
    }
}

/// Why a membership batch is refused as a whole (none of it is applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The batch holds no message.
    #[error("an empty batch")]
    Empty,
    /// An entry is itself a batch.
    #[error("a batch inside a batch")]
    Nested,
    /// An entry names another node than the batch.
    #[error("an entry of another node")]
    Node,
    /// An entry carries another epoch than the batch.
    #[error("an entry of another epoch")]
    Epoch,
}

/// The entries of a membership batch that came in a message naming `node` at `epoch` (the
/// outer message's own fields), in order, once every one is an entry the node could have
/// published alone: not a batch, with the same `node` and `epoch` as the outer message. One
/// entry that is not refuses the whole batch, so a broken publisher's batch changes nothing.
pub fn member_batch(
    node: &str,
    epoch: u64,
    batch: bus::MemberBatch,
) -> Result<Vec<bus::MemberMessage>, BatchError> {
    if batch.messages.is_empty() {
        return Err(BatchError::Empty);
    }
    for entry in &batch.messages {
        if matches!(entry.body, Some(bus::member_message::Body::Batch(_))) {
            return Err(BatchError::Nested);
        }
        if entry.node != node {
            return Err(BatchError::Node);
        }
        if entry.epoch != epoch {
            return Err(BatchError::Epoch);
        }
    }
    Ok(batch.messages)
}

/// The presence event announcing `change`, if the socket's flags ask for it.
pub fn presence_event(change: &Change) -> Option<bus::PresenceEvent> {
    use bus::presence_event::Kind;
    let flags = change.flags();
    let event = |kind: Kind, ns: &str, room: &str, user: Option<&str>, socket: &str, reason| {
        bus::PresenceEvent {
            kind: kind as i32,
            ns: ns.to_owned(),
            room: room.to_owned(),
            user: user.map(str::to_owned),
            socket_id: socket.to_owned(),
            reason,
            batch: Vec::new(),
        }
    };
    let leave = |reason: &crate::state::Reason| reason.as_str().to_owned();
    match change {
        Change::RoomMemberJoined {
            ns,
            room,
            socket,
            user,
            ..
        } if flags.rooms => Some(event(
            Kind::MemberJoined,
            ns,
            room,
            user.as_deref(),
            socket,
            String::new(),
        )),
        Change::RoomMemberLeft {
            ns,
            room,
            socket,
            user,
            reason,
            ..
        } if flags.rooms => Some(event(
            Kind::MemberLeft,
            ns,
            room,
            user.as_deref(),
            socket,
            leave(reason),
        )),
        Change::RoomUserJoined {
            ns,
            room,
            user,
            socket,
            ..
        } if flags.rooms => Some(event(
            Kind::UserJoined,
            ns,
            room,
            Some(user),
            socket,
            String::new(),
        )),
        Change::RoomUserLeft {
            ns,
            room,
            user,
            socket,
            reason,
            ..
        } if flags.rooms => Some(event(
            Kind::UserLeft,
            ns,
            room,
            Some(user),
            socket,
            leave(reason),
        )),
        Change::UserOnline {
            ns, user, socket, ..
        } if flags.users => Some(event(
            Kind::UserOnline,
            ns,
            "",
            Some(user),
            socket,
            String::new(),
        )),
        Change::UserOffline {
            ns,
            user,
            socket,
            reason,
            ..
        } if flags.users => Some(event(
            Kind::UserOffline,
            ns,
            "",
            Some(user),
            socket,
            leave(reason),
        )),
        _ => None,
    }
}

/// The presence messages announcing `changes`, per namespace, with the namespace: the
/// namespaces in the order of their first announcement, and within each its announcements in
/// the order of `changes`, as few messages as fit in `max_payload` bytes each (`batches` on), or
/// one message per announcement (`batches` off: what readers older than batches understand).
/// What `switchboard_proto::presence::encode` writes.
pub fn presence_messages(
    changes: &[Change],
    max_payload: usize,
    batches: bool,
) -> Vec<(String, switchboard_proto::presence::Encoded)> {
    let mut by_ns: Vec<(String, Vec<bus::PresenceEvent>)> = Vec::new();
    // Namespace → its place in `by_ns`: a purge may touch many (dynamic) namespaces.
    let mut index: HashMap<String, usize> = HashMap::new();
    for event in changes.iter().filter_map(presence_event) {
        let at = match index.get(&event.ns) {
            Some(&at) => at,
            None => {
                index.insert(event.ns.clone(), by_ns.len());
                by_ns.push((event.ns.clone(), Vec::new()));
                by_ns.len() - 1
            }
        };
        by_ns[at].1.push(event);
    }
    by_ns
        .into_iter()
        .flat_map(|(ns, events)| {
            switchboard_proto::presence::encode(&events, max_payload, batches)
                .into_iter()
                .map(move |m| (ns.clone(), m))
        })
        .collect()
}

fn or(value: String, default: &str) -> String {
    if value.is_empty() {
        default.to_owned()
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Reason;
    use bus::presence_event::Kind;

    fn full_info() -> bus::SocketInfo {
        bus::SocketInfo {
            id: "n1.abc".into(),
            ns: "/chat".into(),
            user: Some("alice".into()),
            rooms: vec!["b".into(), "a".into(), "b".into()],
            handshake: Some(bus::Handshake {
                address: "10.0.0.1:5000".into(),
                headers: vec![bus::Header {
                    name: "user-agent".into(),
                    value: "test".into(),
                }],
                query: "EIO=4&transport=websocket".into(),
                claims_json: r#"{"sub":"alice"}"#.into(),
                connected_at_ms: 1_700_000_000_000,
            }),
            data_json: r#"{"x":1}"#.into(),
            recovery: Some(bus::Recovery {
                pid_hash: vec![7; 32].into(),
                window_ms: 120_000,
            }),
            recovered: false,
            presence: Some(bus::PresenceFlags {
                rooms: true,
                users: false,
            }),
        }
    }

    /// A batch is taken whole or not at all: every entry of the batch's node and epoch, none
    /// a batch itself.
    #[test]
    fn a_batch_is_refused_whole_for_one_bad_entry() {
        use bus::member_message::Body;
        let entry = |node: &str, epoch, body| bus::MemberMessage {
            node: node.into(),
            epoch,
            seq: 1,
            body: Some(body),
        };
        let join = || {
            Body::Join(bus::RoomChange {
                id: "n1.a".into(),
                room: "r".into(),
            })
        };
        let nested = || Body::Batch(bus::MemberBatch::default());
        let cases: Vec<(Vec<bus::MemberMessage>, Result<usize, BatchError>)> = vec![
            (vec![entry("n1", 7, join()), entry("n1", 7, join())], Ok(2)),
            (vec![entry("n1", 7, join())], Ok(1)),
            (Vec::new(), Err(BatchError::Empty)),
            (
                vec![entry("n1", 7, join()), entry("n1", 7, nested())],
                Err(BatchError::Nested),
            ),
            (
                vec![entry("n1", 7, join()), entry("n2", 7, join())],
                Err(BatchError::Node),
            ),
            (vec![entry("", 7, join())], Err(BatchError::Node)),
            (
                vec![entry("n1", 7, join()), entry("n1", 8, join())],
                Err(BatchError::Epoch),
            ),
        ];
        for (messages, expected) in cases {
            let got = member_batch("n1", 7, bus::MemberBatch { messages }).map(|m| m.len());
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn socket_info_round_trips_through_the_record() {
        let rec = socket_record("n1", full_info());
        assert_eq!(rec.node, "n1");
        assert_eq!(rec.user.as_deref(), Some("alice"));
        assert_eq!(
            rec.rooms.iter().map(String::as_str).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(
            rec.handshake.headers,
            [("user-agent".to_owned(), "test".to_owned())]
        );
        assert_eq!(rec.handshake.claims_json, r#"{"sub":"alice"}"#);
        assert_eq!(rec.data_json, r#"{"x":1}"#);
        assert_eq!(
            rec.presence,
            PresenceFlags {
                rooms: true,
                users: false
            }
        );
        let back = socket_info(&rec);
        let mut expected = full_info();
        expected.rooms = vec!["a".into(), "b".into()];
        assert_eq!(back, expected);
        assert_eq!(socket_record("n1", back), rec);
    }

    #[test]
    fn recovery_settings_are_validated() {
        let wire = |len: usize, window_ms: u64| {
            Some(bus::Recovery {
                pid_hash: vec![1; len].into(),
                window_ms,
            })
        };
        assert!(recovery(wire(32, 1)).is_some());
        assert!(recovery(wire(32, 86_400_000)).is_some());
        assert_eq!(recovery(None), None);
        assert_eq!(recovery(wire(31, 1000)), None);
        assert_eq!(recovery(wire(0, 1000)), None);
        assert_eq!(recovery(wire(32, 0)), None);
        assert_eq!(recovery(wire(32, 86_400_001)), None);
        assert_eq!(recovery(wire(32, u64::MAX)), None);
    }

    #[test]
    fn wire_defaults_are_normalised() {
        let rec = socket_record(
            "n2",
            bus::SocketInfo {
                id: "n2.x".into(),
                ns: "/".into(),
                ..Default::default()
            },
        );
        assert_eq!(rec.user, None);
        assert!(rec.rooms.is_empty());
        assert_eq!(rec.handshake.claims_json, "{}");
        assert_eq!(rec.data_json, "null");
        assert_eq!(rec.presence, PresenceFlags::default());
    }

    #[test]
    fn member_bodies_map_to_events() {
        use bus::member_message::Body;
        let cases = [
            (
                Body::Disconnect(bus::Disconnect {
                    id: "n.a".into(),
                    reason: "transport close".into(),
                    recoverable: false,
                }),
                Some(MemberEvent::Disconnect {
                    id: "n.a".into(),
                    reason: "transport close".into(),
                    recoverable: false,
                }),
            ),
            (
                Body::Disconnect(bus::Disconnect {
                    id: "n.a".into(),
                    reason: "ping timeout".into(),
                    recoverable: true,
                }),
                Some(MemberEvent::Disconnect {
                    id: "n.a".into(),
                    reason: "ping timeout".into(),
                    recoverable: true,
                }),
            ),
            (
                Body::Data(bus::DataChange {
                    id: "n.a".into(),
                    data_json: r#"{"n":2}"#.into(),
                }),
                Some(MemberEvent::Data {
                    id: "n.a".into(),
                    data_json: r#"{"n":2}"#.into(),
                }),
            ),
            (
                Body::Data(bus::DataChange {
                    id: "n.a".into(),
                    data_json: String::new(),
                }),
                Some(MemberEvent::Data {
                    id: "n.a".into(),
                    data_json: "null".into(),
                }),
            ),
            (
                Body::Data(bus::DataChange {
                    id: "n.a".into(),
                    data_json: "{not json".into(),
                }),
                None,
            ),
            (
                Body::Data(bus::DataChange {
                    id: "n.a".into(),
                    data_json: format!("\"{}\"", "x".repeat(MAX_DATA_JSON_BYTES)),
                }),
                None,
            ),
            (
                Body::Join(bus::RoomChange {
                    id: "n.a".into(),
                    room: "r".into(),
                }),
                Some(MemberEvent::Join {
                    id: "n.a".into(),
                    room: "r".into(),
                }),
            ),
            (
                Body::Leave(bus::RoomChange {
                    id: "n.a".into(),
                    room: "r".into(),
                }),
                Some(MemberEvent::Leave {
                    id: "n.a".into(),
                    room: "r".into(),
                }),
            ),
            (Body::Leaving(bus::NodeLeaving {}), None),
            (Body::Snapshot(bus::SnapshotPart::default()), None),
        ];
        for (body, expected) in cases {
            assert_eq!(member_event("n", body), expected);
        }
        let connect = member_event("n1", Body::Connect(full_info()));
        assert_eq!(
            connect,
            Some(MemberEvent::Connect(socket_record("n1", full_info())))
        );
    }

    #[test]
    fn presence_follows_the_flags() {
        const ROOMS: PresenceFlags = PresenceFlags {
            rooms: true,
            users: false,
        };
        const USERS: PresenceFlags = PresenceFlags {
            rooms: false,
            users: true,
        };
        let s = |v: &str| v.to_owned();
        let member_joined = |flags| Change::RoomMemberJoined {
            ns: s("/c"),
            room: s("r"),
            socket: s("n.1"),
            user: None,
            flags,
        };
        let member_left = |flags| Change::RoomMemberLeft {
            ns: s("/c"),
            room: s("r"),
            socket: s("n.1"),
            user: Some(s("u")),
            reason: Reason::Leave,
            flags,
        };
        let user_joined = |flags| Change::RoomUserJoined {
            ns: s("/c"),
            room: s("r"),
            user: s("u"),
            socket: s("n.1"),
            flags,
        };
        let user_left = |flags| Change::RoomUserLeft {
            ns: s("/c"),
            room: s("r"),
            user: s("u"),
            socket: s("n.1"),
            reason: Reason::Disconnect(s("ping timeout")),
            flags,
        };
        let online = |flags| Change::UserOnline {
            ns: s("/c"),
            user: s("u"),
            socket: s("n.1"),
            flags,
        };
        let offline = |flags| Change::UserOffline {
            ns: s("/c"),
            user: s("u"),
            socket: s("n.1"),
            reason: Reason::NodeLost,
            flags,
        };
        /// The expected event's (kind, room, user, reason), or none.
        type Expected = Option<(Kind, &'static str, Option<&'static str>, &'static str)>;
        let cases: Vec<(Change, Expected)> = vec![
            (
                member_joined(ROOMS),
                Some((Kind::MemberJoined, "r", None, "")),
            ),
            (member_joined(USERS), None),
            (
                member_left(ROOMS),
                Some((Kind::MemberLeft, "r", Some("u"), "leave")),
            ),
            (member_left(USERS), None),
            (
                user_joined(ROOMS),
                Some((Kind::UserJoined, "r", Some("u"), "")),
            ),
            (user_joined(USERS), None),
            (
                user_left(ROOMS),
                Some((Kind::UserLeft, "r", Some("u"), "ping timeout")),
            ),
            (user_left(USERS), None),
            (online(USERS), Some((Kind::UserOnline, "", Some("u"), ""))),
            (online(ROOMS), None),
            (
                offline(USERS),
                Some((Kind::UserOffline, "", Some("u"), "node_lost")),
            ),
            (offline(ROOMS), None),
            (online(PresenceFlags::default()), None),
        ];
        for (change, expected) in cases {
            let got = presence_event(&change).map(|e| {
                assert_eq!(e.ns, "/c");
                assert_eq!(e.socket_id, "n.1");
                (e.kind(), e.room, e.user, e.reason)
            });
            let expected = expected.map(|(kind, room, user, reason)| {
                (
                    kind,
                    room.to_owned(),
                    user.map(str::to_owned),
                    reason.to_owned(),
                )
            });
            assert_eq!(got, expected, "{change:?}");
        }
    }
}
