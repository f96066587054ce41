//! Command line: `switchboard-loadtest <scenario> [--key value]... [--quiet]`, parsed by hand.
//!
//! Every count and duration has an upper bound, so no invocation can run away; unknown flags are
//! errors rather than silently ignored.
//!
//! `--url` and `--pid` take comma-separated lists (`fanout` only; `idle` takes one of each):
//! several gateways of one cluster, and the processes whose CPU is measured, each optionally
//! named (`gw1=123`). The name prefixes that process's keys in the report (`gw1_cpu_s`); a bare
//! PID is named `server`, which keeps the single-server output as it always was.

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::client::{Target, Transport};

/// Printed for `help`, `--help` and usage errors.
pub(crate) const USAGE: &str = "\
usage: switchboard-loadtest <scenario> [--key value]... [--quiet]

scenarios:
  idle    --url http://127.0.0.1:PORT --pid SERVER_PID --connections N
          [--namespace /] [--hold-secs 0] [--settle-secs 2] [--transport websocket|polling]
          Server memory (VmRSS delta) and CPU per idle, connected Socket.IO connection.
  connect --url http://127.0.0.1:PORT --pid SERVER_PID --connections N [--concurrency 256]
          [--namespace /] [--transport websocket|polling]
          Connection storm: N connections (at most --concurrency handshakes in flight):
          connects per second, connect time p50/p99 (TCP connect to namespace CONNECT),
          failures, server CPU per connect. The connections are closed again at the end.
  fanout  --url http://127.0.0.1:PORT[,URL...] --pid PID|NAME=PID[,NAME=PID...]
          --members N --rate R --seconds T
          [--payload-bytes 16] [--namespace /chat] [--room bench] [--window 8]
          N members join a room; one sender emits `say` at R msg/s (0 = saturate, at most
          --window messages' worth of deliveries in flight); latency, loss, CPU per delivery.
          Several URLs (gateways of one cluster): members go round-robin over them, the
          sender to the first. Several PIDs (each NAME=PID, NAME lowercase [a-z0-9_]):
          CPU per delivery of each process and of all of them together.
  cluster the fan-out across gateways of one cluster: fanout's flags, at least two URLs.
  polling the fan-out to long-polling members: fanout's flags; members hold one GET each,
          the sender is a WebSocket.
  rooms   --url URL[,URL...] --pid PID|NAME=PID[,...] --rooms K --size S --rate R --seconds T
          [--payload-bytes 16] [--namespace /chat] [--room bench] [--window 8]
          K rooms `bench-0`..`bench-{K-1}` of S members each; the first member of each room
          speaks for it: R msg/s in all (0 = saturate), round-robin over the rooms, each
          delivered to the other S-1 members. Deliveries/s, latency, loss, CPU per delivery.
  floor   [--writes 200000] [--size 64] [--sockets 1] [--bursts-per-sec 0]
          [--writer-cpu C] [--reader-cpu C]
          CPU cost of one small write on a loopback TCP connection; with --sockets K and
          --bursts-per-sec B, writes go round-robin to K connections in B bursts a second
          (the shape of a K-member fan-out at B msg/s).

  admin   --url http://127.0.0.1:PORT --grpc 127.0.0.1:PORT --members N [--calls 50]
          [--namespace /chat] [--room bench] [--concurrency 256]   (token: $SWITCHBOARD_ADMIN_TOKEN)
          N members join a room; the broker's gRPC API: FetchSockets of the whole room and
          Broadcast to it, each --calls times: latency, and call → last delivery.
          Only in a build with gRPC (`cargo build -p switchboard-loadtest --features grpc`).

common: [--threads 1] (runtime worker threads) [--concurrency 256] (handshakes in flight)
        [--quiet] (no progress lines on stderr; otherwise one a second while measuring)
Only loopback targets are accepted. Output: a table and one JSON line on stdout.";

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
    /// Print usage.
    Help,
    /// Idle connections, or a connection storm (`connect`).
    Idle(Idle),
    /// Room fan-out: one room (`fanout`, `cluster`, `polling`) or many (`rooms`).
    Fanout(Fanout),
    /// Loopback write floor.
    Floor(Floor),
    /// The broker's gRPC API under a room.
    Admin(Admin),
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

/// `--key value` pairs not consumed yet.
struct Flags(Vec<(String, String)>);

impl Flags {
    fn parse(args: impl Iterator<Item = String>) -> Result<Self> {
        let mut pairs = Vec::new();
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            let Some(key) = arg.strip_prefix("--") else {
                bail!("unexpected argument {arg:?}");
            };
            let (key, value) = match key.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                // The one flag without a value.
                None if key == "quiet" => (key.to_owned(), "true".to_owned()),
                None => {
                    let value = args
                        .next()
                        .ok_or_else(|| anyhow!("--{key} needs a value"))?;
                    (key.to_owned(), value)
                }
            };
            ensure!(!pairs.iter().any(|(k, _)| *k == key), "--{key} given twice");
            pairs.push((key, value));
        }
        Ok(Self(pairs))
    }

    fn take<T: FromStr>(&mut self, key: &str) -> Result<Option<T>>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        let Some(i) = self.0.iter().position(|(k, _)| k == key) else {
            return Ok(None);
        };
        let (_, value) = self.0.remove(i);
        value
            .parse()
            .map(Some)
            .with_context(|| format!("bad value {value:?} for --{key}"))
    }

    fn required<T: FromStr>(&mut self, key: &str) -> Result<T>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        self.take(key)?
            .ok_or_else(|| anyhow!("--{key} is required"))
    }

    fn finish(self) -> Result<()> {
        match self.0.first() {
            Some((key, _)) => bail!("unknown flag --{key}"),
            None => Ok(()),
        }
    }
}

fn bounded<T: PartialOrd + Display>(key: &str, value: T, low: T, high: T) -> Result<T> {
    ensure!(
        value >= low && value <= high,
        "--{key} must be within {low}..={high} (got {value})"
    );
    Ok(value)
}

fn namespace(flags: &mut Flags, default: &str) -> Result<String> {
    let nsp = flags
        .take::<String>("namespace")?
        .unwrap_or_else(|| default.to_owned());
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

/// `--url URL[,URL...]`: distinct loopback targets.
pub(crate) fn parse_urls(value: &str) -> Result<Vec<Target>> {
    let mut targets: Vec<Target> = Vec::new();
    for url in list("url", value)? {
        let target = Target::parse(url)?;
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

fn common(flags: &mut Flags) -> Result<Common> {
    Ok(Common {
        targets: parse_urls(&flags.required::<String>("url")?)?,
        watched: parse_pids(&flags.required::<String>("pid")?)?,
        threads: bounded(
            "threads",
            flags.take("threads")?.unwrap_or(1),
            1,
            MAX_THREADS,
        )? as usize,
        concurrency: bounded(
            "concurrency",
            flags.take("concurrency")?.unwrap_or(256),
            1,
            MAX_CONCURRENCY,
        )? as usize,
    })
}

fn seconds(flags: &mut Flags, key: &str, default: Option<u64>, low: u64) -> Result<Duration> {
    let value = match (flags.take(key)?, default) {
        (Some(v), _) | (None, Some(v)) => v,
        (None, None) => bail!("--{key} is required"),
    };
    Ok(Duration::from_secs(bounded(key, value, low, MAX_SECONDS)?))
}

fn idle(flags: &mut Flags, scenario: &'static str) -> Result<Idle> {
    Ok(Idle {
        scenario,
        common: {
            let common = common(flags)?;
            ensure!(
                common.targets.len() == 1 && common.watched.len() == 1,
                "{scenario} takes one --url and one --pid (lists are for fanout)"
            );
            common
        },
        transport: flags
            .take::<String>("transport")?
            .map(|t| t.parse::<Transport>())
            .transpose()
            .context("--transport")?
            .unwrap_or_default(),
        connections: bounded(
            "connections",
            flags.required("connections")?,
            1,
            MAX_CONNECTIONS,
        )? as usize,
        namespace: namespace(flags, "/")?,
        // A storm measures the connecting only: nothing to settle, nothing to hold.
        settle: match scenario {
            "connect" => Duration::ZERO,
            _ => seconds(flags, "settle-secs", Some(2), 0)?,
        },
        hold: match scenario {
            "connect" => Duration::ZERO,
            _ => seconds(flags, "hold-secs", Some(0), 0)?,
        },
    })
}

fn fanout(flags: &mut Flags, scenario: &'static str) -> Result<Fanout> {
    let common = common(flags)?;
    if scenario == "cluster" {
        ensure!(
            common.targets.len() >= 2,
            "cluster takes two or more --url (gateways of one cluster), comma-separated"
        );
    }
    let grid = if scenario == "rooms" {
        let rooms = bounded("rooms", flags.required("rooms")?, 1, MAX_ROOMS)? as usize;
        let size = bounded("size", flags.required("size")?, 2, MAX_ROOM_SIZE)? as usize;
        let members = rooms as u64 * size as u64;
        ensure!(
            members <= MAX_CONNECTIONS,
            "--rooms × --size is {members} connections (at most {MAX_CONNECTIONS})"
        );
        Some(RoomGrid { rooms, size })
    } else {
        None
    };
    Ok(Fanout {
        scenario,
        common,
        transport: if scenario == "polling" {
            Transport::Polling
        } else {
            Transport::WebSocket
        },
        members: match grid {
            Some(g) => g.rooms * g.size,
            None => bounded("members", flags.required("members")?, 1, MAX_CONNECTIONS)? as usize,
        },
        grid,
        rate: bounded("rate", flags.required("rate")?, 0, MAX_RATE)?,
        duration: seconds(flags, "seconds", None, 1)?,
        payload_bytes: bounded(
            "payload-bytes",
            flags.take("payload-bytes")?.unwrap_or(16),
            0,
            MAX_PAYLOAD_BYTES,
        )? as usize,
        namespace: namespace(flags, "/chat")?,
        room: flags.take("room")?.unwrap_or_else(|| "bench".to_owned()),
        window: bounded("window", flags.take("window")?.unwrap_or(8), 1, MAX_WINDOW)?,
    })
}

/// Parses the arguments after the program name.
pub(crate) fn parse(mut args: impl Iterator<Item = String>) -> Result<Invocation> {
    let scenario = args.next().unwrap_or_default();
    let mut flags = Flags::parse(args)?;
    let quiet = flags.take::<bool>("quiet")?.unwrap_or(false);
    let command = match scenario.as_str() {
        "" | "help" | "-h" | "--help" => Command::Help,
        "idle" => Command::Idle(idle(&mut flags, "idle")?),
        "connect" => Command::Idle(idle(&mut flags, "connect")?),
        "fanout" => Command::Fanout(fanout(&mut flags, "fanout")?),
        "cluster" => Command::Fanout(fanout(&mut flags, "cluster")?),
        "polling" => Command::Fanout(fanout(&mut flags, "polling")?),
        "rooms" => Command::Fanout(fanout(&mut flags, "rooms")?),
        "floor" => Command::Floor(Floor {
            writes: bounded(
                "writes",
                flags.take("writes")?.unwrap_or(200_000),
                1,
                MAX_WRITES,
            )?,
            size: bounded("size", flags.take("size")?.unwrap_or(64), 1, MAX_WRITE_SIZE)? as usize,
            sockets: bounded(
                "sockets",
                flags.take("sockets")?.unwrap_or(1),
                1,
                MAX_FLOOR_SOCKETS,
            )? as usize,
            bursts_per_sec: bounded(
                "bursts-per-sec",
                flags.take("bursts-per-sec")?.unwrap_or(0),
                0,
                MAX_RATE,
            )?,
            writer_cpu: flags.take("writer-cpu")?,
            reader_cpu: flags.take("reader-cpu")?,
        }),
        "admin" => Command::Admin(Admin {
            target: {
                let mut targets = parse_urls(&flags.required::<String>("url")?)?;
                ensure!(targets.len() == 1, "admin takes one --url");
                targets.remove(0)
            },
            grpc: {
                let addr: std::net::SocketAddr = flags.required("grpc")?;
                ensure!(addr.ip().is_loopback(), "--grpc must be a loopback address");
                addr
            },
            token: match flags.take::<String>("token")? {
                Some(t) => t,
                None => std::env::var("SWITCHBOARD_ADMIN_TOKEN")
                    .map_err(|_| anyhow!("--token or SWITCHBOARD_ADMIN_TOKEN is required"))?,
            },
            members: bounded("members", flags.required("members")?, 1, MAX_CONNECTIONS)? as usize,
            calls: bounded("calls", flags.take("calls")?.unwrap_or(50), 1, 10_000)? as usize,
            namespace: namespace(&mut flags, "/chat")?,
            room: flags.take("room")?.unwrap_or_else(|| "bench".to_owned()),
            concurrency: bounded(
                "concurrency",
                flags.take("concurrency")?.unwrap_or(256),
                1,
                MAX_CONCURRENCY,
            )? as usize,
        }),
        other => bail!("unknown scenario {other:?}\n\n{USAGE}"),
    };
    if let Command::Floor(f) = &command
        && f.bursts_per_sec > 0
    {
        let seconds = f
            .writes
            .div_ceil(f.sockets as u64)
            .div_ceil(f.bursts_per_sec);
        ensure!(
            seconds <= MAX_SECONDS,
            "that floor would write for {seconds} s (at most {MAX_SECONDS})"
        );
    }
    if command == Command::Help {
        return Ok(Invocation { command, quiet });
    }
    flags.finish()?;
    Ok(Invocation { command, quiet })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Command> {
        parse(line.split_whitespace().map(str::to_owned)).map(|i| i.command)
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
            let err = parse_urls(value).expect_err(value);
            assert!(format!("{err:#}").contains(want), "{value:?}: {err:#}");
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
                "--connections is required",
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
                "unknown flag --bogus",
            ),
            (
                "idle --url http://127.0.0.1:3000 --pid 1 --connections 5 --connections 6",
                "twice",
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
                "--seconds is required",
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
                "unknown flag --hold-secs",
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
                "--size is required",
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
                "unknown flag --members",
            ),
            (
                "fanout --url http://127.0.0.1:1 --pid 1 --members 5 --rate 1 --seconds 1 --quiet=maybe",
                "bad value",
            ),
            (
                "fanout --url http://127.0.0.1:1 --pid 1,2 --members 5 --rate 1 --seconds 1",
                "name each one",
            ),
            ("floor --writes", "needs a value"),
            (
                "floor --writes 1000000 --bursts-per-sec 1",
                "would write for 1000000 s",
            ),
            ("floor stray", "unexpected argument"),
            ("burst", "unknown scenario"),
        ];
        for (line, want) in table {
            let err = parse_str(line).expect_err(line);
            assert!(format!("{err:#}").contains(want), "{line}: {err:#}");
        }
        assert_eq!(parse_str("").expect("help"), Command::Help);
    }
}
