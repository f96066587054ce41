//! The Engine.IO transports over HTTP: request validation with the reference server's error
//! bodies, long-polling (`polling`) and WebSocket (`ws`).
//!
//! An [`Engine`] is served at one path as an [`Endpoint`]; the HTTP layer routes to it and adds
//! CORS headers. A connection whose first request is for the endpoint is offered to it without
//! hyper ([`Endpoint::open_direct`] for a new WebSocket, [`Endpoint::serve_direct`] for
//! long-polling: `direct`); what those do not take, hyper serves. Polling responses are compressed per `Accept-Encoding` (`compress`), WebSocket
//! messages with permessage-deflate (`ws`), as the engine's configuration allows.

mod compress;
mod direct;
pub mod head;
mod polling;
mod rewind;
mod ws;

pub use rewind::Rewind;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub(crate) use crate::engine::parse_query;
use crate::engine::{Engine, Handler, HandshakeInfo, HandshakeRefusal, OpenError, Transport};
use crate::metrics::{self, Limit};

/// The most bytes of request head taken without hyper (see [`Endpoint::open_direct`]); a longer
/// head goes through hyper.
pub(crate) const DIRECT_HEAD_MAX: usize = 4096;

/// Response body used throughout the gateway.
pub type Body = Full<Bytes>;

/// What the HTTP layer's routes say about a request served without hyper (`http::Router`).
pub trait Front: Send + Sync + 'static {
    /// Whether new sessions are refused (a handshake then goes to hyper, which answers 503).
    fn draining(&self) -> bool;
    /// Whether a request for `sid` belongs to another gateway (cluster mode; `forwarded`: it was
    /// already passed on by one): hyper then forwards it.
    fn elsewhere(&self, sid: &str, forwarded: bool) -> bool;
    /// Appends the CORS header lines (`name: value\r\n`) of a response to a request from
    /// `origin`, as the hyper path sets them.
    fn cors(&self, origin: Option<&[u8]>, out: &mut Vec<u8>);
}

/// A connection offered to [`Endpoint::serve_direct`], nothing of it read yet.
pub struct Direct {
    /// The connection.
    pub tcp: TcpStream,
    /// Its peer.
    pub remote: SocketAddr,
    /// The path the endpoint is served under (with its final `/`).
    pub prefix: Arc<str>,
    /// The routes' rules.
    pub front: Arc<dyn Front>,
    /// Cancelled at shutdown: an idle connection is closed, one with a request in flight after
    /// its response.
    pub shutdown: CancellationToken,
    /// How long a request head may take to arrive.
    pub header_timeout: std::time::Duration,
}

/// A connection for hyper to serve from here on.
pub struct Handoff {
    /// The connection.
    pub tcp: TcpStream,
    /// Bytes already read from it (hyper reads them first).
    pub pre: Vec<u8>,
    /// What is left of the header-read timeout for the head in `pre`.
    pub header_timeout: std::time::Duration,
}

/// Something that answers HTTP requests under a path prefix.
pub trait Endpoint: Send + Sync + 'static {
    /// Answers one request.
    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        remote: SocketAddr,
    ) -> BoxFuture<'static, Response<Body>>;

    /// Takes a request read straight off `tcp` (not through hyper; `head_len` bytes of head, not
    /// consumed yet) if it is one this endpoint serves without hyper: a WebSocket that opens a new
    /// session. Hands `tcp` back, untouched, for anything else (hyper then serves it, with its
    /// error answers).
    fn open_direct(
        self: Arc<Self>,
        req: &mut Request<()>,
        head_len: usize,
        tcp: TcpStream,
        remote: SocketAddr,
    ) -> Result<(), TcpStream> {
        let _ = (req, head_len, remote);
        Err(tcp)
    }

    /// Serves the requests of a kept-alive connection that this endpoint answers without hyper
    /// (long-polling), until the connection ends (`None`) or a request must go to hyper (the
    /// connection, with what was read of it).
    fn serve_direct(self: Arc<Self>, conn: Direct) -> BoxFuture<'static, Option<Handoff>> {
        Box::pin(std::future::ready(Some(Handoff {
            tcp: conn.tcp,
            pre: Vec::new(),
            header_timeout: conn.header_timeout,
        })))
    }
}

impl<H: Handler> Endpoint for Engine<H> {
    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        remote: SocketAddr,
    ) -> BoxFuture<'static, Response<Body>> {
        Box::pin(handle(self, req, remote))
    }

    fn open_direct(
        self: Arc<Self>,
        req: &mut Request<()>,
        head_len: usize,
        tcp: TcpStream,
        remote: SocketAddr,
    ) -> Result<(), TcpStream> {
        // The same checks as `handle`, for the one outcome taken here; anything else goes back.
        let q = EioQuery::parse(req.uri().query());
        let fits = self.config.allow_websocket
            && q.transport.as_deref() == Some("websocket")
            && q.sid.is_none()
            && q.eio.as_deref() == Some("4")
            && fastwebsockets::upgrade::is_upgrade_request(req)
            && HandshakeInfo::check(&self.config, req.headers(), req.uri().query()).is_ok();
        if !fits {
            return Err(tcp);
        }
        // Checks the key and version and computes the accept key, as on the hyper path.
        let Ok((mut res, _)) = fastwebsockets::upgrade::upgrade(&mut *req) else {
            return Err(tcp);
        };
        let info = HandshakeInfo::new(remote, req.headers(), req.uri().query(), unix_ms());
        ws::open_direct(self, &mut res, req.headers(), info, head_len, tcp)
    }

    fn serve_direct(self: Arc<Self>, conn: Direct) -> BoxFuture<'static, Option<Handoff>> {
        Box::pin(direct::serve(self, conn))
    }
}

/// The reference server's error codes, sent as `{"code":N,"message":"…"}` with HTTP 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EioError {
    TransportUnknown,
    SessionUnknown,
    BadHandshakeMethod,
    BadRequest,
    Forbidden,
    UnsupportedProtocolVersion,
}

impl EioError {
    /// The reference server's JSON body for the error.
    fn body(self) -> &'static str {
        match self {
            Self::TransportUnknown => r#"{"code":0,"message":"Transport unknown"}"#,
            Self::SessionUnknown => r#"{"code":1,"message":"Session ID unknown"}"#,
            Self::BadHandshakeMethod => r#"{"code":2,"message":"Bad handshake method"}"#,
            Self::BadRequest => r#"{"code":3,"message":"Bad request"}"#,
            Self::Forbidden => r#"{"code":4,"message":"Forbidden"}"#,
            Self::UnsupportedProtocolVersion => {
                r#"{"code":5,"message":"Unsupported protocol version"}"#
            }
        }
    }

    /// The reference server's status for the error: 403 for `Forbidden`, else 400.
    fn status(self) -> StatusCode {
        if self == Self::Forbidden {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::BAD_REQUEST
        }
    }

    pub(crate) fn response(self) -> Response<Body> {
        json_response(self.status(), self.body())
    }
}

pub(crate) fn json_response(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// The query parameters Engine.IO cares about.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct EioQuery {
    pub(crate) eio: Option<String>,
    pub(crate) transport: Option<String>,
    pub(crate) sid: Option<String>,
}

impl EioQuery {
    /// The first value of each parameter, decoded as [`parse_query`] decodes it; only those three
    /// are copied (a polling request is mostly this, so it allocates for them alone).
    pub(crate) fn parse(query: Option<&str>) -> Self {
        let mut q = Self::default();
        for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = match &*name {
                "EIO" => &mut q.eio,
                "transport" => &mut q.transport,
                "sid" => &mut q.sid,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value.into_owned());
            }
        }
        q
    }
}

/// Writes as much as the kernel accepts without blocking; how much that was.
fn write_some(tcp: &TcpStream, mut buf: &[u8]) -> std::io::Result<usize> {
    let mut written = 0;
    while !buf.is_empty() {
        match tcp.try_write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                written += n;
                buf = &buf[n..];
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn handle<H: Handler>(
    engine: Arc<Engine<H>>,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> Response<Body> {
    let q = EioQuery::parse(req.uri().query());
    let config = &engine.config;
    let transport = match q.transport.as_deref() {
        Some("polling") if config.allow_polling => Transport::Polling,
        Some("websocket") if config.allow_websocket => Transport::WebSocket,
        _ => return EioError::TransportUnknown.response(),
    };
    let is_upgrade = fastwebsockets::upgrade::is_upgrade_request(&req);
    if let Some(sid) = q.sid.as_deref() {
        let Some(conn) = engine.get(sid) else {
            return EioError::SessionUnknown.response();
        };
        return match (transport, is_upgrade) {
            (Transport::WebSocket, true) => ws::upgrade_existing(engine, conn, req),
            (Transport::Polling, false) if req.method() == Method::GET => {
                let threshold = config.http_compression;
                let accept = threshold.and_then(|_| {
                    compress::preferred(
                        req.headers()
                            .get_all(header::ACCEPT_ENCODING)
                            .iter()
                            .map(HeaderValue::as_bytes),
                    )
                });
                compress::response(threshold, accept, polling::poll(conn).await).await
            }
            (Transport::Polling, false) if req.method() == Method::POST => {
                polling::post(engine, conn, req).await
            }
            _ => EioError::BadRequest.response(),
        };
    }
    if req.method() != Method::GET {
        return EioError::BadHandshakeMethod.response();
    }
    if q.eio.as_deref() != Some("4") {
        return EioError::UnsupportedProtocolVersion.response();
    }
    if (transport == Transport::WebSocket) != is_upgrade {
        return EioError::BadRequest.response();
    }
    if let Err(refusal) = HandshakeInfo::check(config, req.headers(), req.uri().query()) {
        return refused_handshake(refusal);
    }
    let info = HandshakeInfo::new(remote, req.headers(), req.uri().query(), unix_ms());
    match transport {
        Transport::WebSocket => ws::open(engine, req, info),
        _ => match engine.open(Transport::Polling, info, Instant::now()) {
            Ok((conn, open)) => polling::handshake(engine, conn, open),
            Err(e) => too_many(e),
        },
    }
}

/// A handshake over the bounds of what a session keeps: 400 (Bad request) for the query, as the
/// reference server answers a request it cannot use; 431 for the headers.
fn refused_handshake(refusal: HandshakeRefusal) -> Response<Body> {
    metrics::limited(Limit::Handshake);
    match refusal {
        HandshakeRefusal::QueryTooLong => EioError::BadRequest.response(),
        HandshakeRefusal::HeadersTooLarge => json_response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            EioError::BadRequest.body(),
        ),
    }
}

fn too_many(e: OpenError) -> Response<Body> {
    match e {
        OpenError::TooManyFromAddress => json_response(
            StatusCode::TOO_MANY_REQUESTS,
            r#"{"code":4,"message":"Too many connections from this address"}"#,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            (
                "EIO=4&transport=polling",
                &[("EIO", "4"), ("transport", "polling")],
            ),
            (
                "a=%2Fx%20y&b=1+2&c",
                &[("a", "/x y"), ("b", "1 2"), ("c", "")],
            ),
            ("bad=%zz&end=%4", &[("bad", "%zz"), ("end", "%4")]),
            ("", &[]),
        ];
        for (q, want) in cases {
            let got = parse_query(Some(q));
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            assert_eq!(got, want, "{q}");
        }
    }

    #[test]
    fn eio_query_takes_the_first_value_of_each_decoded() {
        let cases: &[(Option<&str>, [Option<&str>; 3])] = &[
            (None, [None, None, None]),
            (
                Some("EIO=4&transport=polling&t=x&sid=a%2Bb"),
                [Some("4"), Some("polling"), Some("a+b")],
            ),
            (
                Some("sid=first&sid=second&transport=web+socket&EIO"),
                [Some(""), Some("web socket"), Some("first")],
            ),
            (Some("eio=4&Sid=x"), [None, None, None]),
        ];
        for (query, [eio, transport, sid]) in cases {
            let q = EioQuery::parse(*query);
            assert_eq!(q.eio.as_deref(), *eio, "{query:?}");
            assert_eq!(q.transport.as_deref(), *transport, "{query:?}");
            assert_eq!(q.sid.as_deref(), *sid, "{query:?}");
        }
    }

    #[test]
    fn error_bodies_match_the_reference() {
        assert_eq!(
            EioError::SessionUnknown.body(),
            r#"{"code":1,"message":"Session ID unknown"}"#
        );
        assert_eq!(
            EioError::Forbidden.response().status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            EioError::TransportUnknown.response().status(),
            StatusCode::BAD_REQUEST
        );
    }
}
