//! The broker's HTTP port: `GET /health` (`ok`), `GET /metrics` (Prometheus text),
//! `GET /v1/state` (the directory as JSON, see [`Broker::state_json`]) and, with API keys, the
//! HTTP API under `/api/` ([`crate::api`]); anything else is 404, other methods on those paths
//! 405.
//!
//! It owns the listener and one tracked task per connection; on shutdown it stops accepting and
//! lets connections finish their current request (bounded by [`DRAIN`]). It must not change the
//! directory.
//!
//! An operator surface (it binds loopback unless told otherwise): `/v1/state` lists
//! every socket, user and room. A client that connects cannot hold a connection by dribbling
//! headers ([`HEADER_READ_TIMEOUT`]; hyper's timeout needs the timer set) or by sending a huge head
//! ([`MAX_HEAD_BYTES`]); only the HTTP API reads a request body, bounded in size and time by
//! [`crate::api`].

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Broker;
use crate::api::HttpApi;

/// How long open connections get to finish at shutdown.
pub const DRAIN: Duration = Duration::from_secs(5);
/// How long a client may take to send request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head read (hyper answers 431 past it; without it only its ~400 KiB read buffer
/// bound applies).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Renders the Prometheus text exposition of the process's metrics.
pub type Render = std::sync::Arc<dyn Fn() -> String + Send + Sync>;

/// What the handlers read.
#[derive(Clone)]
pub struct Routes {
    /// The broker whose state is served.
    pub broker: Broker,
    /// Renders the metrics exposition (the binary's Prometheus recorder); `None` serves an
    /// empty `/metrics`. A function, so the library does not depend on a recorder.
    pub metrics: Option<Render>,
    /// The HTTP API under `/api/`; `None` (no API keys): those paths are 404.
    pub api: Option<HttpApi>,
}

/// Serves HTTP on `listener` until `shutdown`, then drains.
pub async fn serve(listener: TcpListener, routes: Routes, shutdown: CancellationToken) {
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                // Out of file descriptors and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let routes = routes.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let routes = routes.clone();
                async move {
                    if let Some(api) = &routes.api
                        && HttpApi::owns(req.uri().path())
                    {
                        return Ok::<_, Infallible>(api.handle(req).await);
                    }
                    Ok::<_, Infallible>(handle(&routes, &req))
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_header_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "HTTP connection error");
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(DRAIN, connections.wait())
        .await
        .is_err()
    {
        tracing::debug!("HTTP connections still open after the drain window");
    }
}

fn handle(routes: &Routes, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let known = matches!(path, "/health" | "/metrics" | "/v1/state");
    if !known {
        return respond(StatusCode::NOT_FOUND, "text/plain", "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        );
    }
    match path {
        "/health" => respond(StatusCode::OK, "text/plain", "ok"),
        "/metrics" => {
            routes.broker.record_gauges();
            let text = routes
                .metrics
                .as_ref()
                .map(|render| render())
                .unwrap_or_default();
            respond(StatusCode::OK, "text/plain; version=0.0.4", text)
        }
        _ => respond(
            StatusCode::OK,
            "application/json",
            routes.broker.state_json().to_string(),
        ),
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BrokerConfig, LeaderMode};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test(start_paused = true)]
    async fn a_head_that_never_ends_is_cut_off() {
        let hub = switchboard_bus::Hub::new();
        let config = BrokerConfig {
            id: "b1".to_owned(),
            prefix: "t".to_owned(),
            lease: Duration::from_secs(3600),
            heartbeat: Duration::from_secs(600),
            leader: LeaderMode::Always,
            presence_batches: true,
        };
        let broker = Broker::start(hub.client(), config).await.expect("broker");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let routes = Routes {
            broker: broker.clone(),
            metrics: None,
            api: None,
        };
        let server = tokio::spawn(serve(listener, routes, shutdown.clone()));
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET /v1/state HTTP/1.1\r\nHost: b\r\n")
            .await
            .expect("write");
        let mut got = Vec::new();
        // The paused clock runs ahead whenever nothing else can: without the timeout this waits
        // the whole hour and fails.
        let read = tokio::time::timeout(Duration::from_secs(3600), tcp.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "the connection is still open");
        let got = String::from_utf8_lossy(&got);
        assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "{got:?}");
        shutdown.cancel();
        server.await.expect("server task");
        broker.shutdown().await;
    }
}
