//! The HTTP server: accepts connections and routes requests. One [`Router`] type serves two route
//! sets on two listeners, which are two trust boundaries:
//!
//! - the client route set ([`Router::new`]), public: the Engine.IO endpoints (with CORS), the demo
//!   page and its asset when enabled, `/health` and `/ready`. Nothing else: anything else is 404.
//! - the operator route set ([`Router::operator`]), private (loopback by default): `/metrics` and,
//!   standalone, `/v1/state` — documents that list every socket, user and room — and, standalone
//!   with API keys, the embedded broker's HTTP API under `/api/` ([`Router::api`]).
//!
//! Slow clients cannot hold a connection open by dribbling headers: hyper's header-read timeout is
//! on (it needs the timer set on the builder), and a request head is at most [`MAX_HEAD_BYTES`]
//! (hyper answers 431 past it). Request bodies are read only by polling POSTs, which have their own
//! deadline (`transport::polling`); of the operator routes only the HTTP API reads a body, with
//! its own size and time bounds (`switchboard_broker::api`), so an unread body cannot hold a
//! connection either (hyper closes a connection whose body was not read). Shutdown
//! stops accepting and asks every open HTTP connection to finish gracefully.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::forward::Forwarder;
use crate::transport::{Body, Endpoint, Handoff};

/// How long a client may take to send request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers) hyper reads; past it, 431. Without it hyper
/// stops only at its read buffer's bound (`max_buf_size`, about 400 KiB by default, and then only
/// checked between reads); nginx's default `large_client_header_buffers` allow 32 KiB.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long open connections get to finish after the listener stops.
const CONNECTION_GRACE: Duration = Duration::from_secs(10);
/// Where the demo page's client paths redirect when there is no local copy (none configured,
/// none built in, none installed); the version the build pins (`bin/build.rs`).
const CLIENT_CDN_URL: &str = "https://cdn.socket.io/4.8.4/socket.io.min.js";
/// Most headers a request taken without hyper may have (more: hyper serves it).
const DIRECT_MAX_HEADERS: usize = 64;
/// The demo chat page.
const DEMO_PAGE: &str = include_str!("../static/index.html");

/// Cross-origin rules for the Engine.IO endpoints.
#[derive(Clone, Debug, Default)]
pub struct Cors {
    /// Allowed origins; `*` allows any. Empty: no CORS headers, and WebSockets from any origin.
    pub origins: Vec<String>,
    /// Whether credentials (cookies) may be sent.
    pub credentials: bool,
}

impl Cors {
    fn any(&self) -> bool {
        self.origins.iter().any(|o| o == "*")
    }

    fn allows(&self, origin: &str) -> bool {
        self.any() || self.origins.iter().any(|o| o == origin)
    }

    /// The CORS headers of a response to a request from `origin` (`None`: none): the value of
    /// `Access-Control-Allow-Origin` (`None`: `*`; else the origin, with `Vary: Origin`) and
    /// whether credentials are allowed.
    fn allowed<'a>(&self, origin: &'a str) -> Option<(Option<&'a str>, bool)> {
        if self.origins.is_empty() || !self.allows(origin) {
            return None;
        }
        let echo = (!self.any() || self.credentials).then_some(origin);
        Some((echo, self.credentials))
    }

    /// Headers for a response to a request from `origin`.
    fn apply(&self, origin: Option<&HeaderValue>, res: &mut Response<Body>) {
        let Some(origin) = origin else { return };
        let Ok(o) = origin.to_str() else { return };
        let Some((echo, credentials)) = self.allowed(o) else {
            return;
        };
        let h = res.headers_mut();
        if echo.is_none() {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        } else {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        if credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    /// [`Cors::apply`] as header lines, for a response written without hyper.
    fn lines(&self, origin: Option<&[u8]>, out: &mut Vec<u8>) {
        // As `HeaderValue::to_str`: visible ASCII (and tabs) only.
        let Some(o) = origin
            .filter(|o| o.iter().all(|&b| b == b'\t' || (32..127).contains(&b)))
            .and_then(|o| std::str::from_utf8(o).ok())
        else {
            return;
        };
        let Some((echo, credentials)) = self.allowed(o) else {
            return;
        };
        match echo {
            None => out.extend_from_slice(b"access-control-allow-origin: *\r\n"),
            Some(o) => {
                out.extend_from_slice(b"access-control-allow-origin: ");
                out.extend_from_slice(o.as_bytes());
                out.extend_from_slice(b"\r\nvary: Origin\r\n");
            }
        }
        if credentials {
            out.extend_from_slice(b"access-control-allow-credentials: true\r\n");
        }
    }

    /// Whether a WebSocket upgrade from `origin` is refused: only with a list of origins, and
    /// never for a page served by this server itself (the origin's host is the request's `Host`).
    fn refuses_websocket(&self, origin: Option<&HeaderValue>, host: Option<&HeaderValue>) -> bool {
        if self.origins.is_empty() || self.any() {
            return false;
        }
        let Some(o) = origin.and_then(|o| o.to_str().ok()) else {
            return false;
        };
        let same_origin = host.and_then(|h| h.to_str().ok()).is_some_and(|h| {
            o.split_once("://")
                .is_some_and(|(_, authority)| authority == h)
        });
        !same_origin && !self.allows(o)
    }
}

/// What one HTTP listener serves: the client route set or the operator route set.
pub struct Router {
    endpoints: Vec<(Arc<str>, Arc<dyn Endpoint>)>,
    cors: Cors,
    demo: bool,
    client_js: Option<Bytes>,
    /// `/health` and `/ready` (the client route set: load balancers probe the port they route to).
    probes: bool,
    draining: AtomicBool,
    bus_up: AtomicBool,
    /// `GET` documents by path (the operator route set).
    documents: Vec<Document>,
    bus_reached: AtomicBool,
    forward: Option<Arc<Forwarder>>,
    /// The handler of a path prefix (the operator route set).
    api: Option<(&'static str, Handler)>,
    /// The Socket.IO Admin UI's files (the client route set, when configured).
    admin_ui: Option<Arc<crate::admin_ui::Assets>>,
}

/// Answers every request under a path prefix ([`Router::api`]).
pub type Handler = Arc<
    dyn Fn(Request<Incoming>) -> std::pin::Pin<Box<dyn Future<Output = Response<Body>> + Send>>
        + Send
        + Sync,
>;

/// A document served under a fixed path, rendered at each request.
struct Document {
    path: &'static str,
    content_type: &'static str,
    render: StateFn,
}

/// Renders a document: the JSON under `/v1/state`, the Prometheus text under `/metrics`.
pub type StateFn = Arc<dyn Fn() -> String + Send + Sync>;

impl Router {
    /// The client route set with no endpoints yet: `/health` and `/ready` only.
    pub fn new(cors: Cors) -> Self {
        Self {
            endpoints: Vec::new(),
            cors,
            demo: false,
            client_js: None,
            probes: true,
            draining: AtomicBool::new(false),
            bus_up: AtomicBool::new(true),
            documents: Vec::new(),
            bus_reached: AtomicBool::new(false),
            forward: None,
            api: None,
            admin_ui: None,
        }
    }

    /// The operator route set, with no documents yet (add them with [`Router::state`] and
    /// [`Router::metrics`]).
    pub fn operator() -> Self {
        Self {
            probes: false,
            ..Self::new(Cors::default())
        }
    }

    fn document(mut self, path: &'static str, content_type: &'static str, render: StateFn) -> Self {
        self.documents.push(Document {
            path,
            content_type,
            render,
        });
        self
    }

    /// Serves an Engine.IO endpoint under `path` (e.g. `/socket.io/`).
    pub fn endpoint(mut self, path: &str, endpoint: Arc<dyn Endpoint>) -> Self {
        let mut path = path.to_owned();
        if !path.ends_with('/') {
            path.push('/');
        }
        self.endpoints.push((path.into(), endpoint));
        self
    }

    /// Serves the demo chat page at `/` and the official client where Node's socket.io serves
    /// it, `{path}socket.io.min.js` and `{path}socket.io.js` of each endpoint (the minified
    /// bundle at both), and at `/assets/socket.io.min.js`. The client is the file `client_js`
    /// when given, else `built_in` (the binary's copy, when it has one), else the copy the test
    /// suite's `npm ci` installs; without any, those paths redirect to the CDN.
    pub fn demo(mut self, client_js: Option<&Path>, built_in: Option<&'static [u8]>) -> Self {
        self.demo = true;
        self.client_js = match client_js {
            Some(path) => std::fs::read(path).ok().map(Bytes::from),
            None => built_in.map(Bytes::from_static).or_else(|| {
                find_client_js()
                    .and_then(|p| std::fs::read(p).ok())
                    .map(Bytes::from)
            }),
        };
        self
    }

    /// Whether `path` is one the demo page's client is served at (see [`Router::demo`]).
    fn is_client_path(&self, path: &str) -> bool {
        path == "/assets/socket.io.min.js"
            || self.endpoints.iter().any(|(prefix, _)| {
                path.strip_prefix(&**prefix)
                    .is_some_and(|file| file == "socket.io.min.js" || file == "socket.io.js")
            })
    }

    /// Serves `GET /v1/state` with what `f` renders (the embedded broker's view, standalone).
    /// Operator route set only: it names every socket, user and room.
    pub fn state(self, f: StateFn) -> Self {
        self.document("/v1/state", "application/json", f)
    }

    /// Hands every request under `prefix` (e.g. `/api/`, and the bare `/api`) to `handler`,
    /// which bounds the body it reads itself. Operator route set only: the embedded broker's
    /// HTTP API, standalone.
    pub fn api(mut self, prefix: &'static str, handler: Handler) -> Self {
        self.api = Some((prefix, handler));
        self
    }

    /// Serves the Socket.IO Admin UI's files under their mount path (docs/admin-ui.md); the bare
    /// mount without its final `/` redirects to it, so the UI's relative links resolve.
    pub fn admin_ui(mut self, assets: Arc<crate::admin_ui::Assets>) -> Self {
        self.admin_ui = Some(assets);
        self
    }

    /// Passes requests for sessions of other gateways to their owner (cluster mode).
    pub fn forward(mut self, forwarder: Arc<Forwarder>) -> Self {
        self.forward = Some(forwarder);
        self
    }

    /// Starts draining: `/ready` answers 503 and new sessions are refused with 503 (a load
    /// balancer retries them elsewhere), while the sessions this node holds are still served.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Serves `GET /metrics` (Prometheus text format) with what `f` renders. Operator route set
    /// only.
    pub fn metrics(self, f: StateFn) -> Self {
        self.document("/metrics", "text/plain; version=0.0.4; charset=utf-8", f)
    }

    /// Records whether the cluster bus is reachable. `/ready` answers 503 only until the bus
    /// has been reached once (the node is not in the cluster yet); an outage after that leaves
    /// it ready, degraded (see docs/cluster.md, "What `/ready` means").
    pub fn set_bus_up(&self, up: bool) {
        self.bus_up.store(up, Ordering::SeqCst);
        if up {
            self.bus_reached.store(true, Ordering::SeqCst);
        }
    }

    /// The endpoint serving `path` (its prefix, with or without the trailing slash).
    fn endpoint_for(&self, path: &str) -> Option<Arc<dyn Endpoint>> {
        self.endpoint_index(path)
            .map(|i| self.endpoints[i].1.clone())
    }

    fn endpoint_index(&self, path: &str) -> Option<usize> {
        self.endpoints
            .iter()
            .position(|(p, _)| path == &**p || path == p.trim_end_matches('/'))
    }

    async fn route(self: Arc<Self>, req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
        let path = req.uri().path();
        if let Some(endpoint) = self.endpoint_for(path) {
            let origin = req.headers().get(header::ORIGIN).cloned();
            if req.method() == Method::OPTIONS {
                return self.preflight(&req, origin.as_ref());
            }
            // The sid is looked at here only to forward and to refuse new sessions while
            // draining (the endpoint reads the query itself).
            let draining = self.draining.load(Ordering::SeqCst);
            let sid = if self.forward.is_some() || draining {
                crate::forward::sid_of(req.uri())
            } else {
                None
            };
            if let Some(fwd) = &self.forward
                && let Some(owner) = fwd.owner(req.headers(), sid.as_deref())
            {
                // The owner answers CORS as it would have answered the client.
                return fwd.forward(owner, req, remote).await;
            }
            if sid.is_none() && draining {
                let mut res = crate::transport::json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    r#"{"code":3,"message":"Server draining"}"#,
                );
                // A browser must be able to read it as a failed request, not a CORS error.
                self.cors.apply(origin.as_ref(), &mut res);
                return res;
            }
            if fastwebsockets::upgrade::is_upgrade_request(&req)
                && self
                    .cors
                    .refuses_websocket(origin.as_ref(), req.headers().get(header::HOST))
            {
                return crate::transport::json_response(
                    StatusCode::FORBIDDEN,
                    r#"{"code":4,"message":"Forbidden"}"#,
                );
            }
            let mut res = endpoint.handle(req, remote).await;
            if res.status() != StatusCode::SWITCHING_PROTOCOLS {
                self.cors.apply(origin.as_ref(), &mut res);
            }
            return res;
        }
        if let Some((prefix, handler)) = &self.api
            && (path.starts_with(prefix) || path == prefix.trim_end_matches('/'))
        {
            return handler(req).await;
        }
        if req.method() == Method::GET
            && let Some(doc) = self.documents.iter().find(|d| d.path == path)
        {
            return document((doc.render)(), doc.content_type);
        }
        if req.method() == Method::GET
            && let Some(assets) = &self.admin_ui
        {
            if let Some((content_type, body)) = assets.get(path) {
                return document(body, content_type);
            }
            if path == assets.mount().trim_end_matches('/') {
                let mut res = plain(StatusCode::MOVED_PERMANENTLY, "");
                if let Ok(to) = HeaderValue::from_str(assets.mount()) {
                    res.headers_mut().insert(header::LOCATION, to);
                }
                return res;
            }
        }
        match (req.method(), path) {
            (&Method::GET, "/health") if self.probes => plain(StatusCode::OK, "ok"),
            (&Method::GET, "/ready") if self.probes => {
                if self.draining.load(Ordering::SeqCst) {
                    plain(StatusCode::SERVICE_UNAVAILABLE, "draining")
                } else if self.bus_up.load(Ordering::SeqCst) {
                    plain(StatusCode::OK, "ready")
                } else if self.bus_reached.load(Ordering::SeqCst) {
                    // Degraded, not dark: local delivery and new sessions go on.
                    plain(StatusCode::OK, "ready (degraded: cluster bus down)")
                } else {
                    plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "starting: cluster bus not reached yet",
                    )
                }
            }
            (&Method::GET, "/") if self.demo => document(
                Bytes::from_static(DEMO_PAGE.as_bytes()),
                "text/html; charset=utf-8",
            ),
            (&Method::GET, path) if self.demo && self.is_client_path(path) => match &self.client_js
            {
                Some(js) => document(js.clone(), "application/javascript; charset=utf-8"),
                None => {
                    let mut res = plain(StatusCode::FOUND, "");
                    res.headers_mut()
                        .insert(header::LOCATION, HeaderValue::from_static(CLIENT_CDN_URL));
                    res
                }
            },
            _ => not_found(),
        }
    }

    /// The common cases without hyper, by the connection's first request:
    ///
    /// - a WebSocket opening a new session is answered by the endpoint straight off the socket,
    ///   the 101 and the Engine.IO handshake in one write (a connection storm is mostly this);
    /// - a GET or POST for an endpoint's path is offered to the endpoint, which serves the
    ///   connection's long-polling requests itself (`transport::direct`) and hands it back, with
    ///   what it read, at the first request that is not one.
    ///
    /// The first request is peeked, not read, so anything else — another path, a head that did
    /// not arrive whole, draining, a refused origin, any error to answer — goes to hyper
    /// untouched, which answers it as before. `Ok` once the connection is done with (closed: the
    /// client went away, or sent nothing within the header-read timeout; or served to its end).
    async fn direct(
        self: Arc<Self>,
        tcp: tokio::net::TcpStream,
        remote: SocketAddr,
        shutdown: &CancellationToken,
    ) -> Result<(), Handoff> {
        let untouched = |tcp| Handoff {
            tcp,
            pre: Vec::new(),
            header_timeout: HEADER_READ_TIMEOUT,
        };
        if self.draining.load(Ordering::SeqCst) {
            return Err(untouched(tcp));
        }
        // `poll_peek` is cancel-safe; at shutdown a connection that sent nothing yet is closed,
        // as hyper closes an idle one. The head is parsed inside the poll, so the peek buffer
        // lives on the stack for one poll instead of in this connection's task for its whole
        // set-up (a 4 KiB transient allocation per connect fragments the heap that the
        // long-lived session records are interleaved with).
        let peeked = std::future::poll_fn(|cx| {
            let mut buf = [0u8; crate::transport::DIRECT_HEAD_MAX];
            let mut rb = tokio::io::ReadBuf::new(&mut buf);
            tcp.poll_peek(cx, &mut rb)
                .map_ok(|n| (n > 0).then(|| self.first(rb.filled())))
        });
        let first = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            r = tokio::time::timeout(HEADER_READ_TIMEOUT, peeked) => match r {
                Ok(Ok(Some(first))) => first,
                Ok(Ok(None) | Err(_)) | Err(_) => return Ok(()),
            },
        };
        let (mut req, head_len) = match first {
            First::Other => return Err(untouched(tcp)),
            First::Polling(index) => {
                let (prefix, endpoint) = self.endpoints[index].clone();
                let direct = crate::transport::Direct {
                    tcp,
                    remote,
                    prefix,
                    front: self.clone(),
                    shutdown: shutdown.clone(),
                    header_timeout: HEADER_READ_TIMEOUT,
                };
                return endpoint.serve_direct(direct).await.map_or(Ok(()), Err);
            }
            First::Upgrade(req, head_len) => (*req, head_len),
        };
        let Some(endpoint) = self.endpoint_for(req.uri().path()) else {
            return Err(untouched(tcp));
        };
        let h = req.headers();
        if self
            .cors
            .refuses_websocket(h.get(header::ORIGIN), h.get(header::HOST))
        {
            return Err(untouched(tcp));
        }
        endpoint
            .open_direct(&mut req, head_len, tcp, remote)
            .map_err(untouched)
    }

    /// What the connection's first request (peeked, `buf`) is for.
    fn first(&self, buf: &[u8]) -> First {
        let mut headers = [httparse::EMPTY_HEADER; DIRECT_MAX_HEADERS];
        let crate::transport::head::Parse::Complete(head) =
            crate::transport::head::parse(buf, &mut headers)
        else {
            return First::Other;
        };
        use crate::transport::head::Method;
        match (head.method, self.endpoint_index(head.path)) {
            (Method::Get, Some(_)) if head.unusual => match direct_head(buf) {
                Some((req, len)) => First::Upgrade(Box::new(req), len),
                None => First::Other,
            },
            (Method::Get | Method::Post, Some(index)) if !head.unusual => First::Polling(index),
            _ => First::Other,
        }
    }

    fn preflight(&self, req: &Request<Incoming>, origin: Option<&HeaderValue>) -> Response<Body> {
        let mut res = plain(StatusCode::NO_CONTENT, "");
        self.cors.apply(origin, &mut res);
        if res
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        {
            let h = res.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET,HEAD,POST"),
            );
            if let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
            }
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("86400"),
            );
        }
        res
    }
}

/// What a connection's first request is for (see [`Router::direct`]).
enum First {
    /// A GET with an upgrade, for an endpoint: maybe a WebSocket opening a session.
    Upgrade(Box<Request<()>>, usize),
    /// A GET or POST for the endpoint of this index: maybe long-polling.
    Polling(usize),
    /// Anything else: hyper serves it.
    Other,
}

impl crate::transport::Front for Router {
    fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    fn elsewhere(&self, sid: &str, forwarded: bool) -> bool {
        !forwarded
            && self
                .forward
                .as_ref()
                .is_some_and(|f| f.owner(&http::HeaderMap::new(), Some(sid)).is_some())
    }

    fn cors(&self, origin: Option<&[u8]>, out: &mut Vec<u8>) {
        self.cors.lines(origin, out);
    }
}

/// A complete `GET` request head at the start of `buf`, as an owned request and the head's
/// length; `None` for anything else (hyper then serves the connection).
fn direct_head(buf: &[u8]) -> Option<(Request<()>, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; DIRECT_MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(head_len)) = parsed.parse(buf) else {
        return None;
    };
    let (Some("GET"), Some(1), Some(target)) = (parsed.method, parsed.version, parsed.path) else {
        return None;
    };
    let mut builder = Request::builder()
        .method(Method::GET)
        .uri(target)
        .version(http::Version::HTTP_11);
    for h in parsed.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    builder.body(()).ok().map(|req| (req, head_len))
}

/// A 200 answer with `body` of type `content_type`.
fn document(body: impl Into<Bytes>, content_type: &'static str) -> Response<Body> {
    let mut res = Response::new(Full::new(body.into()));
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

fn not_found() -> Response<Body> {
    plain(StatusCode::NOT_FOUND, "not found")
}

fn plain(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// Looks for the official browser client installed by the test suite's `npm ci`.
fn find_client_js() -> Option<PathBuf> {
    const REL: &str = "tests/e2e/node_modules/socket.io-client/dist/socket.io.min.js";
    let from_manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(REL);
    [PathBuf::from(REL), from_manifest]
        .into_iter()
        .find(|p| p.is_file())
}

/// Accepts connections until `shutdown` is cancelled, then asks open HTTP connections to finish.
/// Every connection task is tracked by `tracker`.
pub async fn serve(
    listener: TcpListener,
    router: Arc<Router>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (tcp, remote) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let handoff = match router.clone().direct(tcp, remote, &shutdown).await {
                Ok(()) => return,
                Err(handoff) => handoff,
            };
            // Boxed: hyper's connection state is large, and most connections of a storm never
            // need it; it is allocated only for the connections that do.
            let Handoff {
                tcp,
                pre,
                header_timeout,
            } = handoff;
            if pre.is_empty() {
                Box::pin(serve_http(router, tcp, remote, shutdown, header_timeout)).await;
            } else {
                let io = crate::transport::Rewind::new(tcp, pre);
                Box::pin(serve_http(router, io, remote, shutdown, header_timeout)).await;
            }
        });
    }
}

/// Serves one connection with hyper until it ends or `shutdown` asks it to finish; a request head
/// may take `header_timeout` to arrive.
async fn serve_http<I>(
    router: Arc<Router>,
    io: I,
    remote: SocketAddr,
    shutdown: CancellationToken,
    header_timeout: Duration,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let service = service_fn(move |req| {
        let router = router.clone();
        async move { Ok::<_, Infallible>(router.route(req, remote).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        }
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Binds the listener [`run`] serves (so the caller knows the port first).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    bind(addr)
}

/// Serves `router` on `listener` until `stop` completes, then drains: `/ready` and new sessions
/// get 503 at once, `drain` runs (closing the sessions, gradually if it wants) while the
/// listener still serves the sessions that are left, and then the listener stops and open HTTP
/// connections are asked to finish. Returns once they have (or after a grace period).
///
/// What stops the server is the caller's business (a binary waits for a signal; a test cancels
/// a token): this library never reads OS signals.
pub async fn run(
    listener: TcpListener,
    router: Arc<Router>,
    stop: impl Future<Output = ()>,
    drain: impl AsyncFnOnce(),
) {
    let shutdown = CancellationToken::new();
    let control = async {
        stop.await;
        tracing::info!("draining");
        router.start_draining();
        drain().await;
        tracing::info!("shutting down");
        shutdown.cancel();
    };
    tokio::join!(
        serve_until(listener, router.clone(), shutdown.clone()),
        control
    );
}

/// [`serve`] with its own task tracker: once `shutdown` is cancelled, returns when the open
/// connections finished (or after a grace period). The operator listener runs this.
pub async fn serve_until(listener: TcpListener, router: Arc<Router>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    serve(listener, router, shutdown, tracker.clone()).await;
    tracker.close();
    if tokio::time::timeout(CONNECTION_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some HTTP connections did not finish in time");
    }
}

/// Pending connections the kernel may queue before `accept` (tokio's default, 128, overflows in
/// a reconnect storm and costs the overflowing clients a SYN retransmit: a second).
const LISTEN_BACKLOG: u32 = 4096;

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gateway's HTTP server with the default engine under `/socket.io/`, on a free port.
    async fn server() -> (SocketAddr, CancellationToken) {
        let io = crate::sio::Server::new(crate::sio::Config::default());
        let engine = crate::engine::Engine::new(
            crate::engine::Config::default(),
            io,
            crate::id::NodeId::parse("n1").expect("node id"),
        );
        serve_on_free_port(Router::new(Cors::default()).endpoint("/socket.io/", engine))
    }

    fn serve_on_free_port(router: Router) -> (SocketAddr, CancellationToken) {
        let listener = bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            Arc::new(router),
            shutdown.clone(),
            TaskTracker::new(),
        ));
        (addr, shutdown)
    }

    /// Sends `request` and reads until the server closes the connection (or the paused clock
    /// passes an hour: the connection was held).
    async fn until_closed(tcp: &mut tokio::net::TcpStream, request: &str) -> Option<String> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        tcp.write_all(request.as_bytes()).await.expect("write");
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(3600), tcp.read_to_end(&mut got))
            .await
            .ok()?
            .ok()?;
        Some(String::from_utf8_lossy(&got).into_owned())
    }

    /// `GET path` over its own connection; the whole answer.
    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        until_closed(&mut tcp, &request).await.expect("answered")
    }

    /// Opens a polling session over its own connection; its sid.
    async fn polling_sid(addr: SocketAddr) -> String {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let got = until_closed(
            &mut tcp,
            "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("handshake answered");
        let start = got.find("\"sid\":\"").expect("a sid") + 7;
        let len = got[start..].find('"').expect("sid end");
        got[start..start + len].to_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn a_polling_body_not_finished_in_time_gets_408_and_the_connection_closes() {
        let (addr, shutdown) = server().await;
        let sid = polling_sid(addr).await;
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        // Five bytes announced, one sent: the rest never comes.
        let post = format!(
            "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: h\r\n\
             Content-Type: text/plain\r\nContent-Length: 5\r\n\r\n4"
        );
        let got = until_closed(&mut tcp, &post)
            .await
            .expect("the connection was held open");
        assert!(
            got.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{got:?}"
        );
        assert!(got.contains("\r\nconnection: close\r\n"), "{got:?}");
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_head_over_the_bound_gets_431() {
        let (addr, shutdown) = server().await;
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let big = format!(
            "GET /health HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        let got = until_closed(&mut tcp, &big).await.expect("answered");
        assert!(got.starts_with("HTTP/1.1 431 "), "{got:?}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn operator_documents_are_served_only_by_the_operator_route_set() {
        let doc = |text: &'static str| -> StateFn { Arc::new(move || text.to_owned()) };
        // The client route set has no way to serve them; the operator's serves nothing else.
        let (client, stop_client) = serve_on_free_port(Router::new(Cors::default()));
        let (operator, stop_operator) = serve_on_free_port(
            Router::operator()
                .metrics(doc("# metrics"))
                .state(doc("{}"))
                .api(
                    "/api/",
                    Arc::new(|_req| Box::pin(async { plain(StatusCode::IM_A_TEAPOT, "api") })),
                ),
        );
        let cases = [
            (client, "/api/stats", "404"),
            (operator, "/api/stats", "418"),
            (operator, "/api", "418"),
            (operator, "/apis", "404"),
            (client, "/metrics", "404"),
            (client, "/v1/state", "404"),
            (client, "/health", "200"),
            (client, "/ready", "200"),
            (operator, "/metrics", "200"),
            (operator, "/v1/state", "200"),
            (operator, "/health", "404"),
            (operator, "/", "404"),
        ];
        for (addr, path, status) in cases {
            let got = get(addr, path).await;
            assert!(
                got.starts_with(&format!("HTTP/1.1 {status} ")),
                "{addr} {path}: {got:?}"
            );
        }
        stop_client.cancel();
        stop_operator.cancel();
    }

    #[tokio::test]
    async fn the_admin_ui_files_are_served_under_their_mount_only() {
        let dir = std::env::temp_dir().join(format!("sb-http-admin-ui-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("js")).expect("mkdir");
        std::fs::write(dir.join("index.html"), "<html>ui").expect("write");
        std::fs::write(dir.join("js/app.js"), "app()").expect("write");
        let assets = crate::admin_ui::Assets::load(&dir, "/admin-ui/").expect("assets");
        std::fs::remove_dir_all(&dir).expect("rm");
        let (addr, stop) =
            serve_on_free_port(Router::new(Cors::default()).admin_ui(Arc::new(assets)));
        let cases = [
            ("/admin-ui/", "200", "<html>ui"),
            ("/admin-ui/js/app.js", "200", "app()"),
            ("/admin-ui", "301", "location: /admin-ui/"),
            ("/admin-ui/../index.html", "404", ""),
            ("/admin-ui/nope.js", "404", ""),
            ("/js/app.js", "404", ""),
            ("/health", "200", "ok"),
        ];
        for (path, status, has) in cases {
            let got = get(addr, path).await;
            assert!(
                got.starts_with(&format!("HTTP/1.1 {status} ")),
                "{path}: {got:?}"
            );
            assert!(got.contains(has), "{path}: {got:?}");
        }
        stop.cancel();
    }

    #[tokio::test]
    async fn the_demo_client_is_served_where_node_serves_it() {
        const BUILT: &str = "/* built in */";
        const FILE: &str = "/* configured */";
        let engine = || {
            crate::engine::Engine::new(
                crate::engine::Config::default(),
                crate::sio::Server::new(crate::sio::Config::default()),
                crate::id::NodeId::parse("n1").expect("node id"),
            )
        };
        let file =
            std::env::temp_dir().join(format!("switchboard-client-{}.js", std::process::id()));
        std::fs::write(&file, FILE).expect("write");
        let (built, stop_plain) = serve_on_free_port(
            Router::new(Cors::default())
                .endpoint("/socket.io/", engine())
                .endpoint("/io", engine())
                .demo(None, Some(BUILT.as_bytes())),
        );
        let (configured, stop_configured) = serve_on_free_port(
            Router::new(Cors::default())
                .endpoint("/socket.io/", engine())
                .demo(Some(&file), Some(BUILT.as_bytes())),
        );
        let (off, stop_off) =
            serve_on_free_port(Router::new(Cors::default()).endpoint("/socket.io/", engine()));
        let cases = [
            (built, "/socket.io/socket.io.min.js", "200", BUILT),
            (built, "/socket.io/socket.io.js", "200", BUILT),
            (built, "/io/socket.io.min.js", "200", BUILT),
            (built, "/assets/socket.io.min.js", "200", BUILT),
            (built, "/socket.io/socket.io.esm.min.js", "404", ""),
            (built, "/socket.io.min.js", "404", ""),
            (configured, "/socket.io/socket.io.min.js", "200", FILE),
            (off, "/socket.io/socket.io.min.js", "404", ""),
            (off, "/assets/socket.io.min.js", "404", ""),
        ];
        for (addr, path, status, body) in cases {
            let got = get(addr, path).await;
            assert!(
                got.starts_with(&format!("HTTP/1.1 {status} ")),
                "{path}: {got:?}"
            );
            assert!(got.ends_with(body), "{path}: {got:?}");
            if status == "200" {
                assert!(got.contains("application/javascript"), "{path}: {got:?}");
            }
        }
        std::fs::remove_file(&file).expect("cleanup");
        for stop in [stop_plain, stop_configured, stop_off] {
            stop.cancel();
        }
    }

    /// Sends `parts` (pausing between them) and returns what arrives within a short while.
    async fn exchange(addr: SocketAddr, parts: &[&str]) -> Vec<u8> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tcp.write_all(part.as_bytes()).await.expect("write");
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(300), tcp.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    #[tokio::test]
    async fn websocket_handshake_with_and_without_hyper() {
        let (addr, shutdown) = server().await;
        let line = "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n";
        let rest = "Host: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let whole = format!("{line}{rest}");
        // In one piece: answered without hyper (no `date` header). In two: hyper answers.
        for (parts, through_hyper) in [(vec![whole.as_str()], false), (vec![line, rest], true)] {
            let raw = exchange(addr, &parts).await;
            let got = String::from_utf8_lossy(&raw);
            let end = got.find("\r\n\r\n").expect("a response head") + 4;
            let (head, frame) = (&got[..end], raw.get(end..).unwrap_or_default());
            assert!(
                head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
                "{got:?}"
            );
            assert!(
                head.contains("\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                "{got:?}"
            );
            assert_eq!(head.contains("\r\ndate: "), through_hyper, "{got:?}");
            // Then the Engine.IO handshake, as one unmasked text frame.
            assert_eq!(frame.first(), Some(&0x81), "{got:?}");
            assert!(
                frame.get(2..).is_some_and(|f| f.starts_with(b"0{\"sid\":")),
                "{got:?}"
            );
        }
        // What the fast path does not take still gets its answer.
        let old = whole.replace("EIO=4", "EIO=3");
        let got = String::from_utf8_lossy(&exchange(addr, &[old.as_str()]).await).into_owned();
        assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got:?}");
        assert!(
            got.ends_with(r#"{"code":5,"message":"Unsupported protocol version"}"#),
            "{got:?}"
        );
        let polling = "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let got = String::from_utf8_lossy(&exchange(addr, &[polling]).await).into_owned();
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got:?}");
        shutdown.cancel();
    }

    /// A client connection that reads responses framed by their `content-length`.
    struct Client {
        tcp: tokio::net::TcpStream,
        got: Vec<u8>,
    }

    impl Client {
        async fn connect(addr: SocketAddr) -> Self {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            Self {
                tcp,
                got: Vec::new(),
            }
        }

        async fn send(&mut self, request: &str) {
            use tokio::io::AsyncWriteExt as _;
            self.tcp.write_all(request.as_bytes()).await.expect("write");
        }

        /// The next response's head and body; `None` if the connection closed first (or the
        /// paused clock passed an hour).
        async fn response(&mut self) -> Option<(String, String)> {
            use tokio::io::AsyncReadExt as _;
            let mut buf = [0u8; 4096];
            loop {
                if let Some(end) = self.got.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&self.got[..end + 4]).into_owned();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if self.got.len() >= end + 4 + len {
                        let body =
                            String::from_utf8_lossy(&self.got[end + 4..end + 4 + len]).into_owned();
                        self.got.drain(..end + 4 + len);
                        return Some((head, body));
                    }
                }
                let read = self.tcp.read(&mut buf);
                let n = tokio::time::timeout(Duration::from_secs(3600), read)
                    .await
                    .ok()?
                    .ok()?;
                if n == 0 {
                    return None;
                }
                self.got.extend_from_slice(&buf[..n]);
            }
        }

        /// Opens a polling session on this (kept-alive) connection; its sid.
        async fn handshake(&mut self) -> String {
            self.send("GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: h\r\n\r\n")
                .await;
            let (head, body) = self.response().await.expect("handshake answered");
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head:?}");
            let start = body.find("\"sid\":\"").expect("a sid") + 7;
            let len = body[start..].find('"').expect("sid end");
            body[start..start + len].to_owned()
        }
    }

    fn get_req(sid: &str) -> String {
        format!("GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: h\r\n\r\n")
    }

    fn post_req(sid: &str, body: &str) -> String {
        format!(
            "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: h\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[tokio::test]
    async fn a_kept_alive_polling_connection_is_served_without_hyper() {
        let (addr, shutdown) = server().await;
        let mut tcp = Client::connect(addr).await;
        let sid = tcp.handshake().await;
        // A GET held while nothing is queued, answered by the POST's CONNECT reply (written by
        // the pusher: hyper's responses carry a `date` header, these do not).
        tcp.send(&get_req(&sid)).await;
        let mut other = Client::connect(addr).await;
        other.send(&post_req(&sid, "40")).await;
        let (head, body) = other.response().await.expect("post answered");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head:?}");
        assert!(head.contains("content-type: text/html\r\n"), "{head:?}");
        assert_eq!(body, "ok");
        let (head, body) = tcp.response().await.expect("poll answered");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head:?}");
        assert!(!head.contains("\r\ndate: "), "{head:?}");
        assert!(
            head.contains("content-type: text/plain; charset=UTF-8\r\n"),
            "{head:?}"
        );
        assert!(head.contains("cache-control: no-store\r\n"), "{head:?}");
        assert!(body.starts_with('4'), "{body:?}");
        // The same connection goes on: a POST, then the client's close answers a held GET.
        tcp.send(&post_req(&sid, "3")).await;
        assert_eq!(tcp.response().await.expect("ok").1, "ok");
        tcp.send(&get_req(&sid)).await;
        other.send(&post_req(&sid, "1")).await;
        assert_eq!(other.response().await.expect("ok").1, "ok");
        assert_eq!(tcp.response().await.expect("noop").1, "6");
        tcp.send(&get_req(&sid)).await;
        let (head, _) = tcp.response().await.expect("answered");
        assert!(head.starts_with("HTTP/1.1 400 "), "{head:?}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_second_get_closes_the_session_and_a_dropped_get_too() {
        let (addr, shutdown) = server().await;
        let mut a = Client::connect(addr).await;
        let sid = a.handshake().await;
        a.send(&get_req(&sid)).await;
        let mut b = Client::connect(addr).await;
        b.send(&get_req(&sid)).await;
        let (head, body) = b.response().await.expect("second answered");
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head:?}");
        assert_eq!(body, "");
        assert_eq!(a.response().await.expect("first answered").1, "1");

        // A held GET whose client goes away closes its session.
        let mut c = Client::connect(addr).await;
        let sid = c.handshake().await;
        c.send(&get_req(&sid)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(c);
        let mut d = Client::connect(addr).await;
        let mut closed = false;
        for _ in 0..100 {
            d.send(&post_req(&sid, "3")).await;
            let (head, _) = d.response().await.expect("answered");
            if head.starts_with("HTTP/1.1 400 ") {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(closed, "the session outlived its dropped GET");
        shutdown.cancel();
    }

    /// Hostile input on a connection the direct path serves: each limit holds as on hyper's path.
    #[tokio::test(start_paused = true)]
    async fn limits_hold_on_a_kept_alive_polling_connection() {
        let (addr, shutdown) = server().await;
        // An over-size head after a direct request: hyper's 431.
        let mut tcp = Client::connect(addr).await;
        let sid = tcp.handshake().await;
        let big = format!(
            "GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        let got = until_closed(&mut tcp.tcp, &big).await.expect("answered");
        assert!(got.starts_with("HTTP/1.1 431 "), "{got:?}");

        // A head dribbled after a direct request: closed within the header-read timeout.
        let mut tcp = Client::connect(addr).await;
        let sid = tcp.handshake().await;
        tcp.send(&format!(
            "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\n"
        ))
        .await;
        // (`until_closed` gives up after an hour of the paused clock: the connection was held.)
        assert!(until_closed(&mut tcp.tcp, "Host: h\r\n").await.is_some());

        // A body over maxHttpBufferSize: 413.
        let mut tcp = Client::connect(addr).await;
        let sid = tcp.handshake().await;
        let over = crate::engine::DEFAULT_MAX_PAYLOAD_BYTES + 1;
        tcp.send(&format!(
            "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: h\r\n\
                 Content-Length: {over}\r\n\r\n4"
        ))
        .await;
        let (head, _) = tcp.response().await.expect("answered");
        assert!(head.starts_with("HTTP/1.1 413 "), "{head:?}");

        // A body trickled: 408, and the connection closes.
        let mut tcp = Client::connect(addr).await;
        let sid = tcp.handshake().await;
        let post = format!(
            "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: h\r\n\
             Content-Length: 5\r\n\r\n4"
        );
        let got = until_closed(&mut tcp.tcp, &post).await.expect("closed");
        assert!(got.starts_with("HTTP/1.1 408 "), "{got:?}");
        assert!(got.contains("\r\nconnection: close\r\n"), "{got:?}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn pipelined_requests_and_bytes_after_a_body_are_answered_in_order() {
        let (addr, shutdown) = server().await;
        let mut tcp = Client::connect(addr).await;
        let sid = tcp.handshake().await;
        // A POST and the bytes of the next request in one write.
        let two = format!("{}{}", post_req(&sid, "40"), get_req(&sid));
        tcp.send(&two).await;
        assert_eq!(tcp.response().await.expect("post").1, "ok");
        let (_, body) = tcp.response().await.expect("get");
        assert!(body.starts_with('4'), "{body:?}");
        // Two GETs in one write: the first is held, the second one overlaps it.
        let mut tcp = Client::connect(addr).await;
        let sid = tcp.handshake().await;
        tcp.send(&format!("{}{}", get_req(&sid), get_req(&sid)))
            .await;
        let mut other = Client::connect(addr).await;
        other.send(&post_req(&sid, "40")).await;
        assert_eq!(other.response().await.expect("post").1, "ok");
        let (_, first) = tcp.response().await.expect("first");
        assert!(first.starts_with('4'), "{first:?}");
        // The second is held in its turn, and released by the client's close.
        other.send(&post_req(&sid, "1")).await;
        assert_eq!(other.response().await.expect("post").1, "ok");
        assert_eq!(tcp.response().await.expect("second").1, "6");
        // A GET held, then more bytes while it is pending: served after its answer.
        let mut tcp = Client::connect(addr).await;
        let sid = tcp.handshake().await;
        tcp.send(&get_req(&sid)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        tcp.send(&post_req(&sid, "3")).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut other = Client::connect(addr).await;
        other.send(&post_req(&sid, "40")).await;
        assert_eq!(other.response().await.expect("post").1, "ok");
        let (_, first) = tcp.response().await.expect("held GET");
        assert!(first.starts_with('4'), "{first:?}");
        assert_eq!(tcp.response().await.expect("pipelined POST").1, "ok");
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_closes_an_answered_polling_connection() {
        let (addr, shutdown) = server().await;
        let mut tcp = Client::connect(addr).await;
        let sid = tcp.handshake().await;
        // Held, then answered (the client's close): the connection is idle again.
        tcp.send(&get_req(&sid)).await;
        let mut other = Client::connect(addr).await;
        other.send(&post_req(&sid, "1")).await;
        assert_eq!(other.response().await.expect("ok").1, "ok");
        assert_eq!(tcp.response().await.expect("noop").1, "6");
        shutdown.cancel();
        // (`until_closed` gives up after an hour of the paused clock: the connection was held.)
        assert_eq!(until_closed(&mut tcp.tcp, "").await.as_deref(), Some(""));
    }

    #[tokio::test]
    async fn cors_headers_on_the_direct_path_match_hyper() {
        let io = crate::sio::Server::new(crate::sio::Config::default());
        let engine = crate::engine::Engine::new(
            crate::engine::Config::default(),
            io,
            crate::id::NodeId::parse("n1").expect("node id"),
        );
        let cors = Cors {
            origins: vec!["https://a.example".into()],
            credentials: true,
        };
        let (addr, shutdown) =
            serve_on_free_port(Router::new(cors).endpoint("/socket.io/", engine));
        let mut tcp = Client::connect(addr).await;
        tcp.send("GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: h\r\nOrigin: https://a.example\r\n\r\n",
        )
        .await;
        let (head, _) = tcp.response().await.expect("answered");
        assert!(!head.contains("\r\ndate: "), "{head:?}");
        for line in [
            "access-control-allow-origin: https://a.example\r\n",
            "vary: Origin\r\n",
            "access-control-allow-credentials: true\r\n",
        ] {
            assert!(head.contains(line), "{line} in {head:?}");
        }
        tcp.send("GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: h\r\nOrigin: https://b.example\r\n\r\n",
        )
        .await;
        let (head, _) = tcp.response().await.expect("answered");
        assert!(!head.contains("access-control"), "{head:?}");
        shutdown.cancel();
    }

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).expect("header value")
    }

    #[test]
    fn websocket_origin_rules() {
        let listed = Cors {
            origins: vec!["https://app.example".into()],
            credentials: true,
        };
        let host = hv("gw.example:3000");
        let cases = [
            (&listed, Some("https://app.example"), false),
            (&listed, Some("https://evil.example"), true),
            (&listed, Some("http://gw.example:3000"), false),
            (&listed, None, false),
            (&Cors::default(), Some("https://evil.example"), false),
        ];
        for (cors, origin, refused) in cases {
            let origin = origin.map(hv);
            assert_eq!(
                cors.refuses_websocket(origin.as_ref(), Some(&host)),
                refused,
                "{origin:?}"
            );
        }
    }

    #[test]
    fn cors_headers() {
        let any = Cors {
            origins: vec!["*".into()],
            credentials: false,
        };
        let mut res = plain(StatusCode::OK, "");
        any.apply(Some(&hv("https://a.example")), &mut res);
        assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let listed = Cors {
            origins: vec!["https://a.example".into()],
            credentials: true,
        };
        let mut res = plain(StatusCode::OK, "");
        listed.apply(Some(&hv("https://a.example")), &mut res);
        assert_eq!(
            res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://a.example"
        );
        assert_eq!(
            res.headers()[header::ACCESS_CONTROL_ALLOW_CREDENTIALS],
            "true"
        );
        let mut res = plain(StatusCode::OK, "");
        listed.apply(Some(&hv("https://b.example")), &mut res);
        assert!(
            !res.headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        );
    }
}
