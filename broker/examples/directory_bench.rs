//! `directory_bench`: the broker directory's own cost, in process, with no NATS and no broker
//! service around it — what `broker_bench` measures end to end, minus the transport.
//!
//! It encodes `--sockets` connects of the bench profile (`tests/profile/mod.rs`: the same
//! sockets as `broker_bench`) and `--churn` join + leave pairs of topic rooms as protobuf
//! `MemberMessage`s first, untimed, then times, on this thread's CPU clock
//! (`/proc/thread-self/schedstat`), what the broker does with each message: decode it, convert
//! it (`convert::member_event`) and apply it to a [`Directory`]. With `--presence` it also turns
//! every change into its presence event and encodes it (`convert::presence_event`), as the
//! leading broker does before each publish (the publish itself is not included). Last, it walks
//! the namespace in FetchSockets pages of 10 000 (select, and encode the response from the
//! directory's views with `page::fetch_sockets`, as the gRPC handler does; then again through a
//! prost message of owned strings, as the HTTP API's handler does) and the rooms in Rooms pages of 10 000, timing each page (wall clock).
//!
//! With `--rebuild` it then cuts the directory into one snapshot per gateway (records, untimed)
//! and times applying them one after the other to an empty directory (`Directory::snapshot`, the
//! broker's rebuild after a restart, without the protobuf decode and the pacer), on the CPU clock;
//! each node's records are made just before its apply, untimed. With `--quiet` the applies are
//! `Directory::snapshot_quietly`, as a started broker's first rebuild and a broker that does not
//! lead make them (no changes).
//!
//! Output: events per CPU second for each phase, and the bytes the directory holds per socket
//! (jemalloc's `stats.allocated` after the connect phase minus before, each read after flushing
//! the thread cache: what the directory allocated, not RSS). Keep runs short: the machine is shared.
//!
//! `cargo run --release -p switchboard-broker --example directory_bench -- [--sockets N]
//! [--churn M] [--presence] [--rebuild [--quiet]]`

use std::time::Instant;

use switchboard_broker::state::{Applied, Directory, Selector, SocketRecord};
use switchboard_broker::{convert, grpc, page};
use switchboard_proto::Message as _;
use switchboard_proto::admin as api;
use switchboard_proto::bus as pb;
use tikv_jemalloc_ctl::{Access as _, AsName as _, epoch, stats};

#[path = "../tests/profile/mod.rs"]
mod profile;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

type Error = Box<dyn std::error::Error>;

struct Args {
    sockets: usize,
    churn: usize,
    presence: bool,
    rebuild: bool,
    quiet: bool,
}

fn args() -> Result<Args, Error> {
    let mut out = Args {
        sockets: 200_000,
        churn: 200_000,
        presence: false,
        rebuild: false,
        quiet: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--sockets" => out.sockets = it.next().ok_or("--sockets N")?.parse()?,
            "--churn" => out.churn = it.next().ok_or("--churn M")?.parse()?,
            "--presence" => out.presence = true,
            "--rebuild" => out.rebuild = true,
            "--quiet" => out.quiet = true,
            _ => return Err(format!("unknown argument {arg}").into()),
        }
    }
    Ok(out)
}

/// This thread's CPU time in nanoseconds.
fn cpu_ns() -> Result<u64, Error> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    Ok(text
        .split_whitespace()
        .next()
        .ok_or("empty schedstat")?
        .parse()?)
}

/// The bytes of live allocations, after flushing this thread's cache (turning it off and on
/// again), whose freed blocks would otherwise still count.
fn allocated() -> Result<usize, Error> {
    let tcache = b"thread.tcache.enabled\0".name();
    tcache
        .write(false)
        .and_then(|()| tcache.write(true))
        .map_err(|e| format!("jemalloc tcache: {e}"))?;
    epoch::advance().map_err(|e| format!("jemalloc epoch: {e}"))?;
    Ok(stats::allocated::read().map_err(|e| format!("jemalloc stats: {e}"))?)
}

/// The messages of one phase, encoded, with the socket index each is for.
fn encode(
    seqs: &mut [u64],
    items: impl Iterator<Item = (usize, pb::member_message::Body)>,
) -> Vec<(usize, Vec<u8>)> {
    items
        .map(|(i, body)| {
            let g = i % profile::GATEWAYS;
            seqs[g] += 1;
            let message = pb::MemberMessage {
                node: profile::node(i),
                epoch: 1,
                seq: seqs[g],
                body: Some(body),
            };
            (i, message.encode_to_vec())
        })
        .collect()
}

struct Phase {
    events: usize,
    changes: usize,
    presence_bytes: usize,
    cpu_ns: u64,
}

/// Decodes, converts and applies `messages` (the node names are made before the clock starts;
/// the messages stay allocated, so the directory's growth can be read around the call).
fn run(dir: &mut Directory, messages: &[(usize, Vec<u8>)], presence: bool) -> Result<Phase, Error> {
    let nodes: Vec<String> = (0..profile::GATEWAYS).map(profile::node).collect();
    let now = Instant::now();
    let mut phase = Phase {
        events: messages.len(),
        changes: 0,
        presence_bytes: 0,
        cpu_ns: 0,
    };
    let start = cpu_ns()?;
    for (i, bytes) in messages {
        let message = pb::MemberMessage::decode(bytes.as_slice())?;
        let node = &nodes[*i % profile::GATEWAYS];
        let body = message.body.ok_or("no body")?;
        let event = convert::member_event(node, body).ok_or("not an event")?;
        let Applied { changes, .. } = dir.apply(node, message.epoch, message.seq, event, now);
        phase.changes += changes.len();
        if presence {
            for change in &changes {
                if let Some(event) = convert::presence_event(change) {
                    phase.presence_bytes += event.encode_to_vec().len();
                }
            }
        }
    }
    phase.cpu_ns = cpu_ns()? - start;
    Ok(phase)
}

fn report(name: &str, phase: &Phase) {
    let secs = phase.cpu_ns as f64 / 1e9;
    println!(
        "{name:<12} {:>9} events  {:>8.3} CPU s  {:>9.0} events/CPU s  {:>6.2} µs/event  {} changes",
        phase.events,
        secs,
        phase.events as f64 / secs,
        secs * 1e6 / phase.events as f64,
        phase.changes,
    );
}

/// Page size of the query phase (the broker bench's).
const PAGE: usize = 10_000;

/// Wall time per page (the thread's CPU clock ticks too coarsely for one page) of walking `next`
/// until it returns `None`: (p50, p99, max) in ms and the number of pages.
fn pages(mut next: impl FnMut(Option<String>) -> Option<String>) -> (f64, f64, f64, usize) {
    let mut times = Vec::new();
    let mut after = None;
    loop {
        let start = Instant::now();
        after = next(after);
        times.push(start.elapsed().as_secs_f64() * 1e3);
        if after.is_none() {
            break;
        }
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), at(1.0), times.len())
}

/// Cuts `dir` into one snapshot per node and applies them to an empty directory, timing the
/// applies on the CPU clock. Each node's records are made (untimed) right before its apply, so
/// they are as warm as a just-decoded snapshot's in the broker.
fn rebuild(dir: &Directory, quiet: bool) -> Result<(), Error> {
    let mut by_node: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for socket in dir.sockets() {
        by_node.entry(socket.node()).or_default().push(socket.id());
    }
    let snapshots = by_node.len();
    let mut fresh = Directory::new(std::time::Duration::from_secs(3600));
    let now = Instant::now();
    let (mut changes, mut cpu) = (0, 0);
    for (node, ids) in by_node {
        let records: Vec<SocketRecord> = ids
            .iter()
            .filter_map(|id| dir.socket(id))
            .map(|socket| socket.to_record())
            .collect();
        let start = cpu_ns()?;
        let applied = if quiet {
            fresh.snapshot_quietly(node, 1, 1, records, now)
        } else {
            fresh.snapshot(node, 1, 1, records, now)
        };
        changes += applied.changes.len();
        cpu += cpu_ns()? - start;
    }
    let secs = cpu as f64 / 1e9;
    println!(
        "rebuild      {} sockets from {snapshots} snapshots  {secs:>8.3} CPU s  {:>9.0} sockets/CPU s  {changes} changes",
        fresh.len(),
        fresh.len() as f64 / secs,
    );
    if fresh.len() != dir.len() {
        return Err(format!("rebuilt {} sockets of {}", fresh.len(), dir.len()).into());
    }
    Ok(())
}

fn main() -> Result<(), Error> {
    let args = args()?;
    let mut seqs = vec![0; profile::GATEWAYS];
    let connects = encode(
        &mut seqs,
        (0..args.sockets).map(|i| {
            (
                i,
                pb::member_message::Body::Connect(profile::info(i, args.sockets)),
            )
        }),
    );
    let pick = |k: usize| (k.wrapping_mul(2_654_435_761)) % args.sockets.max(1);
    let churn = encode(
        &mut seqs,
        (0..args.churn).flat_map(|k| {
            let i = pick(k);
            let change = || pb::RoomChange {
                id: profile::id(i),
                room: profile::topic(k / 2),
            };
            [
                (i, pb::member_message::Body::Join(change())),
                (i, pb::member_message::Body::Leave(change())),
            ]
        }),
    );
    let before = allocated()?;
    let mut dir = Directory::new(std::time::Duration::from_secs(3600));
    let connect = run(&mut dir, &connects, args.presence)?;
    let held = allocated()?.saturating_sub(before);
    let churned = run(&mut dir, &churn, args.presence)?;
    println!(
        "directory_bench: {} sockets, {} join+leave pairs, presence encoding {}",
        args.sockets,
        args.churn,
        if args.presence { "on" } else { "off" }
    );
    report("connect", &connect);
    report("join/leave", &churned);
    println!(
        "memory       {held} B held by the directory, {} B per socket",
        held / args.sockets.max(1)
    );
    let sel = Selector {
        ns: "/chat".into(),
        ..Selector::default()
    };
    // As the gRPC route sends it (encoded from the views), and as the `Admin` trait builds it
    // for the HTTP API (a prost message of owned strings, then encoded).
    for how in ["encoded", "prost"] {
        let mut bytes = 0;
        let (p50, p99, max, n) = pages(|after| {
            let page = dir.select(&sel, after.as_deref(), PAGE);
            let next = page.next.clone().unwrap_or_default();
            let total = dir.count(&sel) as u64;
            let len = if how == "encoded" {
                page::fetch_sockets(&page.items, &next, total).0.len()
            } else {
                api::FetchSocketsResponse {
                    sockets: page.items.iter().map(grpc::summary).collect(),
                    next_page_token: next,
                    total,
                }
                .encode_to_vec()
                .len()
            };
            bytes = bytes.max(len);
            page.next
        });
        println!(
            "FetchSockets {n} pages of {PAGE} ({how}): wall time per page p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms ({bytes} B a page)"
        );
    }
    let (p50, p99, max, n) = pages(|after| dir.rooms("/chat", "", after.as_deref(), PAGE).next);
    println!(
        "Rooms        {n} pages of {PAGE}: wall time per page p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms"
    );
    if args.rebuild {
        rebuild(&dir, args.quiet)?;
    }
    if dir.len() != args.sockets {
        return Err(format!(
            "{} sockets in the directory, expected {}",
            dir.len(),
            args.sockets
        )
        .into());
    }
    Ok(())
}
