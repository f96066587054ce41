//! The admin UI's cluster ([`switchboard_gateway::admin_ui::Cluster`]) over the broker's admin
//! service: in-process (standalone, the embedded broker's [`AdminService`]) or over gRPC (a
//! cluster's broker, with an API key of scopes `read` and `admin`). The UI's actions so go through
//! the same service methods, validation and delivery as every other admin call (docs/admin-ui.md).
//!
//! Fetching every socket takes one `Stats` (for the namespaces) and paginated `FetchSockets` per
//! namespace, stopping at [`MAX_SOCKETS`]. [`start`] is what a gateway binary calls to turn the
//! UI on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context as _;
use switchboard_broker::grpc::AdminService;
use switchboard_gateway::admin_ui::{
    self, Assets, Cluster, ClusterError, Command, NodeInfo, Options, SocketInfo, Target,
};
use switchboard_gateway::http::Router;
use switchboard_gateway::sio;
use switchboard_proto::admin as pb;
use switchboard_proto::admin::admin_client::AdminClient;
use switchboard_proto::admin::admin_server::Admin;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::settings::AdminUiSettings;

/// The most sockets one fetch for the UI takes (the rest of a larger cluster is not shown).
pub const MAX_SOCKETS: usize = 10_000;
/// Sockets per `FetchSockets` page: small enough that a page of sockets with their handshakes
/// stays under tonic's 4 MiB default message bound.
const PAGE_SIZE: u32 = 1000;
/// The reason a socket disconnected from the UI is given (its `kicked` event).
pub const KICK_REASON: &str = "admin UI";

type Fut<'a, T> = Pin<Box<dyn Future<Output = Result<T, ClusterError>> + Send + 'a>>;

/// The broker's admin service, reached in-process or over gRPC.
pub enum BrokerCluster {
    /// The embedded broker of a standalone gateway.
    InProcess(Box<AdminService>),
    /// A cluster's broker.
    Remote {
        /// The gRPC client.
        client: AdminClient<Channel>,
        /// `Bearer <API key>`.
        authorization: MetadataValue<Ascii>,
    },
}

/// Sets up the Admin UI on a gateway: the `/admin` namespace on `io`, fed by the embedded
/// broker's service (`standalone`) or else the cluster's broker (`settings.remote`), and the UI's
/// files on `router` when `static_dir` is set. The poller runs on `tracker` until `shutdown`.
pub fn start(
    settings: &AdminUiSettings,
    io: &sio::Server,
    mut router: Router,
    standalone: Option<AdminService>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<Router> {
    // Handlers of an application namespace of the same name would run beside the UI's.
    if io.get(admin_ui::NAMESPACE).is_some() {
        anyhow::bail!(
            "the Admin UI needs the namespace {}, which the configuration also declares",
            admin_ui::NAMESPACE
        );
    }
    let cluster = match (standalone, &settings.remote) {
        (Some(service), _) => BrokerCluster::InProcess(Box::new(service)),
        (None, Some((url, key))) => BrokerCluster::Remote {
            client: AdminClient::new(
                Channel::from_shared(url.clone())
                    .context("[admin_ui] broker_url")?
                    .connect_lazy(),
            ),
            authorization: format!("Bearer {key}")
                .parse()
                .context("[admin_ui] api_key is not a header value")?,
        },
        (None, None) => anyhow::bail!("the Admin UI needs the broker: [admin_ui] broker_url"),
    };
    if let Some(dir) = &settings.static_dir {
        let assets = Assets::load(dir, &settings.path).context("loading the Admin UI's files")?;
        router = router.admin_ui(Arc::new(assets));
    }
    let options = Options {
        credentials: Some(settings.credentials.clone()),
        ..Options::default()
    };
    admin_ui::install(io, options, Arc::new(cluster), shutdown.clone(), tracker);
    Ok(router)
}

/// One admin call, whichever way the service is reached.
macro_rules! call {
    ($self:expr, $method:ident, $req:expr) => {
        match $self {
            BrokerCluster::InProcess(service) => {
                Admin::$method(&**service, Request::new($req)).await
            }
            BrokerCluster::Remote {
                client,
                authorization,
            } => {
                let mut request = Request::new($req);
                request
                    .metadata_mut()
                    .insert("authorization", authorization.clone());
                client.clone().$method(request).await
            }
        }
        .map(Response::into_inner)
        .map_err(status)
    };
}

fn status(s: Status) -> ClusterError {
    ClusterError(format!("{:?}: {}", s.code(), s.message()))
}

impl BrokerCluster {
    async fn all_sockets(&self) -> Result<Vec<SocketInfo>, ClusterError> {
        let stats = call!(self, stats, pb::StatsRequest {})?;
        let mut out = Vec::new();
        for ns in stats.namespaces {
            let mut page_token = String::new();
            loop {
                let request = pb::FetchSocketsRequest {
                    selector: Some(selector(&ns.ns, &Target::All)),
                    page_size: PAGE_SIZE,
                    page_token,
                };
                let page = call!(self, fetch_sockets, request)?;
                let room = MAX_SOCKETS - out.len();
                out.extend(page.sockets.into_iter().take(room).map(socket_info));
                if out.len() >= MAX_SOCKETS {
                    tracing::warn!(
                        max = MAX_SOCKETS,
                        "admin UI: showing only the first sockets"
                    );
                    return Ok(out);
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
        }
        Ok(out)
    }

    async fn all_nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        let stats = call!(self, stats, pb::StatsRequest {})?;
        Ok(stats
            .nodes
            .into_iter()
            .map(|n| NodeInfo {
                id: n.id,
                connections: n.connections,
            })
            .collect())
    }

    async fn command(&self, command: Command) -> Result<u64, ClusterError> {
        match command {
            Command::Disconnect { ns, close, target } => {
                let request = pb::DisconnectRequest {
                    selector: Some(selector(&ns, &target)),
                    close_connection: close,
                    reason: KICK_REASON.to_owned(),
                };
                Ok(call!(self, disconnect, request)?.disconnected)
            }
            Command::Join { ns, room, target } => {
                let request = rooms_change(&ns, room, &target);
                Ok(call!(self, sockets_join, request)?.sockets)
            }
            Command::Leave { ns, room, target } => {
                let request = rooms_change(&ns, room, &target);
                Ok(call!(self, sockets_leave, request)?.sockets)
            }
        }
    }
}

impl Cluster for BrokerCluster {
    fn sockets(&self) -> Fut<'_, Vec<SocketInfo>> {
        Box::pin(self.all_sockets())
    }

    fn nodes(&self) -> Fut<'_, Vec<NodeInfo>> {
        Box::pin(self.all_nodes())
    }

    fn run(&self, command: Command) -> Fut<'_, u64> {
        Box::pin(self.command(command))
    }
}

/// The selector of a UI command's target in `ns`.
fn selector(ns: &str, target: &Target) -> pb::Selector {
    let mut s = pb::Selector {
        ns: ns.to_owned(),
        ..Default::default()
    };
    match target {
        Target::All => {}
        Target::Socket(id) => s.socket_ids.push(id.clone()),
        Target::Room(room) => s.rooms.push(room.clone()),
    }
    s
}

fn rooms_change(ns: &str, room: String, target: &Target) -> pb::RoomsChangeRequest {
    pb::RoomsChangeRequest {
        selector: Some(selector(ns, target)),
        rooms: vec![room],
    }
}

/// A socket as the broker summarises it, for the UI. `data` that is not JSON shows as `null`.
fn socket_info(s: pb::SocketSummary) -> SocketInfo {
    let handshake = s.handshake.unwrap_or_default();
    SocketInfo {
        id: s.id,
        ns: s.ns,
        node: s.node,
        rooms: s.rooms,
        address: handshake.address,
        headers: handshake
            .headers
            .into_iter()
            .map(|h| (h.name, h.value))
            .collect(),
        query: handshake.query,
        connected_at_ms: handshake.connected_at_ms,
        data: serde_json::from_str(&s.data_json).unwrap_or(serde_json::Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn targets_become_selectors() {
        let cases = [
            (Target::All, vec![], vec![]),
            (Target::Socket("s1".into()), vec!["s1"], vec![]),
            (Target::Room("lobby".into()), vec![], vec!["lobby"]),
        ];
        for (target, ids, rooms) in cases {
            let s = selector("/chat", &target);
            assert_eq!(s.ns, "/chat");
            assert_eq!(s.socket_ids, ids, "{target:?}");
            assert_eq!(s.rooms, rooms, "{target:?}");
            assert!(s.except_rooms.is_empty() && s.user_ids.is_empty());
        }
    }

    #[test]
    fn summaries_become_socket_infos() {
        let summary = pb::SocketSummary {
            id: "s1".into(),
            ns: "/".into(),
            node: "gw-2".into(),
            user: Some("u1".into()),
            rooms: vec!["lobby".into()],
            handshake: Some(pb::Handshake {
                address: "10.0.0.1:5000".into(),
                headers: vec![pb::Header {
                    name: "user-agent".into(),
                    value: "ua".into(),
                }],
                query: "a=1".into(),
                claims_json: "{}".into(),
                connected_at_ms: 7,
            }),
            data_json: r#"{"k":1}"#.into(),
        };
        let info = socket_info(summary.clone());
        assert_eq!(
            info,
            SocketInfo {
                id: "s1".into(),
                ns: "/".into(),
                node: "gw-2".into(),
                rooms: vec!["lobby".into()],
                address: "10.0.0.1:5000".into(),
                headers: vec![("user-agent".into(), "ua".into())],
                query: "a=1".into(),
                connected_at_ms: 7,
                data: json!({"k": 1}),
            }
        );
        let bare = pb::SocketSummary {
            handshake: None,
            data_json: "not json".into(),
            ..summary
        };
        let info = socket_info(bare);
        assert_eq!(info.data, serde_json::Value::Null);
        assert_eq!(info.address, "");
    }
}
