//! What the broker's directory holds per socket, counted by the allocator (jemalloc's
//! `stats.allocated`: the bytes of live allocations, rounded to jemalloc's size classes), not by
//! RSS, so the figure is deterministic and independent of the machine's load.
//!
//! The count is process-wide, so this binary has one test, which runs the measurements one after
//! the other (the harness starting another test's thread would be counted), with jemalloc's
//! thread cache off (freed blocks in it would still count).

use std::time::{Duration, Instant};

use switchboard_broker::convert;
use switchboard_broker::state::{Directory, MemberEvent, Reason};
use switchboard_proto::bus as pb;
use tikv_jemalloc_ctl::{Access as _, AsName as _, epoch, stats};

mod profile;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Sockets in the measured directory.
const SOCKETS: usize = 20_000;
/// The target per socket (issue 17, docs/scaling.md "Broker capacity").
const MAX_BYTES_PER_SOCKET: usize = 300;

/// Turns this thread's cache off (flushing it), so freed memory is not counted as held.
fn uncached() {
    b"thread.tcache.enabled\0"
        .name()
        .write(false)
        .expect("jemalloc tcache control");
}

fn allocated() -> usize {
    epoch::advance().expect("jemalloc epoch");
    stats::allocated::read().expect("jemalloc stats")
}

/// Feeds `events` of their nodes to `dir`, in order, one sequence per node.
fn feed(dir: &mut Directory, seqs: &mut [u64], events: impl Iterator<Item = (usize, MemberEvent)>) {
    let now = Instant::now();
    for (i, event) in events {
        let g = i % profile::GATEWAYS;
        seqs[g] += 1;
        let applied = dir.apply(&profile::node(i), 1, seqs[g], event, now);
        assert!(!applied.need_snapshot);
    }
}

fn connect(i: usize, sockets: usize) -> (usize, MemberEvent) {
    let info = profile::info(i, sockets);
    let event = convert::member_event(&profile::node(i), pb::member_message::Body::Connect(info));
    (i, event.expect("a connect is an event"))
}

#[test]
fn the_directory_holds_at_most_300_bytes_a_socket_and_gives_everything_back() {
    uncached();
    a_socket_of_the_bench_profile_costs_at_most_300_bytes();
    a_churned_directory_gives_everything_back();
}

fn a_socket_of_the_bench_profile_costs_at_most_300_bytes() {
    let mut seqs = vec![0; profile::GATEWAYS];
    let before = allocated();
    let mut dir = Directory::new(Duration::from_secs(6));
    feed(
        &mut dir,
        &mut seqs,
        (0..SOCKETS).map(|i| connect(i, SOCKETS)),
    );
    let held = allocated().saturating_sub(before);
    assert_eq!(dir.len(), SOCKETS);
    let per_socket = held / SOCKETS;
    eprintln!("directory: {held} B for {SOCKETS} sockets, {per_socket} B per socket");
    assert!(
        per_socket <= MAX_BYTES_PER_SOCKET,
        "{per_socket} B per socket, over {MAX_BYTES_PER_SOCKET} B"
    );
}

fn a_churned_directory_gives_everything_back() {
    const N: usize = 5_000;
    let mut seqs = vec![0; profile::GATEWAYS];
    let before = allocated();
    let mut dir = Directory::new(Duration::from_secs(6));
    // Hostile churn: every socket with its own user agent, query and rooms, and joins and
    // leaves of rooms nobody else uses.
    let distinct = |i: usize| {
        let mut info = profile::info(i, N);
        if let Some(h) = info.handshake.as_mut() {
            h.headers[0].value = format!("{} #{i}", profile::USER_AGENT);
            h.query = format!("EIO=4&transport=websocket&t={i}");
        }
        info.rooms.push(format!("own-{i}"));
        let node = profile::node(i);
        let event = convert::member_event(&node, pb::member_message::Body::Connect(info));
        (i, event.expect("a connect is an event"))
    };
    feed(&mut dir, &mut seqs, (0..N).map(distinct));
    let peak = allocated().saturating_sub(before);
    let join = |i: usize, room: String| {
        (
            i,
            MemberEvent::Join {
                id: profile::id(i),
                room,
            },
        )
    };
    let leave = |i: usize, room: String| {
        (
            i,
            MemberEvent::Leave {
                id: profile::id(i),
                room,
            },
        )
    };
    feed(
        &mut dir,
        &mut seqs,
        (0..N).map(|i| join(i, format!("extra-{i}"))),
    );
    feed(
        &mut dir,
        &mut seqs,
        (0..N).map(|i| leave(i, format!("extra-{i}"))),
    );
    // Half leave one by one, the other half with their nodes.
    let gone = |i: usize| {
        let id = profile::id(i);
        let reason = "transport close".to_owned();
        (
            i,
            MemberEvent::Disconnect {
                id,
                reason,
                recoverable: false,
            },
        )
    };
    feed(&mut dir, &mut seqs, (0..N / 2).map(gone));
    for g in 0..profile::GATEWAYS {
        dir.remove_node(&profile::node(g), Reason::NodeLeft, Instant::now());
    }
    assert!(dir.is_empty());
    assert_eq!(dir.interned(), 0, "interned values left behind");
    let left = allocated().saturating_sub(before);
    eprintln!("directory: {peak} B at {N} sockets, {left} B after everyone left");
    assert!(
        left < 16 * 1024,
        "{left} B still held after everyone left (peak {peak} B)"
    );
}
