//! The durable log: an append-only stream of messages with sequence numbers, read in one total
//! order whatever published them (connection state recovery, docs/recovery.md).
//!
//! In a cluster the log is a JetStream stream ([`nats`]); in standalone mode the in-process
//! [`Hub`](crate::Hub) keeps a ring per stream ([`hub`]). Both give the same contract:
//!
//! - [`Bus::log_publish`] stores a message under a subject of the stream and tells its sequence;
//!   a republish with the same message id within the stream's duplicate window is not stored
//!   twice (it answers the first sequence), so publishers can retry an unacknowledged publish.
//! - [`Bus::log_follow`] delivers every later entry on a filter **in stream-sequence order, each
//!   once**, across subjects and publishers: the order the gateway splices into offsets. That is
//!   why the live path reads the log instead of core subscriptions (per-publisher order only).
//! - [`Bus::log_read`] replays a closed range, and says so when part of it was evicted, so a
//!   recovery never silently misses a packet.
//! - [`LogInfo::tag`] names the stream's incarnation, so offsets from a deleted and recreated
//!   stream (or a restarted standalone process) are refused rather than misread.

mod hub;
mod nats;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;

pub(crate) use hub::Logs;

use crate::{Backend, Bus, BusError};

/// Counter (metric name) of log entries a follower never delivered because the store evicted
/// them (retention) before it read them. Counted as the stream sequences between where the
/// follower stood and the stream's first sequence when it noticed, whatever their subject: an
/// evicted entry's subject is no longer known, so this is an upper bound for a filtered follower.
/// The hub notices on every read; JetStream only when a follower (re)makes its consumer (after
/// a blip, a restart, a gap): a live consumer that retention overtakes is moved on by the server
/// without a word, so those skips are not counted.
pub const LOG_SKIPPED: &str = "switchboard_bus_log_skipped_total";

/// A log stream's settings, as [`Bus::log_ensure`] makes them true.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// The stream's name, e.g. `sio_log` (`Subjects::log_stream()`).
    pub stream: String,
    /// The subjects it stores (wildcards allowed), e.g. `["sio.log.>"]` (`Subjects::all_log()`).
    pub subjects: Vec<String>,
    /// Retention: entries older than this are evicted (zero: no age limit, as on JetStream).
    pub max_age: Duration,
    /// Size bound: beyond it the oldest entries are evicted (JetStream `DiscardPolicy::Old`).
    /// Zero or less means unbounded on JetStream; the in-process hub then uses
    /// [`HUB_DEFAULT_MAX_BYTES`] so that its memory stays bounded.
    pub max_bytes: i64,
    /// Copies of the stream in a JetStream cluster (ignored by the hub).
    pub replicas: usize,
    /// Memory storage instead of file storage (JetStream; the hub is always memory). JetStream
    /// cannot change the storage of an existing stream: [`Bus::log_ensure`] fails then.
    pub memory: bool,
    /// How long a message id is remembered to drop republished duplicates (`Nats-Msg-Id`).
    /// Zero means the JetStream default (2 minutes) on both backends.
    pub duplicate_window: Duration,
}

/// The hub's size bound for a log configured without one (`max_bytes <= 0`).
pub const HUB_DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// The duplicate window JetStream applies when none is configured.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// A log stream's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogInfo {
    /// This incarnation of the stream: JetStream's creation time of the stream, the hub's
    /// creation time, in milliseconds since the Unix epoch. An offset carrying another tag is
    /// from a stream that no longer exists.
    pub tag: u64,
    /// The oldest sequence still stored. An empty stream has `first_seq == last_seq + 1` (a new
    /// one: 1 and 0), so "nothing after `s` was evicted" is always `s + 1 >= first_seq`.
    pub first_seq: u64,
    /// The last sequence stored (0 before the first message).
    pub last_seq: u64,
}

/// What [`Bus::log_last`] found.
#[derive(Debug)]
pub struct LogTail<T> {
    /// The stream's state when the read began.
    pub info: LogInfo,
    /// The newest items, oldest first.
    pub items: Vec<T>,
    /// Whether older items were left out.
    pub older: bool,
}

/// One stored message.
#[derive(Clone, Debug)]
pub struct LogEntry {
    /// Its stream sequence: the position in the one order of the stream.
    pub seq: u64,
    /// The subject it was published on.
    pub subject: String,
    /// The payload, as published.
    pub payload: Bytes,
    /// When it was stored, in milliseconds since the Unix epoch (the store's clock).
    pub time_ms: u64,
}

/// The store's acknowledgement of one [`Bus::log_publish`]: resolves to the stream sequence
/// (the first one's for a deduplicated republish), or the error (on JetStream: no ack within
/// the context's timeout, 5 s, is [`BusError::Timeout`]; then the message may or may not be
/// stored, and a republish with the same id is the safe retry).
#[must_use = "the ack says whether the message was stored; dropping it is fine only on purpose"]
pub struct LogAck(Pin<Box<dyn Future<Output = Result<u64, BusError>> + Send>>);

impl LogAck {
    fn ready(result: Result<u64, BusError>) -> Self {
        Self(Box::pin(std::future::ready(result)))
    }
}

impl Future for LogAck {
    type Output = Result<u64, BusError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for LogAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogAck")
    }
}

/// Entries of a log in stream order, from [`Bus::log_follow`] (never ends while the bus lives)
/// or [`Bus::log_read`] (ends after its range).
pub struct LogReader(ReaderInner);

enum ReaderInner {
    Hub(hub::Reader),
    Nats(Box<nats::Reader>),
}

impl LogReader {
    /// The next entry. `None` only for a read: its range is done, or it reported an error.
    /// A follower never ends: on NATS it rides out link losses and server restarts by itself
    /// (it resumes at the last delivered sequence + 1) and yields an error only for what
    /// waiting does not cure (the stream was deleted: [`BusError::NoLog`], at most every 2 s),
    /// and keeps trying after that. Cancel-safe on the hub; on NATS dropping the future while it
    /// makes a new consumer only delays that to the next call.
    pub async fn next(&mut self) -> Option<Result<LogEntry, BusError>> {
        match &mut self.0 {
            ReaderInner::Hub(r) => r.next().await,
            ReaderInner::Nats(r) => r.next().await,
        }
    }
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.0 {
            ReaderInner::Hub(_) => "hub",
            ReaderInner::Nats(_) => "nats",
        };
        f.debug_struct("LogReader").field("backend", &kind).finish()
    }
}

impl Bus {
    /// The JetStream context of a NATS client (made once per connection: it runs the task that
    /// collects publish acks).
    fn jetstream(&self) -> Result<&async_nats::jetstream::Context, BusError> {
        self.jetstream
            .as_ref()
            .ok_or_else(|| BusError::Log("this NATS client has no JetStream context".into()))
    }

    /// Creates the stream, or updates it to `cfg` if it exists with other settings. Idempotent;
    /// concurrent callers with the same `cfg` are fine. Returns the stream's state after.
    pub async fn log_ensure(&self, cfg: &LogConfig) -> Result<LogInfo, BusError> {
        match &self.backend {
            Backend::Local { hub, .. } => hub.logs.ensure(cfg),
            Backend::Nats(_) => nats::ensure(self.jetstream()?, cfg).await,
        }
    }

    /// The stream's state now. A missing stream is [`BusError::NoLog`].
    pub async fn log_info(&self, stream: &str) -> Result<LogInfo, BusError> {
        match &self.backend {
            Backend::Local { hub, .. } => hub.logs.info(stream),
            Backend::Nats(_) => nats::info(self.jetstream()?, stream).await,
        }
    }

    /// Publishes one message into the log (the subject must be one of a stream's, else the ack
    /// is [`BusError::NoLog`], as JetStream tells it). Returns once it is *sent*, so two calls awaited one after the other
    /// from one task are stored in that order; the [`LogAck`] resolves to the stream sequence
    /// when the store acknowledges (JetStream `PublishAck`; on the hub at once). `msg_id` is the
    /// `Nats-Msg-Id`: within the stream's duplicate window a republish with the same id answers
    /// the first sequence and is not stored twice, on both backends. An empty `msg_id` turns
    /// deduplication off for this message.
    ///
    /// On JetStream at most 5 000 acks may be outstanding per client: beyond that this waits
    /// for one (backpressure, never an unbounded queue).
    pub async fn log_publish(
        &self,
        subject: String,
        payload: Bytes,
        msg_id: String,
    ) -> Result<LogAck, BusError> {
        self.check_size(payload.len())?;
        match &self.backend {
            Backend::Local { hub, .. } => {
                Ok(LogAck::ready(hub.logs.publish(&subject, payload, &msg_id)))
            }
            Backend::Nats(_) => nats::publish(self.jetstream()?, subject, payload, msg_id).await,
        }
    }

    /// Follows the log: every entry on `filter` (a subject, wildcards allowed, e.g.
    /// `sio.log._2Fchat.>`) stored after `after` — `None`: from now on (JetStream
    /// `DeliverPolicy::New`), `Some(s)`: from `s + 1` — in stream-sequence order, each exactly
    /// once, across link losses and server restarts (it resumes at the last delivered + 1, as
    /// async-nats' ordered consumer does). Entries evicted before being read are skipped and
    /// counted in [`LOG_SKIPPED`].
    ///
    /// On JetStream this is one ephemeral consumer (memory, one replica, no acks), made before
    /// this returns: entries stored after the return are delivered.
    pub async fn log_follow(
        &self,
        stream: &str,
        filter: String,
        after: Option<u64>,
    ) -> Result<LogReader, BusError> {
        let inner = match &self.backend {
            Backend::Local { hub, .. } => {
                ReaderInner::Hub(hub.logs.reader(stream, &filter, after, None)?)
            }
            Backend::Nats(_) => ReaderInner::Nats(Box::new(
                nats::Reader::open(self.jetstream()?, self.link(), stream, filter, after, None)
                    .await?,
            )),
        };
        Ok(LogReader(inner))
    }

    /// The newest `n` entries on `filter` stored up to sequence `until` that `keep` turns into
    /// items, oldest first, with the stream's state and whether older items were left out. It
    /// reads forward from the oldest entry retained (what is evicted meanwhile is skipped), so it
    /// costs the filter's retained traffic: a history, not a hot path.
    pub async fn log_last<T>(
        &self,
        stream: &str,
        filter: String,
        until: u64,
        n: usize,
        mut keep: impl FnMut(LogEntry) -> Option<T>,
    ) -> Result<LogTail<T>, BusError> {
        let info = self.log_info(stream).await?;
        let from = info.first_seq.saturating_sub(1);
        let until = until.min(info.last_seq);
        let mut items = std::collections::VecDeque::new();
        let mut older = false;
        if until > from && n > 0 {
            let mut reader = self.log_read(stream, filter, from, until).await?;
            while let Some(item) = reader.next().await {
                let entry = match item {
                    Ok(entry) => entry,
                    Err(BusError::LogEvicted) => continue,
                    Err(e) => return Err(e),
                };
                if let Some(item) = keep(entry) {
                    items.push_back(item);
                    if items.len() > n {
                        items.pop_front();
                        older = true;
                    }
                }
            }
        }
        Ok(LogTail {
            info,
            items: items.into(),
            older,
        })
    }

    /// Reads the entries on `filter` with `after < seq <= until`, in order, then ends
    /// ([`LogReader::next`] gives `None`). If an entry of the range has been evicted
    /// (`after + 1 < first_seq`) the first item is [`BusError::LogEvicted`] (and the reader
    /// ends). The range ends early when the reader has caught up with the stream's end, so an
    /// `until` beyond the last sequence does not wait for entries to come.
    pub async fn log_read(
        &self,
        stream: &str,
        filter: String,
        after: u64,
        until: u64,
    ) -> Result<LogReader, BusError> {
        let inner = match &self.backend {
            Backend::Local { hub, .. } => {
                ReaderInner::Hub(hub.logs.reader(stream, &filter, Some(after), Some(until))?)
            }
            Backend::Nats(_) => {
                let js = self.jetstream()?;
                let link = self.link();
                let reader =
                    nats::Reader::open(js, link, stream, filter, Some(after), Some(until)).await?;
                ReaderInner::Nats(Box::new(reader))
            }
        };
        Ok(LogReader(inner))
    }
}
