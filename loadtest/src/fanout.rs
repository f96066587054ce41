//! The `fanout` scenario: one sender, N room members, every message delivered to every member.
//!
//! N members connect to the namespace and join the room (`join` with an ack that must be
//! `[{"ok":true}]`); one more connection, the sender, joins too and emits
//! `say({room, t, p})` where `t` is the send time in ns on this process's monotonic clock. The
//! server relays it to the other members, which time each delivery against the same clock.
//!
//! At `--rate R > 0` the sender is open-loop: message i goes out at `start + i/R`, late ones
//! immediately. At rate 0 it is closed-loop: it sends while fewer than `--window` messages' worth
//! of deliveries are outstanding, so the server is always busy but never holds an unbounded
//! backlog; if the window stays shut for [`WINDOW_STALL`] (deliveries lost) it sends anyway and
//! counts a stall.
//!
//! After T seconds it stops sending and drains: waits until every due delivery has arrived, or
//! none has for [`DRAIN_IDLE`], or [`DRAIN_MAX`] passed. CPU is measured over first send → end of
//! drain, for each watched process (`--pid`) and for all of them together.
//!
//! With several `--url`s (gateways of one cluster) the members are spread round-robin over them
//! and the sender connects to the first, so deliveries to the other gateways' members cross the
//! bus. Deliveries, loss and latency are then also reported per gateway (`url1_…`, `url2_…`):
//! a relay that reaches one gateway but not another shows as loss on that one. `cluster` is
//! this with at least two URLs; `polling` the same with long-polling members (the sender stays
//! a WebSocket: the scenario measures deliveries to polling clients).
//!
//! `rooms` is the same machinery with many small rooms: there is no separate sender; the first
//! member of each room speaks for it (the scheduler hands it each text through
//! [`crate::crowd::Crowd::speakers`]), messages go round-robin over the rooms, and each is due
//! to the room's other members. Loss and latency are reported for all rooms together.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use bytes::Bytes;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::cli;
use crate::client::{Conn, Event, Say, Target, Transport, event_text};
use crate::crowd::{self, Plan, Rooms, SAY, SLOW_DELIVERY, Shared, members_of, say_time};
use crate::histogram::Histogram;
use crate::idle::{check_fd_limit, setup_deadline};
use crate::progress::{Ticker, progress};
use crate::report::{Report, Samples};
use crate::usage::{Proc, Snapshot, loadavg, utilisation};

/// At rate 0: how long the sender waits for the window to open before sending anyway.
pub(crate) const WINDOW_STALL: Duration = Duration::from_secs(1);
/// Drain ends when no delivery arrived for this long.
const DRAIN_IDLE: Duration = Duration::from_secs(2);
/// Drain ends after this long in any case.
const DRAIN_MAX: Duration = Duration::from_secs(10);
/// Sender set-up (connect + join) must finish within this.
const SENDER_SETUP: Duration = Duration::from_secs(15);
/// How long closing the crowd may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Above this share of its core the load generator may be what limits the numbers.
const CLIENT_BUSY: f64 = 0.85;

/// What the sender saw.
#[derive(Default)]
struct SendStats {
    /// Times the window stayed shut for [`WINDOW_STALL`].
    stalls: u64,
    /// `say` messages the sender received (it should not: relays go to the other members).
    echoes: u64,
    /// Anything else it received.
    unexpected: Samples,
    /// Bytes of the last message's Engine.IO text.
    message_bytes: usize,
}

/// Who sends the messages.
enum Sender {
    /// One connection in the room (`fanout`, `cluster`, `polling`).
    Socket(Box<Conn>),
    /// Each room's speaker, by room (`rooms`).
    Speakers(Vec<mpsc::Sender<Bytes>>),
}

impl Sender {
    /// Waits for the sender's socket to have something; never returns for speakers (their
    /// own tasks read their sockets). Cancel-safe.
    async fn fill(&mut self) -> Result<usize> {
        match self {
            Self::Socket(conn) => conn.fill().await,
            Self::Speakers(_) => std::future::pending().await,
        }
    }

    /// Handles what the server sent to the sender's socket.
    async fn service(&mut self, plan: &Plan, stats: &mut SendStats) -> Result<()> {
        let Self::Socket(conn) = self else {
            return Ok(());
        };
        while let Some(event) = conn.next_buffered(Some(&plan.say))? {
            match event {
                Event::Say(_) => stats.echoes += 1,
                Event::Packet(p) if say_time(&p, &plan.nsp).is_some() => stats.echoes += 1,
                Event::Closed(reason) => bail!("server closed the sender: {reason}"),
                other => stats.unexpected.push(other.to_string()),
            }
        }
        conn.flush().await
    }

    /// Sends message `i`, `text`: on the socket, or by room `i % rooms`'s speaker.
    async fn send(&mut self, i: u64, text: Bytes) -> Result<()> {
        match self {
            Self::Socket(conn) => conn.send_text(&text).await,
            Self::Speakers(speakers) => {
                let speaker = &speakers[(i % speakers.len() as u64) as usize];
                speaker
                    .send(text)
                    .await
                    .map_err(|_| anyhow!("the speaker of room {i} is gone"))
            }
        }
    }

    async fn close(self) {
        if let Self::Socket(conn) = self {
            conn.close().await;
        }
    }
}

/// When message `i` is due at `rate` per second.
fn due(start: Instant, i: u64, rate: u64) -> Instant {
    start + Duration::from_nanos((u128::from(i) * 1_000_000_000 / u128::from(rate)) as u64)
}

/// The room message `i` goes to.
fn room_of_message(cfg: &cli::Fanout, i: u64) -> String {
    match cfg.grid {
        Some(grid) => format!("{}-{}", cfg.room, i % grid.rooms as u64),
        None => cfg.room.clone(),
    }
}

async fn send_loop(
    sender: &mut Sender,
    shared: &Shared,
    cfg: &cli::Fanout,
    plan: &Plan,
    stats: &mut SendStats,
) -> Result<()> {
    let padding = crate::deflate::padding(cfg.payload_bytes);
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let mut force = false;
    loop {
        let now = Instant::now();
        let sent = shared.sent.load(Ordering::SeqCst);
        let next = if cfg.rate > 0 {
            due(start, sent, cfg.rate)
        } else {
            now
        };
        if now >= deadline || next >= deadline {
            break;
        }
        let ready = if cfg.rate > 0 {
            now >= next
        } else {
            force || shared.window_open()
        };
        if ready {
            force = false;
            let t = shared.now_ns();
            let args = json!([{ "room": room_of_message(cfg, sent), "t": t, "p": padding }]);
            let text = event_text(&cfg.namespace, SAY, &args, None);
            stats.message_bytes = text.len();
            sender.send(sent, text).await?;
            shared.sent.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        let wake_at = if cfg.rate > 0 {
            next
        } else {
            if shared.arm_wake() {
                continue;
            }
            (now + WINDOW_STALL).min(deadline)
        };
        tokio::select! {
            read = sender.fill() => {
                if read? == 0 {
                    bail!("server closed the sender connection (end of stream)");
                }
                sender.service(plan, stats).await?;
            }
            _ = tokio::time::sleep_until(wake_at.into()) => {
                if cfg.rate == 0 && Instant::now() < deadline {
                    stats.stalls += 1;
                    force = true;
                }
            }
            _ = shared.wake.notified(), if cfg.rate == 0 => {}
        }
    }
    Ok(())
}

/// Waits for the outstanding deliveries, servicing the sender's socket meanwhile.
async fn drain(
    sender: &mut Sender,
    shared: &Shared,
    plan: &Plan,
    stats: &mut SendStats,
) -> Result<()> {
    let hard = Instant::now() + DRAIN_MAX;
    let mut last = shared.delivered.load(Ordering::SeqCst);
    let mut last_change = Instant::now();
    while shared.outstanding() > 0 {
        let now = Instant::now();
        if now >= hard || now - last_change >= DRAIN_IDLE {
            break;
        }
        tokio::select! {
            read = sender.fill() => {
                if read? == 0 {
                    bail!("server closed the sender connection (end of stream)");
                }
                sender.service(plan, stats).await?;
            }
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
        let delivered = shared.delivered.load(Ordering::SeqCst);
        if delivered != last {
            (last, last_change) = (delivered, Instant::now());
        }
    }
    Ok(())
}

fn micros(ns: u64) -> f64 {
    ns as f64 / 1e3
}

/// How a target is written in the report.
fn url(target: &Target) -> String {
    format!("http://{}{}", target.host, target.path)
}

/// The deliveries to one target's members, with their loss and latency (several targets only).
fn add_target(
    r: &mut Report,
    index: usize,
    target: &Target,
    members: usize,
    sent: u64,
    h: &Histogram,
) {
    let key = format!("url{}", index + 1);
    let label = format!("url {}", index + 1);
    let expected = sent * members as u64;
    let delivered = h.count();
    r.add(key.clone(), label.clone(), url(target), "");
    r.add(
        format!("{key}_members"),
        format!("{label}: members"),
        members as u64,
        "",
    );
    r.add(
        format!("{key}_expected_deliveries"),
        format!("{label}: deliveries due"),
        expected,
        "",
    );
    r.add(
        format!("{key}_deliveries"),
        format!("{label}: deliveries received"),
        delivered,
        "",
    );
    r.add(
        format!("{key}_loss"),
        format!("{label}: deliveries lost"),
        expected.saturating_sub(delivered),
        "",
    );
    for (suffix, name, q) in [("p50", "p50", 0.50), ("p99", "p99", 0.99)] {
        r.add(
            format!("{key}_latency_{suffix}_us"),
            format!("{label}: latency {name}"),
            micros(h.quantile(q)),
            "µs",
        );
    }
    r.add(
        format!("{key}_latency_max_us"),
        format!("{label}: latency max"),
        micros(h.max()),
        "µs",
    );
    if delivered < expected {
        r.problem(format!(
            "{} of {expected} deliveries to the {members} members on {} lost",
            expected - delivered,
            url(target)
        ));
    } else if delivered > expected {
        r.problem(format!(
            "{} deliveries more than sent × members on {} (duplicates?)",
            delivered - expected,
            url(target)
        ));
    }
}

/// Runs the scenario.
pub(crate) async fn run(cfg: cli::Fanout) -> Result<Report> {
    check_fd_limit(cfg.members + 1)?;
    let servers: Vec<Proc> = cfg
        .common
        .watched
        .iter()
        .map(|w| Proc::Pid(w.pid))
        .collect();
    let targets = &cfg.common.targets;
    let n = cfg.members;
    let plan = Arc::new(Plan {
        targets: targets.clone(),
        nsp: cfg.namespace.clone(),
        rooms: match cfg.grid {
            Some(grid) => Rooms::Many {
                count: grid.rooms,
                size: grid.size,
                prefix: format!("{}-", cfg.room),
            },
            None => Rooms::One(cfg.room.clone()),
        },
        transport: cfg.transport,
        concurrency: cfg.common.concurrency,
        say: Say::new(&cfg.namespace),
    });
    // Deliveries due per message; with many rooms, only the totals (rooms are not per target).
    let (per_message, by_target) = match cfg.grid {
        Some(grid) => (grid.size - 1, 1),
        None => (n, targets.len()),
    };
    let shared = Arc::new(Shared::new(per_message, cfg.window, by_target));
    let mut r = Report::new(cfg.scenario);
    r.add("members", "room members", n as u64, "");
    if let Some(grid) = cfg.grid {
        r.add("rooms", "rooms", grid.rooms as u64, "");
        r.add(
            "room_size",
            "members per room (1 speaks)",
            grid.size as u64,
            "",
        );
    }
    r.add(
        "transport",
        "members' transport",
        match cfg.transport {
            Transport::WebSocket => "websocket",
            Transport::Polling => "polling",
        },
        "",
    );
    if targets.len() > 1 {
        r.add(
            "gateways",
            "gateways (members round-robin)",
            targets.len() as u64,
            "",
        );
        r.add("sender_url", "sender connected to", url(&targets[0]), "");
    }
    if cfg.common.watched.len() > 1 {
        let list: Vec<String> = cfg
            .common
            .watched
            .iter()
            .map(|w| format!("{}={}", w.name, w.pid))
            .collect();
        r.add("watched", "processes measured", list.join(","), "");
    }
    r.add("namespace", "namespace", cfg.namespace.as_str(), "");
    r.add("room", "room", cfg.room.as_str(), "");
    r.add(
        "rate_target",
        "target rate (0 = saturate)",
        cfg.rate,
        "msg/s",
    );
    if cfg.rate == 0 {
        r.add("window", "window", cfg.window, "messages");
    }
    r.add("seconds", "sending for", cfg.duration.as_secs(), "s");
    r.add(
        "payload_bytes",
        "padding per message",
        cfg.payload_bytes as u64,
        "B",
    );
    r.add(
        "loadavg_1m",
        "load average (1 min) at start",
        loadavg().unwrap_or(-1.0),
        "",
    );

    progress!(
        "{}: {n} members joining {}{} in {} on {}",
        cfg.scenario,
        cfg.room,
        if cfg.grid.is_some() { "-*" } else { "" },
        cfg.namespace,
        targets.iter().map(url).collect::<Vec<_>>().join(", ")
    );
    let setup_start = Snapshot::take(&servers)?;
    let mut crowd = crowd::start(n, plan.clone(), shared.clone(), setup_deadline(n)).await;
    if crowd.connected < n {
        r.problem(format!(
            "{} of {n} members failed to connect and join: {}",
            crowd.failures.count(),
            crowd.failures.summary()
        ));
        crowd.close(CLOSE_TIMEOUT).await;
        return Ok(r);
    }
    let mut sender = if cfg.grid.is_some() {
        Sender::Speakers(std::mem::take(&mut crowd.speakers))
    } else {
        let sender = timeout(SENDER_SETUP, async {
            let (mut conn, _) =
                Conn::connect(&plan.targets[0], &plan.nsp, Transport::WebSocket).await?;
            conn.join(&plan.nsp, &cfg.room).await?;
            anyhow::Ok(conn)
        })
        .await
        .map_err(|_| anyhow!("sender set-up took over {SENDER_SETUP:?}"))
        .and_then(|r| r);
        match sender {
            Ok(conn) => Sender::Socket(Box::new(conn)),
            Err(e) => {
                r.problem(format!("sender failed to connect and join: {e:#}"));
                crowd.close(CLOSE_TIMEOUT).await;
                return Ok(r);
            }
        }
    };
    let open = crowd.open.clone();
    let setup_end = Snapshot::take(&servers)?;
    let setup_unexpected = shared.unexpected.lock().count();

    progress!(
        "{}: sending for {:?} at {}",
        cfg.scenario,
        cfg.duration,
        if cfg.rate == 0 {
            "saturation".to_owned()
        } else {
            format!("{} msg/s", cfg.rate)
        }
    );
    let rss_start = servers
        .iter()
        .map(|s| s.rss())
        .collect::<Result<Vec<_>>>()?;
    let start = Snapshot::take(&servers)?;
    let rx_start = crate::client::rx_bytes();
    let first_send_ns = shared.now_ns();
    let mut stats = SendStats::default();
    let ticker = {
        let shared = shared.clone();
        let mut last = (0, Instant::now());
        Ticker::start(cfg.scenario, move || {
            let delivered = shared.delivered.load(Ordering::Relaxed);
            let now = Instant::now();
            let rate = (delivered - last.0) as f64 / (now - last.1).as_secs_f64().max(1e-9);
            last = (delivered, now);
            format!(
                "sent {:>9}  delivered {delivered:>11} ({rate:>10.0}/s)  outstanding {:>9}  p99 {:.1} ms",
                shared.sent.load(Ordering::Relaxed),
                shared.outstanding(),
                shared.latency.quantile(0.99) as f64 / 1e6
            )
        })
    };
    let mut outcome = send_loop(&mut sender, &shared, &cfg, &plan, &mut stats).await;
    if outcome.is_ok() {
        progress!("{}: draining", cfg.scenario);
        outcome = drain(&mut sender, &shared, &plan, &mut stats).await;
    }
    drop(ticker);
    let end = Snapshot::take(&servers)?;
    let rx_bytes = crate::client::rx_bytes() - rx_start;
    let rss_end = servers
        .iter()
        .map(|s| s.rss())
        .collect::<Result<Vec<_>>>()?;

    let sent = shared.sent.load(Ordering::SeqCst);
    let delivered = shared.delivered.load(Ordering::SeqCst);
    let expected = sent * per_message as u64;
    let last_ns = shared
        .last_delivery_ns
        .load(Ordering::SeqCst)
        .max(first_send_ns);
    let delivery_wall = shared.instant(last_ns) - shared.instant(first_send_ns);
    let wall = end.at - start.at;
    let server_cpus = end.server_cpu_since(&start);
    let server_cpu: Duration = server_cpus.iter().sum();
    let client_cpu = end.client.saturating_sub(start.client);
    let per_delivery = |cpu: Duration| cpu.as_secs_f64() * 1e6 / delivered.max(1) as f64;
    let client_util = utilisation(client_cpu, wall);
    let server_util = utilisation(server_cpu, wall);
    let busiest_util = server_cpus
        .iter()
        .map(|&cpu| utilisation(cpu, wall))
        .fold(0.0, f64::max);
    let h = &shared.latency;

    progress!("{}: closing", cfg.scenario);
    let outcomes = crowd.close(CLOSE_TIMEOUT).await;
    sender.close().await;
    let per_member = outcomes
        .iter()
        .filter(|o| o.connected)
        .map(|o| o.deliveries);
    let (min_member, max_member) =
        per_member.fold((u64::MAX, 0), |(lo, hi), d| (lo.min(d), hi.max(d)));

    r.add(
        "message_bytes",
        "message size (Engine.IO text)",
        stats.message_bytes as u64,
        "B",
    );
    r.add("sent", "messages sent", sent, "");
    r.add(
        "send_rate",
        "send rate achieved",
        sent as f64 / cfg.duration.as_secs_f64(),
        "msg/s",
    );
    r.add("expected_deliveries", "deliveries due", expected, "");
    if rx_bytes > 0 {
        // Everything the generator's connections read while sending (the members' deliveries,
        // the sender's acks), framing and HTTP heads included, compressed where agreed.
        r.add(
            "client_rx_bytes_per_delivery",
            "bytes read per delivery",
            rx_bytes as f64 / delivered.max(1) as f64,
            "B",
        );
    }
    r.add("deliveries", "deliveries received", delivered, "");
    r.add(
        "loss",
        "deliveries lost",
        expected.saturating_sub(delivered),
        "",
    );
    r.add(
        "loss_pct",
        "loss",
        100.0 * expected.saturating_sub(delivered) as f64 / expected.max(1) as f64,
        "%",
    );
    r.add(
        "deliveries_per_sec",
        "deliveries per second",
        delivered as f64 / delivery_wall.as_secs_f64().max(1e-9),
        "/s",
    );
    r.add("latency_min_us", "latency min", micros(h.min()), "µs");
    r.add(
        "latency_p50_us",
        "latency p50",
        micros(h.quantile(0.50)),
        "µs",
    );
    r.add(
        "latency_p90_us",
        "latency p90",
        micros(h.quantile(0.90)),
        "µs",
    );
    r.add(
        "latency_p99_us",
        "latency p99",
        micros(h.quantile(0.99)),
        "µs",
    );
    r.add(
        "latency_p999_us",
        "latency p99.9",
        micros(h.quantile(0.999)),
        "µs",
    );
    r.add("latency_max_us", "latency max", micros(h.max()), "µs");
    r.add("latency_mean_us", "latency mean", h.mean() / 1e3, "µs");
    if cfg.grid.is_none() {
        r.add(
            "member_deliveries_min",
            "fewest deliveries to one member",
            if min_member == u64::MAX {
                0
            } else {
                min_member
            },
            "",
        );
        r.add(
            "member_deliveries_max",
            "most deliveries to one member",
            max_member,
            "",
        );
    }
    if by_target > 1 {
        for (t, target) in targets.iter().enumerate() {
            let h = &shared.latency_by_target[t];
            add_target(&mut r, t, target, members_of(t, n, targets.len()), sent, h);
        }
    }
    r.add(
        "measured_wall_s",
        "measured period (send + drain)",
        wall.as_secs_f64(),
        "s",
    );
    let mut processes: Vec<(&str, Duration)> = cfg
        .common
        .watched
        .iter()
        .map(|w| w.name.as_str())
        .zip(server_cpus.iter().copied())
        .collect();
    if processes.len() > 1 {
        processes.push(("total", server_cpu));
    }
    for (name, cpu) in processes {
        let label = if name == "total" {
            "all measured processes"
        } else {
            name
        };
        r.add(
            format!("{name}_cpu_s"),
            format!("{label} CPU"),
            cpu.as_secs_f64(),
            "s",
        );
        r.add(
            format!("{name}_cpu_util"),
            format!("{label} CPU use"),
            utilisation(cpu, wall),
            "cores",
        );
        r.add(
            format!("{name}_cpu_us_per_delivery"),
            format!("{label} CPU per delivery"),
            per_delivery(cpu),
            "µs",
        );
    }
    r.add(
        "client_cpu_s",
        "load generator CPU",
        client_cpu.as_secs_f64(),
        "s",
    );
    r.add(
        "client_cpu_util",
        "load generator CPU use",
        client_util,
        "cores",
    );
    r.add(
        "client_cpu_us_per_delivery",
        "load generator CPU per delivery",
        per_delivery(client_cpu),
        "µs",
    );
    for (w, (a, b)) in cfg
        .common
        .watched
        .iter()
        .zip(rss_start.iter().zip(&rss_end))
    {
        r.add(
            format!("{}_rss_start_bytes", w.name),
            format!("{} RSS at start", w.name),
            *a,
            "B",
        );
        r.add(
            format!("{}_rss_end_bytes", w.name),
            format!("{} RSS at end", w.name),
            *b,
            "B",
        );
    }
    r.add(
        "setup_wall_s",
        "time for all members to connect and join",
        (setup_end.at - setup_start.at).as_secs_f64(),
        "s",
    );
    r.add_tcp_counters(
        &setup_start,
        &setup_end,
        "setup_",
        "while the members connected",
    );
    r.add_machine_load(&start, &end, &servers, server_util, client_util);
    r.add_tcp_counters(&start, &end, "", "while sending");
    if let Some(open) = &open {
        r.add(
            "ping_interval_ms",
            "server pingInterval",
            open.ping_interval,
            "ms",
        );
    }
    let slow = shared.slow.lock();
    let slow_deliveries: u64 = slow.values().map(|&(n, _)| n).sum();
    r.add(
        "slow_deliveries",
        "deliveries over 100 ms",
        slow_deliveries,
        "",
    );
    r.add(
        "slow_messages",
        "messages with a delivery over 100 ms",
        slow.len() as u64,
        "",
    );
    if !slow.is_empty() {
        let n_total = per_message;
        let mut worst: Vec<_> = slow.iter().map(|(&t, &(n, max))| (max, n, t)).collect();
        worst.sort_unstable_by(|a, b| b.cmp(a));
        let list: Vec<String> = worst
            .iter()
            .take(5)
            .map(|&(max, n, t)| {
                let at = t.saturating_sub(first_send_ns) as f64 / 1e9;
                format!(
                    "sent at +{at:.3} s: {n} of {members} late, slowest {:.1} ms",
                    max as f64 / 1e6,
                    members = n_total
                )
            })
            .collect();
        r.note(format!(
            "{slow_deliveries} deliveries of {} messages took over {SLOW_DELIVERY:?}; worst: {}",
            slow.len(),
            list.join("; ")
        ));
    }
    drop(slow);
    if cfg.rate == 0 {
        r.add(
            "window_stalls",
            "window stalls (1 s without progress)",
            stats.stalls,
            "",
        );
    }
    r.add(
        "sender_echoes",
        "say echoed to the sender",
        stats.echoes,
        "",
    );

    if let Err(e) = outcome {
        r.problem(format!("sending stopped early: {e:#}"));
    }
    if delivered < expected {
        r.problem(format!(
            "{} of {expected} deliveries lost",
            expected - delivered
        ));
    } else if delivered > expected {
        r.problem(format!(
            "{} deliveries more than sent × members (duplicates?)",
            delivered - expected
        ));
    }
    if stats.echoes > 0 {
        r.problem(format!(
            "the sender received its own say {} times (relay should skip the sender)",
            stats.echoes
        ));
    }
    let dropped = shared.dropped.lock();
    if dropped.count() > 0 {
        r.problem(format!(
            "{} members disconnected during the run: {}",
            dropped.count(),
            dropped.summary()
        ));
    }
    drop(dropped);
    if stats.stalls > 0 {
        r.note(format!(
            "the window stayed shut {} times for {WINDOW_STALL:?}",
            stats.stalls
        ));
    }
    let unexpected = shared.unexpected.lock();
    if unexpected.count() > 0 {
        r.note(format!(
            "members got {} unexpected packets ({setup_unexpected} before sending): {}",
            unexpected.count(),
            unexpected.summary()
        ));
    }
    drop(unexpected);
    if stats.unexpected.count() > 0 {
        r.note(format!(
            "the sender got {} unexpected packets: {}",
            stats.unexpected.count(),
            stats.unexpected.summary()
        ));
    }
    if client_util > CLIENT_BUSY {
        r.note(format!(
            "the load generator used {:.0} % of a core: it may be the bottleneck, so throughput and latency are bounds, not the server's limits",
            client_util * 100.0
        ));
    }
    if cfg.rate == 0 && busiest_util < CLIENT_BUSY {
        r.note(format!(
            "at saturation the {} used only {:.0} % of a core",
            if servers.len() == 1 {
                "server"
            } else {
                "busiest measured process"
            },
            busiest_util * 100.0
        ));
    }
    if server_cpu < Duration::from_millis(500) {
        r.note("under 0.5 s of server CPU: the 10 ms tick makes CPU per delivery coarse");
    } else if servers.len() > 1 && server_cpus.iter().any(|&c| c < Duration::from_millis(500)) {
        r.note("a measured process used under 0.5 s of CPU: the 10 ms tick makes its CPU per delivery coarse");
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times() {
        let start = Instant::now();
        assert_eq!(due(start, 0, 10), start);
        assert_eq!(due(start, 3, 10), start + Duration::from_millis(300));
        assert_eq!(
            due(start, 1_000_000, 1_000_000),
            start + Duration::from_secs(1)
        );
        assert_eq!(
            due(start, 7, 3),
            start + Duration::from_nanos(2_333_333_333)
        );
    }
}
