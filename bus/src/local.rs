//! The in-process hub: NATS semantics (subject wildcards, queue groups, no echo, bounded
//! subscriber buffers, request/reply) for the processes of one standalone gateway, with no
//! network and no server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::{mpsc, watch};

use crate::{
    Bus, BusError, DEFAULT_MAX_PAYLOAD_BYTES, Link, Message, SLOW_CONSUMER_DROPS,
    SUBSCRIPTION_CAPACITY,
};

struct Sub {
    id: u64,
    client: u64,
    pattern: Vec<String>,
    group: Option<String>,
    tx: mpsc::Sender<Message>,
}

pub(crate) struct Inner {
    subs: RwLock<Vec<Sub>>,
    next_id: AtomicU64,
    /// Round-robin position for queue groups.
    turn: AtomicUsize,
    /// The longest payload accepted, as a NATS server's `max_payload`.
    pub(crate) max_payload: usize,
    /// The durable logs (standalone mode's JetStream).
    pub(crate) logs: crate::log::Logs,
}

/// An in-process bus: hand a [`Bus`] from [`Hub::client`] to each party (gateway, broker).
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
    link: watch::Receiver<Link>,
    /// Keeps the always-up link alive.
    _link_tx: Arc<watch::Sender<Link>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    /// A hub with no clients that takes payloads up to the NATS default `max_payload`.
    pub fn new() -> Self {
        Self::with_max_payload(DEFAULT_MAX_PAYLOAD_BYTES)
    }

    /// A hub with no clients that refuses payloads longer than `max_payload` bytes, as a NATS
    /// server configured so, so that standalone mode meets the same limit as a cluster.
    pub fn with_max_payload(max_payload: usize) -> Self {
        let (tx, rx) = watch::channel(Link {
            up: true,
            generation: 1,
        });
        Self {
            inner: Arc::new(Inner {
                subs: RwLock::new(Vec::new()),
                next_id: AtomicU64::new(1),
                turn: AtomicUsize::new(0),
                max_payload,
                logs: crate::log::Logs::default(),
            }),
            link: rx,
            _link_tx: Arc::new(tx),
        }
    }

    /// A new client of the hub (a client does not receive what it publishes itself).
    pub fn client(&self) -> Bus {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        Bus::local(self.inner.clone(), id, self.link.clone())
    }
}

/// Removes a subscription from the hub when dropped.
pub(crate) struct SubGuard {
    hub: Arc<Inner>,
    id: u64,
}

impl Drop for SubGuard {
    fn drop(&mut self) {
        self.hub.subs.write().retain(|s| s.id != self.id);
    }
}

impl Inner {
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        client: u64,
        subject: &str,
        group: Option<String>,
    ) -> Result<(mpsc::Receiver<Message>, SubGuard), BusError> {
        let Some(pattern) = parse_pattern(subject) else {
            return Err(BusError::Subscribe(format!("invalid subject {subject:?}")));
        };
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_CAPACITY);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.subs.write().push(Sub {
            id,
            client,
            pattern,
            group,
            tx,
        });
        Ok((
            rx,
            SubGuard {
                hub: self.clone(),
                id,
            },
        ))
    }

    /// Delivers to every matching subscription of other clients (one member per queue group);
    /// false if nobody matched.
    pub(crate) fn publish(
        &self,
        client: u64,
        subject: &str,
        reply: Option<String>,
        payload: Bytes,
    ) -> bool {
        let subs = self.subs.read();
        let tokens: Vec<&str> = subject.split('.').collect();
        let message = || Message {
            subject: subject.to_owned(),
            reply: reply.clone(),
            payload: payload.clone(),
        };
        let mut groups: Vec<(&str, Vec<&Sub>)> = Vec::new();
        let mut any = false;
        for sub in subs.iter() {
            if sub.client == client || !matches(&sub.pattern, &tokens) {
                continue;
            }
            any = true;
            match &sub.group {
                None => offer(sub, message()),
                Some(g) => match groups.iter_mut().find(|(name, _)| name == g) {
                    Some((_, members)) => members.push(sub),
                    None => groups.push((g, vec![sub])),
                },
            }
        }
        for (_, members) in groups {
            let i = self.turn.fetch_add(1, Ordering::Relaxed) % members.len();
            offer(members[i], message());
        }
        any
    }
}

fn offer(sub: &Sub, message: Message) {
    if sub.tx.try_send(message).is_err() {
        metrics::counter!(SLOW_CONSUMER_DROPS).increment(1);
        tracing::warn!(subject = ?sub.pattern.join("."), "in-process bus: slow consumer dropped a message");
    }
}

/// A subject or pattern as its tokens; `None` if NATS would refuse it (empty tokens, white
/// space, `>` before the end).
pub(crate) fn parse_pattern(subject: &str) -> Option<Vec<String>> {
    let pattern: Vec<String> = subject.split('.').map(str::to_owned).collect();
    let valid = !subject.is_empty()
        && pattern.iter().enumerate().all(|(i, t)| {
            !t.is_empty()
                && (t != ">" || i + 1 == pattern.len())
                && !t.contains(char::is_whitespace)
        });
    valid.then_some(pattern)
}

/// NATS subject matching: `*` is one token, a final `>` one or more.
pub(crate) fn matches(pattern: &[String], subject: &[&str]) -> bool {
    let mut i = 0;
    for (k, p) in pattern.iter().enumerate() {
        if p == ">" {
            return subject.len() > k;
        }
        match subject.get(k) {
            Some(t) if p == "*" || p == t => i = k + 1,
            _ => return false,
        }
    }
    i == subject.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_nats() {
        let cases = [
            ("a.b", "a.b", true),
            ("a.b", "a.c", false),
            ("a.*", "a.b", true),
            ("a.*", "a.b.c", false),
            ("a.*", "a", false),
            ("a.>", "a.b", true),
            ("a.>", "a.b.c", true),
            ("a.>", "a", false),
            ("*.b", "a.b", true),
            ("a.b", "a.b.c", false),
            ("a.b.c", "a.b", false),
        ];
        for (pattern, subject, expected) in cases {
            let p: Vec<String> = pattern.split('.').map(str::to_owned).collect();
            let s: Vec<&str> = subject.split('.').collect();
            assert_eq!(matches(&p, &s), expected, "{pattern} {subject}");
        }
    }
}
