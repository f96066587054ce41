//! Command line: `switchboard-loadtest <idle|fanout|floor> [--key value]...`, parsed by hand.
//!
//! Every count and duration has an upper bound, so no invocation can run away; unknown flags are
//! errors rather than silently ignored.

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::client::Target;

/// Printed for `help`, `--help` and usage errors.
pub(crate) const USAGE: &str = "\
usage: switchboard-loadtest <scenario> [--key value]...

scenarios:
  idle    --url http://127.0.0.1:PORT --pid SERVER_PID --connections N
          [--namespace /] [--hold-secs 0] [--settle-secs 2]
          Server memory (VmRSS delta) and CPU per idle, connected Socket.IO connection.
  fanout  --url http://127.0.0.1:PORT --pid SERVER_PID --members N --rate R --seconds T
          [--payload-bytes 16] [--namespace /chat] [--room bench] [--window 8]
          N members join a room; one sender emits `say` at R msg/s (0 = saturate, at most
          --window messages' worth of deliveries in flight); latency, loss, CPU per delivery.
  floor   [--writes 200000] [--size 64] [--sockets 1] [--bursts-per-sec 0]
          [--writer-cpu C] [--reader-cpu C]
          CPU cost of one small write on a loopback TCP connection; with --sockets K and
          --bursts-per-sec B, writes go round-robin to K connections in B bursts a second
          (the shape of a K-member fan-out at B msg/s).

common: [--threads 1] (runtime worker threads) [--concurrency 256] (handshakes in flight)
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

/// What to run.
#[derive(Debug, PartialEq)]
pub(crate) enum Command {
    /// Print usage.
    Help,
    /// Idle connections.
    Idle(Idle),
    /// Room fan-out.
    Fanout(Fanout),
    /// Loopback write floor.
    Floor(Floor),
}

/// Settings shared by the scenarios that talk to a server.
#[derive(Debug, PartialEq)]
pub(crate) struct Common {
    /// The server.
    pub(crate) target: Target,
    /// The server's process id (for RSS and CPU).
    pub(crate) pid: u32,
    /// Runtime worker threads (1: a current-thread runtime).
    pub(crate) threads: usize,
    /// Connection handshakes in flight at once.
    pub(crate) concurrency: usize,
}

/// `idle` settings.
#[derive(Debug, PartialEq)]
pub(crate) struct Idle {
    pub(crate) common: Common,
    pub(crate) connections: usize,
    pub(crate) namespace: String,
    /// Wait after all are connected, before the second RSS reading.
    pub(crate) settle: Duration,
    /// Keep the connections open this long after measuring (heartbeats must keep them alive).
    pub(crate) hold: Duration,
}

/// `fanout` settings.
#[derive(Debug, PartialEq)]
pub(crate) struct Fanout {
    pub(crate) common: Common,
    pub(crate) members: usize,
    /// Messages per second; 0 = as fast as the window allows.
    pub(crate) rate: u64,
    pub(crate) duration: Duration,
    /// Length of the `p` padding string in each message.
    pub(crate) payload_bytes: usize,
    pub(crate) namespace: String,
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

fn common(flags: &mut Flags) -> Result<Common> {
    Ok(Common {
        target: Target::parse(&flags.required::<String>("url")?)?,
        pid: flags.required("pid")?,
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

/// Parses the arguments after the program name.
pub(crate) fn parse(mut args: impl Iterator<Item = String>) -> Result<Command> {
    let scenario = args.next().unwrap_or_default();
    let mut flags = Flags::parse(args)?;
    let command = match scenario.as_str() {
        "" | "help" | "-h" | "--help" => return Ok(Command::Help),
        "idle" => Command::Idle(Idle {
            common: common(&mut flags)?,
            connections: bounded(
                "connections",
                flags.required("connections")?,
                1,
                MAX_CONNECTIONS,
            )? as usize,
            namespace: namespace(&mut flags, "/")?,
            settle: seconds(&mut flags, "settle-secs", Some(2), 0)?,
            hold: seconds(&mut flags, "hold-secs", Some(0), 0)?,
        }),
        "fanout" => Command::Fanout(Fanout {
            common: common(&mut flags)?,
            members: bounded("members", flags.required("members")?, 1, MAX_CONNECTIONS)? as usize,
            rate: bounded("rate", flags.required("rate")?, 0, MAX_RATE)?,
            duration: seconds(&mut flags, "seconds", None, 1)?,
            payload_bytes: bounded(
                "payload-bytes",
                flags.take("payload-bytes")?.unwrap_or(16),
                0,
                MAX_PAYLOAD_BYTES,
            )? as usize,
            namespace: namespace(&mut flags, "/chat")?,
            room: flags.take("room")?.unwrap_or_else(|| "bench".to_owned()),
            window: bounded("window", flags.take("window")?.unwrap_or(8), 1, MAX_WINDOW)?,
        }),
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
    flags.finish()?;
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Command> {
        parse(line.split_whitespace().map(str::to_owned))
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
        assert_eq!(idle.common.pid, 42);
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
