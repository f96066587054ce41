//! The Socket.IO packets a worker emits, encoded by the codec crate's encoder exactly as the
//! gateways write them: the Engine.IO text frame `42/chat,["event",...]` (`451-/chat,[...]`
//! with one binary attachment) and the attachments, which travel in frames of their own.

use bytes::Bytes;
use serde_json::Value;
use switchboard_codec::engineio::Frame;
use switchboard_codec::socketio::{self, RESERVED_EVENTS};

use crate::{Args, WorkerError};

/// A namespace name the gateways can carry: `/`, or `/` followed by characters other than `,`
/// and control characters.
pub fn check_namespace(ns: &str) -> Result<(), WorkerError> {
    let ok = ns.starts_with('/') && !ns.contains(',') && !ns.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(WorkerError::Invalid(format!("namespace {ns:?}")))
    }
}

/// The Engine.IO text frame of the Socket.IO EVENT `event(args...)` of namespace `ns`, and its
/// attachments (a BINARY_EVENT when there are any). Refuses names the client libraries reserve
/// and placeholders that name missing attachments.
pub fn event(ns: &str, event: &str, args: &Args) -> Result<(Bytes, Vec<Bytes>), WorkerError> {
    check_namespace(ns)?;
    if RESERVED_EVENTS.contains(&event) {
        return Err(WorkerError::Invalid(format!(
            "reserved event name {event:?}"
        )));
    }
    args.check()?;
    let values = Value::Array(args.values.clone());
    let mut frames =
        socketio::encode_event(ns, event, &values, None, &args.attachments).into_iter();
    // The encoder writes the text frame first, then the attachments.
    match frames.next() {
        Some(Frame::Text(packet, _)) => Ok((packet, args.attachments.clone())),
        _ => Err(WorkerError::Invalid(
            "the encoder wrote no text frame".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_the_frames_gateways_write() {
        let cases: Vec<(&str, &str, Args, &[u8], usize)> = vec![
            (
                "/chat",
                "pm",
                Args::from(json!({"a": 1})),
                br#"42/chat,["pm",{"a":1}]"#,
                0,
            ),
            ("/", "pm", Args::from(json!(null)), br#"42["pm",null]"#, 0),
            ("/", "e", Args::new(), br#"42["e"]"#, 0),
            (
                "/chat",
                "ev",
                Args::new().arg(1).arg("x"),
                br#"42/chat,["ev",1,"x"]"#,
                0,
            ),
            (
                "/chat",
                "ev",
                Args::new().binary(&b"\x00\x01"[..]),
                br#"451-/chat,["ev",{"_placeholder":true,"num":0}]"#,
                1,
            ),
        ];
        for (ns, name, args, want, attachments) in cases {
            let (packet, att) = event(ns, name, &args).expect("a valid event");
            assert_eq!(&packet[..], want, "{ns} {name}");
            assert_eq!(att.len(), attachments);
        }
    }

    #[test]
    fn bad_events_are_refused() {
        let ph = Args::from(json!([{"_placeholder": true, "num": 0}]));
        assert!(event("/", "disconnect", &Args::new()).is_err());
        assert!(event("/", "ok", &ph).is_err());
        assert!(event("chat", "ok", &Args::new()).is_err());
        assert!(event("/a,b", "ok", &Args::new()).is_err());
        assert!(event("/a\u{1e}", "ok", &Args::new()).is_err());
    }
}
