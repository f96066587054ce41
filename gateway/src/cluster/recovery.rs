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
use switchboard_codec::engineio::Frame;
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

/// `{tag}.{seq}`, the tag (the stream's incarnation) in base 36: what clients see as the offset.
pub(super) fn offset_text(tag: u64, seq: u64) -> String {
    let mut digits = Vec::new();
    let mut t = tag;
    loop {
        let d = u8::try_from(t % 36).unwrap_or(0);
        digits.push(if d < 10 { b'0' + d } else { b'a' + d - 10 });
        t /= 36;
        if t == 0 {
            break;
        }
    }
    digits.reverse();
    format!("{}.{seq}", String::from_utf8_lossy(&digits))
}

/// The inverse of [`offset_text`]; `None` for anything it cannot have made.
pub(super) fn parse_offset(s: &str) -> Option<(u64, u64)> {
    let (tag, seq) = s.split_once('.')?;
    if tag.is_empty() || tag.len() > 13 || seq.is_empty() || seq.len() > 20 {
        return None;
    }
    let tag = u64::from_str_radix(tag, 36).ok()?;
    let seq = seq
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| seq.parse().ok())??;
    Some((tag, seq))
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
    let frames = delivery_frames(ns, packet, d.attachments)?;
    Some((from_pb_target(d.target.unwrap_or_default()), frames))
}

fn frames_len(frames: &[Frame]) -> usize {
    frames
        .iter()
        .map(|f| match f {
            Frame::Text(b) | Frame::Binary(b) => b.len(),
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
        if tag != state.tag {
            return Err("bad_offset");
        }
        let bus = &self.inner.bus;
        let info = bus
            .log_info(&state.stream)
            .await
            .map_err(|_| "unavailable")?;
        if after > info.last_seq {
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
        let guard = PendingGuard {
            log: log.clone(),
            id: id.clone(),
            done: false,
        };
        let missed = self.replay(state, &log, &id, &rooms, after, end).await?;
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

/// A socket registered as pending with its namespace's dispatcher; dropped without
/// [`Handover::complete`], it takes the registration back.
struct PendingGuard {
    log: Arc<NsLog>,
    id: Arc<str>,
    done: bool,
}

impl Handover for PendingGuard {
    fn complete(mut self: Box<Self>, attach: &mut dyn FnMut(Vec<Vec<Frame>>)) -> Result<(), ()> {
        self.done = true;
        let mut d = self.log.dispatch.lock();
        let pending = d.pending.remove(&self.id).ok_or(())?;
        if pending.overflow {
            return Err(());
        }
        attach(pending.buffer);
        Ok(())
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if !self.done {
            self.log.dispatch.lock().pending.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_and_refuse_what_they_cannot_be() {
        for (tag, seq) in [
            (0, 0),
            (1_765_000_000_000, 1),
            (u64::MAX, u64::MAX),
            (35, 36),
        ] {
            let text = offset_text(tag, seq);
            assert_eq!(parse_offset(&text), Some((tag, seq)), "{text}");
        }
        assert_eq!(offset_text(36, 7), "10.7");
        for bad in [
            "",
            ".",
            "a.",
            ".1",
            "a.b",
            "a.-1",
            "a.+1",
            "a.1.2",
            "zzzzzzzzzzzzzz.1",
            "A_.1",
        ] {
            assert_eq!(parse_offset(bad), None, "{bad:?}");
        }
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
