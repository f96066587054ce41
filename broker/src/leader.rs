//! Which broker of several is the leader: the one that announces presence and decides room
//! capacity, so both happen once for the cluster.
//!
//! [`LeaderMode::KvLease`] keeps a lease in a NATS JetStream key-value bucket
//! (`{prefix}_broker_leader`, dots of the prefix turned into `_`; history 1, `max_age` = the lease
//! TTL, `[nats] replicas` copies: 3 in a 3-node NATS cluster survive the loss of one) under the
//! key `leader`. A broker becomes leader by `create` (refused while the key exists)
//! and stays leader by `update` with the revision it last wrote, every TTL/3; the first failed
//! update makes it step down. Because every write restarts the key's `max_age`, a leader that
//! stops writing loses the key TTL after its last write, while it steps down at most 2·TTL/3
//! after it (one period plus one bounded attempt): two leaders never overlap while clocks run at
//! the same rate. A broker shutting down deletes the key (if it still holds the revision), so a
//! follower takes over within one period instead of one TTL.
//!
//! This module must not touch the directory; it only publishes "leader or not" on a watch.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::kv;
use bytes::Bytes;
use switchboard_bus::Bus;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::BrokerError;

/// The key holding the lease.
const KEY: &str = "leader";

/// How long to wait for JetStream to answer at start-up.
const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// How a broker decides whether it leads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LeaderMode {
    /// Always the leader: a single broker (standalone mode, one-broker deployments, tests).
    Always,
    /// Elected through a JetStream key-value lease (several brokers side by side).
    #[default]
    KvLease,
    /// Never the leader: a follower that keeps a directory for queries but announces nothing
    /// (tests, read replicas).
    Never,
}

/// The bucket name for a cluster prefix.
pub fn bucket_name(prefix: &str) -> String {
    format!("{}_broker_leader", prefix.replace('.', "_"))
}

/// Opens (creating it if missing) the lease bucket; fails clearly without JetStream.
pub(crate) async fn open(bus: &Bus, prefix: &str, ttl: Duration) -> Result<kv::Store, BrokerError> {
    let Some(client) = bus.nats_client() else {
        return Err(BrokerError::JetStreamRequired(
            "the in-process bus has no JetStream".into(),
        ));
    };
    let js = jetstream::new(client);
    let bucket = bucket_name(prefix);
    let replicas = bus.replicas();
    // The bucket's stream is made by hand, as `create_key_value` would make it, because that
    // call first reads the account info, which async-nats 0.51 cannot parse from nats-server 2.9.
    let attempt = async {
        if let Ok(store) = js.get_key_value(bucket.as_str()).await {
            same_replicas(&js, &bucket, replicas).await;
            return Ok(store);
        }
        let created = js
            .create_stream(jetstream::stream::Config {
                name: format!("KV_{bucket}"),
                description: Some("Switchboard broker leader lease".into()),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                max_age: ttl,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: jetstream::stream::DiscardPolicy::New,
                num_replicas: replicas,
                ..Default::default()
            })
            .await;
        // Another broker may have created it meanwhile: read it back either way.
        js.get_key_value(bucket.as_str()).await.map_err(|e| {
            let detail = match created {
                Err(created) => format!("bucket {bucket}: {created}"),
                Ok(_) => format!("bucket {bucket}: {e}"),
            };
            BrokerError::JetStreamRequired(detail)
        })
    };
    tokio::time::timeout(JETSTREAM_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(BrokerError::JetStreamRequired(
                "no answer from JetStream".into(),
            ))
        })
}

/// Brings an existing bucket's stream to `replicas` copies (a cluster that grew from one NATS
/// server to three, or a changed `[nats] replicas`). A failure is logged, not fatal: the lease
/// works with any number of copies, it just does not survive the loss of its only server.
async fn same_replicas(js: &jetstream::Context, bucket: &str, replicas: usize) {
    let name = format!("KV_{bucket}");
    let stream = match js.get_stream(&name).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(stream = %name, error = %e, "leader lease: cannot read the bucket's stream");
            return;
        }
    };
    let mut config = stream.cached_info().config.clone();
    if config.num_replicas == replicas {
        return;
    }
    let had = config.num_replicas;
    config.num_replicas = replicas;
    match js.update_stream(config).await {
        Ok(_) => {
            tracing::info!(stream = %name, from = had, to = replicas, "leader lease: replicas changed");
        }
        Err(e) => tracing::warn!(
            stream = %name, from = had, to = replicas, error = %e,
            "leader lease: cannot change the bucket's replicas"
        ),
    }
}

/// Runs the election until `cancel`, publishing leadership on `leader`. Releases the lease on
/// the way out.
pub(crate) async fn run(
    store: kv::Store,
    id: String,
    ttl: Duration,
    leader: &watch::Sender<bool>,
    cancel: CancellationToken,
) {
    let period = ttl / 3;
    let value = Bytes::from(id.clone());
    let mut held: Option<u64> = None;
    loop {
        held = match held {
            None => match tokio::time::timeout(period, store.create(KEY, value.clone())).await {
                Ok(Ok(revision)) => {
                    tracing::info!(broker = %id, "became leader");
                    leader.send_replace(true);
                    Some(revision)
                }
                Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => None,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "leader lease: create failed");
                    None
                }
                Err(_) => None,
            },
            Some(revision) => {
                match tokio::time::timeout(period, store.update(KEY, value.clone(), revision)).await
                {
                    Ok(Ok(revision)) => Some(revision),
                    outcome => {
                        let why = match outcome {
                            Ok(Err(e)) => e.to_string(),
                            _ => "timed out".to_owned(),
                        };
                        tracing::warn!(broker = %id, error = %why, "lost the leader lease; stepping down");
                        leader.send_replace(false);
                        None
                    }
                }
            }
        };
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(period) => {}
        }
    }
    if let Some(revision) = held {
        leader.send_replace(false);
        let release = store.delete_expect_revision(KEY, Some(revision));
        match tokio::time::timeout(period, release).await {
            Ok(Ok(())) => tracing::info!(broker = %id, "released the leader lease"),
            Ok(Err(e)) => tracing::debug!(error = %e, "leader lease: release failed"),
            Err(_) => tracing::debug!("leader lease: release timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_are_valid() {
        for (prefix, bucket) in [
            ("sio", "sio_broker_leader"),
            ("a.b-c", "a_b-c_broker_leader"),
        ] {
            assert_eq!(bucket_name(prefix), bucket);
            assert!(
                bucket
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            );
        }
    }
}
