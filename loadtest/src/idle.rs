//! The `idle` scenario: what an idle, connected Socket.IO connection costs the server; and
//! `connect`, the same crowd without settling or holding: a connection storm, for connects per
//! second and the time each connect took (its turn under `--concurrency` to the namespace
//! CONNECT, in the same HdrHistogram as delivery latencies).
//!
//! Reads the server's RSS, opens N connections (each connected to the namespace) in parallel
//! batches, lets the server settle, reads the RSS again: `(after - before) / N` is the memory per
//! idle connection. Also reports the server CPU spent per connection set-up, the CPU it burns
//! while the connections sit idle, and its RSS after they are closed again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::cli;
use crate::client::{Say, Transport};
use crate::crowd::{self, Plan, Rooms, Shared};
use crate::progress::{Ticker, progress};
use crate::report::Report;
use crate::usage::{self, Proc, Snapshot, utilisation};

/// File descriptors kept free for everything but the crowd's sockets.
pub(crate) const SPARE_FDS: u64 = 64;
/// How long closing the crowd may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Fails early, with the fix, when the open-files limit cannot hold `connections` sockets.
pub(crate) fn check_fd_limit(connections: usize) -> Result<()> {
    let need = connections as u64 + SPARE_FDS;
    match usage::open_files_limit() {
        Some(limit) if limit < need => {
            bail!(
                "open-files limit is {limit}, {need} are needed: raise it first (`ulimit -n {need}`)"
            )
        }
        _ => Ok(()),
    }
}

/// Deadline for setting up `n` connections.
pub(crate) fn setup_deadline(n: usize) -> Instant {
    Instant::now() + Duration::from_secs(30) + Duration::from_millis(2 * n as u64)
}

/// Runs the scenario.
pub(crate) async fn run(cfg: cli::Idle) -> Result<Report> {
    check_fd_limit(cfg.connections)?;
    // The command line guarantees exactly one target and one watched process.
    let server = Proc::Pid(cfg.common.watched[0].pid);
    let n = cfg.connections;
    let plan = Arc::new(Plan {
        targets: cfg.common.targets.clone(),
        nsp: cfg.namespace.clone(),
        rooms: Rooms::None,
        transport: cfg.transport,
        concurrency: cfg.common.concurrency,
        say: Say::new(&cfg.namespace),
    });
    let shared = Arc::new(Shared::new(n, 1, 1));

    let loadavg = usage::loadavg().unwrap_or(-1.0);
    let rss_before = server.rss()?;
    let client_rss_before = Proc::Current.rss()?;
    let start = Snapshot::take(&[server])?;
    progress!(
        "{}: opening {n} connections to {} (namespace {}, {:?}, {} at once)",
        cfg.scenario,
        plan.targets[0].addr,
        plan.nsp,
        plan.transport,
        plan.concurrency
    );
    let crowd = crowd::start(n, plan.clone(), shared.clone(), setup_deadline(n)).await;
    let connected_at = Snapshot::take(&[server])?;

    tokio::time::sleep(cfg.settle).await;
    let rss_after = server.rss()?;
    let client_rss_after = Proc::Current.rss()?;
    if !cfg.hold.is_zero() {
        progress!(
            "idle: holding {} connections for {:?}",
            crowd.connected,
            cfg.hold
        );
        let _ticker = {
            let shared = shared.clone();
            let connected = crowd.connected;
            Ticker::start("idle", move || {
                format!(
                    "holding {connected} connections, {} lost",
                    shared.dropped.lock().count()
                )
            })
        };
        tokio::time::sleep(cfg.hold).await;
    }
    let held = Snapshot::take(&[server])?;
    let dropped = shared.dropped.lock().count();
    let unexpected = shared.unexpected.lock().count();
    let (connected, failures, open) = (
        crowd.connected,
        crowd.failures.summary(),
        crowd.open.clone(),
    );
    let failed = crowd.failures.count();

    progress!("{}: closing", cfg.scenario);
    let closing = Instant::now();
    let outcomes = crowd.close(CLOSE_TIMEOUT).await;
    let close_wall = closing.elapsed();
    tokio::time::sleep(cfg.settle).await;
    let rss_closed = server.rss()?;

    let cpu = |a: &Snapshot, b: &Snapshot| b.server_cpu_since(a).iter().sum::<Duration>();
    let connect_wall = connected_at.at - start.at;
    let connect_cpu = cpu(&start, &connected_at);
    let idle_cpu = cpu(&connected_at, &held);
    let idle_wall = held.at - connected_at.at;
    let per_conn = |bytes: i64| {
        if connected == 0 {
            0.0
        } else {
            bytes as f64 / connected as f64
        }
    };

    let mut r = Report::new(cfg.scenario);
    r.add("connections", "connections requested", n as u64, "");
    r.add("connected", "connections connected", connected as u64, "");
    r.add("failed", "connections failed", failed, "");
    r.add(
        "concurrency",
        "handshakes in flight at most",
        plan.concurrency as u64,
        "",
    );
    r.add(
        "transport",
        "transport",
        match plan.transport {
            Transport::WebSocket => "websocket",
            Transport::Polling => "polling",
        },
        "",
    );
    r.add("namespace", "namespace", plan.nsp.as_str(), "");
    r.add("loadavg_1m", "load average (1 min) at start", loadavg, "");
    r.add(
        "connect_wall_s",
        "time to connect all",
        connect_wall.as_secs_f64(),
        "s",
    );
    r.add(
        "connects_per_sec",
        "connections per second",
        connected as f64 / connect_wall.as_secs_f64().max(1e-9),
        "/s",
    );
    let h = &shared.connect_time;
    for (key, label, q) in [
        ("p50", "p50", 0.5),
        ("p90", "p90", 0.9),
        ("p99", "p99", 0.99),
    ] {
        r.add(
            format!("connect_time_{key}_us"),
            format!("connect time {label}"),
            h.quantile(q) as f64 / 1e3,
            "µs",
        );
    }
    r.add(
        "connect_time_max_us",
        "connect time max",
        h.max() as f64 / 1e3,
        "µs",
    );
    r.add(
        "server_rss_before_bytes",
        "server RSS before",
        rss_before,
        "B",
    );
    r.add(
        "server_rss_after_bytes",
        "server RSS with connections",
        rss_after,
        "B",
    );
    r.add(
        "server_rss_per_connection_bytes",
        "server RSS per idle connection",
        per_conn(rss_after as i64 - rss_before as i64),
        "B",
    );
    r.add(
        "server_rss_after_close_bytes",
        "server RSS after closing",
        rss_closed,
        "B",
    );
    r.add(
        "server_cpu_connect_s",
        "server CPU while connecting",
        connect_cpu.as_secs_f64(),
        "s",
    );
    r.add(
        "server_cpu_us_per_connect",
        "server CPU per connection set-up",
        connect_cpu.as_secs_f64() * 1e6 / connected.max(1) as f64,
        "µs",
    );
    r.add(
        "server_cpu_idle_s",
        "server CPU while idle",
        idle_cpu.as_secs_f64(),
        "s",
    );
    r.add(
        "idle_wall_s",
        "idle period (settle + hold)",
        idle_wall.as_secs_f64(),
        "s",
    );
    r.add(
        "server_cpu_idle_util",
        "server CPU use while idle",
        utilisation(idle_cpu, idle_wall),
        "cores",
    );
    if let Some(open) = &open {
        r.add(
            "ping_interval_ms",
            "server pingInterval",
            open.ping_interval,
            "ms",
        );
        r.add(
            "ping_timeout_ms",
            "server pingTimeout",
            open.ping_timeout,
            "ms",
        );
    }
    r.add(
        "heartbeats_answered",
        "heartbeats answered",
        outcomes.iter().map(|o| o.pings).sum::<u64>(),
        "",
    );
    r.add("dropped", "connections lost while idle", dropped, "");
    r.add(
        "close_wall_s",
        "time to close all",
        close_wall.as_secs_f64(),
        "s",
    );
    r.add(
        "client_cpu_s",
        "load generator CPU",
        held.client.saturating_sub(start.client).as_secs_f64(),
        "s",
    );
    r.add(
        "client_rss_per_connection_bytes",
        "load generator RSS per connection",
        per_conn(client_rss_after as i64 - client_rss_before as i64),
        "B",
    );
    let whole = held.at - start.at;
    let client_cpu = held.client.saturating_sub(start.client);
    r.add_machine_load(
        &start,
        &held,
        &[server],
        utilisation(cpu(&start, &held), whole),
        utilisation(client_cpu, whole),
    );
    r.add_tcp_counters(&start, &held, "", "while connecting and idling");
    if failed > 0 {
        r.problem(format!("{failed} connections failed: {failures}"));
    }
    if dropped > 0 {
        r.problem(format!(
            "{dropped} connections ended while idle: {}",
            shared.dropped.lock().summary()
        ));
    }
    if unexpected > 0 {
        r.note(format!(
            "{unexpected} unexpected packets: {}",
            shared.unexpected.lock().summary()
        ));
    }
    if let Some(open) = &open
        && !cfg.hold.is_zero()
        && cfg.hold < Duration::from_millis(open.ping_interval + open.ping_timeout)
    {
        r.note("--hold-secs is shorter than pingInterval + pingTimeout: heartbeats were not fully exercised");
    }
    Ok(r)
}
