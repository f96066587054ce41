//! `switchboard-gateway`: the gateway binary.
//!
//! Today it runs standalone mode: one process serving Socket.IO with the namespace policies of its
//! configuration and no NATS. Configuration: the TOML file named by `SWITCHBOARD_CONFIG` (or the
//! first argument), else the built-in default; environment variables override the scalars
//! (`SWITCHBOARD_HOST`, `SWITCHBOARD_PORT`, secrets). Everything is validated before a port is
//! bound: a bad configuration exits with status 2 and a message naming file, line and problem.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use switchboard_gateway::config::Config;
use switchboard_gateway::engine::{CloseReason, Engine};
use switchboard_gateway::http::{self, Router};
use switchboard_gateway::id::NodeId;
use switchboard_gateway::{metrics, policy, sio};

fn load_config() -> Result<Config, String> {
    let path = std::env::args_os()
        .nth(1)
        .or_else(|| std::env::var_os("SWITCHBOARD_CONFIG"));
    let mut config = match path {
        Some(p) => Config::from_file(&p),
        None => Config::builtin(),
    }
    .map_err(|e| e.to_string())?;
    config
        .apply_env(|k| std::env::var(k).ok())
        .map_err(|e| e.to_string())?;
    Ok(config)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match load_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchboard-gateway: invalid configuration:\n{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard-gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let server = &config.server;
    let addr: SocketAddr = tokio::net::lookup_host((server.host.as_str(), server.port))
        .await
        .with_context(|| format!("cannot resolve host {:?}", server.host))?
        .next()
        .with_context(|| format!("host {:?} has no address", server.host))?;
    metrics::describe();
    let io = sio::Server::new(server.sio_config());
    policy::install(&io, &config).context("installing the namespace policies")?;
    let node = NodeId::random();
    tracing::info!(node = %node, mode = "standalone", "starting");
    let engine = Engine::new(server.engine_config(), io, node);
    let mut router = Router::new(server.http_cors()).endpoint(&server.path, engine.clone());
    if server.serve_demo_page {
        let client_js = std::env::var_os("SWITCHBOARD_CLIENT_JS").map(std::path::PathBuf::from);
        router = router.demo(client_js.as_deref());
    }
    http::run(addr, Arc::new(router), move || {
        for conn in engine.all() {
            conn.close(CloseReason::Shutdown);
        }
    })
    .await
    .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!("stopped");
    Ok(())
}
