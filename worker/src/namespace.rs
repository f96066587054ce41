//! One namespace as a worker sees it: its streams, and emits and commands to selections of its
//! sockets.
//!
//! **Routing** is the gateways' own for their broadcasts, within what the `worker` NATS role
//! may publish (docs/security.md, "Roles"):
//!
//! | selection | core subject | log subject (recovery) |
//! |---|---|---|
//! | one room, no socket ids | `{p}.room.{ns}.{room}` | `{p}.log.{ns}.r.{room}` |
//! | anything else (no room, several rooms, socket ids) | `{p}.ns.{ns}` | `{p}.log.{ns}.n` |
//!
//! The [`pb::Target`] in the delivery says who gets it; every gateway with sockets in the
//! namespace reads the namespace subject and applies it. Gateways send socket-id emits to the
//! owning node's subject (`{p}.node.{node}`) instead, which a worker may not publish: the
//! namespace subject reaches the same sockets at the cost of every gateway of the namespace
//! reading it.
//!
//! **Connection state recovery**: in a namespace with `[namespace.recovery]`, the gateways
//! publish every non-volatile emit into the log (the JetStream stream `{p}_log`) and write the
//! namespace's emits to their sockets as they read them back, with the offset a returning
//! client needs (docs/recovery.md). A worker cannot see the gateways' configuration: say it
//! with [`Namespace::recovery`], which must match `[namespace.recovery]`. With it, an emit is
//! published into the log and [`Broadcast::emit`] returns once JetStream acknowledged it (with
//! its stream sequence), trying up to three times with one message id (stored once). Without
//! it, emits of a recovery namespace still reach connected sockets, but carry no offset and
//! are not replayed to a client that comes back; and socket.io-client takes a last string
//! argument of such an emit for its offset, so its next recovery fails (docs/recovery.md).

use std::time::Duration;

use bytes::Bytes;
use switchboard_proto::Message as _;
use switchboard_proto::bus as pb;

use crate::event::ClientEvent;
use crate::stream::{LifeEvent, PresenceEvent, ServerEvent, Stream};
use crate::{Args, Worker, WorkerError, frame};

/// How often a log publish is tried (one message id each time, so the log stores it once).
const LOG_PUBLISH_TRIES: u32 = 3;
/// Bytes of a fragment envelope besides its data (origin, id, index, count, field headers).
const FRAGMENT_OVERHEAD: usize = 1024;
/// The longest delivery an emit may have: a longer one is split into fragments the gateways
/// reassemble, up to this bound (theirs).
pub const MAX_SPLIT_BYTES: usize = 16 * 1024 * 1024;

/// A namespace's handle (cheap to clone): `worker.of("/chat")`.
#[derive(Clone, Debug)]
pub struct Namespace {
    worker: Worker,
    name: String,
    recovery: bool,
}

/// What the broker answered a room reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// A place is reserved for the socket: let its gateway join it (an
    /// [`EventReply::join`](crate::EventReply::join)).
    Joined,
    /// The socket is in the room already.
    AlreadyMember,
    /// The room has `max_members` members.
    Full,
    /// The broker does not know the socket (yet: its membership may be on its way).
    UnknownSocket,
}

impl Namespace {
    pub(crate) fn new(worker: Worker, name: &str) -> Self {
        Self {
            worker,
            name: name.to_owned(),
            recovery: false,
        }
    }

    /// Declares whether the gateways run this namespace with connection state recovery: must
    /// match their `[namespace.recovery]` (see the [module docs](self)). Off by default.
    #[must_use]
    pub fn recovery(mut self, on: bool) -> Self {
        self.recovery = on;
        self
    }

    /// The namespace's name (`/chat`).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn check(&self) -> Result<(), WorkerError> {
        frame::check_namespace(&self.name)
    }

    /// Client events the gateways forward in this namespace (`{p}.event.{ns}.*`), in the queue
    /// group `group` (each event to one member of the group) or, with `None`, every one of
    /// them to this subscriber.
    pub async fn events(&self, group: Option<&str>) -> Result<Stream<ClientEvent>, WorkerError> {
        self.check()?;
        let subject = self.worker.subjects().all_events_in(&self.name)?;
        let sub = self.worker.subscribe(subject, group).await?;
        let (bus, ns) = (self.worker.bus().clone(), self.name.clone());
        Ok(Stream::new("events", sub, None, move |msg| {
            ClientEvent::decode(&bus, &ns, msg)
        }))
    }

    /// The broker's presence announcements for this namespace (`{p}.presence.{ns}`), one item
    /// each, in order, whether the broker sent it alone or in a batch.
    pub async fn presence(
        &self,
        group: Option<&str>,
    ) -> Result<Stream<PresenceEvent>, WorkerError> {
        self.check()?;
        let subject = self.worker.subjects().presence(&self.name)?;
        let sub = self.worker.subscribe(subject, group).await?;
        let ns = self.name.clone();
        Ok(Stream::of_many("presence", sub, None, move |msg, out| {
            PresenceEvent::decode_all(&ns, msg, out)
        }))
    }

    /// Sockets connecting to and leaving this namespace (`{p}.life.{ns}.connect` and
    /// `.disconnect`).
    pub async fn life(&self, group: Option<&str>) -> Result<Stream<LifeEvent>, WorkerError> {
        self.check()?;
        let subjects = self.worker.subjects();
        let connect = subjects.connect(&self.name)?;
        let disconnect = subjects.disconnect(&self.name)?;
        let first = self.worker.subscribe(connect.clone(), group).await?;
        let second = self.worker.subscribe(disconnect, group).await?;
        let ns = self.name.clone();
        Ok(Stream::new("life", first, Some(second), move |msg| {
            let is_connect = msg.subject == connect;
            LifeEvent::decode(&ns, is_connect, msg)
        }))
    }

    /// `serverSideEmit`s of other workers and emitters in this namespace (`{p}.srv.{ns}.*`).
    /// A worker does not receive its own (NATS `no_echo`).
    pub async fn server_events(
        &self,
        group: Option<&str>,
    ) -> Result<Stream<ServerEvent>, WorkerError> {
        self.check()?;
        let subject = self.worker.subjects().all_server_in(&self.name)?;
        let sub = self.worker.subscribe(subject, group).await?;
        let ns = self.name.clone();
        Ok(Stream::new("server", sub, None, move |msg| {
            ServerEvent::decode(&ns, msg)
        }))
    }

    /// `serverSideEmit`: an event for the namespace's backends (workers, other services), never
    /// for clients, on `{p}.srv.{ns}.{event}`. No acks (as socket.io's emitters).
    pub async fn server_side_emit(
        &self,
        event: &str,
        args: impl Into<Args>,
    ) -> Result<(), WorkerError> {
        self.check()?;
        let args = args.into();
        args.check()?;
        if event.is_empty() {
            return Err(WorkerError::Invalid("empty event name".to_owned()));
        }
        let msg = pb::ServerSideEmit {
            origin: self.worker.origin().to_owned(),
            ns: self.name.clone(),
            event: event.to_owned(),
            args_json: args.json(),
            attachments: args.attachments,
        };
        let subject = self.worker.subjects().server(&self.name, event)?;
        self.worker
            .bus()
            .publish(subject, Bytes::from(msg.encode_to_vec()))
            .await
            .map_err(WorkerError::Bus)
    }

    /// Asks the broker for a place for `socket_id` in `room`, which holds at most
    /// `max_members` sockets cluster-wide (`{p}.broker.reserve`). The socket joins only when
    /// its gateway is told to: answer its event with
    /// [`EventReply::join`](crate::EventReply::join) after [`Reservation::Joined`].
    pub async fn reserve(
        &self,
        room: &str,
        socket_id: &str,
        max_members: u32,
        timeout: Duration,
    ) -> Result<Reservation, WorkerError> {
        use pb::reserve_reply::Outcome;
        self.check()?;
        let req = pb::ReserveRequest {
            ns: self.name.clone(),
            room: room.to_owned(),
            socket_id: socket_id.to_owned(),
            max_members,
        };
        let subject = self.worker.subjects().reserve();
        let reply = self
            .worker
            .bus()
            .request(subject, Bytes::from(req.encode_to_vec()), timeout)
            .await?;
        let reply = pb::ReserveReply::decode(reply)
            .map_err(|_| WorkerError::Reply("malformed reservation reply"))?;
        match Outcome::try_from(reply.outcome) {
            Ok(Outcome::Joined) => Ok(Reservation::Joined),
            Ok(Outcome::AlreadyMember) => Ok(Reservation::AlreadyMember),
            Ok(Outcome::Full) => Ok(Reservation::Full),
            Ok(Outcome::UnknownSocket) => Ok(Reservation::UnknownSocket),
            Err(_) => Err(WorkerError::Reply("unknown reservation outcome")),
        }
    }

    /// Every socket of the namespace, to narrow down.
    pub fn all(&self) -> Broadcast {
        Broadcast {
            ns: self.clone(),
            target: pb::Target::default(),
            volatile: false,
            compress: true,
        }
    }

    /// The sockets `target` selects, as the bus carries a selection.
    pub fn select(&self, target: pb::Target) -> Broadcast {
        Broadcast {
            target,
            ..self.all()
        }
    }

    /// The members of `room`.
    pub fn to(&self, room: impl Into<String>) -> Broadcast {
        self.all().to(room)
    }

    /// Every socket of the namespace except the members of `room`.
    pub fn except(&self, room: impl Into<String>) -> Broadcast {
        self.all().except(room)
    }

    /// The socket `id`.
    pub fn to_socket(&self, id: impl Into<String>) -> Broadcast {
        self.all().to_socket(id)
    }

    /// Emits to every socket of the namespace; see [`Broadcast::emit`].
    pub async fn emit(&self, event: &str, args: impl Into<Args>) -> Result<Sent, WorkerError> {
        self.all().emit(event, args).await
    }
}

/// What an emit did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    /// For an emit into the recovery log: its stream sequence (JetStream acknowledged it).
    /// `None` for a core publish (queued; core NATS is at most once).
    pub log_seq: Option<u64>,
}

/// A selection of a namespace's sockets, socket.io's `io.to(room).except(room)`: the members of
/// the rooms and the listed sockets (a union; neither: the whole namespace), minus the members
/// of the excepted rooms and the excepted sockets.
#[derive(Clone, Debug)]
pub struct Broadcast {
    ns: Namespace,
    target: pb::Target,
    volatile: bool,
    compress: bool,
}

impl Broadcast {
    /// Adds the members of `room`.
    #[must_use]
    pub fn to(mut self, room: impl Into<String>) -> Self {
        self.target.rooms.push(room.into());
        self
    }

    /// Leaves out the members of `room`.
    #[must_use]
    pub fn except(mut self, room: impl Into<String>) -> Self {
        self.target.except_rooms.push(room.into());
        self
    }

    /// Adds the socket `id`.
    #[must_use]
    pub fn to_socket(mut self, id: impl Into<String>) -> Self {
        self.target.socket_ids.push(id.into());
        self
    }

    /// Leaves out the socket `id`.
    #[must_use]
    pub fn except_socket(mut self, id: impl Into<String>) -> Self {
        self.target.except_sockets.push(id.into());
        self
    }

    /// Recipients whose queue is full skip this emit rather than being disconnected; never
    /// logged for recovery (as the gateways' own volatile emits).
    #[must_use]
    pub fn volatile(mut self) -> Self {
        self.volatile = true;
        self
    }

    /// Whether the gateways may compress this emit (permessage-deflate, gzip of a polling
    /// response), as socket.io's `compress(bool)`; the default is `true`. With `false` it goes
    /// to every recipient uncompressed, whatever its size (`Delivery.uncompressed`).
    #[must_use]
    pub fn compress(mut self, compress: bool) -> Self {
        self.compress = compress;
        self
    }

    /// The selection as the bus carries it.
    pub fn target(&self) -> &pb::Target {
        &self.target
    }

    /// Emits `event` with `args` to the selection: a Socket.IO EVENT (BINARY_EVENT with
    /// attachments) encoded once, here, as the Engine.IO frames the gateways write, in a
    /// [`pb::Delivery`] on the subject of the [routing table](self); one longer than the bus's
    /// `max_payload` goes in [`pb::Fragment`]s the gateways put together. Refused: a name the
    /// client libraries reserve (`connect`, `disconnect`, ...), placeholders naming missing
    /// attachments, a delivery longer than [`MAX_SPLIT_BYTES`].
    pub async fn emit(&self, event: &str, args: impl Into<Args>) -> Result<Sent, WorkerError> {
        let ns = &self.ns;
        ns.check()?;
        let args = args.into();
        let (packet, attachments) = frame::event(&ns.name, event, &args)?;
        let delivery = pb::Envelope {
            body: Some(pb::envelope::Body::Delivery(pb::Delivery {
                origin: ns.worker.origin().to_owned(),
                ns: ns.name.clone(),
                target: Some(self.target.clone()),
                packet,
                attachments,
                volatile: self.volatile,
                ack: None,
                uncompressed: !self.compress,
            })),
        };
        let parts = ns.worker.parts(Bytes::from(delivery.encode_to_vec()))?;
        let subjects = ns.worker.subjects();
        let one_room = match (
            self.target.rooms.as_slice(),
            self.target.socket_ids.is_empty(),
        ) {
            ([room], true) => Some(room.as_str()),
            _ => None,
        };
        if ns.recovery && !self.volatile {
            let subject = match one_room {
                Some(room) => subjects.log_room(&ns.name, room)?,
                None => subjects.log_namespace(&ns.name)?,
            };
            let mut seq = 0;
            for part in parts {
                seq = ns.worker.log_publish(subject.clone(), part).await?;
            }
            return Ok(Sent { log_seq: Some(seq) });
        }
        let subject = match one_room {
            Some(room) => subjects.room(&ns.name, room)?,
            None => subjects.namespace(&ns.name)?,
        };
        for part in parts {
            ns.worker.bus().publish(subject.clone(), part).await?;
        }
        Ok(Sent { log_seq: None })
    }

    /// socket.io's `socketsJoin`: the selected sockets join `rooms`. A command on
    /// `{p}.cmd.ns.{ns}`: needs a NATS user allowed to publish commands (the `emitter` role of
    /// `deploy/nats/`; the shipped `worker` role may not).
    pub async fn sockets_join(&self, rooms: &[&str]) -> Result<(), WorkerError> {
        self.command(pb::command::Action::Join(room_list(rooms)))
            .await
    }

    /// socket.io's `socketsLeave`: the selected sockets leave `rooms`. Needs the command
    /// permission, as [`Broadcast::sockets_join`].
    pub async fn sockets_leave(&self, rooms: &[&str]) -> Result<(), WorkerError> {
        self.command(pb::command::Action::Leave(room_list(rooms)))
            .await
    }

    /// socket.io's `disconnectSockets(close)`: the selected sockets are disconnected from the
    /// namespace, or with `close` their whole connection is closed. With a non-empty `reason`
    /// they first receive the event `kicked` with `{"reason": reason}`. Needs the command
    /// permission, as [`Broadcast::sockets_join`].
    pub async fn disconnect_sockets(&self, close: bool, reason: &str) -> Result<(), WorkerError> {
        self.command(pb::command::Action::Disconnect(pb::Kick {
            close_connection: close,
            reason: reason.to_owned(),
        }))
        .await
    }

    async fn command(&self, action: pb::command::Action) -> Result<(), WorkerError> {
        let ns = &self.ns;
        ns.check()?;
        let cmd = pb::Envelope {
            body: Some(pb::envelope::Body::Command(pb::Command {
                origin: ns.worker.origin().to_owned(),
                ns: ns.name.clone(),
                target: Some(self.target.clone()),
                action: Some(action),
            })),
        };
        let subject = ns.worker.subjects().command_namespace(&ns.name)?;
        ns.worker
            .bus()
            .publish(subject, Bytes::from(cmd.encode_to_vec()))
            .await
            .map_err(WorkerError::Bus)
    }
}

fn room_list(rooms: &[&str]) -> pb::RoomList {
    pb::RoomList {
        rooms: rooms.iter().map(|r| (*r).to_owned()).collect(),
    }
}

impl Worker {
    /// An envelope as published: itself, or the fragments of it when it is longer than the bus
    /// takes (published in order on one subject, as the gateways split theirs).
    fn parts(&self, payload: Bytes) -> Result<Vec<Bytes>, WorkerError> {
        let max = self.bus().max_payload();
        if payload.len() <= max {
            return Ok(vec![payload]);
        }
        let chunk = max.saturating_sub(FRAGMENT_OVERHEAD).max(1);
        let count = payload.len().div_ceil(chunk);
        // The gateways bound a message by its fragment count times the first one's size.
        if count.saturating_mul(chunk) > MAX_SPLIT_BYTES {
            return Err(switchboard_bus::BusError::TooLarge {
                size: payload.len(),
                max: MAX_SPLIT_BYTES,
            }
            .into());
        }
        let (origin, id) = self.next_split();
        let count = u32::try_from(count).expect("at most MAX_SPLIT_BYTES fragments");
        let parts = payload.chunks(chunk).zip(0..).map(|(data, index)| {
            let fragment = pb::Envelope {
                body: Some(pb::envelope::Body::Fragment(pb::Fragment {
                    origin: origin.clone(),
                    id,
                    index,
                    count,
                    data: payload.slice_ref(data),
                })),
            };
            Bytes::from(fragment.encode_to_vec())
        });
        Ok(parts.collect())
    }

    /// Publishes into the log and waits for the store's ack, retrying with one message id.
    async fn log_publish(&self, subject: String, payload: Bytes) -> Result<u64, WorkerError> {
        let id = self.next_log_id();
        let mut attempt = 1;
        loop {
            let stored = match self
                .bus()
                .log_publish(subject.clone(), payload.clone(), id.clone())
                .await
            {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match stored {
                Ok(seq) => return Ok(seq),
                Err(e @ switchboard_bus::BusError::TooLarge { .. }) => return Err(e.into()),
                Err(e) if attempt >= LOG_PUBLISH_TRIES => return Err(e.into()),
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "recovery log publish retried");
                    attempt += 1;
                }
            }
        }
    }
}
