//! `switchboard-loadtest`: the load generator for Switchboard's gateway.
//!
//! Scenarios: `idle` (server memory and CPU per idle connection), `connect` (a connection
//! storm: connects per second, connect time, failures), `fanout` (room broadcast throughput,
//! latency, loss and CPU per delivery; `cluster` across gateways, `polling` to long-polling
//! members), `rooms` (many small chat rooms), `floor` (CPU cost of one small loopback write, the
//! floor a per-delivery cost is compared with) and `admin` (the broker's gRPC API under a room:
//! FetchSockets latency, Broadcast call → last delivery) and `storm` (a reconnect storm: a
//! server dies or drains under its clients behind a load balancer; their reconnects, and the
//! broker's view of them). `admin` is the one scenario that needs
//! tonic, so it is built only with the `grpc` feature; without it the scenario is refused with a
//! message saying so. See `switchboard-loadtest --help`, `scripts/bench.sh`, which runs them
//! against a release build, and `scripts/bench-compare.sh`, which runs them against Node's
//! socket.io as well (`loadtest/peers/`).
//!
//! It must not: talk to anything but loopback unless told to (`--allow-remote`: a deliberate
//! run against another machine, same bounds), run unbounded in count or time, or re-implement
//! the wire format (it uses the gateway's codecs, `switchboard_codec`). Output is a table and one
//! JSON line per run on stdout; progress goes to stderr. Exit status: 0 ok, 1 the run found
//! problems, 2 the run could not be made.

#[cfg(feature = "grpc")]
mod admin;
mod cli;
mod client;
mod crowd;
mod deflate;
mod fanout;
mod floor;
mod handshake;
mod histogram;
mod idle;
mod polling;
mod progress;
mod report;
mod storm;
mod storm_client;
mod usage;

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::Command;
use crate::report::Report;

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    // One thread by default: the generator is pinned to one core, and a current-thread runtime
    // is the cheapest way to drive many sockets from it.
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    Ok(builder.enable_all().build()?)
}

fn run() -> Result<Report> {
    // Help, version and malformed command lines end here (clap's exit: 0 or 2).
    let invocation = <cli::Cli as clap::Parser>::parse().invocation()?;
    progress::set_quiet(invocation.quiet);
    Ok(match invocation.command {
        Command::Floor(cfg) => floor::run(&cfg)?,
        Command::Idle(cfg) => runtime(cfg.common.threads)?.block_on(idle::run(cfg))?,
        Command::Fanout(cfg) => runtime(cfg.common.threads)?.block_on(fanout::run(cfg))?,
        Command::Admin(cfg) => run_admin(cfg)?,
        Command::Storm(cfg) => storm::run(cfg, invocation.quiet)?,
        Command::StormShard(shard) => {
            // A shard reports through its line protocol, never with a report.
            runtime(1)?.block_on(storm_client::run(shard))?;
            std::process::exit(0)
        }
    })
}

#[cfg(feature = "grpc")]
fn run_admin(cfg: cli::Admin) -> Result<Report> {
    runtime(1)?.block_on(admin::run(cfg))
}

#[cfg(not(feature = "grpc"))]
fn run_admin(_: cli::Admin) -> Result<Report> {
    anyhow::bail!(
        "`admin` needs a gRPC client, and this binary was built without gRPC: build it with \
         `cargo build --release -p switchboard-loadtest --features grpc`"
    )
}

fn main() -> ExitCode {
    match run() {
        Ok(report) => {
            report.print();
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("switchboard-loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}
