//! `admin`: the broker's gRPC API under a real room. N members connect to a gateway and join
//! one room; then, over gRPC on loopback:
//!
//! - FetchSockets of the whole room (one page of N, the fetchSockets() of Socket.IO) `calls`
//!   times: latency p50 / p99 / max;
//! - Broadcast of `say` to the room `calls` times, one after the other: the call's own latency,
//!   and call → last delivery (the time from sending the request until the last of the N
//!   members received the emit), p50 / p99 / max; every delivery is counted, loss is a problem.
//!
//! Node's adapters answer fetchSockets() by asking every server and waiting for the answers up
//! to a timeout (5 s by default), and a broadcast returns before anything is delivered; here the
//! broker answers from its own state.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use switchboard_proto::admin as pb;
use switchboard_proto::admin::admin_client::AdminClient;
use tonic::transport::Channel;

use crate::cli;
use crate::client::{Say, Transport};
use crate::crowd::{self, Plan, Rooms, Shared};
use crate::histogram::Histogram;
use crate::idle::{check_fd_limit, setup_deadline};
use crate::progress::progress;
use crate::report::Report;

/// How long one broadcast's deliveries may take before it counts as lost.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the broker may take to see every member's join.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

fn micros(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn request<T>(token: &str, message: T) -> Result<tonic::Request<T>> {
    let mut req = tonic::Request::new(message);
    req.set_timeout(Duration::from_secs(30));
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .context("the token is not a valid header value")?,
    );
    Ok(req)
}

fn add_histogram(r: &mut Report, key: &str, label: &str, h: &Histogram) {
    for (suffix, name, q) in [("p50", "p50", 0.50), ("p99", "p99", 0.99)] {
        r.add(
            format!("{key}_{suffix}_us"),
            format!("{label} {name}"),
            micros(h.quantile(q)),
            "µs",
        );
    }
    r.add(
        format!("{key}_max_us"),
        format!("{label} max"),
        micros(h.max()),
        "µs",
    );
}

/// Runs the scenario.
pub(crate) async fn run(cfg: cli::Admin) -> Result<Report> {
    check_fd_limit(cfg.members + 1)?;
    let n = cfg.members;
    let plan = Arc::new(Plan {
        targets: vec![cfg.target.clone()],
        nsp: cfg.namespace.clone(),
        rooms: Rooms::One(cfg.room.clone()),
        transport: Transport::WebSocket,
        concurrency: cfg.concurrency,
        say: Say::new(&cfg.namespace),
    });
    let shared = Arc::new(Shared::new(n, 1, 1));
    let mut r = Report::new("admin");
    r.add("members", "room members", n as u64, "");
    r.add("calls", "calls of each kind", cfg.calls as u64, "");
    r.add("grpc", "gRPC address", cfg.grpc.to_string(), "");

    let channel = Channel::from_shared(format!("http://{}", cfg.grpc))
        .context("gRPC address")?
        .connect()
        .await
        .with_context(|| format!("connecting to gRPC at {}", cfg.grpc))?;
    let mut admin = AdminClient::new(channel);
    let selector = pb::Selector {
        ns: cfg.namespace.clone(),
        rooms: vec![cfg.room.clone()],
        ..Default::default()
    };

    progress!(
        "admin: {n} members joining {} in {}",
        cfg.room,
        cfg.namespace
    );
    let crowd = crowd::start(n, plan, shared.clone(), setup_deadline(n)).await;
    if crowd.connected < n {
        bail!(
            "only {} of {n} members set up: {}",
            crowd.connected,
            crowd.failures.summary()
        );
    }
    // The broker's view follows the joins over the bus: wait until it has them all.
    let started = Instant::now();
    loop {
        let res = admin
            .fetch_sockets(request(
                &cfg.token,
                pb::FetchSocketsRequest {
                    selector: Some(selector.clone()),
                    page_size: 1,
                    page_token: String::new(),
                },
            )?)
            .await
            .context("FetchSockets")?
            .into_inner();
        if res.total == n as u64 {
            break;
        }
        if started.elapsed() > CONVERGE_TIMEOUT {
            bail!(
                "the broker sees {} of {n} members after {CONVERGE_TIMEOUT:?}",
                res.total
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    progress!("admin: {} × FetchSockets of the room", cfg.calls);
    let fetch = Histogram::default();
    let page = u32::try_from(n).unwrap_or(u32::MAX);
    for _ in 0..cfg.calls {
        let t0 = Instant::now();
        let res = admin
            .fetch_sockets(request(
                &cfg.token,
                pb::FetchSocketsRequest {
                    selector: Some(selector.clone()),
                    page_size: page,
                    page_token: String::new(),
                },
            )?)
            .await
            .context("FetchSockets")?
            .into_inner();
        fetch.record(t0.elapsed().as_nanos() as u64);
        if res.sockets.len() != n {
            r.problem(format!(
                "FetchSockets returned {} of {n} sockets",
                res.sockets.len()
            ));
        }
    }

    progress!("admin: {} × Broadcast to the room", cfg.calls);
    let call = Histogram::default();
    let last = Histogram::default();
    let mut lost = 0u64;
    for i in 0..cfg.calls as u64 {
        let due = (i + 1) * n as u64;
        let t0 = shared.now_ns();
        let res = admin
            .broadcast(request(
                &cfg.token,
                pb::BroadcastRequest {
                    selector: Some(selector.clone()),
                    event: crowd::SAY.to_owned(),
                    args_json: format!("[{{\"t\":{t0}}}]"),
                    ..Default::default()
                },
            )?)
            .await
            .context("Broadcast")?
            .into_inner();
        call.record(shared.now_ns().saturating_sub(t0));
        shared.sent.fetch_add(1, Ordering::SeqCst);
        if res.targeted != n as u64 {
            r.problem(format!("Broadcast targeted {} of {n}", res.targeted));
        }
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        while shared.delivered.load(Ordering::SeqCst) < due && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let delivered = shared.delivered.load(Ordering::SeqCst);
        if delivered < due {
            lost += due - delivered;
            break;
        }
        last.record(
            shared
                .last_delivery_ns
                .load(Ordering::SeqCst)
                .saturating_sub(t0),
        );
    }
    let outcomes = crowd.close(Duration::from_secs(10)).await;
    let received: u64 = outcomes.iter().map(|o| o.deliveries).sum();

    add_histogram(
        &mut r,
        "fetch_latency",
        "FetchSockets (whole room) latency",
        &fetch,
    );
    add_histogram(&mut r, "broadcast_call", "Broadcast call latency", &call);
    add_histogram(
        &mut r,
        "broadcast_last_delivery",
        "Broadcast call → last delivery",
        &last,
    );
    r.add("deliveries", "deliveries received", received, "");
    if lost > 0 {
        r.problem(format!(
            "{lost} deliveries missing {DELIVERY_TIMEOUT:?} after a broadcast"
        ));
    }
    r.note("latencies are measured by this process over loopback, from the request being sent to the last member receiving the emit");
    Ok(r)
}
