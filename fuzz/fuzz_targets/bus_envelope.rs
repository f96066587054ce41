//! Every bus message a gateway or broker decodes (`proto/proto/bus.proto`), from arbitrary bytes,
//! then the gateway's handling of what decoded.
//!
//! - decode → encode → decode gives the same message, and encoding it again the same bytes;
//! - a delivery's frames (`cluster::delivery_frames`), written as a polling body, decode back to
//!   exactly the delivery's packet and attachments, and the packet is an emit of the delivery's
//!   namespace whose placeholders its attachments fill; every emit a gateway encodes is accepted;
//! - an ack-collecting delivery's arguments (`cluster::ack_request_args`) and a worker's reply
//!   (`cluster::worker_reply`) encode to an EVENT or ACK that decodes back to themselves;
//! - a heartbeat's address is only ever recorded as an authority that parses back to itself.
#![no_main]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchboard_codec::engineio::{self, Compress, Frame};
use switchboard_codec::socketio::{self, Decoded, Packet, PacketType, Reassembly};
use switchboard_fuzz::round_trip;
use switchboard_gateway::cluster;
use switchboard_gateway::forward::Peers;
use switchboard_gateway::sio::Args;
use switchboard_proto::Message;
use switchboard_proto::bus::{self as pb, envelope};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 15 {
        0 => {
            if let Some(m) = stable::<pb::Envelope>(bytes) {
                envelope(m);
            }
        }
        1 => {
            if let Some(d) = stable::<pb::Delivery>(bytes) {
                delivery(d);
            }
        }
        2 => {
            if let Some(reply) = stable::<pb::EventReply>(bytes) {
                worker_reply(reply);
            }
        }
        3 => {
            if let Some(beat) = stable::<pb::Heartbeat>(bytes) {
                heartbeat(&beat);
            }
        }
        4 => drop(stable::<pb::MemberMessage>(bytes)),
        5 => drop(stable::<pb::ReserveRequest>(bytes)),
        6 => {
            if let Some(reply) = stable::<pb::ReserveReply>(bytes) {
                let _ = pb::reserve_reply::Outcome::try_from(reply.outcome);
            }
        }
        7 => drop(stable::<pb::SnapshotRequest>(bytes)),
        8 => drop(stable::<pb::ResyncRequest>(bytes)),
        9 => drop(stable::<pb::PresenceEvent>(bytes)),
        10 => drop(stable::<pb::AckReply>(bytes)),
        11 => drop(stable::<pb::ClientEvent>(bytes)),
        12 => drop(stable::<pb::RecoverRequest>(bytes)),
        13 => {
            if let Some(reply) = stable::<pb::RecoverReply>(bytes) {
                let _ = pb::recover_reply::Outcome::try_from(reply.outcome);
            }
        }
        _ => emit_is_delivered(bytes),
    }
});

/// Decodes `bytes`; what decodes survives a round trip unchanged.
fn stable<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Option<M> {
    let m = M::decode(bytes).ok()?;
    let encoded = m.encode_to_vec();
    assert_eq!(encoded.len(), m.encoded_len());
    let again = M::decode(encoded.as_slice()).expect("an encoded message decodes");
    assert_eq!(again, m);
    assert_eq!(again.encode_to_vec(), encoded);
    Some(m)
}

fn envelope(m: pb::Envelope) {
    match m.body {
        Some(envelope::Body::Delivery(d)) => delivery(d),
        Some(envelope::Body::Command(c)) => {
            if let Some(pb::command::Action::SetData(set)) = c.action {
                let _ = serde_json::from_str::<Value>(&set.data_json);
            }
        }
        Some(envelope::Body::Fragment(f)) => {
            // A gateway joins the parts (`cluster.rs`) and takes only a delivery out of the
            // whole; a single part holding the whole envelope reaches the same handling.
            if f.index == 0 && f.count == 1 {
                if let Some(pb::Envelope {
                    body: Some(envelope::Body::Delivery(d)),
                }) = stable::<pb::Envelope>(&f.data)
                {
                    delivery(d);
                }
            }
        }
        None => {}
    }
}

/// What a gateway writes for a delivery decodes, on the client's side, to exactly that emit.
fn delivery(d: pb::Delivery) {
    if let Some(ack) = d.ack {
        if let Some(args) = cluster::ack_request_args(&ack, d.attachments) {
            let event = Value::String(ack.event.clone());
            let mut values = vec![event];
            values.extend(args.values.iter().cloned());
            let kind = if args.attachments.is_empty() {
                PacketType::Event
            } else {
                PacketType::BinaryEvent
            };
            let packet = Packet {
                kind,
                nsp: "/".to_owned(),
                id: Some(1),
                data: Some(Value::Array(values)),
                attachments: args.attachments,
            };
            assert_eq!(round_trip(&packet), packet, "{ack:?}");
        }
        return;
    }
    let Some(frames) = cluster::delivery_frames(
        &d.ns,
        d.packet.clone(),
        d.attachments.clone(),
        Compress::from_allowed(!d.uncompressed),
    ) else {
        return;
    };
    let mut body = BytesMut::new();
    engineio::encode_payload(&frames, &mut body);
    let packets = engineio::decode_payload(&body.freeze()).expect("a polling body decodes");
    assert_eq!(packets.len(), 1 + d.attachments.len(), "{:?}", d.packet);
    let decoded: Vec<Frame> = packets.iter().map(engineio::Packet::encode).collect();
    assert_eq!(
        decoded, frames,
        "the polling body split or changed the delivery"
    );
    let text = std::str::from_utf8(&d.packet).expect("accepted packets are UTF-8");
    let text = text.strip_prefix('4').expect("an Engine.IO message");
    let packet = match socketio::decode(text).expect("accepted packets decode") {
        Decoded::Complete(p) => p,
        Decoded::NeedAttachments(header, n) => {
            let now = std::time::Instant::now();
            let mut r = Reassembly::new(
                header,
                n,
                usize::MAX,
                now + std::time::Duration::from_secs(60),
            );
            let mut done = None;
            for a in &d.attachments {
                done = r
                    .push(a.clone(), now)
                    .expect("the attachments fill the placeholders");
            }
            done.expect("complete")
        }
    };
    assert!(matches!(
        packet.kind,
        PacketType::Event | PacketType::BinaryEvent
    ));
    assert_eq!(packet.nsp, d.ns);
    assert_eq!(packet.id, None);
}

/// A gateway's own emit, in any namespace, is accepted as a delivery.
fn emit_is_delivered(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let mut parts = text.splitn(3, '\u{0}');
    let ns = format!("/{}", parts.next().unwrap_or_default());
    let event = parts.next().unwrap_or_default();
    if socketio::RESERVED_EVENTS.contains(&event) {
        return;
    }
    let arg = parts.next().map_or(Value::Null, |s| {
        serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_owned()))
    });
    let mut args = Args::new(vec![arg]);
    if bytes.len() % 2 == 1 {
        args = args.binary(Bytes::copy_from_slice(bytes));
    }
    let values = Value::Array(args.values);
    if socketio::check_placeholders(Some(&values), args.attachments.len()).is_err() {
        return; // the argument holds a placeholder of its own
    }
    let frames = socketio::encode_event(&ns, event, &values, None, &args.attachments);
    let Some((Frame::Text(packet, _), _)) = frames.split_first() else {
        panic!("an emit starts with a text frame");
    };
    // `encode_event` writes namespaces as given; a name holding the record separator is not one
    // a gateway serves (namespace names are checked on connect).
    if ns.contains('\u{1e}') || ns.contains(',') {
        return;
    }
    let accepted = cluster::delivery_frames(
        &ns,
        packet.clone(),
        args.attachments.clone(),
        Compress::Allowed,
    );
    assert_eq!(
        accepted,
        Some(frames),
        "a gateway's emit in {ns:?} was refused"
    );
}

fn worker_reply(reply: pb::EventReply) {
    let Ok(args) = cluster::worker_reply(reply) else {
        return;
    };
    let packet = Packet {
        kind: PacketType::Ack,
        nsp: "/chat".to_owned(),
        id: Some(7),
        data: Some(Value::Array(args.values)),
        attachments: args.attachments,
    };
    let back = round_trip(&packet);
    assert_eq!(back.data, packet.data);
    assert_eq!(back.attachments, packet.attachments);
}

fn heartbeat(beat: &pb::Heartbeat) {
    let peers = Peers::default();
    let now = Instant::now();
    peers.heard(&beat.node, &beat.address, now.into());
    if let Some(addr) = peers.address(&beat.node, Duration::from_secs(1), now.into()) {
        assert_eq!(addr.as_str().parse().ok(), Some(addr.clone()));
    }
}
