//! Presence announcements in batches (`PresenceEvent.batch` in `bus.proto`): how the broker's
//! leader writes the announcements of one namespace as bus messages, and the one rule by which
//! every reader takes a message apart.
//!
//! A message whose `batch` is empty is one announcement; otherwise it is a batch and its entries
//! are the announcements, in order (its other fields are empty and ignored). An entry that is
//! itself a batch, or that names another namespace than the subject it came on, is malformed.
//! The writer keeps every message within the bus's `max_payload` and sends a lone announcement
//! as itself, so a reader older than batches still understands every unbatched message.

use prost::Message as _;

use crate::bus::PresenceEvent;

/// `PresenceEvent.batch` (bus.proto).
const BATCH: u32 = 15;

/// The bytes one announcement adds to a batch: its field header and itself.
fn entry_len(event: &PresenceEvent) -> usize {
    prost::encoding::message::encoded_len(BATCH, event)
}

/// One bus message of announcements, as [`encode`] writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// The message: a lone `PresenceEvent`, or a batch of them.
    pub payload: Vec<u8>,
    /// How many announcements it carries.
    pub events: usize,
}

/// The bus messages carrying `events` (announcements of one namespace, in order), in order: the
/// events one after the other, as many in each message as fit in `max_payload` bytes. A message
/// of one event is that event alone (not a batch of one); an event longer than `max_payload` by
/// itself goes alone, for the bus to refuse. With `batches` off, every event goes alone.
pub fn encode(events: &[PresenceEvent], max_payload: usize, batches: bool) -> Vec<Encoded> {
    let mut out = Vec::new();
    let mut rest = events;
    while let Some(first) = rest.first() {
        let mut len = entry_len(first);
        let mut n = 1;
        if batches {
            for event in &rest[1..] {
                let with = len + entry_len(event);
                if with > max_payload {
                    break;
                }
                len = with;
                n += 1;
            }
        }
        let (taken, left) = rest.split_at(n);
        let payload = match taken {
            [one] => one.encode_to_vec(),
            many => {
                // What prost writes for `PresenceEvent { batch: many, ..Default::default() }`,
                // without cloning the events into one.
                let mut payload = Vec::with_capacity(len);
                for event in many {
                    prost::encoding::message::encode(BATCH, event, &mut payload);
                }
                payload
            }
        };
        out.push(Encoded { payload, events: n });
        rest = left;
    }
    out
}

/// Why an announcement read on a namespace's presence subject is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// An entry of a batch is itself a batch.
    #[error("a batch inside a batch")]
    Nested,
    /// The announcement names another namespace than its subject's (or none).
    #[error("another namespace than the subject's")]
    Namespace,
}

/// The announcements of `message`, read on the presence subject of namespace `ns`, in order:
/// the entries of a batch, or the message itself; each one that is malformed as a [`Refused`].
pub fn announcements(
    ns: &str,
    message: PresenceEvent,
) -> impl Iterator<Item = Result<PresenceEvent, Refused>> + '_ {
    let (events, nested) = if message.batch.is_empty() {
        (vec![message], false)
    } else {
        (message.batch, true)
    };
    events.into_iter().map(move |event| {
        if nested && !event.batch.is_empty() {
            Err(Refused::Nested)
        } else if event.ns != ns {
            Err(Refused::Namespace)
        } else {
            Ok(event)
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::bus::presence_event::Kind;

    fn event(i: usize, room: &str) -> PresenceEvent {
        PresenceEvent {
            kind: Kind::MemberJoined as i32,
            ns: "/chat".into(),
            room: room.into(),
            user: Some(format!("user{i}")),
            socket_id: format!("gw1.s{i}"),
            ..Default::default()
        }
    }

    /// What a reader makes of the messages: every announcement, in order.
    fn read(messages: &[Encoded]) -> Vec<PresenceEvent> {
        messages
            .iter()
            .flat_map(|m| {
                let message = PresenceEvent::decode(m.payload.as_slice()).unwrap();
                announcements("/chat", message).map(|e| e.expect("well-formed"))
            })
            .collect()
    }

    #[test]
    fn a_batch_is_what_prost_writes_and_reads_back_in_order() {
        // Rooms long enough for multi-byte length prefixes.
        let events: Vec<_> = (0..5).map(|i| event(i, &"r".repeat(100 * i))).collect();
        let messages = encode(&events, usize::MAX, true);
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].events, 5);
        let prost = PresenceEvent {
            batch: events.clone(),
            ..Default::default()
        };
        assert_eq!(messages[0].payload, prost.encode_to_vec());
        assert_eq!(read(&messages), events);
    }

    #[test]
    fn a_lone_event_goes_unwrapped_and_batches_off_send_each_alone() {
        let events: Vec<_> = (0..3).map(|i| event(i, "lobby")).collect();
        let one = encode(&events[..1], usize::MAX, true);
        assert_eq!(
            one,
            [Encoded {
                payload: events[0].encode_to_vec(),
                events: 1
            }]
        );
        let alone = encode(&events, usize::MAX, false);
        let want: Vec<_> = events
            .iter()
            .map(|e| Encoded {
                payload: e.encode_to_vec(),
                events: 1,
            })
            .collect();
        assert_eq!(alone, want);
        assert!(encode(&[], 100, true).is_empty());
    }

    /// Whatever the bound, every message fits it (unless one event alone does not), the
    /// messages carry every event once in order, a message is cut only where the next event
    /// would not fit, and a message of one is unwrapped.
    #[test]
    fn messages_fit_the_bound_and_keep_the_order() {
        let events: Vec<_> = (0..40).map(|i| event(i, &"x".repeat(i % 7 * 30))).collect();
        let longest = events.iter().map(entry_len).max().unwrap();
        for max in [1, 40, longest - 1, longest, longest + 1, 300, 1000, 4096] {
            let messages = encode(&events, max, true);
            assert_eq!(read(&messages), events, "max {max}");
            let mut at = 0;
            for m in &messages {
                if m.events == 1 {
                    assert_eq!(m.payload, events[at].encode_to_vec(), "max {max}");
                } else {
                    assert!(m.payload.len() <= max, "max {max}: {}", m.payload.len());
                    let batch = PresenceEvent::decode(m.payload.as_slice()).unwrap();
                    assert_eq!(batch.batch.len(), m.events);
                }
                let end = at + m.events;
                if let Some(next) = events.get(end) {
                    let taken: usize = events[at..end].iter().map(entry_len).sum();
                    assert!(
                        taken + entry_len(next) > max,
                        "max {max}: cut early at {end}"
                    );
                }
                at = end;
            }
            assert_eq!(at, events.len());
        }
    }

    #[test]
    fn readers_refuse_nested_batches_and_other_namespaces() {
        let good = event(1, "lobby");
        let nested = PresenceEvent {
            batch: vec![event(2, "inner")],
            ..Default::default()
        };
        let other = PresenceEvent {
            ns: "/other".into(),
            ..event(3, "lobby")
        };
        let batch = PresenceEvent {
            batch: vec![good.clone(), nested, other.clone(), good.clone()],
            ..Default::default()
        };
        let got: Vec<_> = announcements("/chat", batch).collect();
        assert_eq!(
            got,
            [
                Ok(good.clone()),
                Err(Refused::Nested),
                Err(Refused::Namespace),
                Ok(good.clone())
            ]
        );
        let lone: Vec<_> = announcements("/chat", other).collect();
        assert_eq!(lone, [Err(Refused::Namespace)]);
        let lone: Vec<_> = announcements("/chat", good.clone()).collect();
        assert_eq!(lone, [Ok(good)]);
    }

    /// A reader older than batches skips field 15: a batch looks to it like one announcement
    /// with every field empty, whose empty namespace no namespace has (names start with `/`).
    #[test]
    fn an_older_reader_sees_a_batch_as_an_empty_event() {
        #[derive(Clone, PartialEq, prost::Message)]
        struct Older {
            #[prost(int32, tag = "1")]
            kind: i32,
            #[prost(string, tag = "2")]
            ns: String,
            #[prost(string, tag = "3")]
            room: String,
            #[prost(string, optional, tag = "4")]
            user: Option<String>,
            #[prost(string, tag = "5")]
            socket_id: String,
            #[prost(string, tag = "6")]
            reason: String,
        }
        let events: Vec<_> = (0..3).map(|i| event(i, "lobby")).collect();
        let messages = encode(&events, usize::MAX, true);
        let seen = Older::decode(messages[0].payload.as_slice()).unwrap();
        assert_eq!(seen, Older::default());
        // And what it reads of a lone announcement is unchanged.
        let lone = Older::decode(events[0].encode_to_vec().as_slice()).unwrap();
        assert_eq!(lone.ns, "/chat");
        assert_eq!(lone.socket_id, "gw1.s0");
    }
}
