//! A join's ack on a NATS cluster: the barrier across the routes.
//!
//! A gateway acks a join once the room's subscription is in effect. Its own nats-server has it
//! once a round trip through that server has come back ([`Bus::barrier`]); the other servers of a
//! NATS cluster learn of it over the routes (an `RS+` from the gateway's server) a moment later,
//! and until then they drop the room's messages their own clients publish. So after the own
//! round trip the barrier sends one empty request to `{prefix}.sync.{server}` for every other
//! NATS server that hosts a gateway, and waits for all the answers:
//!
//! - a server forwards to another, over one route connection (2.10's route pooling pins an
//!   account to one connection of the pool), in the order it handled them: the `RS+` of the
//!   gateway's new subscriptions, sent while the server handled the SUBs, goes before the sync
//!   request, which the gateway published after them on the same connection;
//! - the request is answered by the gateways connected to that server, so when the first answer
//!   is back that server has handled the request and therefore the `RS+` before it: a message
//!   its clients publish to the room from then on reaches this gateway.
//!
//! Every gateway of the server answers, not one of a queue group: a gateway that stops answering
//! without losing its connection (stopped, or its runtime stuck) keeps its subscription until
//! NATS's pings drop it, minutes later, and in a queue group it would draw its share of the
//! requests and hold each of those joins for the whole timeout; with every gateway answering,
//! the first answer of a live one settles it. The price is one answer per gateway of the server
//! instead of one.
//!
//! A server with no gateway left gives "no responders" at once. Which servers host gateways the
//! heartbeats say ([`pb::Heartbeat::nats_server`], the `server_id` of the sender's connection):
//! [`Servers`] keeps the latest one per node, forgotten after the lease like the peers of
//! [`crate::forward`]. Every gateway answers on the subject of its current server, and moves its
//! subscription when a reconnect lands it on another one ([`respond`]).
//!
//! Cost: nothing on one nats-server (no other server known); on S servers hosting gateways, S-1
//! requests per batch of new subscriptions (coalesced like the own round trip), each answered by
//! the gateways of its server. What
//! it does not cover: a process that publishes from a NATS server hosting no gateway (a worker,
//! an emitter or a broker on its own node), and, for a moment after a gateway's reconnect, its
//! old server (its client resubscribes the old subject on the new server until [`respond`]
//! moves it).
//!
//! [`pb::Heartbeat::nats_server`]: switchboard_proto::bus::Heartbeat

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use switchboard_bus::{Bus, BusError, Message, Subscription};
use switchboard_proto::subject::{MAX_NAME_BYTES, Subjects};
use tokio::time::Instant;

use crate::metrics as m;

/// The most nodes whose server is remembered (a bound on what heartbeats, from a bus without the
/// shipped permissions, can make a barrier ask); heartbeats of further nodes are not recorded.
const MAX_NODES: usize = 4096;
/// How long the round trip that tells where the connection is may take.
const WHERE_TIMEOUT: Duration = Duration::from_secs(2);

/// The NATS server each gateway heard from is connected to, from the heartbeats.
pub(super) struct Servers {
    by_node: Mutex<HashMap<String, (String, Instant)>>,
    lease: Duration,
}

impl Servers {
    /// Nodes not heard from for `lease` are forgotten.
    pub(super) fn new(lease: Duration) -> Self {
        Self {
            by_node: Mutex::new(HashMap::new()),
            lease,
        }
    }

    /// Records that `node` was on NATS server `server` at `now` (an empty `server`: on none, or
    /// not saying; a name too long for a subject is not recorded either). True when this is news:
    /// a node not known (or forgotten), or known on another server.
    pub(super) fn heard(&self, node: &str, server: &str, now: Instant) -> bool {
        let mut by_node = self.by_node.lock();
        if server.is_empty() || server.len() > MAX_NAME_BYTES {
            by_node.remove(node);
            return false;
        }
        let full = by_node.len() >= MAX_NODES;
        match by_node.get_mut(node) {
            Some((known, seen))
                if known == server && now.saturating_duration_since(*seen) <= self.lease =>
            {
                *seen = now;
                false
            }
            Some(entry) => {
                *entry = (server.to_owned(), now);
                true
            }
            None if full => false,
            None => {
                by_node.insert(node.to_owned(), (server.to_owned(), now));
                true
            }
        }
    }

    /// The servers of the nodes heard from within the lease before `now`, once each, without
    /// `own`; forgets the nodes past their lease.
    pub(super) fn others(&self, own: Option<&str>, now: Instant) -> Vec<String> {
        let mut by_node = self.by_node.lock();
        by_node.retain(|_, (_, seen)| now.saturating_duration_since(*seen) <= self.lease);
        let set: BTreeSet<&String> = by_node
            .values()
            .map(|(server, _)| server)
            .filter(|server| Some(server.as_str()) != own)
            .collect();
        set.into_iter().cloned().collect()
    }
}

/// Asks the gateways on each of `servers` and waits until each server answered (its first
/// gateway to answer) or said no responders, at most until `deadline`. A timeout or another error is counted
/// (`switchboard_gateway_bus_errors_total{op="sync"}`), not returned: the ack goes anyway.
pub(super) async fn across(bus: &Bus, subjects: &Subjects, servers: &[String], deadline: Instant) {
    if servers.is_empty() {
        return;
    }
    let start = Instant::now();
    let asks = servers
        .iter()
        .filter_map(|s| subjects.sync(s).ok())
        .map(|subject| {
            let wait = deadline.saturating_duration_since(Instant::now());
            bus.request(subject, Bytes::new(), wait)
        });
    let mut answered = true;
    for result in futures_util::future::join_all(asks).await {
        match result {
            Ok(_) | Err(BusError::NoResponders) => {}
            Err(e) => {
                answered = false;
                m::bus_error("sync", &e);
            }
        }
    }
    if answered {
        m::bus_latency("sync", start);
    }
}

/// Answers every request on `{prefix}.sync.{server}` of the NATS server this gateway is connected
/// to, at once and empty. Follows the connection: after the link comes back, and on every `tick`,
/// the subscription moves to the server the client is on now. Returns at once on an in-process
/// hub (no NATS server, nothing to sync).
pub(super) async fn respond(bus: Bus, subjects: Subjects, tick: Duration) {
    if bus.is_local() {
        return;
    }
    let mut link = bus.link();
    let mut generation = None;
    let mut current: Option<(String, Subscription)> = None;
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = *link.borrow_and_update();
        if now.up {
            // After a reconnect the server is known for sure only once a round trip made since
            // has come back.
            let fresh = generation != Some(now.generation);
            if !fresh || bus.barrier(WHERE_TIMEOUT).await.is_ok() {
                generation = Some(now.generation);
                follow(&bus, &subjects, &mut current).await;
            }
        }
        loop {
            tokio::select! {
                msg = next(&mut current) => match msg {
                    Some(msg) => answer(&bus, msg).await,
                    None => {
                        current = None;
                        break;
                    }
                },
                changed = link.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
                _ = ticks.tick() => break,
            }
        }
    }
}

/// Moves the sync subscription to the server the client is on now, if it is elsewhere.
async fn follow(bus: &Bus, subjects: &Subjects, current: &mut Option<(String, Subscription)>) {
    let server = bus.server_id();
    if server.as_deref() == current.as_ref().map(|(s, _)| s.as_str()) {
        return;
    }
    // Dropping the old subscription unsubscribes it.
    *current = None;
    let Some(server) = server else {
        return;
    };
    let subject = match subjects.sync(&server) {
        Ok(subject) => subject,
        Err(e) => {
            tracing::warn!(error = %e, %server, "NATS server id unusable in a subject: no sync answers");
            return;
        }
    };
    match bus.subscribe(subject).await {
        Ok(sub) => {
            tracing::debug!(%server, "answering sync requests");
            *current = Some((server, sub));
        }
        Err(e) => {
            m::bus_error("subscribe", &e);
            tracing::warn!(error = %e, %server, "cannot subscribe to the sync subject; retrying");
        }
    }
}

/// The next request of the sync subscription; never, without one.
async fn next(current: &mut Option<(String, Subscription)>) -> Option<Message> {
    match current {
        Some((_, sub)) => sub.next().await,
        None => std::future::pending().await,
    }
}

async fn answer(bus: &Bus, msg: Message) {
    let Some(reply) = msg.reply else {
        return;
    };
    if let Err(e) = bus.publish(reply, Bytes::new()).await {
        m::bus_error("reply", &e);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_the_live_nodes_servers_once_each_without_the_own() {
        let lease = Duration::from_secs(6);
        let servers = Servers::new(lease);
        let t0 = Instant::now();
        // What is news: a node first heard of, moved, or heard of again after its lease.
        assert!(servers.heard("gw1", "NA", t0));
        assert!(!servers.heard("gw1", "NA", t0));
        assert!(servers.heard("gw2", "NB", t0));
        assert!(servers.heard("gw3", "NB", t0));
        assert!(!servers.heard("gw4", "", t0));
        assert!(!servers.heard("gw5", &"N".repeat(MAX_NAME_BYTES + 1), t0));
        assert_eq!(servers.others(None, t0), ["NA", "NB"]);
        assert_eq!(servers.others(Some("NA"), t0), ["NB"]);
        assert_eq!(servers.others(Some("NC"), t0 + lease), ["NA", "NB"]);
        // A reconnect moves a node: its old server is no longer asked for it.
        assert!(servers.heard("gw1", "NC", t0 + lease));
        assert_eq!(servers.others(Some("NB"), t0 + lease), ["NC"]);
        // A node that says it is on no server (an in-process hub, not connected) is dropped.
        servers.heard("gw3", "", t0 + lease);
        assert!(!servers.heard("gw2", "NB", t0 + lease));
        assert_eq!(servers.others(None, t0 + lease * 2), ["NB", "NC"]);
        // Past the lease a node is forgotten for good.
        assert!(servers.heard("gw2", "NB", t0 + lease * 3));
        assert_eq!(servers.others(None, t0 + lease * 3), ["NB"]);
        assert_eq!(servers.by_node.lock().len(), 1);
    }

    /// Waits until a request on `subject` through `asker` is answered (`want`) or gets "no
    /// responders" (`!want`), failing after the harness's wait.
    async fn until_answered(asker: &Bus, subject: String, want: bool) {
        let deadline = Instant::now() + switchboard_tests::WAIT;
        loop {
            let wait = Duration::from_secs(2);
            let got = asker.request(subject.clone(), Bytes::new(), wait).await;
            if got.is_ok() == want {
                return;
            }
            assert!(Instant::now() < deadline, "{subject}: answered {want}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_answers_follow_the_connection_to_another_server() {
        use switchboard_tests::{NatsServer, connect};
        let (a, b) = (NatsServer::start(), NatsServer::start());
        let subjects = Subjects::new("t").unwrap();
        let gw = connect(&format!("{},{}", a.url(), b.url()), "gw").await;
        let on_a = gw.server_id().expect("connected to a");
        tokio::spawn(respond(
            gw.clone(),
            subjects.clone(),
            Duration::from_millis(50),
        ));
        let asker_a = connect(&a.url(), "asker-a").await;
        let asker_b = connect(&b.url(), "asker-b").await;
        let on_b = asker_b.server_id().expect("connected to b");
        assert_ne!(on_a, on_b);
        until_answered(&asker_a, subjects.sync(&on_a).unwrap(), true).await;
        // Server a dies: the client moves to b, and so do its answers (it first resubscribes
        // a's subject on b, which the responder then drops).
        drop(a);
        until_answered(&asker_b, subjects.sync(&on_b).unwrap(), true).await;
        assert_eq!(gw.server_id(), Some(on_b));
        until_answered(&asker_b, subjects.sync(&on_a).unwrap(), false).await;
    }

    #[test]
    fn servers_remember_a_bounded_number_of_nodes() {
        let servers = Servers::new(Duration::from_secs(6));
        let t0 = Instant::now();
        for n in 0..MAX_NODES + 10 {
            servers.heard(&format!("gw{n}"), &format!("N{n}"), t0);
        }
        assert_eq!(servers.others(None, t0).len(), MAX_NODES);
        // A known node still moves.
        servers.heard("gw0", "NEW", t0);
        assert!(servers.others(None, t0).contains(&"NEW".to_owned()));
    }
}
