//! The broker's gRPC API (`proto/proto/admin.proto`): cluster-wide Socket.IO queries and admin
//! actions for operators and backend services.
//!
//! Queries are answered from the broker's [`Directory`](crate::state::Directory), under its lock,
//! without asking the gateways: no scatter/gather, no timeout to wait out. Actions resolve their
//! selector in the directory too, then publish one message per owning gateway on its node subject,
//! naming the sockets (in chunks of [`IDS_PER_MESSAGE`]), so each targeted socket gets an action
//! exactly once and the returned counts are the directory's. Acks are collected on a fresh inbox:
//! every gateway answers each recipient's ack (or its timeout) with an `AckReply`.
//!
//! Every Admin call needs `authorization: Bearer <key>` with a key of the call's scope
//! ([`crate::keys`]: `UNAUTHENTICATED` without a known key, `PERMISSION_DENIED` without the
//! scope), reflection any key; the standard health
//! service (`grpc.health.v1.Health`) is open so that probes need no secret. Requests are
//! validated (`INVALID_ARGUMENT` says what is wrong); a call still unanswered when its deadline
//! (`grpc-timeout`) passes ends in `DEADLINE_EXCEEDED` ([`Deadline`]).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use parking_lot::{Mutex, MutexGuard};
use serde_json::Value;
use switchboard_bus::Bus;
use switchboard_proto::Message as _;
use switchboard_proto::RESERVED_EVENTS;
use switchboard_proto::admin as pb;
use switchboard_proto::admin::admin_server::{Admin, AdminServer};
use switchboard_proto::bus::{self as bus, command, envelope};
use switchboard_proto::subject::Subjects;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::keys::{Api, ApiKeys};
use crate::service::Broker;
use crate::state::{Directory, Reason, Selector, Socket};

/// Socket ids per published action message (keeps a message far below NATS' 1 MiB default).
pub const IDS_PER_MESSAGE: usize = 1000;
/// Page size when the request gives none.
pub const DEFAULT_PAGE_SIZE: usize = 1000;
/// Largest page a request may ask for.
pub const MAX_PAGE_SIZE: usize = 10_000;
/// Longest ack timeout a request may ask for.
pub const MAX_ACK_TIMEOUT_MS: u32 = 600_000;
/// How long after the ack timeout the broker still waits for the gateways' timeout markers.
const ACK_GRACE: Duration = Duration::from_millis(500);
/// Sockets per directory lock while streaming.
const STREAM_CHUNK: usize = 500;

/// The Admin service over one broker's directory and its bus.
#[derive(Clone)]
pub struct AdminService {
    directory: Arc<Mutex<Directory>>,
    leader: tokio::sync::watch::Receiver<bool>,
    /// The broker's `presence_batches`, for the announcements of sessions ended here.
    presence_batches: bool,
    bus: Bus,
    subjects: Subjects,
    origin: String,
}

impl AdminService {
    /// The service for `broker`, publishing its actions on `bus` under `subjects`.
    pub fn new(broker: &Broker, bus: Bus, subjects: Subjects) -> Self {
        Self {
            directory: broker.directory(),
            leader: broker.leadership(),
            presence_batches: broker.presence_batches(),
            bus,
            subjects,
            origin: broker.id().to_owned(),
        }
    }

    fn dir(&self) -> MutexGuard<'_, Directory> {
        self.directory.lock()
    }

    /// A FetchSockets page, handed to `f` as the sockets, the next page token and the number of
    /// sockets matched in all, under the directory's lock.
    fn fetch_page<T>(
        &self,
        req: pb::FetchSocketsRequest,
        f: impl FnOnce(&[Socket<'_>], String, u64) -> T,
    ) -> Result<T, Status> {
        let sel = selector(req.selector)?;
        let limit = page_size(req.page_size)?;
        let after = page_token(&req.page_token)?;
        let dir = self.dir();
        let page = dir.select(&sel, after, limit);
        Ok(f(
            &page.items,
            next_token(page.next),
            dir.count(&sel) as u64,
        ))
    }

    /// The ids and nodes of the sockets `sel` matches, in id order.
    fn resolve(&self, sel: &Selector) -> Vec<(String, String)> {
        self.dir()
            .select(sel, None, 0)
            .items
            .into_iter()
            .map(|r| (r.id().to_owned(), r.node().to_owned()))
            .collect()
    }

    /// Publishes `make(target)` to each owning node, naming its sockets: on the node's command
    /// subject for a command, on its delivery subject for an emit (gateways refuse either on the
    /// other's subject).
    async fn publish_to_owners(
        &self,
        ns: &str,
        sockets: &[(String, String)],
        make: impl Fn(bus::Target) -> envelope::Body,
    ) -> Result<(), Status> {
        let mut by_node: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (id, node) in sockets {
            by_node.entry(node).or_default().push(id.clone());
        }
        // Every message is built and measured first: one over the bus's max_payload refuses
        // the whole action, so no gateway gets part of it.
        let max = self.bus.max_payload();
        let mut out = Vec::new();
        for (node, ids) in by_node {
            for chunk in ids.chunks(IDS_PER_MESSAGE) {
                let target = bus::Target {
                    socket_ids: chunk.to_vec(),
                    ..Default::default()
                };
                let body = make(target);
                let subject = match body {
                    envelope::Body::Command(_) => self.subjects.command_node(node),
                    envelope::Body::Delivery(_) | envelope::Body::Fragment(_) => {
                        self.subjects.node(node)
                    }
                }
                .map_err(|e| Status::internal(format!("node {node}: {e}")))?;
                let env = bus::Envelope { body: Some(body) };
                let payload = Bytes::from(env.encode_to_vec());
                if payload.len() > max {
                    return Err(Status::invalid_argument(format!(
                        "message too large: {} bytes, the bus takes at most {max}",
                        payload.len()
                    )));
                }
                out.push((subject, payload));
            }
        }
        for (subject, payload) in out {
            self.bus
                .publish(subject, payload)
                .await
                .map_err(|e| Status::unavailable(format!("cluster bus: {e}")))?;
        }
        tracing::debug!(ns, sockets = sockets.len(), "admin action published");
        Ok(())
    }

    async fn command(
        &self,
        ns: &str,
        sockets: &[(String, String)],
        action: command::Action,
    ) -> Result<(), Status> {
        let origin = self.origin.clone();
        self.publish_to_owners(ns, sockets, |target| {
            envelope::Body::Command(bus::Command {
                origin: origin.clone(),
                ns: ns.to_owned(),
                target: Some(target),
                action: Some(action.clone()),
            })
        })
        .await
    }

    /// Whether any of `sockets` has connection state recovery: their namespace's emits go
    /// through the log (the setting is per namespace, the same on every gateway).
    fn logged(&self, sockets: &[(String, String)]) -> bool {
        let dir = self.dir();
        sockets
            .iter()
            .any(|(id, _)| dir.socket(id).is_some_and(|r| r.recovery().is_some()))
    }

    /// Publishes an emit into the recovery log (docs/recovery.md) and waits until it is stored.
    async fn log_emit(&self, ns: &str, target: bus::Target, emit: &Emit) -> Result<(), Status> {
        let subject = match (target.rooms.as_slice(), target.socket_ids.as_slice()) {
            ([room], []) => self.subjects.log_room(ns, room),
            ([], [id]) => self.subjects.log_socket(ns, id),
            _ => self.subjects.log_namespace(ns),
        }
        .map_err(|e| invalid(format!("selector: {e}")))?;
        let env = bus::Envelope {
            body: Some(envelope::Body::Delivery(bus::Delivery {
                origin: self.origin.clone(),
                ns: ns.to_owned(),
                target: Some(target),
                packet: emit.packet(ns),
                attachments: emit.attachments.clone(),
                volatile: false,
                ack: None,
                uncompressed: emit.uncompressed,
            })),
        };
        let payload = Bytes::from(env.encode_to_vec());
        let max = self.bus.max_payload();
        if payload.len() > max {
            return Err(invalid(format!(
                "message too large: {} bytes, the bus takes at most {max}",
                payload.len()
            )));
        }
        let unavailable =
            |e: switchboard_bus::BusError| Status::unavailable(format!("the log: {e}"));
        let ack = self
            .bus
            .log_publish(subject, payload, String::new())
            .await
            .map_err(unavailable)?;
        ack.await.map_err(unavailable)?;
        tracing::debug!(ns, "admin emit logged");
        Ok(())
    }

    /// Emits to `sockets`; with a timeout, collects one ack per socket (in id order).
    async fn emit(
        &self,
        ns: &str,
        sockets: &[(String, String)],
        emit: &Emit,
    ) -> Result<Vec<pb::SocketAck>, Status> {
        let bus_error =
            |e: switchboard_bus::BusError| Status::unavailable(format!("cluster bus: {e}"));
        // Without acks the packet is encoded once here; with acks each gateway encodes it per
        // recipient (each with its own ack id) and answers on a fresh inbox, which must be
        // subscribed at the server before any gateway gets the emit.
        if sockets.is_empty() {
            return Ok(Vec::new()); // nobody to emit to, no acks to wait for
        }
        let (packet, ack, replies) = match emit.ack_timeout {
            None => (emit.packet(ns), None, None),
            Some(timeout) => {
                let inbox = self.bus.new_inbox();
                let replies = self.bus.subscribe(inbox.clone()).await.map_err(bus_error)?;
                self.bus
                    .barrier(Duration::from_secs(5))
                    .await
                    .map_err(bus_error)?;
                let ack = bus::AckRequest {
                    reply: inbox,
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                    event: emit.event.clone(),
                    args_json: emit.args_json.clone(),
                };
                (Bytes::new(), Some(ack), Some((replies, timeout)))
            }
        };
        let origin = self.origin.clone();
        self.publish_to_owners(ns, sockets, |target| {
            envelope::Body::Delivery(bus::Delivery {
                origin: origin.clone(),
                ns: ns.to_owned(),
                target: Some(target),
                packet: packet.clone(),
                attachments: emit.attachments.clone(),
                volatile: emit.volatile,
                ack: ack.clone(),
                uncompressed: emit.uncompressed,
            })
        })
        .await?;
        let Some((mut replies, timeout)) = replies else {
            return Ok(Vec::new());
        };
        let mut got: HashMap<String, pb::SocketAck> = HashMap::with_capacity(sockets.len());
        let wanted: std::collections::HashSet<&str> =
            sockets.iter().map(|(id, _)| id.as_str()).collect();
        let deadline = tokio::time::Instant::now() + timeout + ACK_GRACE;
        while got.len() < wanted.len() {
            let Ok(Some(msg)) = tokio::time::timeout_at(deadline, replies.next()).await else {
                break;
            };
            let Ok(reply) = bus::AckReply::decode(msg.payload) else {
                continue;
            };
            if wanted.contains(reply.socket_id.as_str()) {
                got.insert(
                    reply.socket_id.clone(),
                    pb::SocketAck {
                        socket_id: reply.socket_id,
                        args_json: reply.args_json,
                        attachments: reply.attachments,
                        timed_out: reply.timed_out,
                    },
                );
            }
        }
        Ok(sockets
            .iter()
            .map(|(id, _)| {
                got.remove(id).unwrap_or_else(|| pb::SocketAck {
                    socket_id: id.clone(),
                    timed_out: true,
                    ..Default::default()
                })
            })
            .collect())
    }
}

/// A validated emit.
struct Emit {
    event: String,
    args_json: String,
    args: Vec<Value>,
    attachments: Vec<Bytes>,
    volatile: bool,
    ack_timeout: Option<Duration>,
    /// Never compressed on its way to the clients (`BroadcastRequest.uncompressed`).
    uncompressed: bool,
}

impl Emit {
    /// Whether the emit goes into a recovery log: neither volatile nor asking for acks (as a
    /// gateway's emits).
    fn loggable(&self) -> bool {
        !self.volatile && self.ack_timeout.is_none()
    }

    fn parse(
        event: String,
        args_json: &str,
        attachments: Vec<Bytes>,
        volatile: bool,
        ack_timeout_ms: u32,
    ) -> Result<Self, Status> {
        if event.is_empty() {
            return Err(invalid("event: required"));
        }
        if RESERVED_EVENTS.contains(&event.as_str()) {
            return Err(invalid(format!(
                "event: {event:?} is reserved by Socket.IO"
            )));
        }
        let args = match args_json.trim() {
            "" => Vec::new(),
            text => match serde_json::from_str::<Value>(text) {
                Ok(Value::Array(args)) => args,
                Ok(_) => return Err(invalid("args_json: must be a JSON array")),
                Err(e) => return Err(invalid(format!("args_json: invalid JSON: {e}"))),
            },
        };
        let mut used = vec![false; attachments.len()];
        check_placeholders(&args, &mut used)?;
        if let Some(n) = used.iter().position(|u| !u) {
            return Err(invalid(format!(
                "attachments: attachment {n} is not referenced by a placeholder in args_json"
            )));
        }
        if ack_timeout_ms > MAX_ACK_TIMEOUT_MS {
            return Err(invalid(format!(
                "ack_timeout_ms: at most {MAX_ACK_TIMEOUT_MS}"
            )));
        }
        Ok(Self {
            args_json: Value::Array(args.clone()).to_string(),
            event,
            args,
            attachments,
            volatile,
            ack_timeout: (ack_timeout_ms > 0)
                .then(|| Duration::from_millis(u64::from(ack_timeout_ms))),
            uncompressed: false,
        })
    }

    /// The Engine.IO text frame of the EVENT (or BINARY_EVENT) packet, as clients receive it.
    fn packet(&self, ns: &str) -> Bytes {
        let mut all = Vec::with_capacity(self.args.len() + 1);
        all.push(Value::String(self.event.clone()));
        all.extend(self.args.iter().cloned());
        let body = Value::Array(all).to_string();
        let head = if self.attachments.is_empty() {
            "42".to_owned()
        } else {
            format!("45{}-", self.attachments.len())
        };
        let nsp = if ns == "/" {
            String::new()
        } else {
            format!("{ns},")
        };
        Bytes::from(format!("{head}{nsp}{body}"))
    }
}

/// Every `{"_placeholder":true,"num":N}` must name an attachment.
fn check_placeholders(values: &[Value], used: &mut [bool]) -> Result<(), Status> {
    for v in values {
        match v {
            Value::Object(map) if map.get("_placeholder") == Some(&Value::Bool(true)) => {
                let n = map
                    .get("num")
                    .and_then(Value::as_u64)
                    .and_then(|n| usize::try_from(n).ok());
                match n {
                    Some(n) if n < used.len() => used[n] = true,
                    _ => {
                        return Err(invalid(format!(
                            "args_json: placeholder {} names no attachment (there are {})",
                            Value::Object(map.clone()),
                            used.len()
                        )));
                    }
                }
            }
            Value::Object(map) => {
                let inner: Vec<Value> = map.values().cloned().collect();
                check_placeholders(&inner, used)?;
            }
            Value::Array(items) => check_placeholders(items, used)?,
            _ => {}
        }
    }
    Ok(())
}

fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}

fn check_ns(field: &str, ns: &str) -> Result<(), Status> {
    if ns.is_empty() {
        return Err(invalid(format!("{field}: required (e.g. \"/chat\")")));
    }
    if !ns.starts_with('/') {
        return Err(invalid(format!(
            "{field}: must start with '/' (got {ns:?})"
        )));
    }
    Ok(())
}

fn selector(sel: Option<pb::Selector>) -> Result<Selector, Status> {
    let sel = sel.ok_or_else(|| invalid("selector: required"))?;
    check_ns("selector.ns", &sel.ns)?;
    Ok(Selector {
        ns: sel.ns,
        rooms: sel.rooms,
        except_rooms: sel.except_rooms,
        socket_ids: sel.socket_ids,
        user_ids: sel.user_ids,
    })
}

fn page_size(n: u32) -> Result<usize, Status> {
    match usize::try_from(n).unwrap_or(usize::MAX) {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n <= MAX_PAGE_SIZE => Ok(n),
        _ => Err(invalid(format!("page_size: at most {MAX_PAGE_SIZE}"))),
    }
}

/// Page tokens are the last key of the previous page, marked so a stray string is refused.
const TOKEN_MARK: &str = "after:";

fn page_token(token: &str) -> Result<Option<&str>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .strip_prefix(TOKEN_MARK)
        .map(Some)
        .ok_or_else(|| invalid("page_token: not a token from a previous response"))
}

fn next_token(next: Option<String>) -> String {
    next.map(|k| format!("{TOKEN_MARK}{k}")).unwrap_or_default()
}

/// A room history page's default and largest sizes.
const DEFAULT_HISTORY_PAGE: usize = 100;
const MAX_HISTORY_PAGE: usize = 1000;

/// A logged emit to a room as a history message, its `offset` left to the caller (who knows the
/// stream's tag); `None` for what is not a plain event of the namespace (a fragment, a binary
/// event, something malformed).
fn history_message(ns: &str, entry: switchboard_bus::LogEntry) -> Option<pb::HistoryMessage> {
    let Ok(bus::Envelope {
        body: Some(envelope::Body::Delivery(d)),
    }) = bus::Envelope::decode(entry.payload)
    else {
        return None;
    };
    if d.ns != ns || d.ack.is_some() || !d.attachments.is_empty() {
        return None;
    }
    let (event, args) = switchboard_codec::socketio::plain_event(&d.packet, ns)?;
    let event = match event {
        Value::String(s) => s,
        other => other.to_string(),
    };
    Some(pb::HistoryMessage {
        seq: entry.seq,
        offset: String::new(),
        time_ms: entry.time_ms,
        event,
        args_json: Value::Array(args).to_string(),
    })
}

/// The wire summary of a socket, copied straight from the directory's record (public for
/// `examples/directory_bench.rs`, which times FetchSockets pages with it).
pub fn summary(r: &Socket<'_>) -> pb::SocketSummary {
    pb::SocketSummary {
        id: r.id().to_owned(),
        ns: r.ns().to_owned(),
        node: r.node().to_owned(),
        user: r.user().map(str::to_owned),
        rooms: r.rooms().map(str::to_owned).collect(),
        handshake: Some(pb::Handshake {
            address: r.address().to_owned(),
            headers: r
                .headers()
                .iter()
                .map(|(name, value)| pb::Header {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            query: r.query().to_owned(),
            claims_json: r.claims_json().to_owned(),
            connected_at_ms: r.connected_at_ms(),
        }),
        data_json: r.data_json().to_owned(),
    }
}

fn ms_ago(then: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(then).as_millis()).unwrap_or(u64::MAX)
}

type SocketStream = BoxStream<'static, Result<pb::SocketSummary, Status>>;

#[tonic::async_trait]
impl Admin for AdminService {
    async fn fetch_sockets(
        &self,
        request: Request<pb::FetchSocketsRequest>,
    ) -> Result<Response<pb::FetchSocketsResponse>, Status> {
        self.fetch_page(request.into_inner(), |sockets, next_page_token, total| {
            pb::FetchSocketsResponse {
                sockets: sockets.iter().map(summary).collect(),
                next_page_token,
                total,
            }
        })
        .map(Response::new)
    }

    type StreamSocketsStream = SocketStream;

    async fn stream_sockets(
        &self,
        request: Request<pb::Selector>,
    ) -> Result<Response<Self::StreamSocketsStream>, Status> {
        let sel = selector(Some(request.into_inner()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_CHUNK);
        let svc = self.clone();
        tokio::spawn(async move {
            let mut after: Option<String> = None;
            loop {
                let (items, next) = {
                    let dir = svc.dir();
                    let page = dir.select(&sel, after.as_deref(), STREAM_CHUNK);
                    let items: Vec<_> = page.items.iter().map(summary).collect();
                    (items, page.next)
                };
                for item in items {
                    if tx.send(Ok(item)).await.is_err() {
                        return; // the client went away
                    }
                }
                match next {
                    Some(n) => after = Some(n),
                    None => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn rooms(
        &self,
        request: Request<pb::RoomsRequest>,
    ) -> Result<Response<pb::RoomsResponse>, Status> {
        let req = request.into_inner();
        check_ns("ns", &req.ns)?;
        let limit = page_size(req.page_size)?;
        let after = page_token(&req.page_token)?;
        let page = self.dir().rooms(&req.ns, &req.prefix, after, limit);
        Ok(Response::new(pb::RoomsResponse {
            rooms: page
                .items
                .into_iter()
                .map(|r| pb::RoomInfo {
                    name: r.name,
                    members: r.members as u64,
                    users: r.users as u64,
                })
                .collect(),
            next_page_token: next_token(page.next),
        }))
    }

    async fn room_members(
        &self,
        request: Request<pb::RoomMembersRequest>,
    ) -> Result<Response<pb::RoomMembersResponse>, Status> {
        let req = request.into_inner();
        check_ns("ns", &req.ns)?;
        if req.room.is_empty() {
            return Err(invalid("room: required"));
        }
        let limit = page_size(req.page_size)?;
        let after = page_token(&req.page_token)?;
        let sel = Selector {
            ns: req.ns,
            rooms: vec![req.room],
            ..Selector::default()
        };
        let dir = self.dir();
        let page = dir.select(&sel, after, limit);
        Ok(Response::new(pb::RoomMembersResponse {
            members: page.items.iter().map(summary).collect(),
            next_page_token: next_token(page.next),
        }))
    }

    async fn room_history(
        &self,
        request: Request<pb::RoomHistoryRequest>,
    ) -> Result<Response<pb::RoomHistoryResponse>, Status> {
        let req = request.into_inner();
        check_ns("ns", &req.ns)?;
        if req.room.is_empty() {
            return Err(invalid("room: required"));
        }
        let limit = match usize::try_from(req.page_size).unwrap_or(usize::MAX) {
            0 => DEFAULT_HISTORY_PAGE,
            n if n <= MAX_HISTORY_PAGE => n,
            _ => return Err(invalid(format!("page_size: at most {MAX_HISTORY_PAGE}"))),
        };
        let before = match page_token(&req.page_token)? {
            None => None,
            Some(t) => Some(
                t.parse::<u64>()
                    .map_err(|_| invalid("page_token: not a token from a previous response"))?,
            ),
        };
        let filter = self
            .subjects
            .log_room(&req.ns, &req.room)
            .map_err(|e| invalid(format!("room: {e}")))?;
        let stream = self.subjects.log_stream();
        let until = before.map_or(u64::MAX, |b| b.saturating_sub(1));
        let found = self
            .bus
            .log_last(&stream, filter, until, limit, |entry| {
                history_message(&req.ns, entry)
            })
            .await;
        let mut tail = match found {
            Ok(tail) => tail,
            // No namespace has recovery: no room has a history.
            Err(switchboard_bus::BusError::NoLog) => {
                return Ok(Response::new(pb::RoomHistoryResponse::default()));
            }
            Err(e) => return Err(Status::unavailable(format!("the log: {e}"))),
        };
        for m in &mut tail.items {
            m.offset = switchboard_proto::offset::format(tail.info.tag, m.seq);
        }
        let next = tail
            .older
            .then(|| tail.items.first().map(|m| m.seq.to_string()))
            .flatten();
        Ok(Response::new(pb::RoomHistoryResponse {
            messages: tail.items,
            next_page_token: next_token(next),
        }))
    }

    async fn presence(
        &self,
        request: Request<pb::PresenceRequest>,
    ) -> Result<Response<pb::PresenceResponse>, Status> {
        let req = request.into_inner();
        check_ns("ns", &req.ns)?;
        if req.room.is_empty() {
            return Err(invalid("room: required"));
        }
        let users = self
            .dir()
            .presence(&req.ns, &req.room)
            .into_iter()
            .map(|(user, n)| pb::UserPresence {
                user: user.to_owned(),
                sockets: n as u64,
            })
            .collect();
        Ok(Response::new(pb::PresenceResponse { users }))
    }

    async fn user_sockets(
        &self,
        request: Request<pb::UserSocketsRequest>,
    ) -> Result<Response<pb::UserSocketsResponse>, Status> {
        let req = request.into_inner();
        if req.user.is_empty() {
            return Err(invalid("user: required"));
        }
        if !req.ns.is_empty() {
            check_ns("ns", &req.ns)?;
        }
        let ns = (!req.ns.is_empty()).then_some(req.ns.as_str());
        let sockets = self
            .dir()
            .user_sockets(ns, &req.user)
            .iter()
            .map(summary)
            .collect();
        Ok(Response::new(pb::UserSocketsResponse { sockets }))
    }

    async fn stats(
        &self,
        _request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let dir = self.dir();
        let stats = dir.stats();
        let now = Instant::now();
        let mut namespaces = Vec::with_capacity(stats.sockets_per_ns.len());
        for (ns, sockets) in &stats.sockets_per_ns {
            let (rooms, users) = dir.namespace_counts(ns);
            namespaces.push(pb::NamespaceStats {
                ns: ns.clone(),
                sockets: *sockets as u64,
                rooms: rooms as u64,
                users: users as u64,
            });
        }
        Ok(Response::new(pb::StatsResponse {
            nodes: stats
                .nodes
                .iter()
                .map(|n| pb::NodeStats {
                    id: n.id.clone(),
                    epoch: n.epoch,
                    connections: n.connections,
                    sockets: n.sockets as u64,
                    address: n.address.clone(),
                    last_heartbeat_ms_ago: ms_ago(n.last_heartbeat.unwrap_or(n.last_seen), now),
                })
                .collect(),
            namespaces,
            sockets: stats.sockets as u64,
            rooms: stats.rooms as u64,
        }))
    }

    async fn broadcast(
        &self,
        request: Request<pb::BroadcastRequest>,
    ) -> Result<Response<pb::BroadcastResponse>, Status> {
        let req = request.into_inner();
        let sel = selector(req.selector)?;
        let emit = Emit {
            uncompressed: req.uncompressed,
            ..Emit::parse(
                req.event,
                &req.args_json,
                req.attachments,
                req.volatile,
                req.ack_timeout_ms,
            )?
        };
        let sockets = self.resolve(&sel);
        // In a namespace with connection state recovery, an emit without acks goes into the log
        // with the selector as its target, as a gateway's broadcast does: every gateway delivers
        // it in the log's order with its offset, and a session kept meanwhile gets it when it
        // recovers. (A selector by user, or by rooms and ids at once — an intersection, where a
        // target is a union — goes to the connected sockets it resolves to, as before.)
        let as_target =
            sel.user_ids.is_empty() && (sel.rooms.is_empty() || sel.socket_ids.is_empty());
        // Kept sessions have recovery by definition: one the selector matches makes the emit a
        // logged one even when no connected socket does.
        let logged = self.logged(&sockets) || !self.dir().kept_matching(&sel).is_empty();
        if as_target && emit.loggable() && logged {
            let target = bus::Target {
                rooms: sel.rooms.clone(),
                except_rooms: sel.except_rooms.clone(),
                socket_ids: sel.socket_ids.clone(),
                except_sockets: Vec::new(),
            };
            self.log_emit(&sel.ns, target, &emit).await?;
            return Ok(Response::new(pb::BroadcastResponse {
                targeted: sockets.len() as u64,
                acks: Vec::new(),
            }));
        }
        let acks = self.emit(&sel.ns, &sockets, &emit).await?;
        Ok(Response::new(pb::BroadcastResponse {
            targeted: sockets.len() as u64,
            acks,
        }))
    }

    async fn emit_to_socket(
        &self,
        request: Request<pb::EmitToSocketRequest>,
    ) -> Result<Response<pb::EmitToSocketResponse>, Status> {
        let req = request.into_inner();
        check_ns("ns", &req.ns)?;
        if req.socket_id.is_empty() {
            return Err(invalid("socket_id: required"));
        }
        let emit = Emit::parse(
            req.event,
            &req.args_json,
            req.attachments,
            false,
            req.ack_timeout_ms,
        )?;
        let (node, logged) = {
            let dir = self.dir();
            let record = dir.socket(&req.socket_id).filter(|r| r.ns() == req.ns);
            // A kept session has no gateway to deliver to, but its recovery will replay what
            // the log holds for it.
            let logged = record.is_some_and(|r| r.recovery().is_some());
            let node = record
                .filter(|r| r.is_connected())
                .map(|r| r.node().to_owned());
            (node, logged)
        };
        if logged && emit.loggable() {
            let target = bus::Target {
                socket_ids: vec![req.socket_id.clone()],
                ..Default::default()
            };
            self.log_emit(&req.ns, target, &emit).await?;
            return Ok(Response::new(pb::EmitToSocketResponse {
                found: true,
                ack: None,
            }));
        }
        let Some(node) = node else {
            return Ok(Response::new(pb::EmitToSocketResponse {
                found: false,
                ack: None,
            }));
        };
        let sockets = [(req.socket_id, node)];
        let ack = self.emit(&req.ns, &sockets, &emit).await?.pop();
        Ok(Response::new(pb::EmitToSocketResponse { found: true, ack }))
    }

    async fn disconnect(
        &self,
        request: Request<pb::DisconnectRequest>,
    ) -> Result<Response<pb::DisconnectResponse>, Status> {
        let req = request.into_inner();
        let sel = selector(req.selector)?;
        let sockets = self.resolve(&sel);
        let kick = command::Action::Disconnect(bus::Kick {
            close_connection: req.close_connection,
            reason: req.reason,
        });
        self.command(&sel.ns, &sockets, kick).await?;
        // Kept sessions have no gateway to kick: they end here, announced as a server kick.
        let (ended, changes) = {
            let mut dir = self.dir();
            let reason = Reason::Disconnect(KICKED_SESSION_REASON.to_owned());
            let ids = dir.kept_matching(&sel);
            let changes: Vec<_> = ids
                .iter()
                .filter_map(|id| dir.end_session(id, &reason))
                .flatten()
                .collect();
            (ids.len(), changes)
        };
        if *self.leader.borrow() {
            crate::service::announce(&self.bus, &self.subjects, &changes, self.presence_batches)
                .await;
        }
        Ok(Response::new(pb::DisconnectResponse {
            disconnected: (sockets.len() + ended) as u64,
        }))
    }

    async fn sockets_join(
        &self,
        request: Request<pb::RoomsChangeRequest>,
    ) -> Result<Response<pb::RoomsChangeResponse>, Status> {
        self.rooms_change(request.into_inner(), true).await
    }

    async fn sockets_leave(
        &self,
        request: Request<pb::RoomsChangeRequest>,
    ) -> Result<Response<pb::RoomsChangeResponse>, Status> {
        self.rooms_change(request.into_inner(), false).await
    }

    async fn update_socket_data(
        &self,
        request: Request<pb::UpdateSocketDataRequest>,
    ) -> Result<Response<pb::UpdateSocketDataResponse>, Status> {
        let req = request.into_inner();
        if req.socket_id.is_empty() {
            return Err(invalid("socket_id: required"));
        }
        let data: Value = serde_json::from_str(&req.data_json)
            .map_err(|e| invalid(format!("data_json: invalid JSON: {e}")))?;
        let data_json = data.to_string();
        let owner = {
            let dir = self.dir();
            dir.socket(&req.socket_id)
                .map(|r| (r.ns().to_owned(), r.node().to_owned(), r.is_connected()))
        };
        let Some((ns, node, connected)) = owner else {
            return Ok(Response::new(pb::UpdateSocketDataResponse {
                updated: false,
            }));
        };
        if !connected {
            // A kept session: its `data` changes here and goes back with it at recovery.
            let updated = self.dir().set_data(&req.socket_id, data_json);
            return Ok(Response::new(pb::UpdateSocketDataResponse { updated }));
        }
        // The gateway keeps it too, so its snapshots (and a rebuilt broker) carry it. It is told
        // first: when the publish fails the call fails and the directory is left as it was.
        let action = command::Action::SetData(bus::SetData {
            data_json: data_json.clone(),
        });
        self.command(&ns, &[(req.socket_id.clone(), node)], action)
            .await?;
        // The socket may have gone meanwhile; set_data on a socket that is gone does nothing.
        let updated = self.dir().set_data(&req.socket_id, data_json);
        Ok(Response::new(pb::UpdateSocketDataResponse { updated }))
    }
}

impl AdminService {
    async fn rooms_change(
        &self,
        req: pb::RoomsChangeRequest,
        join: bool,
    ) -> Result<Response<pb::RoomsChangeResponse>, Status> {
        let sel = selector(req.selector)?;
        if req.rooms.is_empty() {
            return Err(invalid("rooms: at least one room"));
        }
        let sockets = self.resolve(&sel);
        let list = bus::RoomList { rooms: req.rooms };
        let action = if join {
            command::Action::Join(list)
        } else {
            command::Action::Leave(list)
        };
        self.command(&sel.ns, &sockets, action).await?;
        Ok(Response::new(pb::RoomsChangeResponse {
            sockets: sockets.len() as u64,
        }))
    }
}

/// The leaving reason of a kept session ended by an admin `Disconnect`.
pub const KICKED_SESSION_REASON: &str = "server namespace disconnect";

/// How the gRPC port is served.
#[derive(Clone)]
pub struct GrpcOptions {
    /// The API keys: every Admin call needs one with the call's scope, reflection any key
    /// ([`crate::keys`]).
    pub keys: ApiKeys,
    /// PEM certificate chain and private key, for TLS.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for GrpcOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcOptions")
            .field("keys", &self.keys)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Default gRPC port.
pub const DEFAULT_GRPC_PORT: u16 = 50051;
/// Shortest admin token accepted (a secret of [`crate::keys`]).
pub const MIN_TOKEN_BYTES: usize = crate::keys::MIN_SECRET_BYTES;

/// Checks that `cert` and `key` (PEM) make a TLS identity the server can use, so that a bad
/// pair stops the process before it serves anything.
pub fn check_identity(cert: &[u8], key: &[u8]) -> Result<(), GrpcError> {
    let identity = tonic::transport::Identity::from_pem(cert, key);
    tonic::transport::Server::builder()
        .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    Ok(())
}

/// Reflection's key check: any configured key may ask for the schema.
#[derive(Clone)]
struct AnyKey(ApiKeys);

impl tonic::service::Interceptor for AnyKey {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let header = req.metadata().get("authorization").map(|v| v.as_bytes());
        self.0.authenticate(Api::Grpc, header)?;
        Ok(req)
    }
}

/// Errors starting the gRPC server.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// The reflection descriptor could not be loaded.
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    /// The TLS certificate or key is unusable, or the server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves the Admin service, health and reflection on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    service: AdminService,
    opts: GrpcOptions,
    shutdown: CancellationToken,
) -> Result<(), GrpcError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<AdminServer<AdminService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| GrpcError::Reflection(e.to_string()))?;
    let mut builder = tonic::transport::Server::builder().layer(Deadline);
    if let Some((cert, key)) = &opts.tls {
        let identity = tonic::transport::Identity::from_pem(cert, key);
        builder =
            builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    let local: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(addr = ?local, tls = opts.tls.is_some(), "gRPC admin API listening");
    builder
        .add_service(health)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            reflection,
            AnyKey(opts.keys.clone()),
        ))
        .add_service(Guarded {
            inner: Routed {
                server: AdminServer::new(service.clone()),
                service,
            },
            keys: opts.keys.clone(),
        })
        .serve_with_incoming_shutdown(
            // No Nagle: small responses must not wait for the peer's delayed ACK (~40 ms).
            tonic::transport::server::TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(Duration::from_secs(60))),
            shutdown.cancelled_owned(),
        )
        .await?;
    Ok(())
}

/// The Admin service's RPC names: the closed set of the `method` label of
/// [`GRPC_CALLS`](crate::metrics::GRPC_CALLS) (anything else is `unknown`).
pub const METHODS: [&str; 14] = [
    "FetchSockets",
    "StreamSockets",
    "Rooms",
    "RoomMembers",
    "RoomHistory",
    "Presence",
    "UserSockets",
    "Stats",
    "Broadcast",
    "EmitToSocket",
    "Disconnect",
    "SocketsJoin",
    "SocketsLeave",
    "UpdateSocketData",
];

/// The `method` label for a request path (`/switchboard.admin.v1.Admin/Stats` → `Stats`).
pub(crate) fn method_label(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or_default();
    METHODS
        .iter()
        .find(|m| **m == name)
        .copied()
        .unwrap_or("unknown")
}

/// The canonical name of a gRPC status code: the `code` label.
pub(crate) fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// One call being measured: counted once, when its status is known (response headers for an
/// error, trailers at the end of the body otherwise) or, if the body is dropped before that,
/// as `CANCELLED`.
struct Call {
    method: &'static str,
    start: Instant,
    /// The call's deadline ([`CallDeadline`]): a call dropped past it ended in
    /// `DEADLINE_EXCEEDED`, not `CANCELLED`.
    deadline: Option<tokio::time::Instant>,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: tonic::Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        use crate::metrics as m;
        metrics::counter!(m::GRPC_CALLS, "method" => self.method, "code" => code_label(code))
            .increment(1);
        metrics::histogram!(m::GRPC_SECONDS, "method" => self.method)
            .record(self.start.elapsed().as_secs_f64());
    }

    /// Finishes the call if `headers` carry its status.
    fn finish_from(&mut self, headers: &tonic::codegen::http::HeaderMap) -> bool {
        match headers.get("grpc-status") {
            Some(v) => {
                self.finish(tonic::Code::from_bytes(v.as_bytes()));
                true
            }
            None => false,
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let passed = self
            .deadline
            .is_some_and(|d| tokio::time::Instant::now() >= d);
        self.finish(if passed {
            tonic::Code::DeadlineExceeded
        } else {
            tonic::Code::Cancelled
        });
    }
}

/// A `grpc-timeout` header's duration: 1 to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`),
/// per gRPC over HTTP/2; `None` for anything else (the call then has no deadline, as in tonic).
fn grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// When a call's deadline passes: set by [`Deadline`] in the request's extensions.
#[derive(Clone, Copy)]
struct CallDeadline(tokio::time::Instant);

/// Ends each call still unanswered when its deadline (`grpc-timeout`) passes with
/// `DEADLINE_EXCEEDED`, as gRPC says; tonic's own timer would answer `CANCELLED` ("Timeout
/// expired").
///
/// Installed with [`Server::layer`](tonic::transport::Server::layer), so it is called from
/// inside tonic's timer service *before* that service starts its timer: this deadline is never
/// later, and since tonic polls the call before its timer, this answer is the one sent.
#[derive(Clone, Copy)]
struct Deadline;

impl<S> tower_layer::Layer<S> for Deadline {
    type Service = WithDeadline<S>;
    fn layer(&self, inner: S) -> WithDeadline<S> {
        WithDeadline(inner)
    }
}

/// A service under [`Deadline`].
#[derive(Clone)]
struct WithDeadline<S>(S);

impl<S, B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for WithDeadline<S>
where
    S: tonic::codegen::Service<tonic::codegen::http::Request<B>, Response = HttpResponse>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<HttpResponse, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut req: tonic::codegen::http::Request<B>) -> Self::Future {
        let timeout = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| grpc_timeout(v.as_bytes()));
        let Some(timeout) = timeout else {
            return Box::pin(self.0.call(req));
        };
        let deadline = tokio::time::Instant::now() + timeout;
        req.extensions_mut().insert(CallDeadline(deadline));
        let response = self.0.call(req);
        Box::pin(async move {
            tokio::select! {
                biased;
                response = response => response,
                () = tokio::time::sleep_until(deadline) => {
                    Ok(Status::deadline_exceeded("the call's deadline passed").into_http())
                }
            }
        })
    }
}

/// Refuses each call whose key (`authorization: Bearer <key>`) lacks the call's scope
/// ([`ApiKeys::authorize`], the method read from the path) before the service sees it, and
/// counts every call by method and status code (see [`GRPC_CALLS`]), refused ones included.
///
/// [`GRPC_CALLS`]: crate::metrics::GRPC_CALLS
#[derive(Clone)]
struct Guarded<S> {
    inner: S,
    keys: ApiKeys,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

type HttpResponse = tonic::codegen::http::Response<tonic::body::Body>;

impl<S, B, R> tonic::codegen::Service<tonic::codegen::http::Request<B>> for Guarded<S>
where
    S: tonic::codegen::Service<
            tonic::codegen::http::Request<B>,
            Response = tonic::codegen::http::Response<R>,
        >,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: hyper::body::Body<Data = Bytes, Error = Status> + Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<HttpResponse, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        let method = method_label(req.uri().path());
        let mut call = Call {
            method,
            start: Instant::now(),
            deadline: req.extensions().get::<CallDeadline>().map(|d| d.0),
            done: false,
        };
        let header = req.headers().get("authorization").map(|v| v.as_bytes());
        match self.keys.authorize(Api::Grpc, method, header) {
            Ok(key) => tracing::debug!(key = key.name(), method, "gRPC call"),
            Err(status) => {
                call.finish(status.code());
                return Box::pin(std::future::ready(Ok(status.into_http())));
            }
        }
        let response = self.inner.call(req);
        Box::pin(async move {
            let (parts, body) = response.await?.into_parts();
            let body = if call.finish_from(&parts.headers) {
                tonic::body::Body::new(body)
            } else {
                tonic::body::Body::new(MeteredBody {
                    inner: Box::pin(body),
                    call,
                })
            };
            Ok(HttpResponse::from_parts(parts, body))
        })
    }
}

/// FetchSockets' gRPC route: the call's path.
const FETCH_SOCKETS_PATH: &str = "/switchboard.admin.v1.Admin/FetchSockets";

/// The Admin service as served over gRPC: FetchSockets answers with a page encoded straight from
/// the directory's views ([`crate::page`]: no copy of each socket's strings into a prost message);
/// every other call, and FetchSockets through the [`Admin`] trait (the HTTP API's JSON), goes
/// to the generated server.
#[derive(Clone)]
struct Routed {
    server: AdminServer<AdminService>,
    service: AdminService,
}

impl tonic::server::NamedService for Routed {
    const NAME: &'static str = <AdminServer<AdminService> as tonic::server::NamedService>::NAME;
}

impl<B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for Routed
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = HttpResponse;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<HttpResponse, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tonic::codegen::Service::<tonic::codegen::http::Request<B>>::poll_ready(
            &mut self.server,
            cx,
        )
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        if req.uri().path() != FETCH_SOCKETS_PATH {
            return self.server.call(req);
        }
        let method = FetchEncoded(self.service.clone());
        Box::pin(async move {
            let codec =
                tonic_prost::ProstCodec::<crate::page::Encoded, pb::FetchSocketsRequest>::default();
            Ok(tonic::server::Grpc::new(codec).unary(method, req).await)
        })
    }
}

/// FetchSockets answered with [`crate::page::fetch_sockets`].
struct FetchEncoded(AdminService);

impl tonic::server::UnaryService<pb::FetchSocketsRequest> for FetchEncoded {
    type Response = crate::page::Encoded;
    type Future = std::future::Ready<Result<Response<crate::page::Encoded>, Status>>;

    fn call(&mut self, request: Request<pb::FetchSocketsRequest>) -> Self::Future {
        std::future::ready(
            self.0
                .fetch_page(request.into_inner(), |sockets, next, total| {
                    crate::page::fetch_sockets(sockets, &next, total)
                })
                .map(Response::new),
        )
    }
}

/// A response body that finishes its [`Call`] with the status in its trailers.
struct MeteredBody<R> {
    inner: Pin<Box<R>>,
    call: Call,
}

impl<R: hyper::body::Body<Data = Bytes, Error = Status>> hyper::body::Body for MeteredBody<R> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.call.finish_from(trailers);
                }
            }
            std::task::Poll::Ready(Some(Err(status))) => this.call.finish(status.code()),
            // The body ended without trailers: no status was sent.
            std::task::Poll::Ready(None) => this.call.finish(tonic::Code::Unknown),
            std::task::Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {

    #[test]
    fn grpc_timeout_headers_are_read_per_the_spec() {
        for (value, want) in [
            (&b"300m"[..], Some(Duration::from_millis(300))),
            (b"99999999S", Some(Duration::from_secs(99_999_999))),
            (b"2H", Some(Duration::from_secs(7200))),
            (b"3M", Some(Duration::from_secs(180))),
            (b"7u", Some(Duration::from_micros(7))),
            (b"0n", Some(Duration::ZERO)),
            (b"123456789S", None),
            (b"m", None),
            (b"", None),
            (b"10x", None),
            (b"-1S", None),
            (b"1 S", None),
        ] {
            assert_eq!(grpc_timeout(value), want, "{value:?}");
        }
    }

    #[test]
    fn metric_labels_come_from_closed_sets() {
        for (path, label) in [
            ("/switchboard.admin.v1.Admin/Stats", "Stats"),
            (
                "/switchboard.admin.v1.Admin/UpdateSocketData",
                "UpdateSocketData",
            ),
            ("/switchboard.admin.v1.Admin/stats", "unknown"),
            (
                "/switchboard.admin.v1.Admin/Anything-a-client-sends",
                "unknown",
            ),
            ("", "unknown"),
        ] {
            assert_eq!(method_label(path), label, "{path}");
        }
        assert_eq!(code_label(tonic::Code::Ok), "OK");
        assert_eq!(code_label(tonic::Code::Unauthenticated), "UNAUTHENTICATED");
        assert_eq!(
            code_label(tonic::Code::from_bytes(b"3")),
            "INVALID_ARGUMENT"
        );
        // A status a peer could send that is not a code: UNKNOWN, not a new label.
        assert_eq!(code_label(tonic::Code::from_bytes(b"99")), "UNKNOWN");
    }
    use super::*;

    fn emit(args: &str, attachments: usize) -> Result<Emit, Status> {
        Emit::parse(
            "news".into(),
            args,
            (0..attachments)
                .map(|i| Bytes::from(vec![i as u8]))
                .collect(),
            false,
            0,
        )
    }

    #[test]
    fn packets_are_what_clients_receive() {
        assert_eq!(
            emit("[1,\"a\"]", 0).unwrap().packet("/chat"),
            "42/chat,[\"news\",1,\"a\"]"
        );
        assert_eq!(emit("", 0).unwrap().packet("/"), "42[\"news\"]");
        let bin = emit(
            r#"[{"_placeholder":true,"num":0},{"x":{"_placeholder":true,"num":1}}]"#,
            2,
        )
        .unwrap();
        assert_eq!(
            bin.packet("/"),
            r#"452-["news",{"_placeholder":true,"num":0},{"x":{"_placeholder":true,"num":1}}]"#
        );
    }

    #[test]
    fn bad_emits_say_what_is_wrong() {
        let msg = |r: Result<Emit, Status>| r.err().map(|s| (s.code(), s.message().to_owned()));
        let cases = [
            (emit("{}", 0), "args_json: must be a JSON array"),
            (emit("[", 0), "args_json: invalid JSON"),
            (
                emit(r#"[{"_placeholder":true,"num":3}]"#, 1),
                "names no attachment",
            ),
            (emit("[]", 1), "attachment 0 is not referenced"),
        ];
        for (got, want) in cases {
            let (code, text) = msg(got).unwrap();
            assert_eq!(code, tonic::Code::InvalidArgument);
            assert!(text.contains(want), "{text} lacks {want}");
        }
        let reserved = Emit::parse("disconnect".into(), "[]", Vec::new(), false, 0);
        assert!(msg(reserved).unwrap().1.contains("reserved"));
        let long = Emit::parse("e".into(), "[]", Vec::new(), false, MAX_ACK_TIMEOUT_MS + 1);
        assert!(msg(long).unwrap().1.contains("ack_timeout_ms"));
    }

    #[test]
    fn selectors_and_pages_are_validated() {
        assert!(selector(None).is_err());
        let s = |ns: &str| pb::Selector {
            ns: ns.into(),
            ..Default::default()
        };
        assert!(
            selector(Some(s("")))
                .unwrap_err()
                .message()
                .contains("required")
        );
        assert!(
            selector(Some(s("chat")))
                .unwrap_err()
                .message()
                .contains("start with '/'")
        );
        assert_eq!(selector(Some(s("/chat"))).unwrap().ns, "/chat");
        assert_eq!(page_size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(10_000).unwrap(), 10_000);
        assert!(page_size(10_001).is_err());
        assert_eq!(page_token("").unwrap(), None);
        assert_eq!(
            page_token(&next_token(Some("gw1.a".into()))).unwrap(),
            Some("gw1.a")
        );
        assert!(page_token("gw1.a").is_err());
        assert_eq!(next_token(None), "");
    }
}
