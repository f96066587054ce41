//! The broker's directory (`broker/src/state.rs`) driven by bus messages, as the broker's NATS
//! loop applies them (`broker/src/service.rs`: member messages, snapshot parts through the
//! assembler, heartbeats, reservations, lease expiry, and connection state recovery: recoverable
//! disconnects, data changes, recovered connects, claims, takeovers, session expiry, admin ends
//! of kept sessions).
//!
//! Messages are built from a few node, socket, namespace and room names so that they meet, then
//! go through protobuf encode → decode (which must give them back unchanged); some are arbitrary
//! bytes instead. Some come in membership batches written as a gateway's publisher writes them
//! (`switchboard_proto::batch`, around encoded messages: the batch must decode to exactly those
//! entries), mostly valid, sometimes with an entry of another node or epoch, a nested batch or
//! garbage; a batch is taken whole (`convert::member_batch`) exactly when it is valid, and then
//! each entry goes the way a lone message goes. After every operation the directory's invariants hold
//! (`Directory::check_invariants`), every change converts to its presence event, the presence
//! messages the leader would publish for the changes (`convert::presence_messages`, batches on
//! and off, under a bus payload bound the input picks) fit that bound unless one announcement
//! alone does not, and read back by the readers' rule (`switchboard_proto::presence`) give every
//! namespace's announcements in order, and:
//! - a FetchSockets page encoded from the views (`broker/src/page.rs`) is byte for byte what
//!   prost encodes for the same sockets' summaries;
//! - a reservation that joins leaves the room within its capacity, one refused as full found
//!   the room at it, and a socket only joins rooms of its own namespace;
//! - a node that leaves with its current epoch holds no sockets afterwards;
//! - no change announces the departure of a socket that is kept afterwards (deferred presence),
//!   and the admin views (matching, count) never show a kept session;
//! - a granted claim leaves the session claimed by the claimant, with the claimed pid; a
//!   takeover names a socket connected on another node; a settled takeover is granted to its
//!   claimant or answered unknown;
//! - after a sessions sweep no unclaimed session is past its window and no claim past its lease.
#![no_main]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use switchboard_broker::convert;
use switchboard_broker::snapshot::{Assembler, Outcome};
use switchboard_broker::state::{
    Change, Claim, Directory, Reason, ReserveError, Reserved, Selector, SocketState,
};
use switchboard_proto::Message;
use switchboard_proto::presence;
use switchboard_proto::bus::{self as pb, member_message::Body};

const LEASE: Duration = Duration::from_secs(6);
const NODES: &[&str] = &["a", "b", "c"];
const SOCKETS: &[&str] = &["a.1", "a.2", "b.1", "b.2", "c.1", "x"];
const NAMESPACES: &[&str] = &["/", "/chat"];
const ROOMS: &[&str] = &["r1", "r2", "r3", ""];
const USERS: &[&str] = &["u1", "u2"];
const TAKEOVER: Duration = Duration::from_secs(2);

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    // Small bounds cut presence batches often; the NATS default rarely.
    let max_payload = u.choose(&[1, 60, 200, 1 << 20]).copied().unwrap_or(1 << 20);
    let mut world = World {
        dir: Directory::new(LEASE),
        parts: Assembler::new(),
        now: Instant::now(),
        max_payload,
    };
    while !u.is_empty() {
        if world.step(&mut u).is_err() {
            break;
        }
        world.dir.check_invariants();
        world.views();
    }
});

struct World {
    dir: Directory,
    parts: Assembler,
    now: Instant,
    /// The bus's `max_payload` presence messages are written for.
    max_payload: usize,
}

impl World {
    fn step(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        let node = node(u)?;
        match u.int_in_range(0..=23u8)? {
            0..=8 => {
                let message = member_message(u, &node)?;
                let again = roundtrip(&message);
                self.member(&node, again);
            }
            9 => {
                let len = u.int_in_range(0..=64usize)?;
                if let Ok(message) = pb::MemberMessage::decode(u.bytes(len)?) {
                    self.member(&node, roundtrip(&message));
                }
            }
            21..=23 => {
                // A batch as a gateway's publisher writes it, around encoded messages (mostly
                // of one node and epoch, sometimes not, sometimes a nested batch or garbage).
                let named = if u.ratio(1, 16)? {
                    String::new()
                } else {
                    node.clone()
                };
                let epoch = epoch(u)?;
                let mut entries = Vec::new();
                for _ in 0..u.int_in_range(0..=6u8)? {
                    entries.push(match u.int_in_range(0..=40u8)? {
                        0 => {
                            let len = u.int_in_range(0..=16usize)?;
                            u.bytes(len)?.to_vec()
                        }
                        1 => switchboard_proto::batch::encode(&named, epoch, 1, [&[][..]]),
                        _ => {
                            let mut entry = member_message(u, &node)?;
                            if !u.ratio(1, 16)? {
                                entry.node.clone_from(&named);
                                entry.epoch = epoch;
                            }
                            entry.encode_to_vec()
                        }
                    });
                }
                let payload = switchboard_proto::batch::encode(
                    &named,
                    epoch,
                    seq(u)?,
                    entries.iter().map(Vec::as_slice),
                );
                if let Ok(message) = pb::MemberMessage::decode(payload.as_slice()) {
                    // The writer put the entries in unchanged, in order.
                    let Some(Body::Batch(batch)) = &message.body else {
                        panic!("a batch decoded as {message:?}");
                    };
                    let again: Vec<pb::MemberMessage> = entries
                        .iter()
                        .map(|e| {
                            pb::MemberMessage::decode(e.as_slice()).expect("it decoded inside")
                        })
                        .collect();
                    assert_eq!(batch.messages, again);
                    self.member(&node, roundtrip(&message));
                }
            }
            10 => {
                let beat = roundtrip(&pb::Heartbeat {
                    node: node.clone(),
                    epoch: epoch(u)?,
                    seq: seq(u)?,
                    connections: u.arbitrary()?,
                    sockets: u.arbitrary()?,
                    address: u.arbitrary()?,
                    nats_server: u.arbitrary()?,
                    ..Default::default()
                });
                let info = switchboard_broker::state::NodeInfo {
                    address: beat.address,
                    connections: beat.connections,
                };
                let applied = self
                    .dir
                    .heartbeat(&node, beat.epoch, beat.seq, info, self.now);
                self.announce(&applied.changes);
                self.settle();
            }
            11 | 12 => {
                let request = roundtrip(&pb::ReserveRequest {
                    ns: (*u.choose(NAMESPACES)?).to_owned(),
                    room: (*u.choose(ROOMS)?).to_owned(),
                    socket_id: (*u.choose(SOCKETS)?).to_owned(),
                    max_members: u.int_in_range(0..=3)?,
                });
                self.reserve(&request);
            }
            13 => {
                self.now += Duration::from_millis(u.int_in_range(0..=8_000)?);
                for (_, changes) in self.dir.expire(self.now) {
                    self.announce(&changes);
                }
                self.settle();
            }
            14 => {
                let id = u.choose(SOCKETS)?;
                let json: String = u.arbitrary()?;
                let known = self.dir.socket(id).is_some();
                assert_eq!(self.dir.set_data(id, json.clone()), known);
                if known {
                    assert_eq!(
                        self.dir.socket(id).map(|s| s.data_json()),
                        Some(json.as_str())
                    );
                }
            }
            15 | 16 => {
                let ns = (*u.choose(NAMESPACES)?).to_owned();
                let pid_hash = pid_hash(u)?;
                let request = roundtrip(&pb::RecoverRequest {
                    ns,
                    pid_hash: pid_hash.into(),
                    node: node.clone(),
                });
                self.claim(&request);
            }
            17 => {
                self.now += Duration::from_millis(u.int_in_range(0..=4_000)?);
                let (changes, _) = self.dir.expire_sessions(self.now);
                self.announce(&changes);
                self.settle();
                for (_, kept) in self.dir.kept_sessions() {
                    match &kept.claim {
                        None => assert!(kept.expires > self.now, "a session past its window"),
                        Some((_, until)) => assert!(*until > self.now, "a claim past its lease"),
                    }
                }
            }
            18 => {
                let id = u.choose(SOCKETS)?;
                let kept = matches!(
                    self.dir.state(id),
                    Some(SocketState::Kept(_) | SocketState::Claimed(_))
                );
                let reason = Reason::Disconnect("server namespace disconnect".to_owned());
                let ended = self.dir.end_session(id, &reason);
                assert_eq!(ended.is_some(), kept);
                if let Some(changes) = ended {
                    self.announce(&changes);
                    assert!(self.dir.socket(id).is_none());
                }
                self.settle();
            }
            _ => self.now += Duration::from_millis(u.int_in_range(0..=3_000)?),
        }
        Ok(())
    }

    /// What the leading broker does with a claim on `broker.recover`.
    fn claim(&mut self, r: &pb::RecoverRequest) {
        let claim = self
            .dir
            .claim(&r.ns, &r.pid_hash, &r.node, self.now, TAKEOVER);
        match claim {
            Claim::Recovered(rec) => {
                assert_eq!(rec.ns, r.ns);
                assert_eq!(
                    rec.recovery.as_ref().map(|x| x.pid_hash.as_slice()),
                    Some(&r.pid_hash[..])
                );
                self.claimed_by(&rec.id, &r.node);
                roundtrip(&convert::socket_info(&rec));
            }
            Claim::Takeover { id, old_node } => {
                assert_ne!(old_node, r.node);
                assert_eq!(self.dir.state(&id), Some(SocketState::Connected));
                assert_eq!(
                    self.dir.socket(&id).map(|s| s.node()),
                    Some(old_node.as_str())
                );
            }
            Claim::Unknown | Claim::Expired | Claim::Busy => {}
        }
        self.settle();
    }

    fn claimed_by(&self, id: &str, node: &str) {
        match self.dir.state(id) {
            Some(SocketState::Claimed(kept)) => {
                assert_eq!(kept.claim.as_ref().map(|(by, _)| by.as_str()), Some(node));
            }
            other => panic!("granted {id} is {other:?}"),
        }
    }

    /// Settled takeovers: granted to their claimant, or unknown.
    fn settle(&mut self) {
        for grant in self.dir.take_grants() {
            match &grant.claim {
                Claim::Recovered(rec) => {
                    assert_eq!(rec.id, grant.id);
                    self.claimed_by(&grant.id, &grant.node);
                }
                Claim::Unknown => {}
                other => panic!("a takeover settled as {other:?}"),
            }
        }
    }

    /// Announces `changes`; none is the departure of a socket kept now.
    fn announce(&self, changes: &[Change]) {
        announce(changes, self.max_payload);
        for change in changes {
            let socket = match change {
                Change::RoomMemberLeft { socket, .. }
                | Change::RoomUserLeft { socket, .. }
                | Change::UserOffline { socket, .. } => socket,
                _ => continue,
            };
            assert!(
                !matches!(
                    self.dir.state(socket),
                    Some(SocketState::Kept(_) | SocketState::Claimed(_))
                ),
                "departure of kept {socket} announced: {change:?}"
            );
        }
    }

    /// The admin views show connected sockets only, and agree with each other.
    fn views(&self) {
        for ns in NAMESPACES {
            let sel = Selector {
                ns: (*ns).to_owned(),
                ..Selector::default()
            };
            let listed: Vec<_> = self.dir.matching(&sel).collect();
            assert_eq!(self.dir.count(&sel), listed.len());
            // FetchSockets' page, written from the views, is what prost writes for it.
            let page = switchboard_broker::page::fetch_sockets(&listed, "after:x", 7);
            let expected = switchboard_proto::admin::FetchSocketsResponse {
                sockets: listed
                    .iter()
                    .map(switchboard_broker::grpc::summary)
                    .collect(),
                next_page_token: "after:x".to_owned(),
                total: 7,
            };
            assert_eq!(page.0, expected.encode_to_vec());
            for rec in listed {
                assert_eq!(self.dir.state(rec.id()), Some(SocketState::Connected));
            }
            for room in ROOMS {
                let sel = Selector {
                    rooms: vec![(*room).to_owned()],
                    ..sel.clone()
                };
                assert_eq!(self.dir.count(&sel), self.dir.matching(&sel).count());
                assert_eq!(
                    self.dir.room_members(ns, room).len(),
                    self.dir.matching(&sel).count()
                );
            }
        }
        let stats = self.dir.stats();
        assert_eq!(stats.kept, self.dir.kept_len());
        assert_eq!(stats.sockets + stats.kept, self.dir.len());
    }

    /// What the broker does with a member message received on `{prefix}.member.{node}`.
    fn member(&mut self, node: &str, message: pb::MemberMessage) {
        if !message.node.is_empty() && message.node != node {
            return;
        }
        let pb::MemberMessage {
            node: named,
            epoch,
            seq,
            body,
        } = message;
        let Some(body) = body else {
            return;
        };
        self.entry(node, epoch, seq, body, Some(&named));
    }

    /// One member message, alone or (`named` is `None`) an entry of a batch of `node`.
    fn entry(&mut self, node: &str, epoch: u64, seq: u64, body: Body, named: Option<&str>) {
        match body {
            Body::Batch(batch) => {
                // What the broker takes of a batch: all of it, checked whole, or nothing.
                let Some(named) = named else {
                    panic!("a checked batch held a batch");
                };
                let empty = batch.messages.is_empty();
                let valid = batch.messages.iter().all(|e| {
                    e.node == named && e.epoch == epoch && !matches!(e.body, Some(Body::Batch(_)))
                });
                match convert::member_batch(named, epoch, batch) {
                    Ok(entries) => {
                        assert!(valid && !empty, "a batch the broker must refuse was taken");
                        for e in entries {
                            if let Some(body) = e.body {
                                self.entry(node, e.epoch, e.seq, body, None);
                            }
                        }
                    }
                    Err(e) => assert!(!valid || empty, "a valid batch refused: {e}"),
                }
                return;
            }
            Body::Snapshot(part) => {
                let part = convert::snapshot_part(node, epoch, seq, part);
                if let Outcome::Complete {
                    epoch,
                    seq,
                    sockets,
                } = self.parts.part(node, part)
                {
                    // Quietly for odd sequence numbers (a started broker's first rebuild, a
                    // follower): the invariants must hold either way, and nothing is made.
                    if seq % 2 == 1 {
                        let applied = self
                            .dir
                            .snapshot_quietly(node, epoch, seq, sockets, self.now);
                        assert!(applied.changes.is_empty(), "a quiet snapshot made changes");
                    } else {
                        let applied = self.dir.snapshot(node, epoch, seq, sockets, self.now);
                        self.announce(&applied.changes);
                    }
                }
            }
            Body::Leaving(_) => {
                self.parts.forget(node);
                if self.dir.node_epoch(node) == Some(epoch) {
                    let changes = self.dir.remove_node(node, Reason::NodeLeft, self.now);
                    self.announce(&changes);
                    assert_eq!(self.dir.node_sockets(node), 0);
                    assert_eq!(self.dir.node_epoch(node), None);
                }
            }
            body => {
                let data = matches!(body, Body::Data(_));
                let Some(event) = convert::member_event(node, body) else {
                    assert!(data, "connect, disconnect, join and leave are events");
                    return;
                };
                self.parts.forget(node);
                let applied = self.dir.apply(node, epoch, seq, event, self.now);
                self.announce(&applied.changes);
            }
        }
        self.settle();
    }

    /// What the leading broker does with a reservation request.
    fn reserve(&mut self, r: &pb::ReserveRequest) {
        let max = usize::try_from(r.max_members).unwrap_or(usize::MAX);
        // Kept sessions hold their seats.
        let members = |dir: &Directory| dir.room_seats(&r.ns, &r.room);
        let before = members(&self.dir);
        let in_ns = self
            .dir
            .socket(&r.socket_id)
            .is_some_and(|s| s.ns() == r.ns)
            && self.dir.state(&r.socket_id) == Some(SocketState::Connected);
        match self.dir.reserve(&r.ns, &r.room, &r.socket_id, max) {
            Ok(Reserved::Joined(changes)) => {
                announce(&changes, self.max_payload);
                assert!(in_ns);
                assert_eq!(members(&self.dir), before + 1);
                assert!(max == 0 || before < max, "joined a full room");
                let rec = self.dir.socket(&r.socket_id).expect("the socket joined");
                assert!(rec.in_room(&r.room));
            }
            Ok(Reserved::AlreadyMember) => {
                assert_eq!(members(&self.dir), before);
                assert!(
                    self.dir
                        .room_members(&r.ns, &r.room)
                        .contains(&r.socket_id.as_str())
                );
            }
            Err(ReserveError::RoomFull) => {
                assert!(max != 0 && before >= max);
                assert_eq!(members(&self.dir), before);
            }
            Err(ReserveError::UnknownSocket) => assert!(!in_ns),
        }
    }
}

/// Every change converts to its presence event (or none), which survives the wire; the
/// messages the leader writes for them, batched or not, fit `max_payload` (but for a lone
/// announcement longer than that), a lone one unwrapped, and read back give every namespace's
/// events in the order of `changes`.
fn announce(changes: &[Change], max_payload: usize) {
    let mut want: BTreeMap<&str, Vec<&pb::PresenceEvent>> = BTreeMap::new();
    let events: Vec<pb::PresenceEvent> =
        changes.iter().filter_map(convert::presence_event).collect();
    for event in &events {
        roundtrip(event);
        want.entry(event.ns.as_str()).or_default().push(event);
    }
    for batches in [true, false] {
        let mut read: BTreeMap<String, Vec<pb::PresenceEvent>> = BTreeMap::new();
        for (ns, m) in convert::presence_messages(changes, max_payload, batches) {
            assert!(m.events == 1 || (batches && m.payload.len() <= max_payload));
            let message =
                pb::PresenceEvent::decode(m.payload.as_slice()).expect("a presence message");
            assert_eq!(message.batch.is_empty(), m.events == 1, "a lone one unwrapped");
            let got: Vec<_> = presence::announcements(&ns, message)
                .map(|e| e.expect("well-formed"))
                .collect();
            assert_eq!(got.len(), m.events);
            read.entry(ns).or_default().extend(got);
        }
        let read: BTreeMap<&str, Vec<&pb::PresenceEvent>> = read
            .iter()
            .map(|(ns, events)| (ns.as_str(), events.iter().collect()))
            .collect();
        assert_eq!(read, want);
    }
}

fn roundtrip<M: Message + Default + PartialEq + std::fmt::Debug>(m: &M) -> M {
    let again = M::decode(m.encode_to_vec().as_slice()).expect("an encoded message decodes");
    assert_eq!(&again, m);
    again
}

fn node(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(1, 32)? {
        return u.arbitrary();
    }
    Ok((*u.choose(NODES)?).to_owned())
}

fn epoch(u: &mut Unstructured<'_>) -> Result<u64> {
    u.int_in_range(1..=3)
}

fn seq(u: &mut Unstructured<'_>) -> Result<u64> {
    if u.ratio(1, 32)? {
        return u.arbitrary();
    }
    u.int_in_range(0..=8)
}

fn member_message(u: &mut Unstructured<'_>, node: &str) -> Result<pb::MemberMessage> {
    let body = match u.int_in_range(0..=10u8)? {
        0..=2 => Body::Connect(socket_info(u)?),
        3 => Body::Disconnect(pb::Disconnect {
            id: (*u.choose(SOCKETS)?).to_owned(),
            reason: (*u.choose(&[
                "transport close",
                "ping timeout",
                "client namespace disconnect",
            ])?)
            .to_owned(),
            recoverable: u.arbitrary()?,
        }),
        10 => Body::Data(pb::DataChange {
            id: (*u.choose(SOCKETS)?).to_owned(),
            data_json: (*u.choose(&["", "null", "{\"n\":1}", "{bad", "[1,2]"])?).to_owned(),
        }),
        4 | 5 => Body::Join(room_change(u)?),
        6 => Body::Leave(room_change(u)?),
        7 | 8 => Body::Snapshot(pb::SnapshotPart {
            part: u.int_in_range(0..=2)?,
            last: u.arbitrary()?,
            sockets: (0..u.int_in_range(0..=3u8)?)
                .map(|_| socket_info(u))
                .collect::<Result<_>>()?,
            request_id: u.int_in_range(0..=1)?,
            ..Default::default()
        }),
        _ => Body::Leaving(pb::NodeLeaving {}),
    };
    let named = if u.ratio(1, 16)? {
        (*u.choose(NODES)?).to_owned()
    } else if u.arbitrary()? {
        node.to_owned()
    } else {
        String::new()
    };
    Ok(pb::MemberMessage {
        node: named,
        epoch: epoch(u)?,
        seq: seq(u)?,
        body: Some(body),
    })
}

fn room_change(u: &mut Unstructured<'_>) -> Result<pb::RoomChange> {
    Ok(pb::RoomChange {
        id: (*u.choose(SOCKETS)?).to_owned(),
        room: (*u.choose(ROOMS)?).to_owned(),
    })
}

fn socket_info(u: &mut Unstructured<'_>) -> Result<pb::SocketInfo> {
    let mut rooms = Vec::new();
    for _ in 0..u.int_in_range(0..=3u8)? {
        rooms.push((*u.choose(ROOMS)?).to_owned());
    }
    Ok(pb::SocketInfo {
        id: (*u.choose(SOCKETS)?).to_owned(),
        ns: if u.ratio(1, 32)? {
            String::new()
        } else {
            (*u.choose(NAMESPACES)?).to_owned()
        },
        user: if u.arbitrary()? {
            Some((*u.choose(USERS)?).to_owned())
        } else {
            None
        },
        rooms,
        handshake: None,
        data_json: String::new(),
        presence: Some(pb::PresenceFlags {
            rooms: u.arbitrary()?,
            users: u.arbitrary()?,
        }),
        recovery: if u.arbitrary()? {
            Some(pb::Recovery {
                pid_hash: pid_hash(u)?.into(),
                window_ms: *u.choose(&[0, 1, 500, 3_000, 60_000, u64::MAX])?,
            })
        } else {
            None
        },
        recovered: u.arbitrary()?,
    })
}

/// A pid hash: mostly one of two valid ones, so that claims meet sessions; sometimes too short.
fn pid_hash(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    Ok(match u.int_in_range(0..=8u8)? {
        0 => vec![1; 31],
        1..=4 => vec![1; 32],
        _ => vec![2; 32],
    })
}
