//! Long-polling bodies: decoding never panics, and whatever decodes survives re-encoding, both
//! packet by packet (WebSocket framing) and as a whole body.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use switchboard_codec::engineio::{self, Frame, Packet};

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let Ok(packets) = engineio::decode_payload(&body) else {
        return;
    };
    assert!(
        !packets.is_empty(),
        "a body that decodes holds at least one packet"
    );

    for packet in &packets {
        let again = match packet.encode() {
            Frame::Text(text, _) => engineio::decode_text(text).expect("an encoded packet decodes"),
            Frame::Binary(bin, _) => engineio::decode_binary(bin),
        };
        assert_eq!(&again, packet);
    }

    let frames: Vec<Frame> = packets.iter().map(Packet::encode).collect();
    let mut out = BytesMut::new();
    engineio::encode_payload(&frames, &mut out);
    assert_eq!(out.len(), engineio::payload_len(&frames));
    let again = engineio::decode_payload(&out.freeze()).expect("an encoded body decodes");
    assert_eq!(again, packets);
});
