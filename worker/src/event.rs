//! Client events the gateways forward to workers (`forward` rules), and the answers to their
//! acks.
//!
//! A forwarded event that the client sent with an ack is a NATS request: the gateway waits (the
//! rule's timeout) for one [`EventReply`], turns it into the client's ack and, before sending
//! it, makes the asking socket join and leave the rooms the reply names. [`Ack`] is the one-shot
//! handle on that request: [`Ack::send`] takes it by value, so an event is answered at most
//! once.
//!
//! **Dropping an unanswered [`Ack`]** answers with the error [`NO_REPLY`] (published from a task
//! on the current tokio runtime; outside a runtime nothing is sent and the gateway times out
//! with `worker timeout`). So a handler that returns early (a `?`, a panic caught by its task)
//! gives the client a prompt `{ok: false, error: "no reply"}` rather than a wait for the
//! gateway's timeout. Hold the [`Ack`] for as long as the answer is being worked on.

use bytes::Bytes;
use serde_json::Value;
use switchboard_bus::{Bus, Message};
use switchboard_proto::Message as _;
use switchboard_proto::bus as pb;

use crate::{Args, WorkerError};

/// The error an [`Ack`] dropped without an answer sends to the client.
pub const NO_REPLY: &str = "no reply";

/// The error a forwarded event that cannot be decoded gets when it wants an ack.
pub const MALFORMED_EVENT: &str = "malformed event";

/// A client event forwarded by a gateway, decoded and checked.
#[derive(Debug)]
pub struct ClientEvent {
    /// The gateway (node id) holding the socket.
    pub node: String,
    /// The socket that sent it (`{node}.{random}`).
    pub socket_id: String,
    /// Its namespace (the one this stream is for).
    pub ns: String,
    /// The event name.
    pub event: String,
    /// Its arguments (the ack callback not included).
    pub args: Args,
    /// The socket's verified JWT claims (`{}` when unauthenticated).
    pub claims: Value,
    /// The user id (the JWT `sub`), when authenticated.
    pub user: Option<String>,
    /// The rooms the socket was in when it sent the event.
    pub rooms: Vec<String>,
    ack: Option<Ack>,
}

impl ClientEvent {
    /// Decodes a forwarded event of namespace `ns`; `None` for anything malformed (the message
    /// is then answered with [`MALFORMED_EVENT`] if it is a request).
    pub(crate) fn decode(bus: &Bus, ns: &str, msg: Message) -> Option<Self> {
        let decoded = pb::ClientEvent::decode(msg.payload)
            .ok()
            .filter(|ev| ev.ns == ns)
            .and_then(|ev| {
                let args = Args::from_bus(&ev.args_json, ev.attachments)?;
                let claims = match ev.claims_json.as_str() {
                    "" => Value::Object(Default::default()),
                    text => serde_json::from_str(text).ok()?,
                };
                Some(Self {
                    node: ev.node,
                    socket_id: ev.socket_id,
                    ns: ev.ns,
                    event: ev.event,
                    args,
                    claims,
                    user: ev.user,
                    rooms: ev.rooms,
                    ack: None,
                })
            });
        match (decoded, msg.reply) {
            // A request is answered whatever its `wants_ack` says: the gateway waits on it.
            (Some(ev), to) => Some(Self {
                ack: to.map(|to| Ack {
                    bus: bus.clone(),
                    to: Some(to),
                }),
                ..ev
            }),
            (None, Some(to)) => {
                answer_later(bus.clone(), to, error_reply(MALFORMED_EVENT));
                None
            }
            (None, None) => None,
        }
    }

    /// Whether the client waits for an answer (it sent the event with an ack callback).
    pub fn wants_ack(&self) -> bool {
        self.ack.is_some()
    }

    /// Takes the handle on the client's ack, to answer it later (after the event's other fields
    /// have been moved out, or from another task). `None` when the client wants no ack, or it
    /// was taken already.
    pub fn take_ack(&mut self) -> Option<Ack> {
        self.ack.take()
    }

    /// Answers the client's ack, if it wants one (and it was not taken); returns whether an
    /// answer was sent.
    pub async fn reply(&mut self, reply: EventReply) -> Result<bool, WorkerError> {
        match self.ack.take() {
            Some(ack) => ack.send(reply).await.map(|()| true),
            None => Ok(false),
        }
    }
}

/// The one-shot answer handle of a forwarded event that wants an ack. Dropping it unanswered
/// sends [`NO_REPLY`] (see the [module docs](self)).
pub struct Ack {
    bus: Bus,
    /// The request's reply subject; `None` once answered.
    to: Option<String>,
}

impl Ack {
    /// Sends the answer. Arguments whose placeholders name missing attachments are refused
    /// ([`WorkerError::Invalid`]); the handle is then dropped, which answers [`NO_REPLY`].
    pub async fn send(mut self, reply: EventReply) -> Result<(), WorkerError> {
        let body = reply.into_pb()?;
        let to = self
            .to
            .take()
            .expect("an Ack holds its subject until it is used");
        self.bus
            .publish(to, Bytes::from(body.encode_to_vec()))
            .await
            .map_err(WorkerError::Bus)
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(to) = self.to.take() {
            answer_later(self.bus.clone(), to, error_reply(NO_REPLY));
        }
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ack").field("to", &self.to).finish()
    }
}

fn error_reply(error: &str) -> pb::EventReply {
    pb::EventReply {
        error: error.to_owned(),
        ..Default::default()
    }
}

/// Publishes `reply` from a task of the current runtime (nothing outside one).
fn answer_later(bus: Bus, to: String, reply: pb::EventReply) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            if let Err(e) = bus.publish(to, Bytes::from(reply.encode_to_vec())).await {
                tracing::debug!(error = %e, "ack answer not published");
            }
        });
    }
}

/// A worker's answer to a forwarded event: the ack's arguments and the rooms the asking socket
/// joins and leaves, or an error.
#[derive(Clone, Debug, PartialEq)]
pub struct EventReply {
    result: Result<Args, String>,
    join: Vec<String>,
    leave: Vec<String>,
}

impl EventReply {
    /// The ack's arguments (a JSON array is the list of arguments, another value is one).
    pub fn ok(args: impl Into<Args>) -> Self {
        Self {
            result: Ok(args.into()),
            join: Vec::new(),
            leave: Vec::new(),
        }
    }

    /// A refusal: the client's ack gets `{ "ok": false, "error": error }` (an empty error is
    /// sent as `"error"`, since the bus reads an empty one as none). No rooms change.
    pub fn error(error: impl Into<String>) -> Self {
        let error = error.into();
        Self {
            result: Err(if error.is_empty() {
                "error".to_owned()
            } else {
                error
            }),
            join: Vec::new(),
            leave: Vec::new(),
        }
    }

    /// The asking socket joins `room` (before the ack is sent). Ignored in an error reply.
    #[must_use]
    pub fn join(mut self, room: impl Into<String>) -> Self {
        self.join.push(room.into());
        self
    }

    /// The asking socket leaves `room` (after the joins, before the ack). Ignored in an error
    /// reply.
    #[must_use]
    pub fn leave(mut self, room: impl Into<String>) -> Self {
        self.leave.push(room.into());
        self
    }

    pub(crate) fn into_pb(self) -> Result<pb::EventReply, WorkerError> {
        match self.result {
            Ok(args) => {
                args.check()?;
                Ok(pb::EventReply {
                    args_json: args.json(),
                    attachments: args.attachments,
                    error: String::new(),
                    join: self.join,
                    leave: self.leave,
                })
            }
            Err(error) => Ok(error_reply(&error)),
        }
    }
}
