//! The in-process hub's log: one ring per stream, bounded by age and bytes like a JetStream
//! stream with `DiscardPolicy::Old`, sequences from 1, the hub's creation time as the tag.
//!
//! Readers never get a channel that could drop: each keeps the next sequence it wants (a
//! cursor into the ring) and waits on the ring's [`Notify`] for new entries, so a slow follower
//! loses only what retention evicts — counted, as on JetStream.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    DEFAULT_DUPLICATE_WINDOW, HUB_DEFAULT_MAX_BYTES, LOG_SKIPPED, LogConfig, LogEntry, LogInfo,
};
use crate::BusError;
use crate::local::{matches, parse_pattern};

/// Message ids remembered per stream at most, whatever the duplicate window: the bound on the
/// dedup table's memory under any publish rate (the oldest ids are forgotten first).
pub(crate) const MAX_DEDUP_IDS: usize = 100_000;

/// Entries a reader scans per lock hold, so a filtered reader far behind does not hold up
/// publishers while it skips what its filter does not match.
const SCAN_CHUNK: usize = 1024;

/// Bytes an entry is counted for beyond its subject and payload (the sequence and time kept
/// with it), so that empty messages are not free.
const ENTRY_OVERHEAD: u64 = 32;

/// The logs of one hub.
pub(crate) struct Logs {
    /// The tag of every stream of this hub: its creation time (ms since the epoch).
    tag: u64,
    streams: Mutex<HashMap<String, Arc<Ring>>>,
}

impl Default for Logs {
    fn default() -> Self {
        let tag = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            tag,
            streams: Mutex::new(HashMap::new()),
        }
    }
}

/// One stream.
struct Ring {
    state: Mutex<State>,
    /// Woken on every stored entry.
    stored: Notify,
}

struct Bounds {
    subjects: Vec<Vec<String>>,
    max_age: Duration,
    max_bytes: u64,
    duplicate_window: Duration,
}

struct Stored {
    subject: String,
    payload: Bytes,
    at: Instant,
    /// Wall-clock time of the store, in ms since the Unix epoch (what a reader sees).
    time_ms: u64,
}

struct State {
    bounds: Bounds,
    /// Entry `i` has sequence `first_seq + i`.
    entries: VecDeque<Stored>,
    first_seq: u64,
    bytes: u64,
    /// Message id → the sequence it was stored at, and the ids in the order they came.
    ids: HashMap<String, u64>,
    id_order: VecDeque<(Instant, String)>,
}

impl Bounds {
    fn new(cfg: &LogConfig) -> Result<Self, BusError> {
        let subjects = cfg
            .subjects
            .iter()
            .map(|s| {
                parse_pattern(s).ok_or_else(|| BusError::Log(format!("invalid subject {s:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if subjects.is_empty() {
            return Err(BusError::Log(format!("log {} has no subjects", cfg.stream)));
        }
        Ok(Self {
            subjects,
            max_age: cfg.max_age,
            max_bytes: u64::try_from(cfg.max_bytes)
                .ok()
                .filter(|&b| b > 0)
                .unwrap_or(HUB_DEFAULT_MAX_BYTES),
            duplicate_window: if cfg.duplicate_window.is_zero() {
                DEFAULT_DUPLICATE_WINDOW
            } else {
                cfg.duplicate_window
            },
        })
    }

    fn holds(&self, tokens: &[&str]) -> bool {
        self.subjects.iter().any(|p| matches(p, tokens))
    }
}

impl State {
    fn last_seq(&self) -> u64 {
        self.first_seq + self.entries.len() as u64 - 1
    }

    /// Evicts what is older than `max_age` or beyond `max_bytes` (oldest first), and forgets
    /// message ids older than the duplicate window.
    fn evict(&mut self, now: Instant) {
        while let Some(oldest) = self.entries.front() {
            let too_old = !self.bounds.max_age.is_zero()
                && now.saturating_duration_since(oldest.at) > self.bounds.max_age;
            if !too_old && self.bytes <= self.bounds.max_bytes {
                break;
            }
            self.bytes -= size(&oldest.subject, &oldest.payload);
            self.entries.pop_front();
            self.first_seq += 1;
        }
        while let Some((at, _)) = self.id_order.front() {
            if now.saturating_duration_since(*at) <= self.bounds.duplicate_window
                && self.id_order.len() <= MAX_DEDUP_IDS
            {
                break;
            }
            if let Some((_, id)) = self.id_order.pop_front() {
                self.ids.remove(&id);
            }
        }
    }

    fn info(&self, tag: u64) -> LogInfo {
        LogInfo {
            tag,
            first_seq: self.first_seq,
            last_seq: self.last_seq(),
        }
    }
}

fn size(subject: &str, payload: &Bytes) -> u64 {
    (subject.len() + payload.len()) as u64 + ENTRY_OVERHEAD
}

impl Logs {
    fn ring(&self, stream: &str) -> Result<Arc<Ring>, BusError> {
        self.streams
            .lock()
            .get(stream)
            .cloned()
            .ok_or(BusError::NoLog)
    }

    /// Creates the ring, or sets its bounds (evicting what the new ones exclude); entries and
    /// sequences are kept, as JetStream keeps them on a stream update.
    pub(crate) fn ensure(&self, cfg: &LogConfig) -> Result<LogInfo, BusError> {
        let bounds = Bounds::new(cfg)?;
        let mut streams = self.streams.lock();
        let ring = streams.entry(cfg.stream.clone()).or_insert_with(|| {
            Arc::new(Ring {
                state: Mutex::new(State {
                    bounds: Bounds {
                        subjects: Vec::new(),
                        max_age: Duration::ZERO,
                        max_bytes: 0,
                        duplicate_window: Duration::ZERO,
                    },
                    entries: VecDeque::new(),
                    first_seq: 1,
                    bytes: 0,
                    ids: HashMap::new(),
                    id_order: VecDeque::new(),
                }),
                stored: Notify::new(),
            })
        });
        let mut state = ring.state.lock();
        state.bounds = bounds;
        state.evict(Instant::now());
        Ok(state.info(self.tag))
    }

    pub(crate) fn info(&self, stream: &str) -> Result<LogInfo, BusError> {
        let ring = self.ring(stream)?;
        let mut state = ring.state.lock();
        state.evict(Instant::now());
        Ok(state.info(self.tag))
    }

    /// Stores one entry in the stream whose subjects hold `subject`; its sequence, or the first
    /// one's for a known `msg_id`.
    pub(crate) fn publish(
        &self,
        subject: &str,
        payload: Bytes,
        msg_id: &str,
    ) -> Result<u64, BusError> {
        let tokens: Vec<&str> = subject.split('.').collect();
        if parse_pattern(subject).is_none() || subject.contains(['*', '>']) {
            return Err(BusError::Publish(format!("invalid subject {subject:?}")));
        }
        let ring = self
            .streams
            .lock()
            .values()
            .find(|r| r.state.lock().bounds.holds(&tokens))
            .cloned()
            .ok_or(BusError::NoLog)?;
        let seq = {
            let mut state = ring.state.lock();
            let now = Instant::now();
            state.evict(now);
            if let Some(&seq) = state.ids.get(msg_id) {
                return Ok(seq);
            }
            state.bytes += size(subject, &payload);
            state.entries.push_back(Stored {
                subject: subject.to_owned(),
                payload,
                at: now,
                time_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            });
            let seq = state.last_seq();
            if !msg_id.is_empty() {
                state.ids.insert(msg_id.to_owned(), seq);
                state.id_order.push_back((now, msg_id.to_owned()));
            }
            // The new entry itself may be beyond `max_bytes`: it is stored and evicted at once,
            // as JetStream does, and its sequence is used up.
            state.evict(now);
            seq
        };
        ring.stored.notify_waiters();
        Ok(seq)
    }

    /// A cursor on `stream`: from `after + 1` (`None`: after the last entry now), up to `until`
    /// (`None`: follow forever).
    pub(crate) fn reader(
        &self,
        stream: &str,
        filter: &str,
        after: Option<u64>,
        until: Option<u64>,
    ) -> Result<Reader, BusError> {
        let filter = parse_pattern(filter)
            .ok_or_else(|| BusError::Subscribe(format!("invalid filter {filter:?}")))?;
        let ring = self.ring(stream)?;
        let next = match after {
            Some(after) => after.saturating_add(1),
            None => ring.state.lock().last_seq() + 1,
        };
        Ok(Reader {
            ring,
            filter,
            next,
            until,
            done: until.is_some_and(|until| until < next),
        })
    }
}

/// A cursor into one ring.
pub(crate) struct Reader {
    ring: Arc<Ring>,
    filter: Vec<String>,
    /// The sequence wanted next.
    next: u64,
    /// A read's last sequence; `None` for a follower.
    until: Option<u64>,
    done: bool,
}

/// What one look at the ring found.
enum Step {
    Entry(LogEntry),
    Evicted,
    /// Scanned a chunk without a match: look again (after letting others run).
    Scanned,
    /// Nothing more stored yet.
    End,
}

impl Reader {
    pub(crate) async fn next(&mut self) -> Option<Result<LogEntry, BusError>> {
        loop {
            if self.done {
                return None;
            }
            // Registered before looking, so an entry stored right after the look still wakes us.
            let ring = self.ring.clone();
            let stored = ring.stored.notified();
            tokio::pin!(stored);
            stored.as_mut().enable();
            match self.step() {
                Step::Entry(entry) => return Some(Ok(entry)),
                Step::Evicted => {
                    self.done = true;
                    return Some(Err(BusError::LogEvicted));
                }
                Step::Scanned => tokio::task::yield_now().await,
                Step::End if self.until.is_some() => self.done = true,
                Step::End => stored.await,
            }
        }
    }

    fn step(&mut self) -> Step {
        let mut state = self.ring.state.lock();
        state.evict(Instant::now());
        if self.next < state.first_seq {
            if self.until.is_some() {
                return Step::Evicted;
            }
            let skipped = state.first_seq - self.next;
            metrics::counter!(LOG_SKIPPED).increment(skipped);
            tracing::warn!(
                skipped,
                "in-process log: a follower fell behind the retention"
            );
            self.next = state.first_seq;
        }
        let end = self.until.map_or(u64::MAX, |u| u.saturating_add(1));
        let start = usize::try_from(self.next - state.first_seq).unwrap_or(usize::MAX);
        for stored in state.entries.iter().skip(start).take(SCAN_CHUNK) {
            let seq = self.next;
            if seq >= end {
                self.done = true;
                return Step::End;
            }
            self.next += 1;
            let tokens: Vec<&str> = stored.subject.split('.').collect();
            if matches(&self.filter, &tokens) {
                return Step::Entry(LogEntry {
                    seq,
                    subject: stored.subject.clone(),
                    payload: stored.payload.clone(),
                    time_ms: stored.time_ms,
                });
            }
        }
        if self.next > state.last_seq() || self.next >= end {
            Step::End
        } else {
            Step::Scanned
        }
    }
}
