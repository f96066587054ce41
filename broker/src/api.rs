//! The HTTP/JSON server API: every Admin operation of `proto/proto/admin.proto` as
//! `POST /api/<operation>` (snake case, see [`ROUTES`]) with the request message as the JSON
//! body and the response message as the JSON answer, in the proto3 canonical JSON mapping
//! (the serde impls `pbjson-build` generates for the prost types, so the shapes cannot drift
//! from the proto). Each call runs the gRPC service's own trait method ([`AdminService`]'s
//! `impl Admin`) with a `tonic::Request`: one implementation behind both APIs.
//! `GET /api/openapi.json` serves the OpenAPI 3 document (`broker/openapi.json`, checked in;
//! a test keeps it equal to [`ROUTES`] and the messages).
//!
//! StreamSockets is gRPC-only: over HTTP, page through `fetch_sockets` (`pageToken`).
//!
//! Served on an operator port (the broker's HTTP port, a standalone gateway's operator
//! listener), never the client port, and only with API keys configured ([`crate::keys`]). Each
//! call needs `authorization: Bearer <key>` with the operation's scope, checked before the body
//! is read. The body must be `application/json`, at most [`MAX_BODY_BYTES`] (413 beyond), and
//! arrive within [`BODY_READ_TIMEOUT`] (408); the call then has [`CALL_TIMEOUT`] (plus its ack
//! timeout, for emits that collect acks) before it is answered 504. Errors are JSON with the
//! gRPC status name and message: `{"code":"INVALID_ARGUMENT","message":"..."}`; see
//! [`http_status`] for the HTTP status of each code.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::StatusCode;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;
use switchboard_proto::admin as pb;
use switchboard_proto::admin::admin_server::Admin as _;
use tonic::{Code, Status};

use crate::grpc::AdminService;
use crate::keys::{Api, ApiKeys};

/// Largest request body (413 beyond).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How long a client may take to send the whole body once the head arrived (408 beyond).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a call may run once its body is read (504 beyond); an emit collecting acks gets its
/// ack timeout on top.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The OpenAPI 3 document served at `GET /api/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");
/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/api/openapi.json";

/// Declares [`ROUTES`] and the router of the operations from one list, so that they agree.
macro_rules! operations {
    ($($path:literal => $rpc:literal, $method:ident;)*) => {
        /// Every route: its path and the Admin RPC it calls (all `POST`).
        pub const ROUTES: [(&str, &str); [$($rpc),*].len()] = [$(($path, $rpc)),*];

        /// One route per Admin operation, each calling the service's trait method.
        fn operations() -> axum::Router<Inner> {
            axum::Router::new()
                $(.route(
                    $path,
                    post(|State(s): State<Inner>, req: Request| async move {
                        call(&s, $rpc, req, |svc, r| async move { svc.$method(r).await }).await
                    }),
                ))*
        }
    };
}

operations! {
    "/api/fetch_sockets" => "FetchSockets", fetch_sockets;
    "/api/rooms" => "Rooms", rooms;
    "/api/room_members" => "RoomMembers", room_members;
    "/api/room_history" => "RoomHistory", room_history;
    "/api/presence" => "Presence", presence;
    "/api/user_sockets" => "UserSockets", user_sockets;
    "/api/stats" => "Stats", stats;
    "/api/broadcast" => "Broadcast", broadcast;
    "/api/emit_to_socket" => "EmitToSocket", emit_to_socket;
    "/api/disconnect" => "Disconnect", disconnect;
    "/api/sockets_join" => "SocketsJoin", sockets_join;
    "/api/sockets_leave" => "SocketsLeave", sockets_leave;
    "/api/update_socket_data" => "UpdateSocketData", update_socket_data;
}

/// The HTTP API over one Admin service and its keys; cheap to clone.
#[derive(Clone)]
pub struct HttpApi {
    router: axum::Router,
}

impl HttpApi {
    /// The API serving `service` to holders of `keys`.
    pub fn new(service: AdminService, keys: ApiKeys) -> Self {
        Self {
            router: router(Inner { service, keys }),
        }
    }

    /// Whether `path` is the API's (`/api` or under `/api/`): the operator listeners hand such
    /// requests to [`HttpApi::handle`].
    pub fn owns(path: &str) -> bool {
        path == "/api" || path.starts_with("/api/")
    }

    /// Answers one request (any path under `/api/`; anything unknown is a JSON 404 or 405).
    pub async fn handle<B>(&self, req: hyper::Request<B>) -> hyper::Response<Full<Bytes>>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let mut router = self.router.clone();
        let response = match tonic::codegen::Service::call(&mut router, req.map(Body::new)).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let (parts, body) = response.into_parts();
        // Every body here is built in memory: collecting it cannot wait on the network.
        match body.collect().await {
            Ok(collected) => hyper::Response::from_parts(parts, Full::new(collected.to_bytes())),
            Err(e) => {
                tracing::warn!(error = %e, "HTTP API response body");
                let (parts, _) = error(&Status::internal("response body")).into_parts();
                hyper::Response::from_parts(parts, Full::new(Bytes::new()))
            }
        }
    }
}

#[derive(Clone)]
struct Inner {
    service: AdminService,
    keys: ApiKeys,
}

/// How long an operation may run: [`CALL_TIMEOUT`], plus the ack timeout it asks for.
trait Budget {
    fn ack_timeout_ms(&self) -> u32 {
        0
    }
}

impl Budget for pb::FetchSocketsRequest {}
impl Budget for pb::RoomsRequest {}
impl Budget for pb::RoomMembersRequest {}
impl Budget for pb::RoomHistoryRequest {}
impl Budget for pb::PresenceRequest {}
impl Budget for pb::UserSocketsRequest {}
impl Budget for pb::StatsRequest {}
impl Budget for pb::DisconnectRequest {}
impl Budget for pb::RoomsChangeRequest {}
impl Budget for pb::UpdateSocketDataRequest {}
impl Budget for pb::BroadcastRequest {
    fn ack_timeout_ms(&self) -> u32 {
        self.ack_timeout_ms
    }
}
impl Budget for pb::EmitToSocketRequest {
    fn ack_timeout_ms(&self) -> u32 {
        self.ack_timeout_ms
    }
}

/// The operations, the OpenAPI document and JSON answers for anything else.
fn router(state: Inner) -> axum::Router {
    operations()
        .route(
            OPENAPI_PATH,
            get(|| async {
                let mut res = Response::new(Body::from(OPENAPI_JSON));
                res.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                res
            }),
        )
        .fallback(|req: Request| async move {
            error(&Status::not_found(format!(
                "no route {} {}",
                req.method(),
                req.uri().path()
            )))
        })
        .method_not_allowed_fallback(|req: Request| async move {
            let mut res = error_with(
                StatusCode::METHOD_NOT_ALLOWED,
                &Status::unimplemented(format!(
                    "method {} not allowed on {}: use POST",
                    req.method(),
                    req.uri().path()
                )),
            );
            res.headers_mut()
                .insert("allow", HeaderValue::from_static("POST"));
            res
        })
        .with_state(state)
}

/// Runs one operation: the key's scope, the body (type, size, time), the JSON, then the
/// service's method within the call's budget; counted in
/// [`HTTP_API_CALLS`](crate::metrics::HTTP_API_CALLS).
async fn call<Req, Res, F, Fut>(s: &Inner, method: &'static str, req: Request, f: F) -> Response
where
    Req: DeserializeOwned + Budget + Send + 'static,
    Res: Serialize,
    F: FnOnce(AdminService, tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Res>, Status>>,
{
    let (code, response) = match run(s, method, req, f).await {
        Ok(res) => (Code::Ok, res),
        Err((status, http)) => (status.code(), error_with(http, &status)),
    };
    metrics::counter!(
        crate::metrics::HTTP_API_CALLS,
        "method" => method,
        "code" => crate::grpc::code_label(code)
    )
    .increment(1);
    response
}

/// An error and the HTTP status to answer it with.
type Refusal = (Status, StatusCode);

fn refusal(status: Status) -> Refusal {
    let http = http_status(status.code());
    (status, http)
}

async fn run<Req, Res, F, Fut>(
    s: &Inner,
    method: &'static str,
    req: Request,
    f: F,
) -> Result<Response, Refusal>
where
    Req: DeserializeOwned + Budget + Send + 'static,
    Res: Serialize,
    F: FnOnce(AdminService, tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Res>, Status>>,
{
    let (parts, body) = req.into_parts();
    let header = parts.headers.get("authorization").map(|v| v.as_bytes());
    let key = s
        .keys
        .authorize(Api::Http, method, header)
        .map_err(refusal)?;
    let json = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err((
            Status::invalid_argument("content-type: must be application/json"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ));
    }
    let too_large = || {
        (
            Status::resource_exhausted(format!("body: larger than {MAX_BODY_BYTES} bytes")),
            StatusCode::PAYLOAD_TOO_LARGE,
        )
    };
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let bytes = match tokio::time::timeout(
        BODY_READ_TIMEOUT,
        Limited::new(body, MAX_BODY_BYTES).collect(),
    )
    .await
    {
        Err(_) => {
            return Err((
                Status::deadline_exceeded(format!(
                    "body: not received within {} s",
                    BODY_READ_TIMEOUT.as_secs()
                )),
                StatusCode::REQUEST_TIMEOUT,
            ));
        }
        Ok(Err(e)) if e.is::<LengthLimitError>() => return Err(too_large()),
        Ok(Err(e)) => {
            return Err((
                Status::invalid_argument(format!("body: {e}")),
                StatusCode::BAD_REQUEST,
            ));
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    // An empty body is the empty message (`{}`).
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    let message: Req = serde_json::from_slice(text).map_err(|e| {
        (
            Status::invalid_argument(format!("malformed JSON body: {e}")),
            StatusCode::BAD_REQUEST,
        )
    })?;
    tracing::debug!(key = key.name(), method, "HTTP API call");
    let budget = CALL_TIMEOUT + Duration::from_millis(u64::from(message.ack_timeout_ms()));
    let answer = tokio::time::timeout(budget, f(s.service.clone(), tonic::Request::new(message)))
        .await
        .map_err(|_| {
            refusal(Status::deadline_exceeded(format!(
                "not answered within {} ms",
                budget.as_millis()
            )))
        })?
        .map_err(refusal)?;
    let body = serde_json::to_vec(answer.get_ref())
        .map_err(|e| refusal(Status::internal(format!("encoding the answer: {e}"))))?;
    let mut res = Response::new(Body::from(body));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(res)
}

/// The HTTP status answering a gRPC status code (as grpc-gateway maps them).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error(status: &Status) -> Response {
    error_with(http_status(status.code()), status)
}

/// `{"code": "<gRPC status name>", "message": "..."}` with `http` as the status.
fn error_with(http: StatusCode, status: &Status) -> Response {
    let body = serde_json::json!({
        "code": crate::grpc::code_label(status.code()),
        "message": status.message(),
    });
    let mut res = Response::new(Body::from(body.to_string()));
    *res.status_mut() = http;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if http == StatusCode::UNAUTHORIZED {
        res.headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("Bearer"));
    }
    res
}
