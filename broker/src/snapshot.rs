//! Reassembly of multi-part snapshots.
//!
//! A gateway sends its full local state as parts numbered from 0, the last one flagged, all with
//! the same sequence number and request id, back to back on its member subject (core NATS keeps
//! one publisher's order on one subject). [`Assembler`] collects them per (node, epoch, request
//! id) and hands back the whole socket list once the last part completes an unbroken run 0..=last.
//! Anything else — a part out of order, a part without its predecessors, a different sequence
//! number inside one snapshot — drops that assembly: the node's next heartbeat still reports the
//! broker behind and a new snapshot is asked for. No I/O, no clock; no input panics.
//!
//! Memory is bounded: at most [`MAX_OPEN_PER_NODE`] incomplete snapshots are kept per node (the
//! oldest goes first), and the caller forgets a node's assemblies when the node goes away or sends
//! an event (which, by the contract, cannot fall between two parts of one snapshot).

use std::collections::HashMap;

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
    open: HashMap<String, Vec<Open>>,
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

    /// How many incomplete snapshots are held, across nodes.
    pub fn len(&self) -> usize {
        self.open.values().map(Vec::len).sum()
    }

    /// Whether no snapshot is being collected.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
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
