//! What the fuzz targets share: the client's view of what a gateway writes.

use switchboard_codec::engineio::Frame;
use switchboard_codec::socketio::{self, Decoded, Packet, Reassembly};

/// Encodes a packet as a gateway writes it and decodes it as a client reads it (text frame,
/// then its attachments); panics if the client could not.
pub fn round_trip(packet: &Packet) -> Packet {
    let frames = socketio::encode(packet);
    let Some((Frame::Text(text, _), attachments)) = frames.split_first() else {
        panic!("encode starts with a text frame");
    };
    let text = std::str::from_utf8(text).expect("encoded text is UTF-8");
    let text = text.strip_prefix('4').expect("an Engine.IO message");
    match socketio::decode(text).expect("encoded packet decodes") {
        Decoded::Complete(again) => {
            assert!(attachments.is_empty());
            again
        }
        Decoded::NeedAttachments(header, n) => {
            assert_eq!(n, attachments.len());
            let now = std::time::Instant::now();
            let mut r = Reassembly::new(
                header,
                n,
                usize::MAX,
                now + std::time::Duration::from_secs(60),
            );
            let mut done = None;
            for frame in attachments {
                let Frame::Binary(bin, _) = frame else {
                    panic!("attachments are binary frames");
                };
                done = r.push(bin.clone(), now).expect("attachment accepted");
            }
            done.expect("complete")
        }
    }
}
