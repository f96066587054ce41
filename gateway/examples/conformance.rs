//! The reference servers of the official Engine.IO v4 and Socket.IO v5 protocol test suites,
//! rebuilt on Switchboard's embedding API:
//!
//! - `/engine.io/`: bare Engine.IO, echoing every message (text as text, binary as binary);
//! - `/socket.io/`: namespaces `/` and `/custom`; on connect each emits `auth` with the CONNECT
//!   payload, echoes `message` as `message-back` and acks `message-with-ack` with its arguments.
//!   Beyond the suites, `request-ack` makes the server ask the client for an ack (`ack-request`)
//!   and report the answer (`ack-response`) or the timeout (`ack-error`).
//!
//! pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1 000 000, connect timeout 1 s.
//! Listens on 127.0.0.1:3000; `PORT` overrides (0 picks a free port).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use switchboard_codec::engineio::{Packet, Payload};
use switchboard_gateway::engine::{self, CloseReason, Conn, Engine};
use switchboard_gateway::http::{self, Cors, Router};
use switchboard_gateway::id::NodeId;
use switchboard_gateway::sio::{self, Args, Server};

/// Echoes every Engine.IO message back.
struct Echo;

impl engine::Handler for Echo {
    type Data = ();

    fn on_message(&self, conn: &Arc<Conn<()>>, message: Payload) {
        conn.push(Packet::Message(message).encode());
    }

    fn on_close(&self, _conn: &Arc<Conn<()>>, _reason: CloseReason) {}
}

/// The CONNECT payload, kept for the `auth` event.
struct Auth(Value);

fn namespace(io: &Server, name: &str) {
    let ns = io.of(name);
    ns.use_middleware(|req| {
        let auth = req.auth().clone();
        req.insert(Auth(auth));
        Ok(())
    });
    ns.on_connect(|socket| {
        let auth = socket
            .get::<Auth>()
            .map_or_else(|| Value::Object(Default::default()), |a| a.0.clone());
        socket.emit("auth", Args::new(vec![auth]));
    });
    ns.on("message", |socket, event| {
        socket.emit("message-back", event.into_args());
    });
    ns.on("message-with-ack", |_socket, mut event| {
        let args = Args::new(event.args.clone()).with_attachments(event.attachments.clone());
        event.ack(args);
    });
    // Not part of the official suites: server → client acks. The server emits `ack-request`
    // with the arguments and an ack, waits at most 1 s, and reports `ack-response` with what the
    // client acked, or `ack-error` with the error.
    ns.on("request-ack", |socket, event| {
        let socket = socket.clone();
        let pending =
            socket.emit_with_ack("ack-request", event.into_args(), Duration::from_secs(1));
        tokio::spawn(async move {
            match pending.await {
                Ok(args) => socket.emit("ack-response", args),
                Err(e) => socket.emit("ack-error", Args::new(vec![Value::String(e.to_string())])),
            }
        });
    });
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p
            .parse()
            .map_err(|_| anyhow::anyhow!("PORT must be a port number, got {p:?}"))?,
        Err(_) => 3000,
    };
    let config = engine::Config {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        ..engine::Config::default()
    };
    let node = NodeId::random();
    let io = Server::new(sio::Config {
        connect_timeout: Duration::from_secs(1),
        ..sio::Config::default()
    });
    namespace(&io, "/");
    namespace(&io, "/custom");
    let raw = Engine::new(config.clone(), Echo, node.clone());
    let socketio = Engine::new(config, io, node);
    let router = Router::new(Cors {
        origins: vec!["*".into()],
        credentials: false,
    })
    .endpoint("/engine.io/", raw.clone())
    .endpoint("/socket.io/", socketio.clone());
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = http::listen(addr)?;
    // The end-to-end tests read the port from this line.
    println!("listening on http://{}", listener.local_addr()?);
    // SIGTERM (how the tests stop it) or Ctrl-C.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    http::run(listener, Arc::new(router), stop, async move || {
        for conn in raw.all() {
            conn.close(CloseReason::Shutdown);
        }
        for conn in socketio.all() {
            conn.close(CloseReason::Shutdown);
        }
    })
    .await;
    Ok(())
}
