//! The `storm` scenario: a reconnect storm. N clients (WebSocket, behind a load balancer, spread
//! over rooms `storm-0`..) connect and join their rooms; once the broker (if one is named)
//! agrees with them, the victim process (a gateway, or a peer server) gets a signal: `kill`
//! (SIGKILL, a crash) or `term` (SIGTERM, a gateway's graceful drain). Its clients reconnect
//! through the load balancer with socket.io-client's backoff and join their rooms again, as an
//! application does ([`crate::storm_client`]). Measured:
//!
//! - by the clients: the time from the signal until the last of the victim's clients is
//!   connected elsewhere and back in its room, each client's gap (its connection's end → its
//!   rejoin), connect time (attempt → namespace CONNECT) and rejoin time (→ join ack) of the
//!   reconnects, failed attempts, clients never back (lost), clients that dropped again after
//!   coming back; with `--victim`, whether exactly the victim's clients dropped;
//! - by the broker (`--broker`, its `/v1/state`): the time from the signal until its directory
//!   equals the truth (every client's current socket present once, in its room, nothing else in
//!   the namespace, in particular no stale socket of the victim), and until the victim's last
//!   stale socket was gone.
//!
//! The coordinator holds no client socket: the clients live in shard processes (the same binary,
//! `storm-shard`), as many as the open-files limit requires, which report over their stdout
//! ([`crate::storm_client::Line`]). It must not: signal any process but the one named by
//! `--kill-pid`, or wait unboundedly (setup, storm and stop each have a deadline).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::client::Target;
use crate::histogram::Histogram;
use crate::progress::progress;
use crate::report::{Report, Samples};
use crate::storm_client::{BackoffConfig, Line, Shard, unix_us};
use crate::usage;

/// Descriptors a shard keeps for everything but its clients' sockets.
const SHARD_SPARE_FDS: u64 = 128;
/// How long the broker's view may take to equal the truth before the signal.
const BASELINE_TIMEOUT: Duration = Duration::from_secs(60);
/// After the victim is gone and every client is up, how long to wait for late drop reports
/// (the load balancer notices the dead upstream, then closes the client's connection) before
/// the clients' side counts as done. It delays the end of the run, not the figures.
const LATE_DROP_GRACE: Duration = Duration::from_secs(2);
/// How long shards get to close their connections and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Timeout of one broker state request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest broker state document read.
const MAX_STATE_BYTES: u64 = 512 * 1024 * 1024;

/// The signal the victim gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// SIGKILL: a crash.
    Kill,
    /// SIGTERM: a graceful drain.
    Term,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Self::Kill => "KILL",
            Self::Term => "TERM",
        }
    }
}

/// `storm` settings.
#[derive(Debug, PartialEq)]
pub(crate) struct Storm {
    pub(crate) targets: Vec<Target>,
    pub(crate) clients: usize,
    pub(crate) rooms: usize,
    pub(crate) nsp: String,
    pub(crate) kill_pid: u32,
    pub(crate) signal: Signal,
    /// The victim's node id (Switchboard: the prefix of its sockets' ids).
    pub(crate) victim: Option<String>,
    /// The broker's HTTP address (its `/v1/state`).
    pub(crate) broker: Option<std::net::SocketAddr>,
    /// 0: as many as the open-files limit needs.
    pub(crate) shards: usize,
    pub(crate) concurrency: usize,
    pub(crate) settle: Duration,
    pub(crate) deadline: Duration,
    pub(crate) poll: Duration,
    pub(crate) backoff: BackoffConfig,
}

/// `storm` flags.
#[derive(clap::Args, Debug)]
pub(crate) struct StormArgs {
    /// The load balancer (comma-separated addresses of it: client i uses the (i mod n)th, so that
    /// more clients than one address's ephemeral ports can connect).
    #[arg(long, value_name = "URL[,URL...]")]
    url: String,
    /// Clients.
    #[arg(long, value_name = "N")]
    clients: u64,
    /// Rooms: client i joins `storm-{i mod K}`.
    #[arg(long, value_name = "K", default_value_t = 1000)]
    rooms: u64,
    /// The namespace.
    #[arg(long, default_value = "/chat")]
    namespace: String,
    /// The process to signal once everyone is in (a gateway, a peer server).
    #[arg(long, value_name = "PID")]
    kill_pid: u32,
    /// `kill` (SIGKILL: a crash) or `term` (SIGTERM: a drain).
    #[arg(long, default_value = "kill")]
    signal: String,
    /// The victim's node id: its clients are those whose socket ids start with `NODE.`.
    #[arg(long, value_name = "NODE")]
    victim: Option<String>,
    /// The broker's HTTP address (http://127.0.0.1:PORT): its `/v1/state` is compared with the
    /// clients' truth.
    #[arg(long, value_name = "URL")]
    broker: Option<String>,
    /// Client processes (0: as many as the open-files limit needs).
    #[arg(long, default_value_t = 0)]
    shards: u64,
    /// First connects in flight at once, per shard.
    #[arg(long, default_value_t = 256)]
    concurrency: u64,
    /// Wait between the broker agreeing (or everyone being in) and the signal (seconds).
    #[arg(long, default_value_t = 2)]
    settle_secs: u64,
    /// Give up this long after the signal (seconds).
    #[arg(long, default_value_t = 120)]
    deadline_secs: u64,
    /// Interval of the broker state requests during the storm (ms).
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
    #[command(flatten)]
    backoff: BackoffArgs,
}

/// socket.io-client's reconnection options.
#[derive(clap::Args, Debug)]
pub(crate) struct BackoffArgs {
    /// reconnectionDelay (ms).
    #[arg(long, default_value_t = 1000)]
    reconnect_delay_ms: u64,
    /// reconnectionDelayMax (ms).
    #[arg(long, default_value_t = 5000)]
    reconnect_delay_max_ms: u64,
    /// randomizationFactor (0..=1).
    #[arg(long, default_value_t = 0.5)]
    randomization_factor: f64,
}

impl BackoffArgs {
    fn check(self) -> Result<BackoffConfig> {
        ensure!(
            (1..=60_000).contains(&self.reconnect_delay_ms)
                && (self.reconnect_delay_ms..=600_000).contains(&self.reconnect_delay_max_ms),
            "--reconnect-delay-ms must be 1..=60000 and --reconnect-delay-max-ms within it..=600000"
        );
        ensure!(
            (0.0..=1.0).contains(&self.randomization_factor),
            "--randomization-factor must be within 0..=1"
        );
        Ok(BackoffConfig {
            delay: Duration::from_millis(self.reconnect_delay_ms),
            delay_max: Duration::from_millis(self.reconnect_delay_max_ms),
            randomization: self.randomization_factor,
        })
    }

    fn to_args(c: &BackoffConfig) -> Vec<String> {
        vec![
            "--reconnect-delay-ms".into(),
            c.delay.as_millis().to_string(),
            "--reconnect-delay-max-ms".into(),
            c.delay_max.as_millis().to_string(),
            "--randomization-factor".into(),
            c.randomization.to_string(),
        ]
    }
}

/// `storm-shard` flags (made by the coordinator).
#[derive(clap::Args, Debug)]
pub(crate) struct ShardArgs {
    #[arg(long)]
    url: String,
    #[arg(long)]
    namespace: String,
    #[arg(long)]
    rooms: u64,
    #[arg(long)]
    first: u64,
    #[arg(long)]
    count: u64,
    #[arg(long)]
    concurrency: u64,
    #[command(flatten)]
    backoff: BackoffArgs,
}

impl StormArgs {
    pub(crate) fn check(self, remote: bool, max_clients: u64) -> Result<Storm> {
        let within = |key: &str, v: u64, lo: u64, hi: u64| -> Result<u64> {
            ensure!(
                (lo..=hi).contains(&v),
                "--{key} must be within {lo}..={hi} (got {v})"
            );
            Ok(v)
        };
        ensure!(
            self.kill_pid > 1,
            "--kill-pid must name a process (got {})",
            self.kill_pid
        );
        ensure!(
            self.kill_pid != std::process::id(),
            "--kill-pid names this process"
        );
        let broker = match self.broker {
            Some(url) => Some(Target::parse(&url, remote).context("--broker")?.addr),
            None => None,
        };
        Ok(Storm {
            targets: crate::cli::parse_urls(&self.url, remote)?,
            clients: within("clients", self.clients, 1, max_clients)? as usize,
            rooms: within("rooms", self.rooms, 1, max_clients)? as usize,
            nsp: crate::cli::namespace(self.namespace)?,
            kill_pid: self.kill_pid,
            signal: match self.signal.as_str() {
                "kill" => Signal::Kill,
                "term" => Signal::Term,
                other => bail!("--signal must be kill or term (got {other:?})"),
            },
            victim: self.victim,
            broker,
            shards: within("shards", self.shards, 0, 64)? as usize,
            concurrency: within("concurrency", self.concurrency, 1, 10_000)? as usize,
            settle: Duration::from_secs(within("settle-secs", self.settle_secs, 0, 600)?),
            deadline: Duration::from_secs(within("deadline-secs", self.deadline_secs, 1, 3600)?),
            poll: Duration::from_millis(within("poll-ms", self.poll_ms, 50, 60_000)?),
            backoff: self.backoff.check()?,
        })
    }
}

impl ShardArgs {
    pub(crate) fn check(self, remote: bool, max_clients: u64) -> Result<Shard> {
        ensure!(
            (1..=max_clients).contains(&self.count) && self.first < max_clients,
            "storm-shard: bad --first/--count"
        );
        Ok(Shard {
            targets: crate::cli::parse_urls(&self.url, remote)?,
            nsp: crate::cli::namespace(self.namespace)?,
            rooms: self.rooms.clamp(1, max_clients) as usize,
            first: self.first as usize,
            count: self.count as usize,
            concurrency: self.concurrency.clamp(1, 10_000) as usize,
            backoff: self.backoff.check()?,
        })
    }
}

/// What the coordinator knows of one client.
#[derive(Default)]
struct ClientState {
    sid: Option<String>,
    up: bool,
    down_at: Option<u64>,
    /// Its connection ended after the signal.
    dropped: bool,
    /// When it was first back after dropping.
    back_at: Option<u64>,
    /// Drops after it was back.
    redrops: u32,
}

/// The storm's tallies.
#[derive(Default)]
struct Tally {
    clients: Vec<ClientState>,
    up: usize,
    initial_connect: Histogram,
    initial_fails: Samples,
    early_drops: Samples,
    /// The signal's time, once sent.
    kill_at: Option<u64>,
    storm_connect: Histogram,
    storm_join: Histogram,
    gap: Histogram,
    back: Histogram,
    failed_attempts: Samples,
    drop_reasons: Samples,
    dropped: usize,
    back_count: usize,
    ended_shards: usize,
}

impl Tally {
    fn apply(&mut self, line: Line) {
        let after_kill = |at: u64, kill: Option<u64>| kill.is_some_and(|k| at >= k);
        match line {
            Line::Up {
                index,
                sid,
                at_us,
                connect_us,
                join_us,
                ..
            } => {
                let kill = self.kill_at;
                let Some(c) = self.clients.get_mut(index) else {
                    return;
                };
                if !c.up {
                    c.up = true;
                    self.up += 1;
                }
                c.sid = Some(sid);
                if after_kill(at_us, kill) {
                    self.storm_connect.record(connect_us * 1000);
                    self.storm_join.record(join_us * 1000);
                    if c.dropped && c.back_at.is_none() {
                        c.back_at = Some(at_us);
                        self.back_count += 1;
                        self.gap
                            .record(at_us.saturating_sub(c.down_at.unwrap_or(at_us)) * 1000);
                        self.back
                            .record(at_us.saturating_sub(kill.unwrap_or(at_us)) * 1000);
                    }
                } else {
                    self.initial_connect.record(join_us * 1000);
                }
            }
            Line::Down {
                index,
                at_us,
                reason,
            } => {
                let kill = self.kill_at;
                let Some(c) = self.clients.get_mut(index) else {
                    return;
                };
                if c.up {
                    c.up = false;
                    self.up -= 1;
                }
                c.down_at = Some(at_us);
                if !after_kill(at_us, kill) {
                    self.early_drops.push(reason);
                } else if !c.dropped {
                    c.dropped = true;
                    self.dropped += 1;
                    self.drop_reasons.push(reason);
                } else if c.back_at.is_some() {
                    c.redrops += 1;
                    self.drop_reasons.push(format!("again: {reason}"));
                }
            }
            Line::Fail { at_us, reason, .. } => {
                if after_kill(at_us, self.kill_at) {
                    self.failed_attempts.push(reason);
                } else {
                    self.initial_fails.push(reason);
                }
            }
            Line::End => self.ended_shards += 1,
        }
    }

    /// Socket id → room of every client that is up.
    fn truth(&self, rooms: usize) -> HashMap<&str, String> {
        self.clients
            .iter()
            .enumerate()
            .filter(|(_, c)| c.up)
            .filter_map(|(i, c)| {
                let room = format!("{}{}", crate::storm_client::ROOM_PREFIX, i % rooms);
                c.sid.as_deref().map(|s| (s, room))
            })
            .collect()
    }
}

/// How the broker's directory differs from the truth.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Diff {
    /// Clients' sockets it does not list.
    pub(crate) missing: usize,
    /// Clients' sockets it lists in other rooms.
    pub(crate) wrong_rooms: usize,
    /// Sockets of the namespace that are no client's current socket.
    pub(crate) stale: usize,
    /// Of those, the victim's.
    pub(crate) stale_victim: usize,
    /// Sockets it lists twice.
    pub(crate) duplicates: usize,
}

impl Diff {
    fn equal(&self) -> bool {
        *self == Self::default()
    }
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} missing, {} in wrong rooms, {} stale ({} of the victim), {} listed twice",
            self.missing, self.wrong_rooms, self.stale, self.stale_victim, self.duplicates
        )
    }
}

/// Compares a `/v1/state` document with the truth (socket id → its one room) in `nsp`. A
/// socket's own-id room, if the broker lists it, is not counted as a room.
pub(crate) fn compare(
    state: &Value,
    nsp: &str,
    truth: &HashMap<&str, String>,
    victim: Option<&str>,
) -> Result<Diff> {
    let sockets = state
        .get("sockets")
        .and_then(Value::as_array)
        .context("the broker's state has no \"sockets\" array")?;
    let mut diff = Diff::default();
    let mut seen: HashSet<&str> = HashSet::new();
    for s in sockets {
        if s.get("ns").and_then(Value::as_str) != Some(nsp) {
            continue;
        }
        let id = s.get("id").and_then(Value::as_str).unwrap_or_default();
        if !seen.insert(id) {
            diff.duplicates += 1;
            continue;
        }
        match truth.get(id) {
            None => {
                diff.stale += 1;
                let node = s.get("node").and_then(Value::as_str);
                if victim.is_some() && node == victim {
                    diff.stale_victim += 1;
                }
            }
            Some(room) => {
                let rooms: Vec<&str> = s
                    .get("rooms")
                    .and_then(Value::as_array)
                    .map(|r| {
                        r.iter()
                            .filter_map(Value::as_str)
                            .filter(|r| *r != id)
                            .collect()
                    })
                    .unwrap_or_default();
                if rooms != [room.as_str()] {
                    diff.wrong_rooms += 1;
                }
            }
        }
    }
    diff.missing = truth.keys().filter(|id| !seen.contains(*id)).count();
    Ok(diff)
}

/// GET `path` from `addr` (HTTP/1.1, one request, `Connection: close`): the body of a 200.
fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<Vec<u8>> {
    let mut tcp = std::net::TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    tcp.set_read_timeout(Some(HTTP_TIMEOUT))?;
    tcp.set_write_timeout(Some(HTTP_TIMEOUT))?;
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    tcp.take(MAX_STATE_BYTES).read_to_end(&mut raw)?;
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no complete response head")?;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    ensure!(
        head.starts_with("http/1.1 200"),
        "GET {path}: {}",
        head.lines().next().unwrap_or_default()
    );
    let body = raw.split_off(head_end + 4);
    if head.contains("transfer-encoding: chunked") {
        dechunk(&body)
    } else {
        Ok(body)
    }
}

/// Decodes a chunked HTTP/1.1 body.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk")?;
        let size_text = std::str::from_utf8(&rest[..eol])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        ensure!(rest.len() >= size + 2, "truncated chunk");
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Whether process `pid` has exited (gone, or a zombie waiting for its parent).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_ascii_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// Node id of a Switchboard socket id (`gw1.xxxx`).
fn node_of(sid: &str) -> Option<&str> {
    sid.split_once('.').map(|(node, _)| node)
}

fn broker_diff(addr: std::net::SocketAddr, cfg: &Storm, tally: &Tally) -> Result<(Diff, Instant)> {
    let body = http_get(addr, "/v1/state")?;
    let at = Instant::now();
    let state: Value = serde_json::from_slice(&body).context("the broker's /v1/state")?;
    let diff = compare(
        &state,
        &cfg.nsp,
        &tally.truth(cfg.rooms),
        cfg.victim.as_deref(),
    )?;
    Ok((diff, at))
}

struct Shards {
    children: Vec<Child>,
    lines: mpsc::Receiver<Option<Line>>,
}

fn spawn_shards(cfg: &Storm, quiet: bool) -> Result<Shards> {
    let per_shard = usage::open_files_limit()
        .map_or(u64::MAX, |l| l.saturating_sub(SHARD_SPARE_FDS))
        .max(1) as usize;
    let shards = if cfg.shards == 0 {
        cfg.clients.div_ceil(per_shard)
    } else {
        cfg.shards.min(cfg.clients)
    };
    let size = cfg.clients.div_ceil(shards);
    ensure!(
        size <= per_shard,
        "{size} clients per shard, but the open-files limit allows {per_shard}: more --shards"
    );
    let exe = std::env::current_exe().context("finding this program to start its shards")?;
    let urls: Vec<String> = cfg
        .targets
        .iter()
        .map(|t| format!("http://{}{}", t.addr, t.path))
        .collect();
    let (tx, lines) = mpsc::channel();
    let mut children = Vec::new();
    for s in 0..shards {
        let first = s * size;
        let count = size.min(cfg.clients - first);
        let mut cmd = Process::new(&exe);
        cmd.arg("storm-shard")
            .args(["--url", &urls.join(",")])
            .args(["--namespace", &cfg.nsp])
            .args(["--rooms", &cfg.rooms.to_string()])
            .args(["--first", &first.to_string()])
            .args(["--count", &count.to_string()])
            .args(["--concurrency", &cfg.concurrency.to_string()])
            .args(BackoffArgs::to_args(&cfg.backoff))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if quiet {
            cmd.arg("--quiet");
        }
        if cfg.targets.iter().any(|t| !t.addr.ip().is_loopback()) {
            cmd.arg("--allow-remote");
        }
        let mut child = cmd.spawn().context("starting a storm shard")?;
        let stdout = child.stdout.take().context("shard stdout")?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(parsed) = Line::parse(&line)
                    && tx.send(Some(parsed)).is_err()
                {
                    return;
                }
            }
            let _ = tx.send(None);
        });
        children.push(child);
    }
    Ok(Shards { children, lines })
}

impl Shards {
    /// Applies every line that arrives within `wait`; false once every shard's output ended.
    fn pump(&self, tally: &mut Tally, wait: Duration, open: &mut usize) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(Some(line)) => tally.apply(line),
                Ok(None) => {
                    *open = open.saturating_sub(1);
                    if *open == 0 {
                        return false;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return true,
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
            }
            if Instant::now() >= deadline {
                return true;
            }
        }
    }

    /// Closes the shards' stdin (their stop), waits for them, kills the stragglers.
    fn stop(mut self, tally: &mut Tally, open: &mut usize) {
        for child in &mut self.children {
            drop(child.stdin.take());
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while *open > 0 && Instant::now() < deadline {
            if !self.pump(tally, Duration::from_millis(200), open) {
                break;
            }
        }
        for child in &mut self.children {
            if !matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

fn secs(from_us: u64, to_us: u64) -> f64 {
    to_us.saturating_sub(from_us) as f64 / 1e6
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Runs the scenario (the coordinator: no async runtime of its own).
pub(crate) fn run(cfg: Storm, quiet: bool) -> Result<Report> {
    ensure!(
        !exited(cfg.kill_pid),
        "--kill-pid {} is not a running process",
        cfg.kill_pid
    );
    let loadavg = usage::loadavg().unwrap_or(-1.0);
    let mut tally = Tally {
        clients: (0..cfg.clients).map(|_| ClientState::default()).collect(),
        ..Tally::default()
    };
    let shards = spawn_shards(&cfg, quiet)?;
    let mut open = shards.children.len();
    progress!(
        "storm: {} clients in {} shard(s), {} rooms, {}",
        cfg.clients,
        open,
        cfg.rooms,
        cfg.nsp
    );
    let mut r = Report::new("storm");
    let result = storm(&cfg, &shards, &mut tally, &mut open, &mut r);
    progress!("storm: stopping the clients");
    shards.stop(&mut tally, &mut open);
    result?;
    r.add("loadavg_1m", "load average (1 min) at start", loadavg, "");
    Ok(r)
}

/// The run between the shards' start and their stop; adds its figures to `r`.
fn storm(
    cfg: &Storm,
    shards: &Shards,
    tally: &mut Tally,
    open: &mut usize,
    r: &mut Report,
) -> Result<()> {
    // 1. Everyone in.
    let setup_started = Instant::now();
    let setup_deadline = crate::idle::setup_deadline(cfg.clients);
    let mut next_progress = setup_started + Duration::from_secs(1);
    while tally.up < cfg.clients {
        ensure!(
            Instant::now() < setup_deadline,
            "only {} of {} clients connected before the setup deadline ({} failed attempts: {})",
            tally.up,
            cfg.clients,
            tally.initial_fails.count(),
            tally.initial_fails.summary()
        );
        ensure!(
            shards.pump(tally, Duration::from_millis(100), open),
            "the shards ended during setup"
        );
        if Instant::now() >= next_progress {
            progress!("  {} of {} in their rooms", tally.up, cfg.clients);
            next_progress += Duration::from_secs(1);
        }
    }
    let setup_s = setup_started.elapsed().as_secs_f64();
    progress!(
        "storm: {} clients in their rooms after {setup_s:.1} s",
        cfg.clients
    );

    // 2. The broker agrees before the storm.
    let mut baseline_s = None;
    if let Some(addr) = cfg.broker {
        let started = Instant::now();
        loop {
            shards.pump(tally, Duration::ZERO, open);
            let (diff, _) = broker_diff(addr, cfg, tally)?;
            if diff.equal() && tally.up == cfg.clients {
                baseline_s = Some(started.elapsed().as_secs_f64());
                break;
            }
            ensure!(
                started.elapsed() < BASELINE_TIMEOUT,
                "before the storm, the broker's state never equalled the clients': {diff}"
            );
            shards.pump(tally, cfg.poll, open);
        }
    }
    shards.pump(tally, cfg.settle, open);
    ensure!(
        tally.up == cfg.clients,
        "{} clients dropped before the storm: {}",
        cfg.clients - tally.up,
        tally.early_drops.summary()
    );
    let on_victim = cfg.victim.as_deref().map(|v| {
        tally
            .clients
            .iter()
            .filter(|c| c.sid.as_deref().and_then(node_of) == Some(v))
            .count()
    });

    // 3. The signal.
    let kill_at = unix_us();
    tally.kill_at = Some(kill_at);
    let kill_instant = Instant::now();
    progress!(
        "storm: SIG{} to {}{}",
        cfg.signal.name(),
        cfg.kill_pid,
        on_victim.map_or(String::new(), |n| format!(" ({n} clients on it)"))
    );
    let status = Process::new("kill")
        .args(["-s", cfg.signal.name(), &cfg.kill_pid.to_string()])
        .status()
        .context("running kill")?;
    ensure!(
        status.success(),
        "kill -s {} {} failed",
        cfg.signal.name(),
        cfg.kill_pid
    );

    // 4. The storm: until every client is back and the broker agrees, or the deadline.
    let deadline = kill_instant + cfg.deadline;
    let mut victim_gone: Option<(Instant, u64)> = None;
    let mut clients_done: Option<u64> = None;
    let mut broker_equal_at: Option<u64> = None;
    let mut equal_since: Option<u64> = None;
    let mut stale_gone_at: Option<u64> = None;
    let mut last_diff: Option<Diff> = None;
    let mut polls = 0u64;
    let mut poll_errors = Samples::default();
    let mut next_poll = Instant::now();
    let mut next_progress = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let wait = next_poll
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(50));
        if !shards.pump(tally, wait, open) {
            bail!("the shards ended during the storm");
        }
        if victim_gone.is_none() && exited(cfg.kill_pid) {
            victim_gone = Some((Instant::now(), unix_us()));
        }
        if clients_done.is_none()
            && let Some((gone, _)) = victim_gone
            && gone.elapsed() >= LATE_DROP_GRACE
            && tally.up == cfg.clients
        {
            let last = tally
                .clients
                .iter()
                .filter_map(|c| c.back_at)
                .max()
                .unwrap_or(kill_at);
            clients_done = Some(last);
            progress!(
                "storm: all {} dropped clients back {:.2} s after the signal",
                tally.dropped,
                secs(kill_at, last)
            );
        }
        if let Some(addr) = cfg.broker
            && Instant::now() >= next_poll
            && broker_equal_at.is_none()
        {
            next_poll = Instant::now() + cfg.poll;
            polls += 1;
            match broker_diff(addr, cfg, tally) {
                Ok((diff, _)) => {
                    let now = unix_us();
                    if stale_gone_at.is_none() && victim_gone.is_some() && diff.stale_victim == 0 {
                        stale_gone_at = Some(now);
                    }
                    // Equal while every client is up, the victim gone: a candidate, confirmed
                    // once the clients' side is done (a late drop report can still undo it).
                    if diff.equal() && victim_gone.is_some() && tally.up == cfg.clients {
                        equal_since.get_or_insert(now);
                    } else {
                        equal_since = None;
                    }
                    if clients_done.is_some() {
                        broker_equal_at = equal_since;
                    }
                    last_diff = Some(diff);
                }
                Err(e) => poll_errors.push(format!("{e:#}")),
            }
        }
        if Instant::now() >= next_progress {
            progress!(
                "  {:.0} s: {} of {} up, {} dropped, {} back, {} failed attempts{}",
                kill_instant.elapsed().as_secs_f64(),
                tally.up,
                cfg.clients,
                tally.dropped,
                tally.back_count,
                tally.failed_attempts.count(),
                last_diff
                    .as_ref()
                    .map_or(String::new(), |d| format!("; broker: {d}"))
            );
            next_progress += Duration::from_secs(1);
        }
        if clients_done.is_some() && (cfg.broker.is_none() || broker_equal_at.is_some()) {
            break;
        }
    }

    // 5. The figures.
    let lost = tally
        .clients
        .iter()
        .filter(|c| c.dropped && c.back_at.is_none())
        .count();
    let redropped = tally.clients.iter().filter(|c| c.redrops > 0).count();
    r.add("clients", "clients", cfg.clients as u64, "");
    r.add(
        "shards",
        "client processes",
        shards.children.len() as u64,
        "",
    );
    r.add("rooms", "rooms", cfg.rooms as u64, "");
    r.add("namespace", "namespace", cfg.nsp.as_str(), "");
    r.add("signal", "signal to the victim", cfg.signal.name(), "");
    r.add("setup_s", "time to connect and join all", setup_s, "s");
    r.add(
        "initial_join_p99_ms",
        "first connect + join p99",
        ms(tally.initial_connect.quantile(0.99)),
        "ms",
    );
    if let Some(b) = baseline_s {
        r.add(
            "baseline_broker_s",
            "broker equal to the truth before, after",
            b,
            "s",
        );
    }
    if let Some(n) = on_victim {
        r.add(
            "victim_sockets",
            "clients on the victim at the signal",
            n as u64,
            "",
        );
    }
    r.add(
        "dropped",
        "clients dropped after the signal",
        tally.dropped as u64,
        "",
    );
    r.add(
        "back",
        "dropped clients back in their rooms",
        tally.back_count as u64,
        "",
    );
    r.add("lost", "dropped clients never back", lost as u64, "");
    r.add(
        "redropped",
        "clients dropped again after coming back",
        redropped as u64,
        "",
    );
    if let Some((_, gone_us)) = victim_gone {
        r.add(
            "victim_exit_s",
            "signal → victim exited",
            secs(kill_at, gone_us),
            "s",
        );
    }
    if let Some(done) = clients_done {
        r.add(
            "storm_clients_s",
            "signal → last dropped client back in its room",
            secs(kill_at, done),
            "s",
        );
    }
    for (key, label, h) in [
        ("back", "signal → back in room", &tally.back),
        ("gap", "a client's drop → back in room", &tally.gap),
        (
            "reconnect_connect",
            "reconnect: attempt → CONNECT",
            &tally.storm_connect,
        ),
        (
            "reconnect_join",
            "reconnect: attempt → join ack",
            &tally.storm_join,
        ),
    ] {
        for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
            r.add(
                format!("{key}_{name}_ms"),
                format!("{label} {name}"),
                ms(h.quantile(q)),
                "ms",
            );
        }
        r.add(
            format!("{key}_max_ms"),
            format!("{label} max"),
            ms(h.max()),
            "ms",
        );
    }
    r.add(
        "reconnects",
        "successful reconnect attempts",
        tally.storm_connect.count(),
        "",
    );
    r.add(
        "failed_attempts",
        "failed reconnect attempts",
        tally.failed_attempts.count(),
        "",
    );
    if cfg.broker.is_some() {
        r.add(
            "broker_polls",
            "broker state requests in the storm",
            polls,
            "",
        );
        r.add(
            "broker_poll_ms",
            "their interval",
            cfg.poll.as_millis() as u64,
            "ms",
        );
        if let Some(at) = stale_gone_at {
            r.add(
                "stale_gone_s",
                "signal → no stale socket of the victim",
                secs(kill_at, at),
                "s",
            );
        }
        if let Some(at) = broker_equal_at {
            r.add(
                "storm_broker_s",
                "signal → broker equal to the truth",
                secs(kill_at, at),
                "s",
            );
        }
    }
    // Problems: what the storm must not do.
    if tally.dropped == 0 {
        r.problem("no client dropped after the signal: the victim held none of them");
    }
    if let Some(n) = on_victim
        && n != tally.dropped
    {
        r.problem(format!(
            "{n} clients were on the victim, but {} dropped",
            tally.dropped
        ));
    }
    if lost > 0 {
        r.problem(format!(
            "{lost} dropped clients were not back within {:?}",
            cfg.deadline
        ));
    }
    if clients_done.is_none() {
        r.problem(format!(
            "the clients' side did not settle within {:?} ({} of {} up{})",
            cfg.deadline,
            tally.up,
            cfg.clients,
            if victim_gone.is_none() {
                ", the victim still running"
            } else {
                ""
            }
        ));
    }
    if cfg.broker.is_some() && broker_equal_at.is_none() {
        r.problem(format!(
            "the broker's state did not equal the truth within {:?}: {}",
            cfg.deadline,
            last_diff.map_or("never read".to_owned(), |d| d.to_string())
        ));
    }
    if poll_errors.count() > 0 {
        r.note(format!(
            "{} broker state requests failed: {}",
            poll_errors.count(),
            poll_errors.summary()
        ));
    }
    if tally.failed_attempts.count() > 0 {
        r.note(format!(
            "failed reconnect attempts: {}",
            tally.failed_attempts.summary()
        ));
    }
    if redropped > 0 {
        r.note(format!("drop reasons: {}", tally.drop_reasons.summary()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_finds_every_difference() {
        let state = serde_json::json!({
            "sockets": [
                {"id": "gw1.a", "ns": "/chat", "node": "gw1", "rooms": ["storm-0"]},
                {"id": "gw1.b", "ns": "/chat", "node": "gw1", "rooms": ["gw1.b", "storm-1"]},
                {"id": "gw2.c", "ns": "/chat", "node": "gw2", "rooms": ["storm-9"]},
                {"id": "gw3.d", "ns": "/chat", "node": "gw3", "rooms": ["storm-0"]},
                {"id": "gw3.e", "ns": "/chat", "node": "gw3", "rooms": []},
                {"id": "gw1.x", "ns": "/", "node": "gw1", "rooms": []},
                {"id": "gw1.a", "ns": "/chat", "node": "gw1", "rooms": ["storm-0"]},
            ]
        });
        let mut truth: HashMap<&str, String> = HashMap::new();
        truth.insert("gw1.a", "storm-0".into());
        truth.insert("gw1.b", "storm-1".into());
        truth.insert("gw2.c", "storm-2".into());
        truth.insert("gw2.f", "storm-2".into());
        let diff = compare(&state, "/chat", &truth, Some("gw3")).expect("a state");
        assert_eq!(
            diff,
            Diff {
                missing: 1,
                wrong_rooms: 1,
                stale: 2,
                stale_victim: 2,
                duplicates: 1
            }
        );
        assert!(!diff.equal());
        // Equal: exactly the truth.
        let state = serde_json::json!({"sockets": [
            {"id": "gw1.a", "ns": "/chat", "node": "gw1", "rooms": ["storm-0"]},
            {"id": "gw9.z", "ns": "/other", "node": "gw9", "rooms": []},
        ]});
        let mut truth: HashMap<&str, String> = HashMap::new();
        truth.insert("gw1.a", "storm-0".into());
        assert!(
            compare(&state, "/chat", &truth, None)
                .expect("a state")
                .equal()
        );
        assert!(compare(&serde_json::json!({}), "/chat", &truth, None).is_err());
    }

    #[test]
    fn tally_follows_the_storm() {
        let mut t = Tally {
            clients: (0..3).map(|_| ClientState::default()).collect(),
            ..Tally::default()
        };
        let up = |index: usize, sid: &str, at_us: u64| Line::Up {
            index,
            sid: sid.into(),
            at_us,
            connect_us: 10,
            join_us: 20,
            attempt: 1,
        };
        let down = |index: usize, at_us: u64| Line::Down {
            index,
            at_us,
            reason: "end of stream".into(),
        };
        for (i, sid) in ["gw1.a", "gw2.b", "gw3.c"].iter().enumerate() {
            t.apply(up(i, sid, 100));
        }
        assert_eq!(t.up, 3);
        t.kill_at = Some(1_000);
        t.apply(down(2, 1_500));
        assert_eq!((t.up, t.dropped), (2, 1));
        assert_eq!(t.truth(10).len(), 2);
        t.apply(Line::Fail {
            index: 2,
            at_us: 2_000,
            reason: "refused".into(),
        });
        t.apply(up(2, "gw1.d", 3_000));
        assert_eq!((t.up, t.back_count), (3, 1));
        assert_eq!(t.clients[2].back_at, Some(3_000));
        assert_eq!(t.failed_attempts.count(), 1);
        assert_eq!(
            t.truth(10).get("gw1.d").map(String::as_str),
            Some("storm-2")
        );
        // Dropping again counts once more as a redrop, not as another victim.
        t.apply(down(2, 4_000));
        t.apply(up(2, "gw2.e", 5_000));
        assert_eq!((t.dropped, t.back_count, t.clients[2].redrops), (1, 1, 1));
        // Lines for clients that do not exist are ignored.
        t.apply(up(99, "gw1.z", 5_000));
        assert_eq!(t.up, 3);
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(
            dechunk(b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n").expect("chunked"),
            b"hello world"
        );
        assert!(dechunk(b"5\r\nhel").is_err());
        assert!(dechunk(b"zz\r\n").is_err());
    }
}
