//! Snapshots: reassembly of multi-part snapshots, and the pacing of a rebuild.
//!
//! A gateway sends its full local state as parts numbered from 0, the last one flagged, all with
//! the same sequence number and request id, on its member subject (core NATS keeps one
//! publisher's order on one subject). [`Assembler`] collects them per (node, epoch, request id)
//! and hands back the whole socket list once the last part completes an unbroken run 0..=last.
//! Anything else — a part out of order, a part without its predecessors, a different sequence
//! number inside one snapshot — drops that assembly: the node's next heartbeat still reports the
//! broker behind and a new snapshot is asked for.
//!
//! [`Pacer`] decides which node to ask next and how much: a broker that needs every node's state
//! (at start, after its NATS link came back, or after gaps) must not have every gateway send
//! everything at once — past the NATS server's `max_pending` (64 MB by default) the broker is cut
//! off as a slow consumer, and its resync would start the storm again. The pacer keeps the bytes
//! of snapshot parts asked for and not yet received under a budget: it grants windows (a node
//! sends its parts while they fit the window, then pauses until asked for the next), finishes a
//! node it has started before it starts another, and gives a node up (so it can be asked again)
//! when nothing came for a while.
//!
//! No I/O, no clock (time comes in as an argument); no input panics. Memory is bounded: at most
//! [`MAX_OPEN_PER_NODE`] incomplete snapshots are kept per node (the oldest goes first), and the
//! caller forgets a node's assemblies when the node goes away.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::state::SocketRecord;

/// Incomplete snapshots kept per node before the oldest is dropped.
pub const MAX_OPEN_PER_NODE: usize = 4;

/// One received snapshot part, already converted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The node's epoch.
    pub epoch: u64,
    /// The node's sequence number the snapshot was taken at.
    pub seq: u64,
    /// The request this answers (0 for a resync).
    pub request_id: u64,
    /// Part number, from 0.
    pub part: u32,
    /// Whether this is the final part.
    pub last: bool,
    /// The sockets in this part.
    pub sockets: Vec<SocketRecord>,
}

/// What a part did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stored; more parts are expected.
    Pending,
    /// The snapshot is whole: apply it.
    Complete {
        /// The epoch it belongs to.
        epoch: u64,
        /// The sequence number it was taken at.
        seq: u64,
        /// Every socket, in part order.
        sockets: Vec<SocketRecord>,
    },
    /// The part did not continue any assembly (out of order or a part missing): that snapshot
    /// is abandoned.
    Dropped,
}

#[derive(Debug)]
struct Open {
    epoch: u64,
    request_id: u64,
    seq: u64,
    next: u32,
    sockets: Vec<SocketRecord>,
}

/// Snapshot parts being collected, per node. See the module docs.
#[derive(Debug, Default)]
pub struct Assembler {
    open: std::collections::HashMap<String, Vec<Open>>,
}

impl Assembler {
    /// No assemblies in progress.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one part of `node`'s snapshot.
    pub fn part(&mut self, node: &str, part: Part) -> Outcome {
        let Part {
            epoch,
            seq,
            request_id,
            part,
            last,
            sockets,
        } = part;
        let list = self.open.entry(node.to_owned()).or_default();
        let found = list
            .iter()
            .position(|o| o.epoch == epoch && o.request_id == request_id);
        let outcome = if part == 0 {
            if let Some(i) = found {
                list.remove(i);
            }
            if last {
                Outcome::Complete {
                    epoch,
                    seq,
                    sockets,
                }
            } else {
                if list.len() >= MAX_OPEN_PER_NODE {
                    list.remove(0);
                }
                list.push(Open {
                    epoch,
                    request_id,
                    seq,
                    next: 1,
                    sockets,
                });
                Outcome::Pending
            }
        } else {
            match found {
                Some(i) if list[i].next == part && list[i].seq == seq => {
                    if last {
                        let open = list.remove(i);
                        let mut all = open.sockets;
                        all.extend(sockets);
                        Outcome::Complete {
                            epoch,
                            seq,
                            sockets: all,
                        }
                    } else {
                        let open = &mut list[i];
                        open.next += 1;
                        open.sockets.extend(sockets);
                        Outcome::Pending
                    }
                }
                Some(i) => {
                    list.remove(i);
                    Outcome::Dropped
                }
                None => Outcome::Dropped,
            }
        };
        if list.is_empty() {
            self.open.remove(node);
        }
        outcome
    }

    /// Abandons every incomplete snapshot of `node`.
    pub fn forget(&mut self, node: &str) {
        self.open.remove(node);
    }

    /// Abandons `node`'s incomplete snapshots other than (`epoch`, `request_id`).
    pub fn forget_except(&mut self, node: &str, epoch: u64, request_id: u64) {
        if let Some(list) = self.open.get_mut(node) {
            list.retain(|o| o.epoch == epoch && o.request_id == request_id);
            if list.is_empty() {
                self.open.remove(node);
            }
        }
    }

    /// How many incomplete snapshots are held, across nodes.
    pub fn len(&self) -> usize {
        self.open.values().map(Vec::len).sum()
    }

    /// Whether no snapshot is being collected.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// The default budget of snapshot bytes in flight towards one broker (16 MiB): a quarter of the
/// NATS server's default `max_pending` (64 MiB), so heartbeats, events and a slow moment of the
/// broker still fit beside it.
pub const DEFAULT_BUDGET_BYTES: usize = 16 << 20;
/// A window is this fraction of the budget, so a few nodes send at once and the next window of
/// one is asked for while the others' are still arriving.
pub const WINDOWS_PER_BUDGET: usize = 4;

/// A snapshot request to send: `node`'s parts from `from_part`, at most `window_bytes` of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    /// The node asked.
    pub node: String,
    /// The request id (the same for every window of one snapshot).
    pub request_id: u64,
    /// The first part wanted (0: a new snapshot).
    pub from_part: u32,
    /// How many encoded bytes of parts the node may send now.
    pub window_bytes: u64,
}

/// A received part, as the pacer counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// The request it answers.
    pub request_id: u64,
    /// Its number.
    pub part: u32,
    /// Its payload's length.
    pub bytes: usize,
    /// It ends a window.
    pub paused: bool,
    /// It is the snapshot's last.
    pub last: bool,
}

/// What a received part meant to the pacer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paced {
    /// It answers the node's current request.
    Ours,
    /// It answers no request of this pacer (another broker's, an old one, or none).
    Other,
}

#[derive(Debug)]
struct Active {
    request_id: u64,
    /// The part to ask for when the node's window is used up.
    next_part: u32,
    /// Bytes of the current window not yet received; 0 while waiting for the next grant.
    credit: usize,
    /// A window is granted and not ended (by a `paused` or the last part).
    granted: bool,
    /// Last grant or part.
    seen: Instant,
}

/// Which nodes to ask for snapshots, and how much at a time. See the module docs.
#[derive(Debug)]
pub struct Pacer {
    budget: usize,
    window: usize,
    queue: VecDeque<String>,
    queued: HashSet<String>,
    active: BTreeMap<String, Active>,
    in_flight: usize,
    max_in_flight: usize,
    next_request: u64,
}

impl Pacer {
    /// At most `budget` bytes in flight (at least one window), in windows of
    /// `budget / WINDOWS_PER_BUDGET` bytes but never less than `min_window` (one part: the bus's
    /// largest payload, which a gateway always sends whole).
    pub fn new(budget: usize, min_window: usize) -> Self {
        let window = (budget / WINDOWS_PER_BUDGET).max(min_window).max(1);
        Self {
            budget: budget.max(window),
            window,
            queue: VecDeque::new(),
            queued: HashSet::new(),
            active: BTreeMap::new(),
            in_flight: 0,
            max_in_flight: 0,
            next_request: 1,
        }
    }

    /// Bytes of one window.
    pub fn window(&self) -> usize {
        self.window
    }

    /// The budget (at least one window).
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// `node` needs a snapshot: queued unless it is queued or being sent already. Whether it
    /// was queued now.
    pub fn want(&mut self, node: &str) -> bool {
        if self.queued.contains(node) || self.active.contains_key(node) {
            return false;
        }
        self.queued.insert(node.to_owned());
        self.queue.push_back(node.to_owned());
        true
    }

    /// Whether `node` is queued or being sent.
    pub fn is_pending(&self, node: &str) -> bool {
        self.queued.contains(node) || self.active.contains_key(node)
    }

    /// The request `node` is answering now, if it is being sent.
    pub fn request_of(&self, node: &str) -> Option<u64> {
        self.active.get(node).map(|a| a.request_id)
    }

    /// The windows that fit the budget now: first the next window of nodes already started (a
    /// started node is finished before a new one begins), then new nodes in the order they
    /// were wanted.
    pub fn grant(&mut self, now: Instant) -> Vec<Ask> {
        let mut asks = Vec::new();
        let window = self.window;
        for (node, a) in &mut self.active {
            if a.granted {
                continue;
            }
            if self.in_flight > 0 && self.in_flight + window > self.budget {
                break;
            }
            a.granted = true;
            a.credit = window;
            a.seen = now;
            self.in_flight += window;
            asks.push(Ask {
                node: node.clone(),
                request_id: a.request_id,
                from_part: a.next_part,
                window_bytes: window as u64,
            });
        }
        while (self.in_flight == 0 || self.in_flight + window <= self.budget)
            && let Some(node) = self.queue.pop_front()
        {
            self.queued.remove(&node);
            let request_id = self.next_request;
            self.next_request += 1;
            self.in_flight += window;
            self.active.insert(
                node.clone(),
                Active {
                    request_id,
                    next_part: 0,
                    credit: window,
                    granted: true,
                    seen: now,
                },
            );
            asks.push(Ask {
                node,
                request_id,
                from_part: 0,
                window_bytes: window as u64,
            });
        }
        self.max_in_flight = self.max_in_flight.max(self.in_flight);
        asks
    }

    /// Accounts one received part of `node`'s snapshot. A part of the node's current request
    /// uses up its window's credit; `paused` ends the window (the rest of the credit is
    /// released, the next window waits for [`Pacer::grant`]); `last` ends the node's turn. Parts
    /// of any other request change nothing.
    pub fn part(&mut self, node: &str, got: Received, now: Instant) -> Paced {
        let Received {
            request_id,
            part,
            bytes,
            paused,
            last,
        } = got;
        let Some(a) = self.active.get_mut(node) else {
            return Paced::Other;
        };
        if a.request_id != request_id {
            return Paced::Other;
        }
        a.seen = now;
        a.next_part = part.saturating_add(1);
        let used = bytes.min(a.credit);
        a.credit -= used;
        self.in_flight -= used;
        if last {
            self.finish(node);
        } else if paused {
            self.in_flight -= a.credit;
            a.credit = 0;
            a.granted = false;
        }
        Paced::Ours
    }

    /// Ends `node`'s turn (its snapshot completed, was dropped, or the node went away) and
    /// takes it out of the queue; its credit is released.
    pub fn finish(&mut self, node: &str) {
        if let Some(a) = self.active.remove(node) {
            self.in_flight -= a.credit;
        }
        if self.queued.remove(node) {
            self.queue.retain(|n| n != node);
        }
    }

    /// The started nodes nothing was granted to or received from for `timeout`: their turn
    /// ends (credit released) and they are returned, for the caller to want them again.
    pub fn stalled(&mut self, now: Instant, timeout: Duration) -> Vec<String> {
        let stalled: Vec<String> = self
            .active
            .iter()
            .filter(|(_, a)| a.granted && now.saturating_duration_since(a.seen) >= timeout)
            .map(|(n, _)| n.clone())
            .collect();
        for node in &stalled {
            self.finish(node);
        }
        stalled
    }

    /// Bytes asked for and not yet received.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The most bytes ever in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Nodes waiting for their turn or being sent.
    pub fn pending(&self) -> usize {
        self.queue.len() + self.active.len()
    }

    /// Nothing queued or being sent.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.active.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(id: &str) -> SocketRecord {
        SocketRecord::new(id, "/", "n")
    }

    fn part(request_id: u64, part: u32, last: bool, ids: &[&str]) -> Part {
        Part {
            epoch: 7,
            seq: 5,
            request_id,
            part,
            last,
            sockets: ids.iter().map(|id| sock(id)).collect(),
        }
    }

    fn ids(outcome: &Outcome) -> Option<Vec<&str>> {
        match outcome {
            Outcome::Complete { sockets, .. } => {
                Some(sockets.iter().map(|s| s.id.as_str()).collect())
            }
            _ => None,
        }
    }

    #[test]
    fn sequences_of_parts() {
        // (parts fed in order, the outcome of each: "p" pending, "d" dropped, or the ids).
        type Case = (&'static str, Vec<Part>, Vec<&'static str>);
        let cases: Vec<Case> = vec![
            ("single empty part", vec![part(1, 0, true, &[])], vec![""]),
            (
                "three parts",
                vec![
                    part(1, 0, false, &["n.a"]),
                    part(1, 1, false, &["n.b", "n.c"]),
                    part(1, 2, true, &["n.d"]),
                ],
                vec!["p", "p", "n.a n.b n.c n.d"],
            ),
            (
                "missing middle part",
                vec![
                    part(1, 0, false, &["n.a"]),
                    part(1, 2, true, &["n.d"]),
                    part(1, 1, false, &["n.b"]),
                ],
                vec!["p", "d", "d"],
            ),
            (
                "missing first part",
                vec![part(1, 1, true, &["n.b"])],
                vec!["d"],
            ),
            (
                "duplicate part",
                vec![
                    part(1, 0, false, &["n.a"]),
                    part(1, 1, false, &["n.b"]),
                    part(1, 1, false, &["n.b"]),
                    part(1, 2, true, &[]),
                ],
                vec!["p", "p", "d", "d"],
            ),
            (
                "restart from part 0",
                vec![
                    part(1, 0, false, &["n.a"]),
                    part(1, 0, false, &["n.x"]),
                    part(1, 1, true, &["n.y"]),
                ],
                vec!["p", "p", "n.x n.y"],
            ),
            (
                "two requests interleaved",
                vec![
                    part(1, 0, false, &["n.a"]),
                    part(2, 0, false, &["n.x"]),
                    part(1, 1, true, &["n.b"]),
                    part(2, 1, true, &["n.y"]),
                ],
                vec!["p", "p", "n.a n.b", "n.x n.y"],
            ),
            (
                "sequence changes inside one snapshot",
                vec![
                    part(1, 0, false, &["n.a"]),
                    Part {
                        seq: 6,
                        ..part(1, 1, true, &["n.b"])
                    },
                ],
                vec!["p", "d"],
            ),
        ];
        for (name, parts, expected) in cases {
            let mut asm = Assembler::new();
            let got: Vec<String> = parts
                .into_iter()
                .map(|p| {
                    let outcome = asm.part("n", p);
                    match (&outcome, ids(&outcome)) {
                        (Outcome::Pending, _) => "p".to_owned(),
                        (Outcome::Dropped, _) => "d".to_owned(),
                        (_, Some(ids)) => ids.join(" "),
                        _ => unreachable!(),
                    }
                })
                .collect();
            assert_eq!(got, expected, "{name}");
            assert!(asm.is_empty(), "{name}");
        }
    }

    #[test]
    fn complete_carries_epoch_and_seq() {
        let mut asm = Assembler::new();
        assert_eq!(
            asm.part("n", part(0, 0, true, &["n.a"])),
            Outcome::Complete {
                epoch: 7,
                seq: 5,
                sockets: vec![sock("n.a")]
            }
        );
    }

    #[test]
    fn open_assemblies_are_bounded_and_forgotten() {
        let mut asm = Assembler::new();
        for request in 0..10 {
            assert_eq!(
                asm.part("n", part(request, 0, false, &[])),
                Outcome::Pending
            );
        }
        assert_eq!(asm.len(), MAX_OPEN_PER_NODE);
        // The oldest were dropped; the newest still completes.
        assert_eq!(asm.part("n", part(0, 1, true, &[])), Outcome::Dropped);
        assert!(matches!(
            asm.part("n", part(9, 1, true, &[])),
            Outcome::Complete { .. }
        ));
        asm.part("m", part(1, 0, false, &[]));
        asm.forget("n");
        assert_eq!(asm.len(), 1);
        asm.forget("m");
        assert!(asm.is_empty());
    }

    #[test]
    fn nodes_and_epochs_are_separate() {
        let mut asm = Assembler::new();
        assert_eq!(asm.part("n", part(1, 0, false, &["n.a"])), Outcome::Pending);
        assert_eq!(asm.part("m", part(1, 1, true, &["m.a"])), Outcome::Dropped);
        let other_epoch = Part {
            epoch: 8,
            ..part(1, 1, true, &[])
        };
        assert_eq!(asm.part("n", other_epoch), Outcome::Dropped);
        assert_eq!(
            ids(&asm.part("n", part(1, 1, true, &["n.b"]))),
            Some(vec!["n.a", "n.b"])
        );
    }
}

#[cfg(test)]
mod pacer_tests {
    use super::*;

    const W: usize = 100;

    fn got(request_id: u64, part: u32, bytes: usize, paused: bool, last: bool) -> Received {
        Received {
            request_id,
            part,
            bytes,
            paused,
            last,
        }
    }

    fn asked(asks: &[Ask]) -> Vec<(&str, u32)> {
        asks.iter()
            .map(|a| (a.node.as_str(), a.from_part))
            .collect()
    }

    #[test]
    fn windows_stay_within_the_budget_and_started_nodes_go_first() {
        let t = Instant::now();
        let mut p = Pacer::new(4 * W, W);
        assert_eq!(p.window(), W);
        for n in ["a", "b", "c", "d", "e", "f"] {
            assert!(p.want(n));
        }
        assert!(!p.want("a"), "already queued");
        let asks = p.grant(t);
        assert_eq!(asked(&asks), [("a", 0), ("b", 0), ("c", 0), ("d", 0)]);
        assert_eq!(p.in_flight(), 4 * W);
        assert!(p.grant(t).is_empty(), "the budget is used up");
        assert!(!p.want("a"), "already being sent");
        let ra = p.request_of("a").expect("a is started");
        // A part of another request changes nothing.
        assert_eq!(
            p.part("a", got(ra + 100, 0, 60, false, false), t),
            Paced::Other
        );
        assert_eq!(p.part("a", got(ra, 0, 60, false, false), t), Paced::Ours);
        assert_eq!(p.in_flight(), 4 * W - 60);
        // The window ends: its unused credit is released and a's next window comes before e.
        assert_eq!(p.part("a", got(ra, 1, 30, true, false), t), Paced::Ours);
        assert_eq!(p.in_flight(), 3 * W);
        assert_eq!(asked(&p.grant(t)), [("a", 2)]);
        // b finishes (more bytes than its window: an old gateway) — the credit goes, not more.
        let rb = p.request_of("b").expect("b is started");
        p.part("b", got(rb, 0, 5 * W, false, true), t);
        assert_eq!(p.in_flight(), 3 * W);
        assert_eq!(asked(&p.grant(t)), [("e", 0)]);
        assert_eq!(p.max_in_flight(), 4 * W);
        assert_eq!(p.pending(), 5);
    }

    #[test]
    fn a_stalled_node_is_released_and_can_be_wanted_again() {
        let t = Instant::now();
        let mut p = Pacer::new(2 * W, W);
        p.want("a");
        p.want("b");
        p.grant(t);
        let later = t + Duration::from_secs(3);
        let rb = p.request_of("b").expect("b is started");
        p.part("b", got(rb, 0, 10, false, false), later);
        assert_eq!(p.stalled(later, Duration::from_secs(2)), ["a"]);
        assert_eq!(p.in_flight(), W - 10);
        assert!(p.want("a"));
        assert_eq!(asked(&p.grant(later)), [("a", 0)]);
        assert_ne!(p.request_of("a"), None);
        p.finish("a");
        p.finish("b");
        assert!(p.is_idle());
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn one_window_is_granted_even_over_a_small_budget() {
        let t = Instant::now();
        // A budget under one part: the window is one part, and one node at a time.
        let mut p = Pacer::new(10, W);
        assert_eq!((p.window(), p.budget()), (W, W));
        p.want("a");
        p.want("b");
        assert_eq!(asked(&p.grant(t)), [("a", 0)]);
        assert!(p.grant(t).is_empty());
    }
}
