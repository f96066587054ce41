//! `switchboard-broker`: the cluster's control plane as a process.
//!
//! Reads its configuration from the environment (see `switchboard_broker::config`), validates
//! all of it, binds the HTTP (and, with `SWITCHBOARD_ADMIN_TOKEN`, the gRPC) port, connects to
//! NATS, starts the broker, prints `grpc on HOST:PORT` (when served) and then `listening on http://HOST:PORT`
//! on stdout, and runs until SIGTERM or SIGINT, then stops
//! cleanly (exit 0). Logs go to stderr (`RUST_LOG`, default `info`).

use anyhow::Context as _;
use switchboard_broker::config::Config;
use switchboard_broker::{Broker, BrokerError, LeaderMode, grpc, http, metrics};
use switchboard_bus::Bus;
use switchboard_proto::subject::Subjects;
use tokio_util::sync::CancellationToken;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let env = |k: &str| std::env::var(k).ok();
    let config =
        match Config::from_lookup(env).and_then(|c| Ok((c, grpc::options_from_lookup(env)?))) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("switchboard-broker: configuration error: {e}");
                return std::process::ExitCode::from(2);
            }
        };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("switchboard-broker: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard-broker: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(
    (config, grpc_opts): (Config, Option<(std::net::SocketAddr, grpc::GrpcOptions)>),
) -> anyhow::Result<()> {
    let prometheus = metrics::install(&[]).context("installing the metrics recorder")?;
    metrics::describe();

    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("binding the HTTP port {}", config.http))?;
    let local = listener
        .local_addr()
        .context("reading the bound HTTP address")?;

    let bus = Bus::connect(&config.nats)
        .await
        .with_context(|| format!("connecting to NATS at {}", config.nats.url))?;
    if config.broker.leader == LeaderMode::KvLease {
        wait_for_link(&bus).await?;
    }
    let grpc_listener = match &grpc_opts {
        Some((addr, _)) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the gRPC port {addr}"))?,
        ),
        None => None,
    };
    let subjects = Subjects::new(&config.broker.prefix).context("subject prefix")?;
    let broker = match Broker::start(bus.clone(), config.broker).await {
        Ok(broker) => broker,
        Err(BrokerError::JetStreamRequired(detail)) => {
            anyhow::bail!(
                "JetStream is required to elect a leader among several brokers (run nats-server \
                 with -js), or set SWITCHBOARD_BROKER_LEADER=always to run a single broker: {detail}"
            );
        }
        Err(e) => return Err(e).context("starting the broker"),
    };

    let shutdown = CancellationToken::new();
    let upkeep = tokio::spawn(metrics::upkeep(prometheus.clone(), shutdown.clone()));
    let routes = http::Routes {
        broker: broker.clone(),
        metrics: Some(prometheus),
    };
    let server = tokio::spawn(http::serve(listener, routes, shutdown.clone()));
    let grpc_server = match (grpc_listener, grpc_opts) {
        (Some(listener), Some((_, opts))) => {
            let addr = listener
                .local_addr()
                .context("reading the bound gRPC address")?;
            let service = grpc::AdminService::new(&broker, bus.clone(), subjects);
            let server = tokio::spawn(grpc::serve(listener, service, opts, shutdown.clone()));
            println!("grpc on {addr}");
            Some(server)
        }
        _ => {
            tracing::info!("gRPC admin API off (set SWITCHBOARD_ADMIN_TOKEN to serve it)");
            None
        }
    };

    println!("listening on http://{local}");
    tracing::info!(%local, broker = broker.id(), "serving HTTP");
    let mut grpc_server = grpc_server;
    let failed = match &mut grpc_server {
        Some(server) => tokio::select! {
            r = signal() => { r?; None }
            r = server => Some(match r {
                Ok(Ok(())) => "the gRPC server stopped".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            }),
        },
        None => {
            signal().await?;
            None
        }
    };
    if failed.is_some() {
        grpc_server = None;
    }
    tracing::info!("shutting down");
    shutdown.cancel();
    if let Err(e) = server.await {
        tracing::warn!(error = %e, "HTTP server task failed");
    }
    if let Some(server) = grpc_server {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server failed"),
            Err(e) => tracing::warn!(error = %e, "gRPC server task failed"),
        }
    }
    let _ = upkeep.await;
    broker.shutdown().await;
    match failed {
        Some(why) => anyhow::bail!("{why}"),
        None => Ok(()),
    }
}

/// How long to wait for the first NATS connection before giving up (the leader lease needs it).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

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

async fn signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
