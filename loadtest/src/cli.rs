//! Command line: `switchboard-loadtest <scenario> [--key value]... [--quiet]`, parsed by clap
//! ([`Cli`]; every scenario answers `--help`) and checked by [`Cli::invocation`].
//!
//! Every count and duration has an upper bound, so no invocation can run away; unknown flags are
//! errors rather than silently ignored.
//!
//! `--url` and `--pid` take comma-separated lists (`fanout` only; `idle` takes one of each):
//! several gateways of one cluster, and the processes whose CPU is measured, each optionally
//! named (`gw1=123`). The name prefixes that process's keys in the report (`gw1_cpu_s`); a bare
//! PID is named `server`, which keeps the single-server output as it always was.

use std::fmt::Display;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use clap::{Parser, Subcommand};

use crate::client::{Target, Transport};

const MAX_CONNECTIONS: u64 = 200_000;
const MAX_SECONDS: u64 = 3_600;
const MAX_RATE: u64 = 1_000_000;
const MAX_PAYLOAD_BYTES: u64 = 1_000_000;
const MAX_WINDOW: u64 = 10_000;
const MAX_THREADS: u64 = 64;
const MAX_CONCURRENCY: u64 = 10_000;
const MAX_WRITES: u64 = 100_000_000;
const MAX_WRITE_SIZE: u64 = 1 << 20;
const MAX_FLOOR_SOCKETS: u64 = 50_000;
const MAX_ROOMS: u64 = 100_000;
const MAX_ROOM_SIZE: u64 = 10_000;
/// Entries in a `--url` or `--pid` list.
const MAX_LIST: usize = 16;
/// Characters in a process name.
const MAX_NAME_CHARS: usize = 16;
/// The name of a process given by a bare PID.
pub(crate) const DEFAULT_PROCESS_NAME: &str = "server";
/// Names that would collide with other keys of the report (`client_cpu_s`, `total_cpu_s`).
const RESERVED_NAMES: &[&str] = &["client", "total"];

/// A parsed command line.
#[derive(Debug, PartialEq)]
pub(crate) struct Invocation {
    pub(crate) command: Command,
    /// `--quiet`: no progress lines.
    pub(crate) quiet: bool,
}

/// What to run.
#[derive(Debug, PartialEq)]
pub(crate) enum Command {
    /// Idle connections, or a connection storm (`connect`).
    Idle(Idle),
    /// Room fan-out: one room (`fanout`, `cluster`, `polling`) or many (`rooms`).
    Fanout(Fanout),
    /// Loopback write floor.
    Floor(Floor),
    /// The broker's gRPC API under a room.
    Admin(Admin),
    /// A reconnect storm: a server of a cluster dies or drains under its clients.
    Storm(crate::storm::Storm),
    /// One process of the storm's clients (started by `storm`).
    StormShard(crate::storm_client::Shard),
}

/// `admin` settings. Parsed (and checked) in every build; without the `grpc` feature nothing
/// reads them, because the scenario is refused.
#[derive(Debug, PartialEq)]
#[cfg_attr(not(feature = "grpc"), allow(dead_code))]
pub(crate) struct Admin {
    /// The gateway the members connect to.
    pub(crate) target: Target,
    /// The gRPC address (loopback).
    pub(crate) grpc: std::net::SocketAddr,
    pub(crate) token: String,
    pub(crate) members: usize,
    pub(crate) calls: usize,
    pub(crate) namespace: String,
    pub(crate) room: String,
    pub(crate) concurrency: usize,
}

/// A process whose CPU time and memory a run measures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Watched {
    /// Prefix of its keys in the report: lowercase `[a-z][a-z0-9_]*`.
    pub(crate) name: String,
    pub(crate) pid: u32,
}

/// Settings shared by the scenarios that talk to a server.
#[derive(Debug, PartialEq)]
pub(crate) struct Common {
    /// The servers (gateways of one cluster), never empty; `idle` has exactly one.
    pub(crate) targets: Vec<Target>,
    /// The processes measured, never empty, names and PIDs distinct; `idle` has exactly one.
    pub(crate) watched: Vec<Watched>,
    /// Runtime worker threads (1: a current-thread runtime).
    pub(crate) threads: usize,
    /// Connection handshakes in flight at once.
    pub(crate) concurrency: usize,
}

/// `idle` and `connect` settings.
#[derive(Debug, PartialEq)]
pub(crate) struct Idle {
    /// `idle` or `connect`: the report's name.
    pub(crate) scenario: &'static str,
    pub(crate) common: Common,
    pub(crate) transport: Transport,
    pub(crate) connections: usize,
    pub(crate) namespace: String,
    /// Wait after all are connected, before the second RSS reading.
    pub(crate) settle: Duration,
    /// Keep the connections open this long after measuring (heartbeats must keep them alive).
    pub(crate) hold: Duration,
}

/// Many small rooms (`rooms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RoomGrid {
    pub(crate) rooms: usize,
    /// Members per room (the speaker included).
    pub(crate) size: usize,
}

/// `fanout`, `cluster`, `polling` and `rooms` settings.
#[derive(Debug, PartialEq)]
pub(crate) struct Fanout {
    /// The report's name.
    pub(crate) scenario: &'static str,
    pub(crate) common: Common,
    /// How the members connect (the sender always uses a WebSocket).
    pub(crate) transport: Transport,
    /// `rooms`: many rooms, `members` = rooms × size; otherwise one room, `room`.
    pub(crate) grid: Option<RoomGrid>,
    pub(crate) members: usize,
    /// Messages per second; 0 = as fast as the window allows.
    pub(crate) rate: u64,
    pub(crate) duration: Duration,
    /// Length of the `p` padding string in each message.
    pub(crate) payload_bytes: usize,
    pub(crate) namespace: String,
    /// The room (`rooms`: the prefix of the rooms' names).
    pub(crate) room: String,
    /// At rate 0: messages whose deliveries may be outstanding at once.
    pub(crate) window: u64,
}

/// `floor` settings.
#[derive(Debug, PartialEq)]
pub(crate) struct Floor {
    pub(crate) writes: u64,
    pub(crate) size: usize,
    /// Connections written round-robin.
    pub(crate) sockets: usize,
    /// 0: write back to back; otherwise in bursts of one write per connection, this many a second.
    pub(crate) bursts_per_sec: u64,
    pub(crate) writer_cpu: Option<u32>,
    pub(crate) reader_cpu: Option<u32>,
}

/// The command line, as given; [`Cli::invocation`] checks it.
#[derive(Parser, Debug)]
#[command(
    name = "switchboard-loadtest",
    version,
    after_help = "Only loopback targets are accepted unless --allow-remote is given. Output: a \
                  table and one JSON line on stdout."
)]
pub(crate) struct Cli {
    /// No progress lines on stderr (otherwise one a second while measuring).
    #[arg(long, global = true)]
    quiet: bool,
    /// Accept targets on other machines (--url, --grpc: any IP address but 0.0.0.0 / ::). The
    /// bounds on counts and time stay; --pid still names processes on this machine, so their
    /// CPU columns say nothing of a remote server (and `idle`, which measures the server's
    /// memory, stays local).
    #[arg(long, global = true)]
    allow_remote: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Server memory (VmRSS delta) and CPU per idle, connected Socket.IO connection.
    Idle {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        conns: ConnectionArgs,
        /// Wait after all are connected, before the second memory reading (seconds).
        #[arg(long, default_value_t = 2)]
        settle_secs: u64,
        /// Keep the connections open this long after measuring (seconds).
        #[arg(long, default_value_t = 0)]
        hold_secs: u64,
    },
    /// Connection storm: N connections (at most --concurrency handshakes in flight): connects
    /// per second, connect time p50/p99 (TCP connect to namespace CONNECT), failures, server
    /// CPU per connect. The connections are closed again at the end.
    Connect {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        conns: ConnectionArgs,
    },
    /// N members join a room; one sender emits `say` at R msg/s (0 = saturate, at most --window
    /// messages' worth of deliveries in flight); latency, loss, CPU per delivery. Several URLs
    /// (gateways of one cluster): members go round-robin over them, the sender to the first.
    /// Several PIDs (each NAME=PID): CPU per delivery of each process and of all together.
    Fanout(FanoutArgs),
    /// The fan-out across gateways of one cluster: fanout's flags, at least two URLs.
    Cluster(FanoutArgs),
    /// The fan-out to long-polling members (one GET each); the sender is a WebSocket.
    Polling(FanoutArgs),
    /// K rooms `bench-0`..`bench-{K-1}` of S members each; the first member of each room speaks
    /// for it: R msg/s in all (0 = saturate), round-robin over the rooms. Deliveries/s, latency,
    /// loss, CPU per delivery.
    Rooms {
        #[command(flatten)]
        server: ServerArgs,
        /// Rooms.
        #[arg(long, value_name = "K")]
        rooms: u64,
        /// Members per room (the speaker included).
        #[arg(long, value_name = "S")]
        size: u64,
        #[command(flatten)]
        flow: FlowArgs,
    },
    /// CPU cost of one small write on a loopback TCP connection; with --sockets K and
    /// --bursts-per-sec B, writes go round-robin to K connections in B bursts a second (the
    /// shape of a K-member fan-out at B msg/s).
    Floor {
        /// Writes.
        #[arg(long, default_value_t = 200_000)]
        writes: u64,
        /// Bytes per write.
        #[arg(long, default_value_t = 64)]
        size: u64,
        /// Connections written round-robin.
        #[arg(long, default_value_t = 1)]
        sockets: u64,
        /// 0: back to back; else bursts of one write per connection, this many a second.
        #[arg(long, default_value_t = 0)]
        bursts_per_sec: u64,
        /// Pin the writer to this CPU.
        #[arg(long, value_name = "C")]
        writer_cpu: Option<u32>,
        /// Pin the reader to this CPU.
        #[arg(long, value_name = "C")]
        reader_cpu: Option<u32>,
    },
    /// N members join a room; the broker's gRPC API: FetchSockets of the whole room and
    /// Broadcast to it, each --calls times: latency, and call → last delivery.
    Admin {
        /// The gateway the members connect to.
        #[arg(long, value_name = "URL")]
        url: String,
        /// The gRPC address (loopback).
        #[arg(long, value_name = "HOST:PORT")]
        grpc: std::net::SocketAddr,
        /// The admin bearer token.
        #[arg(long, env = "SWITCHBOARD_ADMIN_TOKEN", hide_env_values = true)]
        token: String,
        /// Members.
        #[arg(long, value_name = "N")]
        members: u64,
        /// Calls of each kind.
        #[arg(long, default_value_t = 50)]
        calls: u64,
        /// The namespace.
        #[arg(long, default_value = "/chat")]
        namespace: String,
        /// The room.
        #[arg(long, default_value = "bench")]
        room: String,
        /// Connection handshakes in flight at once.
        #[arg(long, default_value_t = 256)]
        concurrency: u64,
    },
    /// Reconnect storm: N clients behind a load balancer join rooms; then one server (--kill-pid)
    /// gets SIGKILL or SIGTERM (a drain). Its clients reconnect with socket.io-client's backoff and
    /// rejoin; the time until all are back (and, with --broker, until the broker's state equals
    /// theirs), connect p99 in the storm, failed attempts, lost clients.
    Storm(crate::storm::StormArgs),
    /// Internal: one process of the storm's clients, started by `storm`.
    #[command(hide = true)]
    StormShard(crate::storm::ShardArgs),
}

/// The servers under test and how to drive them.
#[derive(clap::Args, Debug)]
struct ServerArgs {
    /// The server (`fanout` and friends: gateways of one cluster, comma-separated).
    #[arg(long, value_name = "URL[,URL...]")]
    url: String,
    /// The processes measured: PID, or NAME=PID[,NAME=PID...] (NAME lowercase [a-z0-9_]).
    #[arg(long, value_name = "PID")]
    pid: String,
    /// Runtime worker threads (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: u64,
    /// Connection handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    concurrency: u64,
}

/// `idle` and `connect`: the connections.
#[derive(clap::Args, Debug)]
struct ConnectionArgs {
    /// Connections.
    #[arg(long, value_name = "N")]
    connections: u64,
    /// The namespace.
    #[arg(long, default_value = "/")]
    namespace: String,
    /// `websocket` or `polling`.
    #[arg(long, default_value = "websocket")]
    transport: String,
}

/// `fanout`, `cluster`, `polling`.
#[derive(clap::Args, Debug)]
struct FanoutArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Members of the room.
    #[arg(long, value_name = "N")]
    members: u64,
    #[command(flatten)]
    flow: FlowArgs,
}

/// The messages of a fan-out.
#[derive(clap::Args, Debug)]
struct FlowArgs {
    /// Messages per second (0: as fast as the window allows).
    #[arg(long, value_name = "R")]
    rate: u64,
    /// How long to send (seconds).
    #[arg(long, value_name = "T")]
    seconds: u64,
    /// Length of each message's padding.
    #[arg(long, default_value_t = 16)]
    payload_bytes: u64,
    /// The namespace.
    #[arg(long, default_value = "/chat")]
    namespace: String,
    /// The room (`rooms`: the prefix of the rooms' names).
    #[arg(long, default_value = "bench")]
    room: String,
    /// At rate 0: messages whose deliveries may be outstanding at once.
    #[arg(long, default_value_t = 8)]
    window: u64,
}

fn bounded<T: PartialOrd + Display>(key: &str, value: T, low: T, high: T) -> Result<T> {
    ensure!(
        value >= low && value <= high,
        "--{key} must be within {low}..={high} (got {value})"
    );
    Ok(value)
}

pub(crate) fn namespace(nsp: String) -> Result<String> {
    ensure!(
        nsp.starts_with('/') && !nsp.contains(','),
        "--namespace must start with / and contain no comma"
    );
    Ok(nsp)
}

/// The non-empty entries of a comma-separated `--key` list.
fn list<'a>(key: &str, value: &'a str) -> Result<Vec<&'a str>> {
    let items: Vec<&str> = value.split(',').map(str::trim).collect();
    ensure!(
        items.iter().all(|i| !i.is_empty()),
        "--{key}: empty entry in {value:?}"
    );
    ensure!(
        items.len() <= MAX_LIST,
        "--{key}: at most {MAX_LIST} entries (got {})",
        items.len()
    );
    Ok(items)
}

/// `--url URL[,URL...]`: distinct targets, loopback unless `remote` (`--allow-remote`).
pub(crate) fn parse_urls(value: &str, remote: bool) -> Result<Vec<Target>> {
    let mut targets: Vec<Target> = Vec::new();
    for url in list("url", value)? {
        let target = Target::parse(url, remote)?;
        ensure!(!targets.contains(&target), "--url: {url} is listed twice");
        targets.push(target);
    }
    Ok(targets)
}

/// `--pid PID` (named [`DEFAULT_PROCESS_NAME`]) or `--pid NAME=PID[,NAME=PID...]`.
pub(crate) fn parse_pids(value: &str) -> Result<Vec<Watched>> {
    let items = list("pid", value)?;
    let mut watched: Vec<Watched> = Vec::new();
    for item in &items {
        let (name, pid) = match item.split_once('=') {
            Some((name, pid)) => (name.trim(), pid.trim()),
            None => {
                ensure!(
                    items.len() == 1,
                    "--pid: with several processes, name each one (NAME=PID, got {item:?})"
                );
                (DEFAULT_PROCESS_NAME, *item)
            }
        };
        ensure!(
            name.len() <= MAX_NAME_CHARS
                && name.starts_with(|c: char| c.is_ascii_lowercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "--pid: process name {name:?} must be 1..={MAX_NAME_CHARS} characters of a-z, 0-9 \
             and _, starting with a letter"
        );
        ensure!(
            !RESERVED_NAMES.contains(&name),
            "--pid: process name {name:?} is reserved (its keys would collide with the report's own)"
        );
        let pid: u32 = pid
            .parse()
            .with_context(|| format!("bad value {pid:?} for --pid: not a process id"))?;
        ensure!(pid > 0, "--pid: 0 is not a process id");
        ensure!(
            !watched.iter().any(|w| w.name == name),
            "--pid: process name {name:?} is used twice"
        );
        ensure!(
            !watched.iter().any(|w| w.pid == pid),
            "--pid: process {pid} is listed twice"
        );
        watched.push(Watched {
            name: name.to_owned(),
            pid,
        });
    }
    Ok(watched)
}

impl ServerArgs {
    fn check(self, remote: bool) -> Result<Common> {
        Ok(Common {
            targets: parse_urls(&self.url, remote)?,
            watched: parse_pids(&self.pid)?,
            threads: bounded("threads", self.threads, 1, MAX_THREADS)? as usize,
            concurrency: bounded("concurrency", self.concurrency, 1, MAX_CONCURRENCY)? as usize,
        })
    }
}

fn seconds(key: &str, value: u64, low: u64) -> Result<Duration> {
    Ok(Duration::from_secs(bounded(key, value, low, MAX_SECONDS)?))
}

fn idle(
    scenario: &'static str,
    server: ServerArgs,
    conns: ConnectionArgs,
    settle: Duration,
    hold: Duration,
    remote: bool,
) -> Result<Idle> {
    ensure!(
        !(remote && scenario == "idle"),
        "idle measures the server's memory through /proc, so it loads a local server only \
         (without --allow-remote)"
    );
    let common = server.check(remote)?;
    ensure!(
        common.targets.len() == 1 && common.watched.len() == 1,
        "{scenario} takes one --url and one --pid (lists are for fanout)"
    );
    Ok(Idle {
        scenario,
        common,
        transport: conns
            .transport
            .parse::<Transport>()
            .context("--transport")?,
        connections: bounded("connections", conns.connections, 1, MAX_CONNECTIONS)? as usize,
        namespace: namespace(conns.namespace)?,
        settle,
        hold,
    })
}

fn fanout(
    scenario: &'static str,
    server: ServerArgs,
    members: Option<u64>,
    grid: Option<(u64, u64)>,
    flow: FlowArgs,
    remote: bool,
) -> Result<Fanout> {
    let common = server.check(remote)?;
    if scenario == "cluster" {
        ensure!(
            common.targets.len() >= 2,
            "cluster takes two or more --url (gateways of one cluster), comma-separated"
        );
    }
    let grid = match grid {
        Some((rooms, size)) => {
            let rooms = bounded("rooms", rooms, 1, MAX_ROOMS)? as usize;
            let size = bounded("size", size, 2, MAX_ROOM_SIZE)? as usize;
            let members = rooms as u64 * size as u64;
            ensure!(
                members <= MAX_CONNECTIONS,
                "--rooms × --size is {members} connections (at most {MAX_CONNECTIONS})"
            );
            Some(RoomGrid { rooms, size })
        }
        None => None,
    };
    Ok(Fanout {
        scenario,
        common,
        transport: if scenario == "polling" {
            Transport::Polling
        } else {
            Transport::WebSocket
        },
        members: match (grid, members) {
            (Some(g), _) => g.rooms * g.size,
            (None, m) => bounded("members", m.unwrap_or(0), 1, MAX_CONNECTIONS)? as usize,
        },
        grid,
        rate: bounded("rate", flow.rate, 0, MAX_RATE)?,
        duration: seconds("seconds", flow.seconds, 1)?,
        payload_bytes: bounded("payload-bytes", flow.payload_bytes, 0, MAX_PAYLOAD_BYTES)? as usize,
        namespace: namespace(flow.namespace)?,
        room: flow.room,
        window: bounded("window", flow.window, 1, MAX_WINDOW)?,
    })
}

impl Cli {
    /// The run the command line asks for, every value checked against its bounds.
    pub(crate) fn invocation(self) -> Result<Invocation> {
        let command = match self.scenario {
            Scenario::Idle {
                server,
                conns,
                settle_secs,
                hold_secs,
            } => Command::Idle(idle(
                "idle",
                server,
                conns,
                seconds("settle-secs", settle_secs, 0)?,
                seconds("hold-secs", hold_secs, 0)?,
                self.allow_remote,
            )?),
            // A storm measures the connecting only: nothing to settle, nothing to hold.
            Scenario::Connect { server, conns } => Command::Idle(idle(
                "connect",
                server,
                conns,
                Duration::ZERO,
                Duration::ZERO,
                self.allow_remote,
            )?),
            Scenario::Fanout(a) => Command::Fanout(fanout(
                "fanout",
                a.server,
                Some(a.members),
                None,
                a.flow,
                self.allow_remote,
            )?),
            Scenario::Cluster(a) => Command::Fanout(fanout(
                "cluster",
                a.server,
                Some(a.members),
                None,
                a.flow,
                self.allow_remote,
            )?),
            Scenario::Polling(a) => Command::Fanout(fanout(
                "polling",
                a.server,
                Some(a.members),
                None,
                a.flow,
                self.allow_remote,
            )?),
            Scenario::Rooms {
                server,
                rooms,
                size,
                flow,
            } => Command::Fanout(fanout(
                "rooms",
                server,
                None,
                Some((rooms, size)),
                flow,
                self.allow_remote,
            )?),
            Scenario::Floor {
                writes,
                size,
                sockets,
                bursts_per_sec,
                writer_cpu,
                reader_cpu,
            } => {
                let floor = Floor {
                    writes: bounded("writes", writes, 1, MAX_WRITES)?,
                    size: bounded("size", size, 1, MAX_WRITE_SIZE)? as usize,
                    sockets: bounded("sockets", sockets, 1, MAX_FLOOR_SOCKETS)? as usize,
                    bursts_per_sec: bounded("bursts-per-sec", bursts_per_sec, 0, MAX_RATE)?,
                    writer_cpu,
                    reader_cpu,
                };
                if floor.bursts_per_sec > 0 {
                    let seconds = floor
                        .writes
                        .div_ceil(floor.sockets as u64)
                        .div_ceil(floor.bursts_per_sec);
                    ensure!(
                        seconds <= MAX_SECONDS,
                        "that floor would write for {seconds} s (at most {MAX_SECONDS})"
                    );
                }
                Command::Floor(floor)
            }
            Scenario::Admin {
                url,
                grpc,
                token,
                members,
                calls,
                namespace: nsp,
                room,
                concurrency,
            } => Command::Admin(Admin {
                target: {
                    let mut targets = parse_urls(&url, self.allow_remote)?;
                    ensure!(targets.len() == 1, "admin takes one --url");
                    targets.remove(0)
                },
                grpc: {
                    ensure!(
                        !grpc.ip().is_unspecified(),
                        "--grpc: the unspecified address {} names no server",
                        grpc.ip()
                    );
                    ensure!(
                        self.allow_remote || grpc.ip().is_loopback(),
                        "--grpc must be a loopback address unless --allow-remote is given"
                    );
                    grpc
                },
                token,
                members: bounded("members", members, 1, MAX_CONNECTIONS)? as usize,
                calls: bounded("calls", calls, 1, 10_000)? as usize,
                namespace: namespace(nsp)?,
                room,
                concurrency: bounded("concurrency", concurrency, 1, MAX_CONCURRENCY)? as usize,
            }),
            Scenario::Storm(a) => Command::Storm(a.check(self.allow_remote, MAX_CONNECTIONS)?),
            Scenario::StormShard(a) => {
                Command::StormShard(a.check(self.allow_remote, MAX_CONNECTIONS)?)
            }
        };
        Ok(Invocation {
            command,
            quiet: self.quiet,
        })
    }
}

/// Parses the arguments after the program name (clap's errors, help included, as errors).
#[cfg(test)]
pub(crate) fn parse(args: impl Iterator<Item = String>) -> Result<Invocation> {
    let cli = Cli::try_parse_from(std::iter::once("switchboard-loadtest".to_owned()).chain(args))?;
    cli.invocation()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Command> {
        parse(line.split_whitespace().map(str::to_owned)).map(|i| i.command)
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[test]
    fn every_scenario_answers_help() {
        for scenario in [
            "idle", "connect", "fanout", "cluster", "polling", "rooms", "floor", "admin", "storm",
        ] {
            let e = parse_str(&format!("{scenario} --help")).expect_err(scenario);
            let e = e.downcast::<clap::Error>().expect("a clap error");
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{scenario}");
        }
    }

    #[test]
    fn admin_takes_a_gateway_a_grpc_address_and_a_token() {
        let cmd = parse_str(
            "admin --url http://127.0.0.1:3000 --grpc 127.0.0.1:50051 --members 10 --token abc",
        )
        .unwrap();
        let Command::Admin(a) = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!((a.members, a.calls, a.token.as_str()), (10, 50, "abc"));
        assert_eq!(a.grpc, "127.0.0.1:50051".parse().unwrap());
        assert_eq!((a.namespace.as_str(), a.room.as_str()), ("/chat", "bench"));
        for bad in [
            "admin --url http://127.0.0.1:3000 --grpc 10.0.0.1:50051 --members 10 --token t",
            "admin --url http://127.0.0.1:3000 --members 10 --token t",
            "admin --url http://127.0.0.1:3000 --grpc 127.0.0.1:1 --members 0 --token t",
        ] {
            assert!(parse_str(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn idle() {
        let cmd = parse_str(
            "idle --url http://127.0.0.1:3000 --pid 42 --connections 10000 --hold-secs=5",
        )
        .expect("valid");
        let Command::Idle(idle) = cmd else {
            panic!("not idle: {cmd:?}")
        };
        assert_eq!(
            idle.common.watched,
            [Watched {
                name: "server".to_owned(),
                pid: 42
            }]
        );
        assert_eq!(idle.common.targets.len(), 1);
        assert_eq!(idle.common.threads, 1);
        assert_eq!(idle.connections, 10_000);
        assert_eq!(idle.namespace, "/");
        assert_eq!(idle.hold, Duration::from_secs(5));
        assert_eq!(idle.settle, Duration::from_secs(2));
    }

    #[test]
    fn fanout() {
        let cmd = parse_str(
            "fanout --url http://127.0.0.1:1 --pid 1 --members 1000 --rate 0 --seconds 20",
        )
        .expect("valid");
        let Command::Fanout(f) = cmd else {
            panic!("not fanout: {cmd:?}")
        };
        assert_eq!(
            (f.members, f.rate, f.duration),
            (1000, 0, Duration::from_secs(20))
        );
        assert_eq!(
            (
                f.namespace.as_str(),
                f.room.as_str(),
                f.payload_bytes,
                f.window
            ),
            ("/chat", "bench", 16, 8)
        );
    }

    #[test]
    fn fanout_cluster() {
        let cmd = parse_str(
            "fanout --url http://127.0.0.1:1,http://localhost:2/sio --pid gw1=11,gw2=12,nats=13,broker=14 \
             --members 2000 --rate 10 --seconds 20",
        )
        .expect("valid");
        let Command::Fanout(f) = cmd else {
            panic!("not fanout: {cmd:?}")
        };
        let urls: Vec<_> = f
            .common
            .targets
            .iter()
            .map(|t| (t.addr.port(), t.host.as_str(), t.path.as_str()))
            .collect();
        assert_eq!(
            urls,
            [
                (1, "127.0.0.1:1", "/socket.io/"),
                (2, "localhost:2", "/sio/")
            ]
        );
        let watched: Vec<_> = f
            .common
            .watched
            .iter()
            .map(|w| (w.name.as_str(), w.pid))
            .collect();
        assert_eq!(
            watched,
            [("gw1", 11), ("gw2", 12), ("nats", 13), ("broker", 14)]
        );
    }

    #[test]
    fn connect_storm() {
        let Command::Idle(c) = parse_str(
            "connect --url http://127.0.0.1:1 --pid 9 --connections 5000 --concurrency 64 --transport polling",
        )
        .expect("valid") else {
            panic!("not idle")
        };
        assert_eq!(
            (c.scenario, c.connections, c.common.concurrency, c.transport),
            ("connect", 5000, 64, Transport::Polling)
        );
        assert_eq!((c.settle, c.hold), (Duration::ZERO, Duration::ZERO));
        let Command::Idle(i) =
            parse_str("idle --url http://127.0.0.1:1 --pid 9 --connections 5").expect("valid")
        else {
            panic!("not idle")
        };
        assert_eq!((i.scenario, i.transport), ("idle", Transport::WebSocket));
    }

    #[test]
    fn fanout_family() {
        let table: &[(&str, &str, Transport, Option<RoomGrid>, usize)] = &[
            (
                "fanout --url http://127.0.0.1:1 --pid 1 --members 10 --rate 5 --seconds 1",
                "fanout",
                Transport::WebSocket,
                None,
                10,
            ),
            (
                "cluster --url http://127.0.0.1:1,http://127.0.0.1:2 --pid a=1,b=2 --members 10 --rate 5 --seconds 1",
                "cluster",
                Transport::WebSocket,
                None,
                10,
            ),
            (
                "polling --url http://127.0.0.1:1 --pid 1 --members 10 --rate 5 --seconds 1",
                "polling",
                Transport::Polling,
                None,
                10,
            ),
            (
                "rooms --url http://127.0.0.1:1 --pid 1 --rooms 10000 --size 10 --rate 100 --seconds 1",
                "rooms",
                Transport::WebSocket,
                Some(RoomGrid {
                    rooms: 10_000,
                    size: 10,
                }),
                100_000,
            ),
        ];
        for &(line, scenario, transport, grid, members) in table {
            let Command::Fanout(f) = parse_str(line).expect(line) else {
                panic!("{line}")
            };
            assert_eq!(
                (f.scenario, f.transport, f.grid, f.members),
                (scenario, transport, grid, members),
                "{line}"
            );
        }
    }

    #[test]
    fn quiet_is_a_flag_without_value() {
        let line = "floor --quiet --writes 5";
        let i = parse(line.split_whitespace().map(str::to_owned)).expect(line);
        assert!(i.quiet);
        assert!(matches!(i.command, Command::Floor(Floor { writes: 5, .. })));
        let i = parse(["floor".to_owned()].into_iter()).expect("floor");
        assert!(!i.quiet);
    }

    #[test]
    fn pid_lists() {
        let table: &[(&str, &[(&str, u32)])] = &[
            ("42", &[("server", 42)]),
            ("gw=42", &[("gw", 42)]),
            ("server=7", &[("server", 7)]),
            ("a=1,b_2=2", &[("a", 1), ("b_2", 2)]),
            (" gw1 = 5 , gw2=6", &[("gw1", 5), ("gw2", 6)]),
        ];
        for &(value, want) in table {
            let got = parse_pids(value).expect(value);
            let got: Vec<_> = got.iter().map(|w| (w.name.as_str(), w.pid)).collect();
            assert_eq!(got, want, "{value}");
        }
    }

    #[test]
    fn list_errors() {
        let pids = [
            ("", "empty entry"),
            ("1,,2", "empty entry"),
            ("gw1=1,", "empty entry"),
            ("1,2", "name each one"),
            ("gw1=1,2", "name each one"),
            ("gw1=x", "not a process id"),
            ("gw1=-1", "not a process id"),
            ("gw1=", "not a process id"),
            ("0", "0 is not a process id"),
            ("=5", "must be 1..=16 characters"),
            ("GW=5", "must be 1..=16 characters"),
            ("1gw=5", "must be 1..=16 characters"),
            ("gw-1=5", "must be 1..=16 characters"),
            ("a_very_long_process_name=5", "must be 1..=16 characters"),
            ("client=5", "reserved"),
            ("total=5", "reserved"),
            ("gw=1,gw=2", "used twice"),
            ("a=1,b=1", "process 1 is listed twice"),
            (
                "a=1,b=2,c=3,d=4,e=5,f=6,g=7,h=8,i=9,j=10,k=11,l=12,m=13,n=14,o=15,p=16,q=17",
                "at most 16",
            ),
        ];
        for (value, want) in pids {
            let err = parse_pids(value).expect_err(value);
            assert!(format!("{err:#}").contains(want), "{value:?}: {err:#}");
        }
        let urls = [
            ("http://127.0.0.1:1,", "empty entry"),
            ("http://127.0.0.1:1,http://127.0.0.1:1", "listed twice"),
            ("http://127.0.0.1:1,http://10.0.0.1:2", "non-loopback"),
            ("http://127.0.0.1:1,127.0.0.1:2", "must start with http://"),
            ("http://127.0.0.1:1,http://127.0.0.1", "explicit port"),
        ];
        for (value, want) in urls {
            let err = parse_urls(value, false).expect_err(value);
            assert!(format!("{err:#}").contains(want), "{value:?}: {err:#}");
        }
    }

    #[test]
    fn remote_targets_only_when_allowed() {
        let remote = [
            "fanout --url http://10.1.1.1:3000 --pid 1 --members 5 --rate 1 --seconds 1",
            "cluster --url http://10.1.1.1:3000,http://10.1.1.2:3000 --pid 1 --members 5 --rate 1 --seconds 1",
            "connect --url http://192.0.2.7:3000 --pid 1 --connections 5",
            "rooms --url http://10.1.1.1:3000 --pid 1 --rooms 2 --size 2 --rate 1 --seconds 1",
            "admin --url http://10.1.1.1:3000 --grpc 10.1.1.1:50051 --members 5 --token t",
        ];
        for line in remote {
            let err = parse_str(line).expect_err(line);
            assert!(
                format!("{err:#}").contains("unless --allow-remote"),
                "{line}: {err:#}"
            );
            // The flag is global: before or after the scenario.
            for allowed in [
                format!("--allow-remote {line}"),
                format!("{line} --allow-remote"),
            ] {
                parse_str(&allowed).unwrap_or_else(|e| panic!("{allowed}: {e:#}"));
            }
        }
        let Command::Fanout(f) =
            parse_str("fanout --allow-remote --url http://10.1.1.1:3000 --pid 1 --members 5 --rate 1 --seconds 1")
                .expect("valid")
        else {
            panic!("fanout");
        };
        assert_eq!(f.common.targets[0].addr.to_string(), "10.1.1.1:3000");
        // The bounds stay, and what cannot be measured remotely stays local.
        for (line, want) in [
            (
                "fanout --allow-remote --url http://10.1.1.1:3000 --pid 1 --members 200001 --rate 1 --seconds 1",
                "within",
            ),
            (
                "fanout --allow-remote --url http://10.1.1.1:3000 --pid 1 --members 5 \
                 --rate 1 --seconds 3601",
                "within",
            ),
            (
                "idle --allow-remote --url http://10.1.1.1:3000 --pid 1 --connections 5",
                "local server only",
            ),
            (
                "fanout --allow-remote --url http://0.0.0.0:3000 --pid 1 --members 5 --rate 1 --seconds 1",
                "unspecified",
            ),
            (
                "admin --allow-remote --url http://10.1.1.1:3000 --grpc 0.0.0.0:1 --members 5 \
                 --token t",
                "unspecified",
            ),
        ] {
            let err = parse_str(line).expect_err(line);
            assert!(format!("{err:#}").contains(want), "{line}: {err:#}");
        }
    }

    #[test]
    fn floor_defaults() {
        assert_eq!(
            parse_str("floor").expect("valid"),
            Command::Floor(Floor {
                writes: 200_000,
                size: 64,
                sockets: 1,
                bursts_per_sec: 0,
                writer_cpu: None,
                reader_cpu: None
            })
        );
    }

    #[test]
    fn errors() {
        let table = [
            (
                "idle --url http://127.0.0.1:3000 --pid 1",
                "--connections <N>",
            ),
            (
                "idle --url http://127.0.0.1:3000 --pid 1 --connections 0",
                "within",
            ),
            (
                "idle --url http://10.1.1.1:3000 --pid 1 --connections 5",
                "non-loopback",
            ),
            (
                "idle --url http://127.0.0.1:3000 --pid 1 --connections 5 --bogus 1",
                "--bogus",
            ),
            (
                "idle --url http://127.0.0.1:3000 --pid 1 --connections 5 --connections 6",
                "cannot be used multiple times",
            ),
            (
                "idle --url http://127.0.0.1:3000 --pid x --connections 5",
                "bad value",
            ),
            (
                "idle --url http://127.0.0.1:3000 --pid 1 --connections 5 --namespace chat",
                "must start with /",
            ),
            (
                "fanout --url http://127.0.0.1:1 --pid 1 --members 5 --rate 1 --seconds 0",
                "within",
            ),
            (
                "fanout --url http://127.0.0.1:1 --pid 1 --members 5 --rate 1",
                "--seconds <T>",
            ),
            (
                "idle --url http://127.0.0.1:1,http://127.0.0.1:2 --pid 1 --connections 5",
                "idle takes one --url and one --pid",
            ),
            (
                "idle --url http://127.0.0.1:1 --pid a=1,b=2 --connections 5",
                "idle takes one --url and one --pid",
            ),
            (
                "connect --url http://127.0.0.1:1 --pid 1 --connections 5 --hold-secs 1",
                "--hold-secs",
            ),
            (
                "connect --url http://127.0.0.1:1 --pid 1 --connections 5 --transport smoke",
                "unknown transport",
            ),
            (
                "cluster --url http://127.0.0.1:1 --pid 1 --members 5 --rate 1 --seconds 1",
                "cluster takes two or more --url",
            ),
            (
                "rooms --url http://127.0.0.1:1 --pid 1 --rooms 10 --rate 1 --seconds 1",
                "--size <S>",
            ),
            (
                "rooms --url http://127.0.0.1:1 --pid 1 --rooms 10 --size 1 --rate 1 --seconds 1",
                "--size must be within 2..=10000",
            ),
            (
                "rooms --url http://127.0.0.1:1 --pid 1 --rooms 100000 --size 10 --rate 1 --seconds 1",
                "is 1000000 connections",
            ),
            (
                "rooms --url http://127.0.0.1:1 --pid 1 --rooms 10 --size 10 --members 5 --rate 1 --seconds 1",
                "--members",
            ),
            (
                "fanout --url http://127.0.0.1:1 --pid 1 --members 5 --rate 1 --seconds 1 --quiet=maybe",
                "--quiet",
            ),
            (
                "fanout --url http://127.0.0.1:1 --pid 1,2 --members 5 --rate 1 --seconds 1",
                "name each one",
            ),
            ("floor --writes", "a value is required"),
            (
                "floor --writes 1000000 --bursts-per-sec 1",
                "would write for 1000000 s",
            ),
            ("floor stray", "unexpected argument"),
            ("burst", "unrecognized subcommand"),
        ];
        for (line, want) in table {
            let err = parse_str(line).expect_err(line);
            assert!(format!("{err:#}").contains(want), "{line}: {err:#}");
        }
        assert!(parse_str("").is_err(), "a scenario is required");
    }
}
