//! `switchboard-broker`: the cluster's control plane as a process.
//!
//! Reads its configuration from the environment (see `switchboard_broker::config`), validates
//! all of it, binds the HTTP port, connects to NATS, starts the broker, prints
//! `listening on http://HOST:PORT` on stdout, and runs until SIGTERM or SIGINT, then stops
//! cleanly (exit 0). Logs go to stderr (`RUST_LOG`, default `info`).

use anyhow::Context as _;
use switchboard_broker::config::Config;
use switchboard_broker::{Broker, BrokerError, LeaderMode, http, metrics};
use switchboard_bus::Bus;
use tokio_util::sync::CancellationToken;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = match Config::from_lookup(|k| std::env::var(k).ok()) {
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

async fn run(config: Config) -> anyhow::Result<()> {
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
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
    let broker = match Broker::start(bus, config.broker).await {
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
    let routes = http::Routes {
        broker: broker.clone(),
        metrics: Some(prometheus),
    };
    let server = tokio::spawn(http::serve(listener, routes, shutdown.clone()));
    println!("listening on http://{local}");
    tracing::info!(%local, broker = broker.id(), "serving HTTP");

    signal().await?;
    tracing::info!("shutting down");
    shutdown.cancel();
    if let Err(e) = server.await {
        tracing::warn!(error = %e, "HTTP server task failed");
    }
    broker.shutdown().await;
    Ok(())
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
