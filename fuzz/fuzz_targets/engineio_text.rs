//! WebSocket text frames: decoding never panics, text stays UTF-8, and a decoded packet
//! survives re-encoding. Binary frames always decode and round-trip.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchboard_codec::engineio::{self, Frame, Packet, Payload};

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    if let Ok(packet) = engineio::decode_text(frame.clone()) {
        assert!(std::str::from_utf8(data).is_ok(), "only UTF-8 text decodes");
        if let Packet::Message(payload) = &packet {
            assert!(payload.text().is_some(), "text payloads are UTF-8");
        }
        let Frame::Text(text) = packet.encode() else {
            panic!("a packet decoded from text encodes as text");
        };
        assert_eq!(engineio::decode_text(text), Ok(packet));
    }

    let packet = engineio::decode_binary(frame.clone());
    assert_eq!(packet, Packet::Message(Payload::Binary(frame.clone())));
    assert_eq!(packet.encode(), Frame::Binary(frame));
});
