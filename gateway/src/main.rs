//! `switchboard-gateway`: the gateway binary.
//!
//! Cluster mode when `SWITCHBOARD_NATS_URL` is set: the node joins the cluster over NATS (a
//! broker runs elsewhere). Standalone mode otherwise: the same code paths over an in-process bus,
//! with the broker embedded (its view at `GET /v1/state` on the operator listener).
//!
//! Two HTTP listeners: the client port (`[server]`) and the operator port (`[operator]`,
//! loopback by default) with `/metrics` and `/v1/state`. It prints `operator listening on
//! HOST:PORT`, then `listening on http://HOST:PORT` for the client port (tests read both).
//!
//! Configuration: the TOML file named by `SWITCHBOARD_CONFIG` (or the first argument), else the
//! built-in default; environment variables override the scalars (see [`ClusterEnv`] and
//! `Config::apply_env`). Everything is validated before a port is bound: a bad configuration
//! exits with status 2 and a message naming file, line (or variable) and problem.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use switchboard_broker::{Broker, BrokerConfig, LeaderMode, grpc};
use switchboard_bus::{Bus, Hub, NatsOptions};
use switchboard_gateway::cluster::{Cluster, ClusterConfig, PresenceConfig};
use switchboard_gateway::config::{Config, NamespaceMatch};
use switchboard_gateway::engine::{CloseReason, Engine};
use switchboard_gateway::forward::{Forwarder, Peers, reachable};
use switchboard_gateway::http::{self, Router};
use switchboard_gateway::id::NodeId;
use switchboard_gateway::policy::Bridge;
use switchboard_gateway::{metrics, policy, sio};
use switchboard_proto::subject::Subjects;

/// The drain window of a gateway in a cluster.
const DEFAULT_DRAIN: Duration = Duration::from_secs(10);
/// After the drain, how long the listener stays for the closed sessions' last answers (and how
/// long relayed connections may take to end).
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// The cluster settings, from the environment.
struct ClusterEnv {
    /// `SWITCHBOARD_NATS_URL`: set → cluster mode.
    nats: Option<NatsOptions>,
    /// `SWITCHBOARD_NODE_ID` (default: random).
    node: NodeId,
    /// `SWITCHBOARD_SUBJECT_PREFIX` (default `sio`).
    subjects: Subjects,
    /// `SWITCHBOARD_HEARTBEAT_MS` (default 2000).
    heartbeat: Duration,
    /// `SWITCHBOARD_LEASE_MS` (default 3 heartbeats; standalone's embedded broker).
    lease: Duration,
    /// `SWITCHBOARD_FAULT_DROP_MEMBER_SEQ`: test fault injection, comma-separated.
    drop_seqs: Vec<u64>,
    /// `SWITCHBOARD_ADMIN_TOKEN` and friends: the gRPC admin API (standalone only; in a cluster
    /// the brokers serve it).
    grpc: Option<(SocketAddr, grpc::GrpcOptions)>,
    /// Cluster mode with `SWITCHBOARD_ADMIN_TOKEN` set: said once at startup.
    grpc_ignored: bool,
    /// `SWITCHBOARD_DRAIN_MS`: on SIGTERM, sessions are closed at random moments of this window
    /// (default 10 s in a cluster, 0 standalone: there is no other gateway to go to).
    drain: Duration,
    /// `SWITCHBOARD_ADVERTISE_ADDR`: the `host:port` other gateways reach this one's HTTP port
    /// at (default: the bound address).
    advertise: Option<String>,
    /// `SWITCHBOARD_FORWARD` (default on in a cluster): pass requests for other gateways'
    /// sessions to their owner.
    forward: bool,
}

fn cluster_env(env: impl Fn(&str) -> Option<String>) -> Result<ClusterEnv, String> {
    let set = |k: &str| {
        env(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let mut problems = Vec::new();
    let ms = |k: &str, default: u64, problems: &mut Vec<String>| match set(k) {
        None => Duration::from_millis(default),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if (10..=3_600_000).contains(&n) => Duration::from_millis(n),
            _ => {
                problems.push(format!(
                    "{k}={v:?} must be a number of milliseconds from 10 to 3600000"
                ));
                Duration::from_millis(default)
            }
        },
    };
    let heartbeat = ms("SWITCHBOARD_HEARTBEAT_MS", 2000, &mut problems);
    let lease = ms(
        "SWITCHBOARD_LEASE_MS",
        u64::try_from(heartbeat.as_millis())
            .unwrap_or(2000)
            .saturating_mul(3),
        &mut problems,
    );
    if lease <= heartbeat {
        problems.push(format!(
            "SWITCHBOARD_LEASE_MS ({} ms) must exceed SWITCHBOARD_HEARTBEAT_MS ({} ms)",
            lease.as_millis(),
            heartbeat.as_millis()
        ));
    }
    let node = match set("SWITCHBOARD_NODE_ID") {
        None => NodeId::random(),
        Some(v) => NodeId::parse(&v).unwrap_or_else(|e| {
            problems.push(format!("SWITCHBOARD_NODE_ID: {e}"));
            NodeId::random()
        }),
    };
    let prefix = set("SWITCHBOARD_SUBJECT_PREFIX").unwrap_or_else(|| "sio".to_owned());
    let subjects = Subjects::new(&prefix).unwrap_or_else(|e| {
        problems.push(format!("SWITCHBOARD_SUBJECT_PREFIX={prefix:?}: {e}"));
        Subjects::new("sio").unwrap_or_else(|_| unreachable!("the default prefix is valid"))
    });
    let mut drop_seqs = Vec::new();
    if let Some(v) = set("SWITCHBOARD_FAULT_DROP_MEMBER_SEQ") {
        for part in v.split(',') {
            match part.trim().parse::<u64>() {
                Ok(n) if n > 0 => drop_seqs.push(n),
                _ => problems.push(format!(
                    "SWITCHBOARD_FAULT_DROP_MEMBER_SEQ={v:?} must list sequence numbers (1, 2, ...)"
                )),
            }
        }
    }
    // Only a standalone gateway serves gRPC, so only then are its variables read (and its TLS
    // files loaded); in a cluster they belong to the brokers and are ignored here.
    let standalone = set("SWITCHBOARD_NATS_URL").is_none();
    let grpc_ignored = !standalone && set("SWITCHBOARD_ADMIN_TOKEN").is_some();
    let grpc = if standalone {
        grpc::options_from_lookup(&env).unwrap_or_else(|e| {
            problems.push(e.to_string());
            None
        })
    } else {
        None
    };
    // The password, from the variable or from a file (a Kubernetes Secret volume: a StatefulSet
    // pod reads the key of its own node); never logged.
    let password = match (
        set("SWITCHBOARD_NATS_PASSWORD"),
        set("SWITCHBOARD_NATS_PASSWORD_FILE"),
    ) {
        (Some(_), Some(_)) => {
            problems.push(
                "SWITCHBOARD_NATS_PASSWORD and SWITCHBOARD_NATS_PASSWORD_FILE are both set"
                    .to_owned(),
            );
            None
        }
        (None, Some(path)) => match std::fs::read_to_string(&path) {
            Ok(p) => Some(p.trim().to_owned()),
            Err(e) => {
                problems.push(format!("SWITCHBOARD_NATS_PASSWORD_FILE={path:?}: {e}"));
                None
            }
        },
        (password, None) => password,
    };
    if password.is_some() && set("SWITCHBOARD_NATS_USER").is_none() {
        problems.push("SWITCHBOARD_NATS_PASSWORD is set without SWITCHBOARD_NATS_USER".to_owned());
    }
    for k in ["SWITCHBOARD_NATS_CREDS", "SWITCHBOARD_NATS_NKEY_SEED_FILE"] {
        if let Some(path) = set(k).filter(|p| !std::path::Path::new(p).is_file()) {
            problems.push(format!("{k}={path:?} is not a readable file"));
        }
    }
    let drain = match set("SWITCHBOARD_DRAIN_MS") {
        None if standalone => Duration::ZERO,
        None => DEFAULT_DRAIN,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n <= 3_600_000 => Duration::from_millis(n),
            _ => {
                problems.push(format!(
                    "SWITCHBOARD_DRAIN_MS={v:?} must be a number of milliseconds from 0 to 3600000"
                ));
                DEFAULT_DRAIN
            }
        },
    };
    let advertise = set("SWITCHBOARD_ADVERTISE_ADDR").and_then(|v| match reachable(&v) {
        Some(a) => Some(a.to_string()),
        None => {
            problems.push(format!(
                "SWITCHBOARD_ADVERTISE_ADDR={v:?} must be the host (name or IP address, not \
                 0.0.0.0) and port other gateways reach this one at (e.g. 10.0.0.7:3000)"
            ));
            None
        }
    });
    let forward = match set("SWITCHBOARD_FORWARD").as_deref() {
        None | Some("1" | "true" | "on") => true,
        Some("0" | "false" | "off") => false,
        Some(v) => {
            problems.push(format!("SWITCHBOARD_FORWARD={v:?} must be on or off"));
            true
        }
    };
    let nats = set("SWITCHBOARD_NATS_URL").map(|url| NatsOptions {
        url,
        name: String::new(),
        user: set("SWITCHBOARD_NATS_USER").map(|u| (u, password.unwrap_or_default())),
        token: set("SWITCHBOARD_NATS_TOKEN"),
        credentials_file: set("SWITCHBOARD_NATS_CREDS").map(std::path::PathBuf::from),
        nkey_seed_file: set("SWITCHBOARD_NATS_NKEY_SEED_FILE").map(std::path::PathBuf::from),
    });
    if problems.is_empty() {
        Ok(ClusterEnv {
            nats,
            node,
            subjects,
            heartbeat,
            lease,
            drop_seqs,
            grpc,
            grpc_ignored,
            drain,
            advertise,
            forward,
        })
    } else {
        Err(problems.join("\n"))
    }
}

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
    let cluster = match cluster_env(|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchboard-gateway: invalid configuration:\n{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match runtime_builder().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard-gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, cluster)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
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

async fn run(config: Config, env: ClusterEnv) -> anyhow::Result<()> {
    let server = &config.server;
    let addr = resolve(&server.host, server.port).await?;
    let operator_addr = resolve(&config.operator.host, config.operator.port).await?;
    // Before anything records: the hot paths bind their metric handles on first use.
    let prometheus =
        switchboard_broker::metrics::install(&[(metrics::FANOUT_SIZE, &metrics::FANOUT_BUCKETS)])
            .context("installing the metrics recorder")?;
    metrics::describe();
    let io = sio::Server::new(config.sio_config());
    let standalone = env.nats.is_none();
    // Standalone: one in-process hub; the embedded broker gets its own client of it (a client
    // never receives its own messages).
    let hub = standalone.then(Hub::new);
    let bus = match &env.nats {
        Some(opts) => {
            let opts = NatsOptions {
                name: format!("switchboard-gateway {}", env.node),
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
            id: format!("{}-broker", env.node),
            prefix: env.subjects.prefix().to_owned(),
            lease: env.lease,
            heartbeat: env.heartbeat,
            leader: LeaderMode::Always,
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
    let engine_slot: Arc<std::sync::OnceLock<Arc<Engine<sio::Server>>>> = Arc::default();
    let counter = engine_slot.clone();
    let cluster_cfg = ClusterConfig {
        node: env.node.clone(),
        subjects: env.subjects.clone(),
        heartbeat: env.heartbeat,
        presence,
        connections: Arc::new(move || counter.get().map_or(0, |e| e.all().len() as u64)),
        drop_seqs: env.drop_seqs.clone(),
    };
    let cluster = Cluster::start(bus.clone(), io.clone(), cluster_cfg)
        .await
        .context("joining the cluster bus")?;
    let bridge: Arc<dyn Bridge> = Arc::new(cluster.clone());
    policy::install(&io, &config, Some(bridge)).context("installing the namespace policies")?;
    if standalone
        && config
            .namespaces
            .iter()
            .any(|ns| ns.events.iter().any(|e| e.action.kind() == "forward"))
    {
        tracing::warn!("forward rules need workers on NATS: standalone, they answer `no worker`");
    }
    tracing::info!(node = %env.node, mode = if standalone { "standalone" } else { "cluster" }, "starting");
    let engine = Engine::new(server.engine_config(), io, env.node.clone());
    let _ = engine_slot.set(engine.clone());
    let mut router = Router::new(server.http_cors()).endpoint(&server.path, engine.clone());
    if server.serve_demo_page {
        let client_js = std::env::var_os("SWITCHBOARD_CLIENT_JS").map(std::path::PathBuf::from);
        router = router.demo(client_js.as_deref());
    }
    let mut operator = Router::operator();
    if let Some(b) = &broker {
        let b = b.clone();
        operator = operator.state(Arc::new(move || b.state_json().to_string()));
    }
    // Cluster: requests for other gateways' sessions go to their owner, found by heartbeat.
    let forwarder = (!standalone && env.forward).then(|| {
        let peers = Peers::default();
        tokio::spawn(peers.clone().follow(bus.clone(), env.subjects.clone()));
        Arc::new(Forwarder::new(
            env.node.clone(),
            peers,
            env.lease,
            env.heartbeat,
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
        handle.render()
    }));
    let upkeep_stop = tokio_util::sync::CancellationToken::new();
    let upkeep = tokio::spawn(switchboard_broker::metrics::upkeep(
        prometheus,
        upkeep_stop.clone(),
    ));
    let router = Arc::new(router);
    // Standalone: the broker's gRPC admin API in-process, on its own port.
    let grpc_shutdown = tokio_util::sync::CancellationToken::new();
    let grpc_task = match (&broker, &hub, env.grpc.clone()) {
        (Some(b), Some(hub), Some((grpc_addr, opts))) => {
            let listener = tokio::net::TcpListener::bind(grpc_addr)
                .await
                .with_context(|| format!("cannot listen on {grpc_addr} (gRPC)"))?;
            let bound = listener
                .local_addr()
                .context("reading the bound gRPC address")?;
            let service = grpc::AdminService::new(b, hub.client(), env.subjects.clone());
            let task = tokio::spawn(grpc::serve(listener, service, opts, grpc_shutdown.clone()));
            println!("grpc on {bound}");
            Some(task)
        }
        _ => {
            if env.grpc_ignored {
                tracing::info!(
                    "SWITCHBOARD_ADMIN_TOKEN ignored: in a cluster the brokers serve gRPC"
                );
            }
            None
        }
    };
    let operator_listener = http::listen(operator_addr)
        .with_context(|| format!("cannot listen on {operator_addr} (operator)"))?;
    let operator_bound = operator_listener.local_addr().unwrap_or(operator_addr);
    println!("operator listening on {operator_bound}");
    tracing::info!(local = %operator_bound, "operator listening");
    let operator_shutdown = tokio_util::sync::CancellationToken::new();
    let operator_task = tokio::spawn(http::serve_until(
        operator_listener,
        Arc::new(operator),
        operator_shutdown.clone(),
    ));
    let listener = http::listen(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    if !standalone && env.advertise.is_none() && bound.ip().is_unspecified() {
        tracing::warn!(
            %bound,
            "listening on every interface without SWITCHBOARD_ADVERTISE_ADDR: other gateways \
             cannot forward this node's sessions to it"
        );
    }
    cluster.set_address(env.advertise.clone().unwrap_or_else(|| bound.to_string()));
    let watch = tokio::spawn(watch_bus(bus.clone(), router.clone()));
    let drain_window = env.drain;
    http::run_bound(listener, router, async move || {
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
            () = http::wait_for_signal() => {
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
    .await
    .with_context(|| format!("cannot serve on {addr}"))?;
    watch.abort();
    // Metrics stay scrapeable through the drain; the operator listener stops last.
    operator_shutdown.cancel();
    let _ = operator_task.await;
    upkeep_stop.cancel();
    let _ = upkeep.await;
    grpc_shutdown.cancel();
    if let Some(task) = grpc_task
        && let Ok(Err(e)) = task.await
    {
        tracing::warn!(error = %e, "gRPC server failed");
    }
    cluster.leave(Duration::from_secs(2)).await;
    cluster.shutdown();
    if let Some(b) = broker {
        b.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The first address `host:port` resolves to.
async fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve host {host:?}"))?
        .next()
        .with_context(|| format!("host {host:?} has no address"))
}

/// Follows the bus link for `/ready` (503 until it is first up) and the bus-up gauge.
async fn watch_bus(bus: Bus, router: Arc<Router>) {
    let mut link = bus.link();
    loop {
        let up = link.borrow_and_update().up;
        router.set_bus_up(up);
        ::metrics::gauge!(metrics::BUS_UP).set(if up { 1.0 } else { 0.0 });
        if link.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<ClusterEnv, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        cluster_env(|k| vars.get(k).cloned())
    }

    #[test]
    fn no_url_is_standalone_with_the_default_timings() {
        let env = parse(&[]).map_err(|e| e.to_string()).unwrap();
        assert!(env.nats.is_none());
        assert_eq!(env.heartbeat, Duration::from_millis(2000));
        assert_eq!(env.lease, Duration::from_millis(6000));
        assert_eq!(env.subjects.prefix(), "sio");
    }

    #[test]
    fn cluster_settings_are_read() {
        let env = parse(&[
            ("SWITCHBOARD_NATS_URL", "nats://127.0.0.1:4222"),
            ("SWITCHBOARD_NATS_USER", "gw"),
            ("SWITCHBOARD_NATS_PASSWORD", "p:w"),
            ("SWITCHBOARD_NODE_ID", "gw7"),
            ("SWITCHBOARD_SUBJECT_PREFIX", "prod"),
            ("SWITCHBOARD_HEARTBEAT_MS", "500"),
            ("SWITCHBOARD_FAULT_DROP_MEMBER_SEQ", "3, 5"),
        ])
        .map_err(|e| e.to_string())
        .unwrap();
        let nats = env.nats.unwrap();
        assert_eq!(nats.url, "nats://127.0.0.1:4222");
        assert_eq!(nats.user, Some(("gw".to_owned(), "p:w".to_owned())));
        assert_eq!(env.node.as_str(), "gw7");
        assert_eq!(env.subjects.prefix(), "prod");
        assert_eq!(env.lease, Duration::from_millis(1500));
        assert_eq!(env.drop_seqs, [3, 5]);
        // Drain and forwarding defaults of a cluster node.
        assert_eq!(env.drain, DEFAULT_DRAIN);
        assert!(env.forward && env.advertise.is_none());
    }

    #[test]
    fn drain_and_forwarding_settings() {
        let standalone = parse(&[]).map_err(|e| e.to_string()).unwrap();
        assert_eq!(
            standalone.drain,
            Duration::ZERO,
            "standalone closes at once"
        );
        let env = parse(&[
            ("SWITCHBOARD_NATS_URL", "nats://127.0.0.1:4222"),
            ("SWITCHBOARD_DRAIN_MS", "0"),
            ("SWITCHBOARD_ADVERTISE_ADDR", "gw1:3000"),
            ("SWITCHBOARD_FORWARD", "off"),
        ])
        .map_err(|e| e.to_string())
        .unwrap();
        assert_eq!(env.drain, Duration::ZERO);
        assert_eq!(env.advertise.as_deref(), Some("gw1:3000"));
        assert!(!env.forward);
        for (var, bad) in [
            ("SWITCHBOARD_DRAIN_MS", "-1"),
            ("SWITCHBOARD_DRAIN_MS", "3600001"),
            ("SWITCHBOARD_ADVERTISE_ADDR", "0.0.0.0:3000"),
            ("SWITCHBOARD_ADVERTISE_ADDR", "10.0.0.7"),
            ("SWITCHBOARD_ADVERTISE_ADDR", "10.0.0.7:0"),
            ("SWITCHBOARD_FORWARD", "maybe"),
        ] {
            let Err(e) = parse(&[(var, bad)]) else {
                panic!("{var}={bad} accepted");
            };
            assert!(e.contains(var), "{var}={bad}: {e}");
        }
    }

    #[test]
    fn grpc_is_read_only_standalone() {
        let tls = [
            ("SWITCHBOARD_ADMIN_TOKEN", "0123456789abcdef-token"),
            ("SWITCHBOARD_GRPC_TLS_CERT", "/nonexistent/cert.pem"),
            ("SWITCHBOARD_GRPC_TLS_KEY", "/nonexistent/key.pem"),
        ];
        // Standalone: the TLS files are loaded, so missing ones are a startup error.
        let Err(e) = parse(&tls) else {
            panic!("accepted missing TLS files");
        };
        assert!(e.contains("SWITCHBOARD_GRPC_TLS_CERT"), "{e}");
        let standalone = parse(&tls[..1]).map_err(|e| e.to_string()).unwrap();
        assert!(standalone.grpc.is_some() && !standalone.grpc_ignored);
        // In a cluster the brokers serve gRPC: the same variables are not read.
        let mut cluster = tls.to_vec();
        cluster.push(("SWITCHBOARD_NATS_URL", "nats://127.0.0.1:4222"));
        let env = parse(&cluster).map_err(|e| e.to_string()).unwrap();
        assert!(env.grpc.is_none() && env.grpc_ignored);
    }

    #[test]
    fn nats_credentials_from_files() {
        let dir =
            std::env::temp_dir().join(format!("switchboard-nats-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let password = dir.join("gw0");
        std::fs::write(&password, "sbsecret\n").unwrap();
        let seed = dir.join("seed");
        std::fs::write(&seed, "SUAEXAMPLE").unwrap();
        let (password, seed) = (password.to_str().unwrap(), seed.to_str().unwrap());
        let url = ("SWITCHBOARD_NATS_URL", "nats://127.0.0.1:4222");
        let env = parse(&[
            url,
            ("SWITCHBOARD_NATS_USER", "gateway-gw0"),
            ("SWITCHBOARD_NATS_PASSWORD_FILE", password),
            ("SWITCHBOARD_NATS_NKEY_SEED_FILE", seed),
        ])
        .map_err(|e| e.to_string())
        .unwrap();
        let nats = env.nats.unwrap();
        assert_eq!(
            nats.user,
            Some(("gateway-gw0".to_owned(), "sbsecret".to_owned()))
        );
        assert_eq!(
            nats.nkey_seed_file.as_deref(),
            Some(std::path::Path::new(seed))
        );
        for (problem, var) in [
            (
                vec![("SWITCHBOARD_NATS_PASSWORD_FILE", "/nonexistent/password")],
                "SWITCHBOARD_NATS_PASSWORD_FILE",
            ),
            (
                vec![
                    ("SWITCHBOARD_NATS_USER", "u"),
                    ("SWITCHBOARD_NATS_PASSWORD", "p"),
                    ("SWITCHBOARD_NATS_PASSWORD_FILE", password),
                ],
                "SWITCHBOARD_NATS_PASSWORD_FILE",
            ),
            (
                vec![("SWITCHBOARD_NATS_NKEY_SEED_FILE", "/nonexistent/seed")],
                "SWITCHBOARD_NATS_NKEY_SEED_FILE",
            ),
            (
                vec![("SWITCHBOARD_NATS_CREDS", "/nonexistent/x.creds")],
                "SWITCHBOARD_NATS_CREDS",
            ),
        ] {
            let mut vars = vec![url];
            vars.extend(problem);
            let Err(e) = parse(&vars) else {
                panic!("{vars:?} accepted");
            };
            assert!(e.contains(var), "{var} missing from: {e}");
            // The password itself is never part of a message.
            assert!(!e.contains("sbsecret"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_problem_is_reported_with_its_variable() {
        let Err(e) = parse(&[
            ("SWITCHBOARD_NATS_URL", "nats://127.0.0.1:4222"),
            ("SWITCHBOARD_NATS_PASSWORD", "secret"),
            ("SWITCHBOARD_HEARTBEAT_MS", "2000"),
            ("SWITCHBOARD_LEASE_MS", "1000"),
            ("SWITCHBOARD_FAULT_DROP_MEMBER_SEQ", "x"),
        ]) else {
            panic!("accepted");
        };
        for var in [
            "SWITCHBOARD_NATS_PASSWORD",
            "SWITCHBOARD_LEASE_MS",
            "SWITCHBOARD_FAULT_DROP_MEMBER_SEQ",
        ] {
            assert!(e.contains(var), "{var} missing from: {e}");
        }
    }
}
