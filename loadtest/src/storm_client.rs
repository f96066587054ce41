//! One shard of the `storm` scenario's clients (`switchboard-loadtest storm-shard`, started by
//! [`crate::storm`], never by hand): clients `first..first + count` of the crowd, each behaving
//! like an application on socket.io-client: it connects (WebSocket), joins its room, listens
//! (answering heartbeats), and when the connection ends it reconnects after socket.io-client's
//! backoff ([`Backoff`]) and joins its room again, as an app's `connect` handler does, forever,
//! until the shard is told to stop.
//!
//! Why a separate process: one process may hold only as many sockets as its open-files limit,
//! and the storm needs more clients than one limit allows on some machines; the coordinator
//! splits the crowd into shards and runs them on the same core.
//!
//! It talks to the coordinator through lines on stdout ([`Line`]); the end of its stdin means
//! stop: it closes its connections and prints `end`. Times are microseconds of the system clock
//! (the processes share one machine, hence one clock), so the coordinator can compare them with
//! the moment it signalled the victim.
//!
//! It must not: reconnect faster than socket.io-client would (the storm would not be the one real
//! clients make), run without a stop (the coordinator closes stdin, and dies with a broken pipe
//! otherwise), or coordinate clients with each other after the first connect.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::client::{Conn, Event, Target, Transport};

/// socket.io-client's `timeout`: one attempt (Engine.IO open and namespace connect) may take
/// this long before it counts as failed. The join is bounded the same way.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long closing the shard's connections may take at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Rooms are `storm-0` .. `storm-{rooms-1}`; client `i` joins `storm-{i % rooms}`.
pub(crate) const ROOM_PREFIX: &str = "storm-";
/// Longest reason carried on a line.
const MAX_REASON_CHARS: usize = 200;

/// socket.io-client's reconnection settings (`reconnectionDelay`, `reconnectionDelayMax`,
/// `randomizationFactor`); the defaults are its defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct BackoffConfig {
    pub(crate) delay: Duration,
    pub(crate) delay_max: Duration,
    pub(crate) randomization: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(1000),
            delay_max: Duration::from_millis(5000),
            randomization: 0.5,
        }
    }
}

/// socket.io-client's backoff (its `backo2` port): attempt `n` (from 0) waits
/// `delay × 2ⁿ`, moved by up to `randomization` of itself (down when the random number's first
/// decimal is even, up when odd), at most `delay_max`. Reset after a successful connect.
#[derive(Debug)]
pub(crate) struct Backoff {
    config: BackoffConfig,
    attempts: u32,
}

impl Backoff {
    pub(crate) fn new(config: BackoffConfig) -> Self {
        Self {
            config,
            attempts: 0,
        }
    }

    /// The wait before the next attempt, given a uniform random number `r` in [0, 1).
    pub(crate) fn duration(&mut self, r: f64) -> Duration {
        let base = self.config.delay.as_millis() as f64 * 2f64.powi(self.attempts.min(62) as i32);
        self.attempts = self.attempts.saturating_add(1);
        let deviation = (r * self.config.randomization * base).floor();
        let ms = if ((r * 10.0).floor() as u64) & 1 == 0 {
            base - deviation
        } else {
            base + deviation
        };
        Duration::from_millis(ms.min(self.config.delay_max.as_millis() as f64).max(0.0) as u64)
    }

    pub(crate) fn reset(&mut self) {
        self.attempts = 0;
    }
}

/// The shard's settings (`storm-shard` flags, made by the coordinator).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Shard {
    /// The load balancer's addresses; client `i` uses `targets[i % len]`.
    pub(crate) targets: Vec<Target>,
    pub(crate) nsp: String,
    pub(crate) rooms: usize,
    /// The first client's index in the whole crowd.
    pub(crate) first: usize,
    pub(crate) count: usize,
    /// First connects in flight at once (reconnects are not held back: that is the storm).
    pub(crate) concurrency: usize,
    pub(crate) backoff: BackoffConfig,
}

/// What a shard tells the coordinator, one line each.
#[derive(Debug, PartialEq)]
pub(crate) enum Line {
    /// Client `index` is connected as `sid` and in its room, since `at_us`; the attempt took
    /// `connect_us` to the namespace CONNECT and `join_us` to the join's ack (from its start),
    /// and was the `attempt`th since the client was last up.
    Up {
        index: usize,
        sid: String,
        at_us: u64,
        connect_us: u64,
        join_us: u64,
        attempt: u32,
    },
    /// Client `index`'s connection ended at `at_us`.
    Down {
        index: usize,
        at_us: u64,
        reason: String,
    },
    /// An attempt of client `index` failed at `at_us`.
    Fail {
        index: usize,
        at_us: u64,
        reason: String,
    },
    /// The shard closed its connections and is exiting.
    End,
}

fn reason_text(reason: &str) -> String {
    reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON_CHARS)
        .collect()
}

impl Line {
    pub(crate) fn render(&self) -> String {
        match self {
            Self::Up {
                index,
                sid,
                at_us,
                connect_us,
                join_us,
                attempt,
            } => format!("up {index} {sid} {at_us} {connect_us} {join_us} {attempt}"),
            Self::Down {
                index,
                at_us,
                reason,
            } => format!("down {index} {at_us} {}", reason_text(reason)),
            Self::Fail {
                index,
                at_us,
                reason,
            } => format!("fail {index} {at_us} {}", reason_text(reason)),
            Self::End => "end".to_owned(),
        }
    }

    pub(crate) fn parse(line: &str) -> Option<Self> {
        let mut words = line.splitn(3, ' ');
        let kind = words.next()?;
        if kind == "end" {
            return Some(Self::End);
        }
        let index = words.next()?.parse().ok()?;
        let rest = words.next()?;
        Some(match kind {
            "up" => {
                let f: Vec<&str> = rest.split(' ').collect();
                let [sid, at, connect, join, attempt] = f.as_slice() else {
                    return None;
                };
                if sid.is_empty() {
                    return None;
                }
                Self::Up {
                    index,
                    sid: (*sid).to_owned(),
                    at_us: at.parse().ok()?,
                    connect_us: connect.parse().ok()?,
                    join_us: join.parse().ok()?,
                    attempt: attempt.parse().ok()?,
                }
            }
            "down" | "fail" => {
                let (at, reason) = rest.split_once(' ').unwrap_or((rest, ""));
                let at_us = at.parse().ok()?;
                let reason = reason.to_owned();
                if kind == "down" {
                    Self::Down {
                        index,
                        at_us,
                        reason,
                    }
                } else {
                    Self::Fail {
                        index,
                        at_us,
                        reason,
                    }
                }
            }
            _ => return None,
        })
    }
}

/// Microseconds of the system clock.
pub(crate) fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Lines to stdout, written by one thread.
#[derive(Clone)]
struct Out(std::sync::mpsc::Sender<String>);

impl Out {
    fn send(&self, line: Line) {
        // The writer ends only when stdout does: then nobody is listening any more.
        let _ = self.0.send(line.render());
    }
}

fn start_writer() -> (Out, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let writer = std::thread::spawn(move || {
        let stdout = std::io::stdout();
        let mut w = std::io::BufWriter::new(stdout.lock());
        while let Ok(line) = rx.recv() {
            if writeln!(w, "{line}").is_err() {
                return;
            }
            while let Ok(more) = rx.try_recv() {
                if writeln!(w, "{more}").is_err() {
                    return;
                }
            }
            if w.flush().is_err() {
                return;
            }
        }
    });
    (Out(tx), writer)
}

/// Runs the shard until its stdin ends.
pub(crate) async fn run(shard: Shard) -> Result<()> {
    let (stop_tx, stop) = watch::channel(false);
    // The end of stdin (the coordinator closed it, or died) is the stop.
    std::thread::spawn(move || {
        let mut sink = String::new();
        let mut stdin = std::io::stdin().lock();
        while matches!(stdin.read_line(&mut sink), Ok(n) if n > 0) {
            sink.clear();
        }
        let _ = stop_tx.send(true);
    });
    let (out, writer) = start_writer();
    let shard = Arc::new(shard);
    let permits = Arc::new(Semaphore::new(shard.concurrency));
    let mut tasks = JoinSet::new();
    for index in shard.first..shard.first + shard.count {
        tasks.spawn(client(
            index,
            shard.clone(),
            permits.clone(),
            out.clone(),
            stop.clone(),
        ));
    }
    stopped(&mut stop.clone()).await;
    let _ = timeout(CLOSE_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.shutdown().await;
    out.send(Line::End);
    drop(out);
    let _ = writer.join();
    Ok(())
}

/// Connects, joins `room`: the connection, its socket id and the time to the CONNECT reply.
async fn open(target: &Target, nsp: &str, room: &str) -> Result<(Conn, String, Duration)> {
    let began = Instant::now();
    let (mut conn, _, sid) = Conn::connect_sid(target, nsp, Transport::WebSocket).await?;
    let connected = began.elapsed();
    anyhow::ensure!(!sid.is_empty(), "the CONNECT reply carried no sid");
    conn.join(nsp, room).await?;
    Ok((conn, sid, connected))
}

/// Resolves once the shard is told to stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await: the task would not be Send.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// Listens until the connection ends (its reason) or the shard stops (None, after closing).
async fn listen(mut conn: Conn, stop: &mut watch::Receiver<bool>) -> Option<String> {
    loop {
        tokio::select! {
            biased;
            () = stopped(stop) => {
                conn.close().await;
                return None;
            }
            read = conn.fill() => match read {
                Ok(0) => return Some("end of stream".to_owned()),
                Ok(_) => {}
                Err(e) => return Some(format!("read error: {e:#}")),
            },
        }
        loop {
            match conn.next_buffered(None) {
                Ok(None) => break,
                Ok(Some(Event::Closed(reason))) => return Some(reason),
                // Room events (presence, relays) are not this scenario's business.
                Ok(Some(_)) => {}
                Err(e) => return Some(format!("{e:#}")),
            }
        }
        if let Err(e) = conn.flush().await {
            return Some(format!("write error: {e:#}"));
        }
    }
}

/// One client's life: connect, join, listen; on every end, back off and do it again.
async fn client(
    index: usize,
    shard: Arc<Shard>,
    permits: Arc<Semaphore>,
    out: Out,
    mut stop: watch::Receiver<bool>,
) {
    let target = &shard.targets[index % shard.targets.len()];
    let room = format!("{ROOM_PREFIX}{}", index % shard.rooms.max(1));
    let mut backoff = Backoff::new(shard.backoff);
    let mut first = true;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let permit = if first {
            first = false;
            Some(permits.clone().acquire_owned().await)
        } else {
            None
        };
        let began = Instant::now();
        let result = tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            r = timeout(ATTEMPT_TIMEOUT, open(target, &shard.nsp, &room)) => r,
        };
        drop(permit);
        match result {
            Ok(Ok((conn, sid, connected))) => {
                out.send(Line::Up {
                    index,
                    sid,
                    at_us: unix_us(),
                    connect_us: connected.as_micros() as u64,
                    join_us: began.elapsed().as_micros() as u64,
                    attempt,
                });
                attempt = 0;
                backoff.reset();
                match listen(conn, &mut stop).await {
                    None => return,
                    Some(reason) => out.send(Line::Down {
                        index,
                        at_us: unix_us(),
                        reason,
                    }),
                }
            }
            Ok(Err(e)) => out.send(Line::Fail {
                index,
                at_us: unix_us(),
                reason: format!("{e:#}"),
            }),
            Err(_) => out.send(Line::Fail {
                index,
                at_us: unix_us(),
                reason: format!("no connect within {ATTEMPT_TIMEOUT:?}"),
            }),
        }
        let wait = backoff.duration(rand::random());
        tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_socket_io_client() {
        // (r, attempt) → ms, by socket.io-client's formula with its defaults (1000, 5000, 0.5):
        // base = 1000 × 2^attempt; deviation = floor(r × 0.5 × base); down when floor(r × 10)
        // is even; at most 5000.
        let table: &[(f64, u32, u64)] = &[
            (0.0, 0, 1000),
            (0.0625, 0, 969), // deviation floor(31.25) = 31; floor(0.625) = 0, even: down
            (0.25, 0, 875),   // floor(2.5) = 2, even: 1000 - 125
            (0.5, 0, 1250),   // floor(5) = 5, odd: 1000 + 250
            (0.75, 0, 1375),  // floor(7.5) = 7, odd: 1000 + 375
            (0.25, 1, 1750),  // 2000 - 250
            (0.75, 1, 2750),  // 2000 + 750
            (0.125, 2, 4250), // floor(1.25) = 1, odd: 4000 + 250
            (0.0625, 2, 3875),
            (0.0, 3, 5000),  // 8000, capped
            (0.25, 3, 5000), // 8000 - 1000, capped
            (0.5, 40, 5000), // capped, no overflow
        ];
        for &(r, attempt, ms) in table {
            let mut b = Backoff::new(BackoffConfig::default());
            for _ in 0..attempt {
                b.duration(0.0);
            }
            assert_eq!(
                b.duration(r),
                Duration::from_millis(ms),
                "r={r} attempt={attempt}"
            );
        }
        let mut b = Backoff::new(BackoffConfig::default());
        b.duration(0.0);
        b.duration(0.0);
        b.reset();
        assert_eq!(b.duration(0.0), Duration::from_millis(1000));
    }

    #[test]
    fn lines_round_trip() {
        let lines = [
            Line::Up {
                index: 7,
                sid: "gw1.abc-_9".to_owned(),
                at_us: 1_700_000_000_000_000,
                connect_us: 1234,
                join_us: 2345,
                attempt: 3,
            },
            Line::Down {
                index: 0,
                at_us: 5,
                reason: "WebSocket close Some((1000, \"\"))".to_owned(),
            },
            Line::Fail {
                index: 29_999,
                at_us: 6,
                reason: "TCP connect: Connection refused (os error 111)".to_owned(),
            },
            Line::Fail {
                index: 1,
                at_us: 6,
                reason: String::new(),
            },
            Line::End,
        ];
        for line in lines {
            assert_eq!(Line::parse(&line.render()), Some(line));
        }
        // Control characters in a reason cannot break the framing.
        let odd = Line::Down {
            index: 1,
            at_us: 2,
            reason: "a\nb".to_owned(),
        };
        assert_eq!(odd.render(), "down 1 2 a b");
        for bad in [
            "",
            "up",
            "up 1",
            "up x s 1 2 3 4",
            "up 1  1 2 3 4",
            "up 1 s 1 2 3",
            "down 1 x",
            "nope 1 2",
        ] {
            assert_eq!(Line::parse(bad), None, "{bad:?}");
        }
    }
}
