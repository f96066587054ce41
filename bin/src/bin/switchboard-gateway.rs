//! `switchboard-gateway`: the gateway binary.
//!
//! Cluster mode when a NATS URL is set (`[nats] url` / `SWITCHBOARD_NATS_URL`): the node joins
//! the cluster over NATS (a broker runs elsewhere). Standalone mode otherwise: the same code
//! paths over an in-process bus (`switchboard_bus::Hub`), with the broker embedded (its view at
//! `GET /v1/state` on the operator listener) and, with API keys, its admin APIs: gRPC on its port
//! and the HTTP API under `/api/` on the operator listener.
//!
//! With `[admin_ui] password_hash`, the Socket.IO Admin UI's `/admin` namespace (and its files)
//! on the client port, fed by the embedded broker or `[admin_ui] broker_url` (docs/admin-ui.md).
//!
//! Two HTTP listeners: the client port (`[server]`) and the operator port (`[operator]`,
//! loopback by default) with `/metrics`, `/v1/state` and the HTTP API. It prints `operator listening on
//! HOST:PORT`, then (when served) `grpc on HOST:PORT`, then `listening on http://HOST:PORT` for
//! the client port (tests read them).
//!
//! Configuration: the TOML file named by the first argument or `SWITCHBOARD_CONFIG`, else the
//! built-in default; the environment overrides it (`switchboard::settings`). Everything is
//! validated before a port is bound: a bad configuration exits with status 2, listing every
//! problem with its file, line and column (or variable).
//!
//! Operator commands instead of serving (none binds a port): `check-config FILE` (the same
//! loading and validation, exit 0 or 2), `print-config` (the built-in file) and `completions
//! SHELL`.
//!
//! Shutdown: the first SIGTERM or SIGINT starts the drain (sessions close spread over the
//! drain window, `/ready` answers 503); a second one closes the remaining sessions at once.
//! Every task runs on one tracker under one root token; the process exits 0 once they ended.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use switchboard::settings::{Process, Settings, Source, resolve};
use switchboard::signal::Signals;
use switchboard::{process, telemetry};
use switchboard_broker::api::HttpApi;
use switchboard_broker::{Broker, BrokerConfig, LeaderMode, grpc};
use switchboard_bus::{Bus, Hub, NatsOptions};
use switchboard_gateway::cluster::{Cluster, ClusterConfig, PresenceConfig, RecoveryConfig};
use switchboard_gateway::config::{Config, DEFAULT_TOML, NamespaceMatch, Problems};
use switchboard_gateway::engine::{CloseReason, Engine};
use switchboard_gateway::forward::{Forwarder, Peers};
use switchboard_gateway::http::{self, Router};
use switchboard_gateway::id::NodeId;
use switchboard_gateway::policy::Bridge;
use switchboard_gateway::{metrics, policy, sio};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The official Socket.IO browser client for the demo page, built in by `build.rs` from its
/// checksum-pinned npm tarball; empty when the build could not fetch it.
const BUILT_IN_CLIENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/socket.io.min.js"));
/// After the drain, how long the listener stays for the closed sessions' last answers (and how
/// long relayed connections may take to end).
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// How long the closed sessions' tasks may take to end after the listener stopped.
const SESSION_TASKS_GRACE: Duration = Duration::from_secs(5);
/// How long the node's `leaving` message may take to reach NATS.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Switchboard's gateway: terminates Socket.IO connections (Engine.IO v4, Socket.IO v5),
/// standalone or as a node of a cluster.
///
/// Every setting of the file can be overridden by its environment variable (environment >
/// file > built-in default); every key and variable: docs/configuration.md.
#[derive(Parser, Debug)]
#[command(
    name = "switchboard-gateway",
    version,
    args_conflicts_with_subcommands = true
)]
struct Args {
    /// The TOML configuration file (default: the built-in configuration).
    #[arg(value_name = "CONFIG", env = "SWITCHBOARD_CONFIG")]
    config: Option<std::ffi::OsString>,
    /// Instead of serving: an operator command (a file named like one: `./check-config`).
    #[command(subcommand)]
    command: Option<Operation>,
}

/// The operator commands: none starts anything or binds a port.
#[derive(clap::Subcommand, Debug)]
enum Operation {
    /// Prints the built-in configuration (what runs without a file), to copy and edit.
    PrintConfig,
    #[command(flatten)]
    Shared(process::Operation),
}

/// The configuration, validated: the gateway's and the shared settings.
struct Loaded {
    config: Config,
    settings: Settings,
}

fn load(path: Option<&Path>) -> Result<Loaded, Problems> {
    let env = |k: &str| std::env::var(k).ok();
    let source = path.map(Source::read).transpose()?;
    let config = match (&source, path) {
        (Some(source), Some(path)) => Config::parse(
            &source.text,
            &source.origin,
            path.parent().unwrap_or(Path::new(".")),
        ),
        _ => Config::builtin(),
    };
    let settings = Settings::load(Process::Gateway, source.as_ref().map(Source::file), env);
    // Every problem at once: the file's gateway tables, the shared settings, the secrets.
    let mut problems = Vec::new();
    let mut config = config.map_err(|e| problems.extend(e.problems())).ok();
    if let Some(c) = &mut config
        && let Err(e) = c.apply_env(env)
    {
        problems.extend(e.problems());
    }
    let settings = settings.map_err(|e| problems.extend(e.0)).ok();
    match (config, settings) {
        (Some(mut config), Some(settings)) if problems.is_empty() => {
            settings.apply_to(&mut config);
            Ok(Loaded { config, settings })
        }
        _ => Err(Problems(problems)),
    }
}

fn main() -> ExitCode {
    let args: Args = process::args(Process::Gateway);
    match args.command {
        Some(Operation::PrintConfig) => {
            return process::print("switchboard-gateway", DEFAULT_TOML.as_bytes());
        }
        Some(Operation::Shared(op)) => {
            return op.run::<Args, _>("switchboard-gateway", |file| load(Some(file)));
        }
        None => {}
    }
    process::main(
        "switchboard-gateway",
        load(process::config_path(args.config).as_deref()),
        |loaded| loaded.settings.log,
        runtime_builder(),
        run,
    )
}

/// With one CPU to run on (a CPU quota or affinity mask of one), a current-thread runtime on the
/// main thread: a multi-thread runtime would still start a worker thread and hand every task and
/// wake-up across threads, and its allocations would come from a glibc per-thread arena, which
/// grows its heap one `mprotect` at a time (the main thread's grows by `brk` with padding) — a
/// large part of what a connection storm costs. `TOKIO_WORKER_THREADS`, when set, still asks for
/// a multi-thread runtime of that size.
fn runtime_builder() -> tokio::runtime::Builder {
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    if one_cpu && std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
}

async fn run(Loaded { config, settings }: Loaded) -> anyhow::Result<()> {
    let signals = Signals::install().context("installing the signal handlers")?;
    // The shutdown tree: `root` ends everything; the first signal cancels `stop` (drain), a
    // second one `hurry` (close the rest at once). Every task is spawned on `tasks`.
    let root = CancellationToken::new();
    let tasks = TaskTracker::new();
    let (stop, hurry) = (CancellationToken::new(), CancellationToken::new());
    tasks.spawn(follow_signals(
        signals,
        stop.clone(),
        hurry.clone(),
        root.clone(),
    ));
    let result = serve(&config, &settings, &root, &tasks, &stop, &hurry).await;
    root.cancel();
    tasks.close();
    tasks.wait().await;
    if result.is_ok() {
        tracing::info!("stopped");
    }
    result
}

/// Cancels `stop` at the first signal and `hurry` at the second, until `done`.
async fn follow_signals(
    mut signals: Signals,
    stop: CancellationToken,
    hurry: CancellationToken,
    done: CancellationToken,
) {
    for token in [stop, hurry] {
        tokio::select! {
            () = signals.recv() => token.cancel(),
            () = done.cancelled() => return,
        }
    }
}

async fn serve(
    config: &Config,
    settings: &Settings,
    root: &CancellationToken,
    tasks: &TaskTracker,
    stop: &CancellationToken,
    hurry: &CancellationToken,
) -> anyhow::Result<()> {
    let server = &config.server;
    let addr = resolve(&server.host, server.port).await?;
    let operator_addr = resolve(&config.operator.host, config.operator.port).await?;
    // Before anything records: the hot paths bind their metric handles on first use.
    let prometheus =
        telemetry::install_recorder(&[(metrics::FANOUT_SIZE, &metrics::FANOUT_BUCKETS)])
            .context("installing the metrics recorder")?;
    metrics::describe();
    switchboard::allocator::describe();
    let node = settings.node.clone().unwrap_or_else(NodeId::random);
    let io = sio::Server::new(config.sio_config());
    let standalone = settings.nats.is_none();
    // Standalone: one in-process hub; the embedded broker gets its own client of it (a client
    // never receives its own messages).
    let hub = standalone.then(Hub::new);
    let bus = match &settings.nats {
        Some(opts) => {
            let opts = NatsOptions {
                name: format!("switchboard-gateway {node}"),
                ..opts.clone()
            };
            Bus::connect(&opts).await.context("connecting to NATS")?
        }
        None => hub
            .as_ref()
            .map(Hub::client)
            .context("standalone without a hub")?,
    };
    // Standalone: the broker lives in this process, on the same in-process bus.
    let broker = if let Some(hub) = &hub {
        let cfg = BrokerConfig {
            id: format!("{node}-broker"),
            prefix: settings.subjects.prefix().to_owned(),
            lease: settings.lease,
            heartbeat: settings.heartbeat,
            leader: LeaderMode::Always,
            presence_batches: settings.presence_batches,
        };
        switchboard_broker::metrics::describe();
        Some(
            Broker::start(hub.client(), cfg)
                .await
                .context("starting the embedded broker")?,
        )
    } else {
        None
    };
    let presence: HashMap<String, PresenceConfig> = config
        .namespaces
        .iter()
        .filter_map(|ns| match (&ns.matcher, &ns.presence) {
            (NamespaceMatch::Static(name), Some(p)) => Some((
                name.clone(),
                PresenceConfig {
                    rooms: p.rooms,
                    users: p.users,
                    event: p.event.clone(),
                    to_clients: p.to_clients,
                },
            )),
            _ => None,
        })
        .collect();
    let recovery: HashMap<String, RecoveryConfig> = config
        .namespaces
        .iter()
        .filter_map(|ns| match (&ns.matcher, &ns.recovery) {
            (NamespaceMatch::Static(name), Some(r)) => Some((
                name.clone(),
                RecoveryConfig {
                    window: r.window,
                    max_replay_packets: r.max_replay_packets,
                    max_replay_bytes: r.max_replay_bytes,
                },
            )),
            _ => None,
        })
        .collect();
    let log = settings.recovery_log(recovery.values().map(|r| r.window).max());
    let engine_slot: Arc<std::sync::OnceLock<Arc<Engine<sio::Server>>>> = Arc::default();
    let counter = engine_slot.clone();
    let cluster_cfg = ClusterConfig {
        node: node.clone(),
        subjects: settings.subjects.clone(),
        heartbeat: settings.heartbeat,
        lease: settings.lease,
        presence,
        connections: Arc::new(move || counter.get().map_or(0, |e| e.all().len() as u64)),
        recovery,
        log,
        member_batches: settings.member_batches,
        #[cfg(feature = "fault-injection")]
        drop_seqs: settings.drop_seqs.clone(),
    };
    // The cluster side stops after the node said it is leaving.
    let cluster_stop = root.child_token();
    let cluster = Cluster::start(
        bus.clone(),
        io.clone(),
        cluster_cfg,
        cluster_stop.clone(),
        tasks.clone(),
    )
    .await
    .context("joining the cluster bus")?;
    let bridge: Arc<dyn Bridge> = Arc::new(cluster.clone());
    policy::install(&io, config, Some(bridge)).context("installing the namespace policies")?;
    if standalone
        && config
            .namespaces
            .iter()
            .any(|ns| ns.events.iter().any(|e| e.action.kind() == "forward"))
    {
        tracing::warn!("forward rules need workers on NATS: standalone, they answer `no worker`");
    }
    tracing::info!(node = %node, mode = if standalone { "standalone" } else { "cluster" }, allocator = switchboard::allocator::NAME, "starting");
    let engine = Engine::new(server.engine_config(), io.clone(), node.clone());
    let _ = engine_slot.set(engine.clone());
    let mut router = Router::new(server.http_cors()).endpoint(&server.path, engine.clone());
    if server.serve_demo_page {
        let built_in = (!BUILT_IN_CLIENT.is_empty()).then_some(BUILT_IN_CLIENT);
        router = router.demo(server.client_js.as_deref(), built_in);
    }
    let mut operator = Router::operator();
    if let Some(b) = &broker {
        let b = b.clone();
        operator = operator.state(Arc::new(move || b.state_json().to_string()));
    }
    // Standalone with API keys: the embedded broker's admin APIs, one service behind both (gRPC
    // on its own port below, the HTTP API under `/api/` here).
    let admin = match (&broker, &hub, &settings.grpc) {
        (Some(b), Some(hub), Some(g)) => Some((
            grpc::AdminService::new(b, hub.client(), settings.subjects.clone()),
            g,
        )),
        _ => None,
    };
    if let Some((service, g)) = &admin {
        let api = HttpApi::new(service.clone(), g.options.keys.clone());
        operator = operator.api(
            "/api/",
            Arc::new(move |req| {
                let api = api.clone();
                Box::pin(async move { api.handle(req).await })
            }),
        );
    }
    // What runs beside the client listener (the operator listener, gRPC, metrics upkeep, the
    // bus watch, the peers' heartbeats) stops once the client listener has drained.
    let side = root.child_token();
    // The Socket.IO Admin UI: the `/admin` namespace (and the UI's files) on the client port,
    // fed by the embedded broker's admin service (even without API keys) or the cluster's.
    if let Some(ui) = &settings.admin_ui {
        let embedded = broker
            .as_ref()
            .zip(hub.as_ref())
            .map(|(b, hub)| grpc::AdminService::new(b, hub.client(), settings.subjects.clone()));
        router = switchboard::admin_ui::start(ui, &io, router, embedded, &side, tasks)
            .context("starting the Admin UI")?;
    }
    // JWKS refresh tasks; the first fetch is tried before clients are served (bounded by its
    // timeout: a namespace whose set is not loaded refuses tokens until a fetch succeeds).
    switchboard_gateway::jwks::start(&config.jwks_sources(), tasks, &side).await;
    // Cluster: requests for other gateways' sessions go to their owner, found by heartbeat.
    let forwarder = (!standalone && settings.forward).then(|| {
        let peers = Peers::default();
        let follow = peers.clone().follow(bus.clone(), settings.subjects.clone());
        let side = side.clone();
        tasks.spawn(async move {
            if let Some(Err(e)) = side.run_until_cancelled(follow).await {
                tracing::warn!(error = %e, "cannot follow the peers' heartbeats");
            }
        });
        Arc::new(Forwarder::new(
            node.clone(),
            peers,
            settings.lease,
            settings.heartbeat,
        ))
    });
    if let Some(f) = &forwarder {
        router = router.forward(f.clone());
    }
    // Standalone: the embedded broker's series are in the same recorder; its gauges are read
    // from its directory at each scrape.
    let scraped = broker.clone();
    let handle = prometheus.clone();
    operator = operator.metrics(Arc::new(move || {
        if let Some(b) = &scraped {
            b.record_gauges();
        }
        switchboard::allocator::record_gauges();
        handle.render()
    }));
    tasks.spawn(telemetry::upkeep(prometheus, side.clone()));
    let router = Arc::new(router);

    let operator_listener = http::listen(operator_addr)
        .with_context(|| format!("cannot listen on {operator_addr} (operator)"))?;
    let operator_bound = operator_listener.local_addr().unwrap_or(operator_addr);
    println!("operator listening on {operator_bound}");
    tracing::info!(local = %operator_bound, "operator listening");
    // Metrics stay scrapeable through the drain; the operator listener stops after it.
    tasks.spawn(http::serve_until(
        operator_listener,
        Arc::new(operator),
        side.clone(),
    ));
    // Standalone: the broker's gRPC admin API in-process, on its own port.
    match admin {
        Some((service, grpc_settings)) => {
            let grpc_addr = resolve(&grpc_settings.host, grpc_settings.port).await?;
            let listener = tokio::net::TcpListener::bind(grpc_addr)
                .await
                .with_context(|| format!("cannot listen on {grpc_addr} (gRPC)"))?;
            let bound = listener
                .local_addr()
                .context("reading the bound gRPC address")?;
            let serving = grpc::serve(
                listener,
                service,
                grpc_settings.options.clone(),
                side.clone(),
            );
            tasks.spawn(async move {
                if let Err(e) = serving.await {
                    tracing::warn!(error = %e, "gRPC server failed");
                }
            });
            println!("grpc on {bound}");
        }
        None => {
            if settings.grpc_ignored {
                tracing::info!(
                    "the API keys are ignored: in a cluster the brokers serve the admin APIs"
                );
            }
        }
    }
    let listener = http::listen(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    if !standalone && settings.advertise.is_none() && bound.ip().is_unspecified() {
        tracing::warn!(
            %bound,
            "listening on every interface without SWITCHBOARD_ADVERTISE_ADDR: other gateways \
             cannot forward this node's sessions to it"
        );
    }
    cluster.set_address(
        settings
            .advertise
            .clone()
            .unwrap_or_else(|| bound.to_string()),
    );
    tasks.spawn(watch_bus(bus.clone(), router.clone(), side.clone()));
    println!("listening on http://{bound}");
    tracing::info!(local = %bound, "listening");
    let drain_window = settings.drain();
    let sessions = engine.clone();
    http::run(listener, router, stop.cancelled(), async move || {
        tracing::info!(
            sessions = engine.len(),
            window_ms = u64::try_from(drain_window.as_millis()).unwrap_or(u64::MAX),
            "closing sessions over the drain window"
        );
        // This node's sessions and the connections it relays for other gateways' sessions
        // (behind a load balancer without stickiness) both end spread over the window.
        let relays = async {
            if let Some(f) = &forwarder {
                f.drain(drain_window, DRAIN_GRACE).await;
            }
        };
        tokio::select! {
            _ = async { tokio::join!(engine.drain(drain_window), relays) } => {}
            () = hurry.cancelled() => {
                tracing::warn!("second signal: closing the remaining sessions at once");
            }
        }
        for conn in engine.all() {
            conn.close(CloseReason::Shutdown);
        }
        // The listener stays a moment longer, for the closed sessions' last answers (a polling
        // client's next request gets its close).
        tokio::time::sleep(DRAIN_GRACE).await;
    })
    .await;
    // The sessions are closed and the listener is gone: their tasks end (closing frames
    // flushed), within a bound.
    sessions.tasks().close();
    if tokio::time::timeout(SESSION_TASKS_GRACE, sessions.tasks().wait())
        .await
        .is_err()
    {
        tracing::warn!(
            tasks = sessions.tasks().len(),
            "some session tasks did not end in time"
        );
    }
    side.cancel();
    cluster.leave(LEAVE_TIMEOUT).await;
    cluster_stop.cancel();
    if let Some(b) = broker {
        b.shutdown().await;
    }
    Ok(())
}

/// Follows the bus link for `/ready` (503 until it is first up) and the bus-up gauge, until
/// `stop`.
async fn watch_bus(bus: Bus, router: Arc<Router>, stop: CancellationToken) {
    let mut link = bus.link();
    loop {
        let up = link.borrow_and_update().up;
        router.set_bus_up(up);
        ::metrics::gauge!(metrics::BUS_UP).set(if up { 1.0 } else { 0.0 });
        tokio::select! {
            changed = link.changed() => if changed.is_err() { return },
            () = stop.cancelled() => return,
        }
    }
}
