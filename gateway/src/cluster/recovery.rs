//! Connection state recovery on the cluster side (docs/recovery.md): the log that carries the
//! emits of recovery-enabled namespaces, and the claim and replay that give a returning client
//! its session back.
//!
//! - **One order per socket.** Every non-volatile emit of a recovery-enabled namespace is
//!   published into the log (a JetStream stream in a cluster, an in-process ring standalone),
//!   and every gateway writes such emits to its local sockets only as its follower of the
//!   namespace reads them back, in stream order, with the stream sequence as the offset spliced
//!   in as the last argument. Live delivery and a replay walk the same sequence, so "the packets
//!   after offset *o*" means the same to both.
//! - **The hand-over.** A recovery registers the socket as *pending* with the namespace's
//!   dispatcher and notes the last sequence dispatched (`end`); it replays `(offset, end]` from
//!   the log while the dispatcher buffers the socket's packets above `end`; then, with the
//!   dispatcher held still, the server writes the replay, the CONNECT reply and the buffer and
//!   makes the socket live. Nothing falls between the three, nothing is written twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use switchboard_bus::{LogConfig, LogEntry};
use switchboard_codec::engineio::{Compress, Frame};
use switchboard_proto::Message as _;
use switchboard_proto::bus::{self as pb, envelope, recover_reply::Outcome};

use super::{Cluster, Reassembly, SocketData, delivery_frames, from_pb_target};
use crate::auth::Claims;
use crate::metrics as m;
use crate::sio::{Handover, Restored, Room, Socket, Target};

/// How long a claim may take: the broker may wait up to its takeover timeout (2 s by default)
/// for the old gateway to let go of the socket.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a follower waits before it tries again after the log failed it.
const FOLLOW_RETRY: Duration = Duration::from_secs(1);

/// Connection state recovery of one namespace, as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// How long the broker keeps a disconnected socket's session.
    pub window: Duration,
    /// A recovery that would replay more packets fails (the client gets a fresh session).
    pub max_replay_packets: usize,
    /// The same, in bytes.
    pub max_replay_bytes: usize,
}

/// The log as this gateway uses it: the stream, its incarnation, and one dispatcher per
/// recovery-enabled namespace.
pub(super) struct LogState {
    stream: String,
    /// The stream's tag, in every offset this gateway writes.
    tag: u64,
    namespaces: HashMap<String, Arc<NsLog>>,
}

impl LogState {
    /// Opens the log (creating or updating the stream to `cfg`) for the namespaces of
    /// `recovery`; `None` (and recovery off) if the bus has no log to offer.
    pub(super) async fn open(
        bus: &switchboard_bus::Bus,
        cfg: &LogConfig,
        recovery: &HashMap<String, RecoveryConfig>,
    ) -> Option<Self> {
        if recovery.is_empty() {
            return None;
        }
        let info = match bus.log_ensure(cfg).await {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    stream = %cfg.stream,
                    "the recovery log is unavailable: connection state recovery is off"
                );
                return None;
            }
        };
        tracing::info!(
            stream = %cfg.stream,
            tag = info.tag,
            first = info.first_seq,
            last = info.last_seq,
            "recovery log open"
        );
        let namespaces = recovery
            .iter()
            .map(|(ns, rc)| {
                let log = NsLog {
                    ns: ns.clone(),
                    cfg: *rc,
                    dispatch: Mutex::new(Dispatch {
                        last_seq: info.last_seq,
                        pending: HashMap::new(),
                        fragments: Reassembly::default(),
                    }),
                };
                (ns.clone(), Arc::new(log))
            })
            .collect();
        Some(Self {
            stream: cfg.stream.clone(),
            tag: info.tag,
            namespaces,
        })
    }

    pub(super) fn namespace(&self, ns: &str) -> Option<&Arc<NsLog>> {
        self.namespaces.get(ns)
    }

    pub(super) fn all(&self) -> impl Iterator<Item = &Arc<NsLog>> {
        self.namespaces.values()
    }
}

/// The dispatcher of one namespace's logged emits.
pub(super) struct NsLog {
    ns: String,
    cfg: RecoveryConfig,
    dispatch: Mutex<Dispatch>,
}

struct Dispatch {
    /// The last sequence read from the log (dispatched or skipped).
    last_seq: u64,
    /// Sockets being recovered on this gateway, by id.
    pending: HashMap<Arc<str>, Pending>,
    fragments: Reassembly,
}

/// A socket between its claim and its hand-over: its packets above `after` are kept.
struct Pending {
    after: u64,
    rooms: Vec<Room>,
    buffer: Vec<Vec<Frame>>,
    bytes: usize,
    overflow: bool,
}

/// The offset clients see for sequence `seq` ([`switchboard_proto::offset`]).
pub(super) fn offset_text(tag: u64, seq: u64) -> String {
    switchboard_proto::offset::format(tag, seq)
}

/// The inverse of [`offset_text`].
/// How far apart two tags may be and still name one stream. A tag is the stream's creation
/// time in ms, and the replicas of a new stream on a NATS cluster (2.9) report times a few ms
/// apart (1-13 ms seen), so gateways that read it from different leaders differ by that much;
/// a stream deleted and made again under the same name within a second is what this lets
/// through (and its sequence numbers must still cover the offset).
const TAG_SLACK_MS: u64 = 1_000;

/// Whether an offset's tag names the stream whose tag is `current`.
fn same_stream(tag: u64, current: u64) -> bool {
    tag.abs_diff(current) <= TAG_SLACK_MS
}

pub(super) fn parse_offset(s: &str) -> Option<(u64, u64)> {
    switchboard_proto::offset::parse(s)
}

/// The packet text with `offset` appended as its last argument: `…]` becomes `…,"offset"]`.
/// `None` if the packet does not end its argument array there.
pub(super) fn splice(packet: &Bytes, offset: &str) -> Option<Bytes> {
    let body = packet.strip_suffix(b"]")?;
    let mut out = BytesMut::with_capacity(packet.len() + offset.len() + 3);
    out.extend_from_slice(body);
    out.extend_from_slice(b",\"");
    out.extend_from_slice(offset.as_bytes());
    out.extend_from_slice(b"\"]");
    Some(out.freeze())
}

/// Whether `target` selects the socket `id` that is in `rooms` (what the server's own
/// selection does for a live socket, for one that is not live yet).
pub(super) fn includes(target: &Target, id: &str, rooms: &[Room]) -> bool {
    let in_any = |list: &[Room]| list.iter().any(|r| rooms.contains(r) || **r == *id);
    let chosen =
        target.is_everyone() || target.sockets.iter().any(|s| **s == *id) || in_any(&target.rooms);
    chosen && !target.except_sockets.iter().any(|s| **s == *id) && !in_any(&target.except_rooms)
}

/// SHA-256 of a pid: all of it that leaves the gateway.
pub(super) fn pid_hash(pid: &str) -> Bytes {
    Bytes::copy_from_slice(&Sha256::digest(pid.as_bytes()))
}

/// One delivery read from the log, whole (fragments gathered), or `None` (a fragment that does
/// not complete one yet, or something malformed, counted).
fn delivery_of(entry: LogEntry, fragments: &mut Reassembly) -> Option<pb::Delivery> {
    let body = match pb::Envelope::decode(entry.payload) {
        Ok(pb::Envelope { body: Some(b) }) => b,
        _ => {
            ::metrics::counter!(m::BUS_MALFORMED).increment(1);
            return None;
        }
    };
    let body = match body {
        envelope::Body::Fragment(f) => {
            let whole = fragments.add(f)?;
            match pb::Envelope::decode(whole.as_slice()) {
                Ok(pb::Envelope { body: Some(b) }) => b,
                _ => {
                    ::metrics::counter!(m::BUS_MALFORMED).increment(1);
                    return None;
                }
            }
        }
        other => other,
    };
    match body {
        envelope::Body::Delivery(d) if d.ack.is_none() => Some(d),
        _ => {
            ::metrics::counter!(m::BUS_MALFORMED).increment(1);
            None
        }
    }
}

/// The frames a logged delivery writes, with its offset spliced in, and its target.
fn frames_of(ns: &str, d: pb::Delivery, offset: &str) -> Option<(Target, Vec<Frame>)> {
    if d.ns != ns {
        return None;
    }
    let packet = splice(&d.packet, offset)?;
    let compress = Compress::from_allowed(!d.uncompressed);
    let frames = delivery_frames(ns, packet, d.attachments, compress)?;
    Some((from_pb_target(d.target.unwrap_or_default()), frames))
}

fn frames_len(frames: &[Frame]) -> usize {
    frames
        .iter()
        .map(|f| match f {
            Frame::Text(b, _) | Frame::Binary(b, _) => b.len(),
        })
        .sum()
}

impl Cluster {
    /// Reads one recovery-enabled namespace's log for as long as the cluster runs, writing each
    /// emit to the local sockets it targets.
    pub(super) async fn follow(self, log: Arc<NsLog>) {
        let Some(state) = self.inner.log.as_ref() else {
            return;
        };
        let Ok(filter) = self.inner.cfg.subjects.all_log_in(&log.ns) else {
            return;
        };
        loop {
            let after = log.dispatch.lock().last_seq;
            let reader = self
                .inner
                .bus
                .log_follow(&state.stream, filter.clone(), Some(after))
                .await;
            let mut reader = match reader {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(ns = %log.ns, error = %e, "cannot follow the recovery log");
                    tokio::time::sleep(FOLLOW_RETRY).await;
                    continue;
                }
            };
            while let Some(item) = reader.next().await {
                match item {
                    Ok(entry) => self.dispatch(&log, state.tag, entry),
                    Err(e) => tracing::debug!(ns = %log.ns, error = %e, "recovery log read"),
                }
            }
            tokio::time::sleep(FOLLOW_RETRY).await;
        }
    }

    /// Writes one logged emit to its local recipients, and keeps it for the sockets being
    /// recovered that it concerns; all under the namespace's dispatch lock (see the module
    /// docs).
    fn dispatch(&self, log: &NsLog, tag: u64, entry: LogEntry) {
        let mut d = log.dispatch.lock();
        let seq = entry.seq;
        if seq <= d.last_seq {
            return;
        }
        d.last_seq = seq;
        let Some(delivery) = delivery_of(entry, &mut d.fragments) else {
            return;
        };
        let Some((target, frames)) = frames_of(&log.ns, delivery, &offset_text(tag, seq)) else {
            ::metrics::counter!(m::BUS_MALFORMED).increment(1);
            return;
        };
        ::metrics::counter!(m::LOG_RECEIVED).increment(1);
        let size = frames_len(&frames);
        for (id, p) in &mut d.pending {
            if seq > p.after && !p.overflow && includes(&target, id, &p.rooms) {
                if p.buffer.len() >= log.cfg.max_replay_packets
                    || p.bytes + size > log.cfg.max_replay_bytes
                {
                    p.overflow = true;
                    p.buffer = Vec::new();
                } else {
                    p.bytes += size;
                    p.buffer.push(frames.clone());
                }
            }
        }
        self.inner
            .io
            .deliver_remote(&log.ns, &target, &frames, false);
    }

    /// Claims and replays a session (see [`crate::sio::Adapter::recover`]).
    pub(super) fn recover_session(
        &self,
        ns: &str,
        pid: &str,
        offset: &str,
    ) -> BoxFuture<'static, Option<Restored>> {
        let cluster = self.clone();
        let (ns, pid, offset) = (ns.to_owned(), pid.to_owned(), offset.to_owned());
        Box::pin(async move {
            match cluster.try_recover(&ns, &pid, &offset).await {
                Ok(restored) => Some(restored),
                Err(outcome) => {
                    ::metrics::counter!(m::RECOVERIES, "outcome" => outcome).increment(1);
                    tracing::debug!(ns, outcome, "session not recovered");
                    None
                }
            }
        })
    }

    async fn try_recover(
        &self,
        ns: &str,
        pid: &str,
        offset: &str,
    ) -> Result<Restored, &'static str> {
        let state = self.inner.log.as_ref().ok_or("unavailable")?;
        let log = state.namespace(ns).ok_or("unavailable")?.clone();
        let (tag, after) = parse_offset(offset).ok_or("bad_offset")?;
        let bus = &self.inner.bus;
        let info = bus
            .log_info(&state.stream)
            .await
            .map_err(|_| "unavailable")?;
        if !same_stream(tag, info.tag) || after > info.last_seq {
            return Err("bad_offset");
        }
        if after.saturating_add(1) < info.first_seq {
            return Err("evicted");
        }
        let request = pb::RecoverRequest {
            ns: ns.to_owned(),
            pid_hash: pid_hash(pid),
            node: self.inner.cfg.node.as_str().to_owned(),
        };
        let reply = bus
            .request(
                self.inner.cfg.subjects.recover(),
                Bytes::from(request.encode_to_vec()),
                CLAIM_TIMEOUT,
            )
            .await
            .map_err(|_| "unavailable")?;
        let reply = pb::RecoverReply::decode(reply).map_err(|_| "unavailable")?;
        let socket = match Outcome::try_from(reply.outcome) {
            Ok(Outcome::Recovered) => reply.socket.ok_or("unavailable")?,
            Ok(Outcome::Expired) => return Err("expired"),
            Ok(Outcome::Busy) => return Err("busy"),
            Ok(Outcome::Unknown) | Err(_) => return Err("unknown"),
        };
        if socket.ns != ns || socket.id.is_empty() {
            return Err("unavailable");
        }
        let id: Arc<str> = socket.id.as_str().into();
        let rooms: Vec<Room> = socket
            .rooms
            .iter()
            .map(|r| Room::from(r.as_str()))
            .collect();
        let end = {
            let mut d = log.dispatch.lock();
            d.pending.insert(
                id.clone(),
                Pending {
                    after,
                    rooms: rooms.clone(),
                    buffer: Vec::new(),
                    bytes: 0,
                    overflow: false,
                },
            );
            d.last_seq
        };
        let mut guard = PendingGuard {
            log: log.clone(),
            id: id.clone(),
            done: false,
            release: Some((self.clone(), socket.clone())),
        };
        let missed = match self.replay(state, &log, &id, &rooms, after, end).await {
            Ok(missed) => missed,
            Err(outcome) => {
                guard.fail();
                return Err(outcome);
            }
        };
        ::metrics::counter!(m::REPLAYED_PACKETS).increment(missed.len() as u64);
        ::metrics::counter!(m::REPLAYED_BYTES)
            .increment(missed.iter().map(|f| frames_len(f) as u64).sum::<u64>());
        let handshake = socket.handshake.unwrap_or_default();
        let claims = serde_json::from_str::<Value>(&handshake.claims_json).ok();
        let data = Some(socket.data_json).filter(|d| !d.is_empty() && d != "null");
        let init = Box::new(move |s: &Socket| {
            if let Some(Value::Object(map)) = claims
                && !map.is_empty()
            {
                s.insert(Claims::new(map));
            }
            if let Some(data) = data {
                s.insert(SocketData(data));
            }
        });
        Ok(Restored {
            id,
            rooms,
            init,
            missed,
            handover: Box::new(guard),
        })
    }

    /// The packets for socket `id` (in `rooms`) stored in `(after, end]`, offsets spliced in.
    async fn replay(
        &self,
        state: &LogState,
        log: &NsLog,
        id: &str,
        rooms: &[Room],
        after: u64,
        end: u64,
    ) -> Result<Vec<Vec<Frame>>, &'static str> {
        let mut missed = Vec::new();
        if end <= after {
            return Ok(missed);
        }
        let filter = self
            .inner
            .cfg
            .subjects
            .all_log_in(&log.ns)
            .map_err(|_| "unavailable")?;
        let mut reader = self
            .inner
            .bus
            .log_read(&state.stream, filter, after, end)
            .await
            .map_err(|_| "unavailable")?;
        let mut fragments = Reassembly::default();
        let mut bytes = 0;
        while let Some(item) = reader.next().await {
            let entry = item.map_err(|e| match e {
                switchboard_bus::BusError::LogEvicted => "evicted",
                _ => "unavailable",
            })?;
            let seq = entry.seq;
            let Some(delivery) = delivery_of(entry, &mut fragments) else {
                continue;
            };
            let Some((target, frames)) = frames_of(&log.ns, delivery, &offset_text(state.tag, seq))
            else {
                continue;
            };
            if !includes(&target, id, rooms) {
                continue;
            }
            bytes += frames_len(&frames);
            if missed.len() >= log.cfg.max_replay_packets || bytes > log.cfg.max_replay_bytes {
                return Err("too_large");
            }
            missed.push(frames);
        }
        Ok(missed)
    }
}

impl Cluster {
    /// Runs `join` with the namespace's dispatcher held still; the last sequence dispatched
    /// (see [`crate::policy::Bridge::hold_log`]).
    pub(super) fn hold(&self, ns: &str, join: &mut dyn FnMut()) -> Option<u64> {
        let Some(log) = self.inner.log.as_ref().and_then(|l| l.namespace(ns)) else {
            join();
            return None;
        };
        let d = log.dispatch.lock();
        join();
        Some(d.last_seq)
    }

    /// The room's logged messages up to `end` that `rule` keeps, oldest first (see
    /// [`crate::policy::Bridge::history`]). Emits to several rooms or the whole namespace are
    /// not a room's history (they are not on its subject), nor are binary ones.
    pub(super) fn room_history(
        &self,
        ns: &str,
        room: &str,
        end: u64,
        rule: crate::config::HistoryRule,
    ) -> BoxFuture<'static, Result<Vec<Value>, String>> {
        let cluster = self.clone();
        let (ns, room) = (ns.to_owned(), room.to_owned());
        Box::pin(async move {
            let unavailable = |e: &dyn std::fmt::Display| format!("history unavailable: {e}");
            let state = cluster.inner.log.as_ref().ok_or("no log")?;
            let filter = cluster
                .inner
                .cfg
                .subjects
                .log_room(&ns, &room)
                .map_err(|e| unavailable(&e))?;
            let cutoff = rule.max_age.map(|age| {
                super::unix_ms().saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX))
            });
            let tail = cluster
                .inner
                .bus
                .log_last(&state.stream, filter, end, rule.last, |entry| {
                    if cutoff.is_some_and(|c| entry.time_ms < c) {
                        return None;
                    }
                    history_item(&ns, entry, state.tag)
                })
                .await
                .map_err(|e| unavailable(&e))?;
            Ok(tail.items)
        })
    }
}

/// One logged emit as a history item, `{"event", "args", "offset"}`; `None` for what is not a
/// plain event of the namespace (a fragment, a binary event, something malformed).
fn history_item(ns: &str, entry: LogEntry, tag: u64) -> Option<Value> {
    let Ok(pb::Envelope {
        body: Some(envelope::Body::Delivery(d)),
    }) = pb::Envelope::decode(entry.payload)
    else {
        return None;
    };
    if d.ns != ns || d.ack.is_some() || !d.attachments.is_empty() {
        return None;
    }
    let (event, args) = switchboard_codec::socketio::plain_event(&d.packet, ns)?;
    Some(serde_json::json!({
        "event": event,
        "args": args,
        "offset": offset_text(tag, entry.seq),
    }))
}

/// A socket registered as pending with its namespace's dispatcher. Dropped without a
/// completed hand-over, it takes the registration back and hands the claimed session back to
/// the broker: a `connect` of the session on this node (what the claim waits for) and at once a
/// recoverable `disconnect`, as a transport close would — so the client's next attempt can
/// claim it again instead of waiting out the claim's lease.
struct PendingGuard {
    log: Arc<NsLog>,
    id: Arc<str>,
    done: bool,
    release: Option<(Cluster, pb::SocketInfo)>,
}

impl PendingGuard {
    /// Gives the session back now (the recovery failed after the claim).
    fn fail(&mut self) {
        self.log.dispatch.lock().pending.remove(&self.id);
        if let Some((cluster, mut info)) = self.release.take() {
            info.recovered = true;
            cluster.hand_back(info);
        }
        self.done = true;
    }
}

impl Handover for PendingGuard {
    fn complete(mut self: Box<Self>, attach: &mut dyn FnMut(Vec<Vec<Frame>>)) -> Result<(), ()> {
        // Take the buffer and attach under one hold of the dispatcher: an emit dispatched in
        // between would reach neither the buffer nor the socket.
        let mut d = self.log.dispatch.lock();
        match d.pending.remove(&self.id) {
            Some(p) if !p.overflow => {
                attach(p.buffer);
                drop(d);
                self.done = true;
                self.release = None;
                Ok(())
            }
            _ => {
                drop(d);
                self.fail();
                Err(())
            }
        }
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if !self.done {
            self.fail();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_a_few_ms_apart_name_one_stream() {
        let t = 1_796_648_185_568;
        // What replicas of one new stream on a 3-node NATS cluster reported.
        assert!(same_stream(t, t + 13) && same_stream(t + 13, t));
        assert!(same_stream(t, t + TAG_SLACK_MS));
        // A stream made again later is another.
        assert!(!same_stream(t, t + TAG_SLACK_MS + 1));
        assert!(!same_stream(t, 0));
    }

    #[test]
    fn the_offset_becomes_the_last_argument() {
        let p = Bytes::from_static(b"42/chat,[\"news\",1,{\"a\":[2]}]");
        assert_eq!(
            splice(&p, "k.9").unwrap(),
            Bytes::from_static(b"42/chat,[\"news\",1,{\"a\":[2]},\"k.9\"]")
        );
        assert_eq!(splice(&Bytes::from_static(b"42[\"x\"}"), "k.9"), None);
    }

    #[test]
    fn targets_select_a_pending_socket_as_they_would_a_live_one() {
        let rooms: Vec<Room> = vec!["a".into(), "b".into()];
        let t = |rooms: &[&str], except: &[&str], sockets: &[&str], except_s: &[&str]| Target {
            rooms: rooms.iter().map(|r| Room::from(*r)).collect(),
            except_rooms: except.iter().map(|r| Room::from(*r)).collect(),
            sockets: sockets.iter().map(|r| Arc::from(*r)).collect(),
            except_sockets: except_s.iter().map(|r| Arc::from(*r)).collect(),
        };
        assert!(includes(&t(&[], &[], &[], &[]), "s1", &rooms));
        assert!(includes(&t(&["a"], &[], &[], &[]), "s1", &rooms));
        assert!(!includes(&t(&["c"], &[], &[], &[]), "s1", &rooms));
        assert!(includes(&t(&["c"], &[], &["s1"], &[]), "s1", &rooms));
        // A socket id is a room too.
        assert!(includes(&t(&["s1"], &[], &[], &[]), "s1", &rooms));
        assert!(!includes(&t(&["a"], &["b"], &[], &[]), "s1", &rooms));
        assert!(!includes(&t(&[], &[], &[], &["s1"]), "s1", &rooms));
        assert!(!includes(&t(&[], &["s1"], &[], &[]), "s1", &rooms));
    }
}
