//! `switchboard-broker`: the cluster's control plane as a process.
//!
//! Reads its configuration from an optional TOML file (the first argument or
//! `SWITCHBOARD_CONFIG`; the same file format as the gateway's: it reads `[nats]`, `[cluster]`,
//! `[broker]`, `[grpc]`, `[api]` and `[log]`) and the environment (`switchboard::settings`), validates
//! all of it (a bad configuration exits 2, listing every problem), binds the HTTP (and, with API
//! keys, the gRPC) port — with keys, the HTTP port also serves the HTTP API under `/api/` — connects to NATS, starts the broker, prints `grpc on HOST:PORT`
//! (when served) and then `listening on http://HOST:PORT` on stdout, and runs until SIGTERM or
//! SIGINT, then stops cleanly (exit 0). Logs go to stderr (`RUST_LOG`, default `info`).
//! Operator commands instead of serving: `check-config FILE` and `completions SHELL`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use switchboard::settings::{Process, Settings, Source, resolve};
use switchboard::signal::Signals;
use switchboard::{process, telemetry};
use switchboard_broker::{
    Broker, BrokerConfig, BrokerError, LeaderMode, RebuildConfig, RecoveryConfig, api, grpc, http,
    metrics,
};
use switchboard_bus::{Bus, NatsOptions};
use switchboard_gateway::config::Problems;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long to wait for the first NATS connection before giving up (the leader lease needs it).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Switchboard's broker: cluster-wide membership, presence and room capacity over NATS.
///
/// Every setting of the file can be overridden by its environment variable (environment >
/// file > built-in default); every key and variable: docs/configuration.md.
#[derive(Parser, Debug)]
#[command(
    name = "switchboard-broker",
    version,
    args_conflicts_with_subcommands = true
)]
struct Args {
    /// A TOML configuration file (the gateway's format; the broker reads its `[nats]`,
    /// `[cluster]`, `[broker]`, `[grpc]`, `[api]` and `[log]` tables).
    #[arg(value_name = "CONFIG", env = "SWITCHBOARD_CONFIG")]
    config: Option<std::ffi::OsString>,
    /// Instead of serving: an operator command (a file named like one: `./check-config`). No
    /// `print-config`: the broker has no built-in file (its defaults are the settings'
    /// defaults), and it needs a NATS URL, which no default can name.
    #[command(subcommand)]
    command: Option<process::Operation>,
}

fn load(path: Option<&std::path::Path>) -> Result<Settings, Problems> {
    let source = path.map(Source::read).transpose()?;
    Settings::load(Process::Broker, source.as_ref().map(Source::file), |k| {
        std::env::var(k).ok()
    })
}

fn main() -> ExitCode {
    let args: Args = process::args(Process::Broker);
    if let Some(op) = args.command {
        return op.run::<Args, _>("switchboard-broker", |file| load(Some(file)));
    }
    process::main(
        "switchboard-broker",
        load(process::config_path(args.config).as_deref()),
        |settings| settings.log,
        tokio::runtime::Builder::new_multi_thread(),
        run,
    )
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let mut signals = Signals::install().context("installing the signal handlers")?;
    let prometheus = telemetry::install_recorder(&[]).context("installing the metrics recorder")?;
    metrics::describe();
    switchboard::allocator::describe();

    let http_addr = resolve(&settings.broker.host, settings.broker.http_port).await?;
    let listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("binding the HTTP port {http_addr}"))?;
    let local = listener
        .local_addr()
        .context("reading the bound HTTP address")?;

    let id = settings
        .broker
        .id
        .clone()
        .unwrap_or_else(|| format!("b{:08x}", rand::random::<u32>()));
    let nats = NatsOptions {
        name: format!("switchboard-broker {id}"),
        ..settings
            .nats
            .clone()
            .context("no NATS URL (the settings require one)")?
    };
    let bus = Bus::connect(&nats)
        .await
        .with_context(|| format!("connecting to NATS at {}", nats.url))?;
    if settings.broker.leader == LeaderMode::KvLease {
        wait_for_link(&bus).await?;
    }
    let grpc_listener = match &settings.grpc {
        Some(g) => {
            let addr = resolve(&g.host, g.port).await?;
            Some((
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the gRPC port {addr}"))?,
                g.options.clone(),
            ))
        }
        None => None,
    };
    let cfg = BrokerConfig {
        id,
        prefix: settings.subjects.prefix().to_owned(),
        lease: settings.lease,
        heartbeat: settings.heartbeat,
        leader: settings.broker.leader,
        presence_batches: settings.presence_batches,
    };
    let rebuild = RebuildConfig {
        budget_bytes: settings.broker.snapshot_budget_bytes,
        ..RebuildConfig::default()
    };
    let broker = match Broker::start_tuned(bus.clone(), cfg, RecoveryConfig::default(), rebuild)
        .await
    {
        Ok(broker) => broker,
        Err(BrokerError::JetStreamRequired(detail)) => {
            anyhow::bail!(
                "JetStream is required to elect a leader among several brokers (run nats-server \
                 with -js), or set SWITCHBOARD_BROKER_LEADER=always to run a single broker: {detail}"
            );
        }
        Err(e) => return Err(e).context("starting the broker"),
    };

    // The shutdown tree: one token, one tracker for every task.
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn(telemetry::upkeep(prometheus.clone(), shutdown.clone()));
    // The admin APIs share one service and one key set: gRPC on its port, the HTTP API under
    // `/api/` on the HTTP port.
    let service = grpc::AdminService::new(&broker, bus.clone(), settings.subjects.clone());
    let routes = http::Routes {
        broker: broker.clone(),
        metrics: Some(std::sync::Arc::new(move || {
            switchboard::allocator::record_gauges();
            prometheus.render()
        })),
        api: grpc_listener
            .as_ref()
            .map(|(_, opts)| api::HttpApi::new(service.clone(), opts.keys.clone())),
    };
    tasks.spawn(http::serve(listener, routes, shutdown.clone()));
    // A gRPC server that ends stops the process (with an error) as a signal would.
    let (ended, grpc_ended) = tokio::sync::oneshot::channel::<String>();
    match grpc_listener {
        Some((listener, opts)) => {
            let addr = listener
                .local_addr()
                .context("reading the bound gRPC address")?;
            let serving = grpc::serve(listener, service, opts, shutdown.clone());
            tasks.spawn(async move {
                let why = match serving.await {
                    Ok(()) => "the gRPC server stopped".to_owned(),
                    Err(e) => e.to_string(),
                };
                // Nobody listens once the process is shutting down: then the end is expected.
                let _ = ended.send(why);
            });
            println!("grpc on {addr}");
        }
        None => {
            drop(ended);
            tracing::info!(
                "admin APIs (gRPC, HTTP /api/) off: set an API key ([api] keys, [api] keys_file \
                 or [grpc] admin_token) to serve them"
            );
        }
    }

    println!("listening on http://{local}");
    tracing::info!(%local, broker = broker.id(), allocator = switchboard::allocator::NAME, "serving HTTP");
    let failure = tokio::select! {
        () = signals.recv() => None,
        Ok(why) = grpc_ended => Some(why),
    };
    tracing::info!("shutting down");
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    broker.shutdown().await;
    match failure {
        Some(why) => anyhow::bail!("{why}"),
        None => Ok(()),
    }
}

async fn wait_for_link(bus: &Bus) -> anyhow::Result<()> {
    let mut link = bus.link();
    if !link.borrow().up {
        tracing::info!("waiting for NATS");
    }
    tokio::time::timeout(CONNECT_TIMEOUT, link.wait_for(|l| l.up))
        .await
        .map_err(|_| anyhow::anyhow!("NATS not reachable within {CONNECT_TIMEOUT:?}"))?
        .map_err(|_| anyhow::anyhow!("NATS client closed"))?;
    Ok(())
}
