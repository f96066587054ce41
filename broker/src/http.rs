//! The broker's HTTP port: `GET /health` (`ok`), `GET /metrics` (Prometheus text) and
//! `GET /v1/state` (the directory as JSON, see [`Broker::state_json`]); anything else is 404,
//! other methods on those paths 405.
//!
//! It owns the listener and one tracked task per connection; on shutdown it stops accepting and
//! lets connections finish their current request (bounded by [`DRAIN`]). It must not change the
//! directory.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Broker;

/// How long open connections get to finish at shutdown.
pub const DRAIN: Duration = Duration::from_secs(5);

/// What the handlers read.
#[derive(Clone)]
pub struct Routes {
    /// The broker whose state is served.
    pub broker: Broker,
    /// The Prometheus recorder's handle; `None` serves an empty `/metrics`.
    pub metrics: Option<PrometheusHandle>,
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
                async move { Ok::<_, Infallible>(handle(&routes, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
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
                .map(PrometheusHandle::render)
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
