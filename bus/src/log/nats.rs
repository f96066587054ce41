//! The log on JetStream (nats-server 2.9 and later).
//!
//! Streams are made with `create_stream`/`get_stream`/`update_stream`, which work against
//! nats-server 2.9 (only the account info, which this module never reads, does not parse).
//!
//! Readers are this module's own ordered consumer rather than async-nats'
//! `consumer::pull::Ordered`, for three reasons found in its source (0.51): before its first
//! message it recreates itself with `DeliverPolicy::All` (a follower "from now on" would replay
//! the whole stream after a blip, and a follower from `Some(s)` would restart at 1); it cannot
//! tell when retention skipped entries (needed for [`LOG_SKIPPED`] and
//! [`BusError::LogEvicted`]); and it notices a server restart only by missed heartbeats. Here,
//! each reader holds one ephemeral pull consumer (memory, one replica, no acks, one
//! `filter_subject`) and recreates it at the last delivered stream sequence + 1 when the
//! consumer sequence has a gap, the message stream fails (missed heartbeats, consumer deleted),
//! or the NATS link comes back up with a new generation. Delivery is strictly increasing, so an
//! entry at or below the last one delivered is dropped: each entry once, in order.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::{GetStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, ConsumerErrorKind, DiscardPolicy, StorageType};
use async_nats::jetstream::{Context, ErrorCode};
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::watch;

use super::{LOG_SKIPPED, LogAck, LogConfig, LogEntry, LogInfo};
use crate::{BusError, Link};

/// A consumer's idle heartbeat: two missed ones (10 s) make the reader recreate it.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long one pull request waits for messages before the next is sent.
const EXPIRES: Duration = Duration::from_secs(30);
/// Messages asked for per pull: the most a reader buffers.
const BATCH: usize = 256;
/// The server deletes a reader's consumer after this long without pulls (its reader crashed or
/// was dropped while the link was down).
const INACTIVE: Duration = Duration::from_secs(30);
/// How long [`ensure`] keeps asking for a stream that exists but does not answer yet.
const READ_BACK: Duration = Duration::from_secs(30);
/// Waits between attempts to recreate a consumer (doubling up to the maximum).
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// How long a create's reply is waited for.
const CREATE_WAIT: Duration = Duration::from_secs(3);

/// The settings `cfg` asks for: every gateway asks for the very same ones, so that creates that
/// race on a NATS cluster are one idempotent create.
fn stream_config(cfg: &LogConfig) -> stream::Config {
    stream::Config {
        name: cfg.stream.clone(),
        description: Some("Switchboard log (connection state recovery)".into()),
        subjects: cfg.subjects.clone(),
        max_age: cfg.max_age,
        // The server stores "no limit" as -1 and would read 0 as such too.
        max_bytes: if cfg.max_bytes > 0 { cfg.max_bytes } else { -1 },
        discard: DiscardPolicy::Old,
        num_replicas: cfg.replicas.max(1),
        storage: if cfg.memory {
            StorageType::Memory
        } else {
            StorageType::File
        },
        duplicate_window: cfg.duplicate_window,
        ..Default::default()
    }
}

/// Whether the stream as the server has it already has the settings `LogConfig` controls (the
/// server fills in the rest, so whole configs never compare equal).
fn same_settings(have: &stream::Config, want: &stream::Config) -> bool {
    have.subjects == want.subjects
        && have.max_age == want.max_age
        && have.max_bytes == want.max_bytes
        && have.discard == want.discard
        && have.num_replicas == want.num_replicas
        && have.storage == want.storage
        && (want.duplicate_window.is_zero() || have.duplicate_window == want.duplicate_window)
}

/// A stream on a NATS cluster whose replicas have not elected a leader yet. A single server
/// reports no `cluster` at all; nats-server 2.9 reports one without `raft_group`, so only the
/// leader is looked at.
fn leaderless(info: &stream::Info) -> bool {
    info.cluster
        .as_ref()
        .is_some_and(|c| c.leader.as_deref().is_none_or(str::is_empty))
}

fn log_info(info: &stream::Info) -> LogInfo {
    let last = info.state.last_sequence;
    LogInfo {
        tag: u64::try_from(info.created.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
        // A new stream reports 0 and 0; "empty" is first = last + 1 everywhere else.
        first_seq: if info.state.messages == 0 {
            last + 1
        } else {
            info.state.first_sequence
        },
        last_seq: last,
    }
}

/// Makes the stream exist with `cfg`'s settings; its info is read from the stream's leader.
///
/// The tag ([`LogInfo::tag`], the creation time in ms) is read from the leader once it has
/// one, never from the create's reply: on a 3-node NATS cluster (2.9) the replies to gateways
/// that created the stream at the same moment gave times up to 13 ms off, and one gateway then
/// refused every other's offsets. Replicas of a new stream may still differ by a few ms, which
/// is why a claim compares tags within a slack (`gateway/src/cluster/recovery.rs`).
pub(super) async fn ensure(js: &Context, cfg: &LogConfig) -> Result<LogInfo, BusError> {
    let want = stream_config(cfg);
    // Creating a stream that exists with the same settings succeeds; with others it fails, and
    // the stream is then updated. Of creates that race on a NATS cluster one may get no reply
    // at all: it is not waited for beyond CREATE_WAIT.
    let (created, answered) =
        match tokio::time::timeout(CREATE_WAIT, js.create_stream(want.clone())).await {
            Ok(Ok(_)) => (None, true),
            Ok(Err(e)) => (Some(e.to_string()), true),
            Err(_) => (Some(format!("no reply in {CREATE_WAIT:?}")), false),
        };
    // A JetStream that answered the create has the stream: a read that times out is asked again.
    let stream = ready(js, &cfg.stream, answered).await.map_err(|e| {
        BusError::Log(match &created {
            Some(c) => format!(
                "cannot create log stream {}: {c}; reading it: {e}",
                cfg.stream
            ),
            None => format!("log stream {} created but not readable: {e}", cfg.stream),
        })
    })?;
    let info = stream.cached_info();
    if same_settings(&info.config, &want) {
        return Ok(log_info(info));
    }
    tracing::info!(stream = %cfg.stream, "updating the log stream's settings");
    js.update_stream(want)
        .await
        .map_err(|e| BusError::Log(format!("cannot update log stream {}: {e}", cfg.stream)))?;
    let stream = ready(js, &cfg.stream, true)
        .await
        .map_err(|e| BusError::Log(format!("log stream {}: {e}", cfg.stream)))?;
    Ok(log_info(stream.cached_info()))
}

/// The stream, once it answers with a leader. A stream another gateway is creating this moment
/// may not answer, or answer without a leader (from the cluster's metadata), until its
/// replicas elect one — up to seconds on a NATS cluster — and a follower made on it then was
/// seen to deliver nothing. Asked again until READ_BACK has passed; so is a read that timed
/// out, if `exists` (a JetStream that did not answer the create may not be there at all).
async fn ready(
    js: &Context,
    name: &str,
    exists: bool,
) -> Result<stream::Stream, async_nats::jetstream::context::GetStreamError> {
    let deadline = tokio::time::Instant::now() + READ_BACK;
    loop {
        let late = tokio::time::Instant::now() >= deadline;
        match js.get_stream(name).await {
            Ok(stream) if late || !leaderless(stream.cached_info()) => return Ok(stream),
            // Only a request that timed out is asked again: "no responders" is a server without
            // JetStream, an error from JetStream is its answer.
            Err(e) if late || !exists || !timed_out(&e) => return Err(e),
            _ => tokio::time::sleep(RETRY_MAX / 8).await,
        }
    }
}

/// Whether a stream request failed for want of an answer in time.
fn timed_out(e: &async_nats::jetstream::context::GetStreamError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<async_nats::jetstream::context::RequestError>())
        .is_some_and(|r| r.kind() == async_nats::jetstream::context::RequestErrorKind::TimedOut)
}

pub(super) async fn info(js: &Context, name: &str) -> Result<LogInfo, BusError> {
    match js.get_stream(name).await {
        Ok(stream) => Ok(log_info(stream.cached_info())),
        Err(e) => Err(match e.kind() {
            GetStreamErrorKind::JetStream(err)
                if err.error_code() == ErrorCode::STREAM_NOT_FOUND =>
            {
                BusError::NoLog
            }
            _ => BusError::Log(format!("log stream {name}: {e}")),
        }),
    }
}

fn publish_error(e: &async_nats::jetstream::context::PublishError) -> BusError {
    match e.kind() {
        PublishErrorKind::StreamNotFound => BusError::NoLog,
        PublishErrorKind::TimedOut => BusError::Timeout,
        _ => BusError::Publish(e.to_string()),
    }
}

pub(super) async fn publish(
    js: &Context,
    subject: String,
    payload: Bytes,
    msg_id: String,
) -> Result<LogAck, BusError> {
    let mut message = PublishMessage::build().payload(payload);
    if !msg_id.is_empty() {
        message = message.message_id(msg_id);
    }
    let ack = js
        .send_publish(subject, message)
        .await
        .map_err(|e| publish_error(&e))?;
    Ok(LogAck(Box::pin(async move {
        ack.await.map(|a| a.sequence).map_err(|e| publish_error(&e))
    })))
}

/// The consumer a reader reads through now.
struct Open {
    name: String,
    messages: pull::Stream,
    /// The last consumer sequence delivered: the next must be one more.
    consumer_seq: u64,
    /// The link generation it was made in: a newer one means it may be gone (server restart).
    generation: u64,
}

/// A follower or a ranged read on one stream.
pub(crate) struct Reader {
    js: Context,
    link: watch::Receiver<Link>,
    stream: String,
    filter: String,
    /// The stream sequence wanted next.
    next: u64,
    /// A read's last sequence; `None` for a follower.
    until: Option<u64>,
    open: Option<Open>,
    /// An error to yield before anything else (a read's evicted range).
    error: Option<BusError>,
    done: bool,
    retry: Duration,
}

impl Reader {
    /// Makes the first consumer before returning, so a follower from now on gets everything
    /// stored after this returns; a missing stream is an error here.
    pub(crate) async fn open(
        js: &Context,
        link: watch::Receiver<Link>,
        stream: &str,
        filter: String,
        after: Option<u64>,
        until: Option<u64>,
    ) -> Result<Self, BusError> {
        let next = after.map_or(0, |a| a.saturating_add(1));
        let mut reader = Self {
            js: js.clone(),
            link,
            stream: stream.to_owned(),
            filter,
            next,
            until,
            open: None,
            error: None,
            done: until.is_some_and(|until| until < next),
            retry: RETRY_MIN,
        };
        if !reader.done {
            match reader.connect(after.is_none()).await {
                Ok(()) => {}
                Err(BusError::LogEvicted) => {
                    reader.error = Some(BusError::LogEvicted);
                    reader.done = true;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(reader)
    }

    /// Creates a consumer at `next` (or at the stream's end, `new`).
    async fn connect(&mut self, new: bool) -> Result<(), BusError> {
        let generation = self.link.borrow().generation;
        let deliver_policy = if new {
            DeliverPolicy::New
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: self.next,
            }
        };
        let stream = self
            .js
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|e| BusError::Log(format!("log stream {}: {e}", self.stream)))?;
        let consumer: PullConsumer = stream
            .create_consumer(pull::Config {
                filter_subject: self.filter.clone(),
                deliver_policy,
                ack_policy: AckPolicy::None,
                max_deliver: 1,
                inactive_threshold: INACTIVE,
                memory_storage: true,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| match e.kind() {
                ConsumerErrorKind::JetStream(err)
                    if err.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    BusError::NoLog
                }
                _ => BusError::Log(format!("log stream {}: consumer: {e}", self.stream)),
            })?;
        let info = consumer.cached_info().clone();
        // Where the server starts: our start sequence, or the stream's first one if retention
        // evicted what lay between.
        let start = info.delivered.stream_sequence + 1;
        if new {
            self.next = start;
        } else if start > self.next {
            if self.until.is_some() {
                delete_later(&self.js, &self.stream, info.name);
                return Err(BusError::LogEvicted);
            }
            let skipped = start - self.next;
            metrics::counter!(LOG_SKIPPED).increment(skipped);
            tracing::warn!(stream = %self.stream, filter = %self.filter, skipped,
                "log follower fell behind the retention; entries skipped");
            self.next = start;
        }
        if let Some(until) = self.until
            && (info.num_pending == 0 || self.next > until)
        {
            delete_later(&self.js, &self.stream, info.name);
            self.done = true;
            return Ok(());
        }
        let messages = consumer
            .stream()
            .max_messages_per_batch(BATCH)
            .heartbeat(HEARTBEAT)
            .expires(EXPIRES)
            .messages()
            .await
            .map_err(|e| BusError::Log(format!("log stream {}: pull: {e}", self.stream)))?;
        self.open = Some(Open {
            name: info.name,
            messages,
            consumer_seq: 0,
            generation,
        });
        Ok(())
    }

    /// Drops the consumer; the next call makes a new one at `next`.
    fn close(&mut self) {
        if let Some(open) = self.open.take() {
            delete_later(&self.js, &self.stream, open.name);
        }
    }

    fn finish(&mut self) {
        self.close();
        self.done = true;
    }

    pub(crate) async fn next(&mut self) -> Option<Result<LogEntry, BusError>> {
        loop {
            if let Some(e) = self.error.take() {
                return Some(Err(e));
            }
            if self.done {
                return None;
            }
            let Some(open) = self.open.as_mut() else {
                match self.connect(false).await {
                    Ok(()) => self.retry = RETRY_MIN,
                    Err(BusError::LogEvicted) => {
                        self.done = true;
                        return Some(Err(BusError::LogEvicted));
                    }
                    Err(e) => {
                        tracing::debug!(stream = %self.stream, error = %e, "log reader: cannot resume yet");
                        tokio::time::sleep(self.retry).await;
                        self.retry = (self.retry * 2).min(RETRY_MAX);
                        if matches!(e, BusError::NoLog) {
                            return Some(Err(e));
                        }
                    }
                }
                continue;
            };
            let message = tokio::select! {
                message = open.messages.next() => message,
                () = relinked(&mut self.link, open.generation) => {
                    tracing::debug!(stream = %self.stream, "log reader: link back; resuming");
                    self.close();
                    continue;
                }
            };
            let message = match message {
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    tracing::debug!(stream = %self.stream, error = %e, "log reader: resuming");
                    self.close();
                    continue;
                }
                None => {
                    self.close();
                    continue;
                }
            };
            let Ok((seq, consumer_seq, pending, time_ms)) = message.info().map(|i| {
                let ms = i.published.unix_timestamp_nanos() / 1_000_000;
                let time_ms = u64::try_from(ms).unwrap_or(0);
                (i.stream_sequence, i.consumer_sequence, i.pending, time_ms)
            }) else {
                self.close();
                continue;
            };
            if consumer_seq != open.consumer_seq + 1 {
                tracing::debug!(stream = %self.stream, "log reader: consumer sequence gap; resuming");
                self.close();
                continue;
            }
            open.consumer_seq = consumer_seq;
            if seq < self.next {
                continue;
            }
            if self.until.is_some_and(|until| seq > until) {
                self.finish();
                return None;
            }
            self.next = seq + 1;
            if self.until.is_some_and(|until| seq >= until || pending == 0) {
                self.finish();
            }
            return Some(Ok(LogEntry {
                seq,
                subject: message.subject.to_string(),
                payload: message.payload.clone(),
                time_ms,
            }));
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.close();
    }
}

/// Resolves when the link is up in another generation than `seen`: the server may have
/// restarted and forgotten the consumer (memory storage), and a restored connection is the
/// moment to resume rather than two missed heartbeats later.
async fn relinked(link: &mut watch::Receiver<Link>, seen: u64) {
    loop {
        let now = *link.borrow_and_update();
        if now.up && now.generation != seen {
            return;
        }
        if link.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Deletes a consumer in the background, best effort: the server removes it anyway after
/// [`INACTIVE`], this only frees it sooner.
fn delete_later(js: &Context, stream: &str, consumer: String) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (js, stream) = (js.clone(), stream.to_owned());
    runtime.spawn(async move {
        let deleting = js.delete_consumer_from_stream(&consumer, &stream);
        if let Ok(Err(e)) = tokio::time::timeout(RETRY_MAX, deleting).await {
            tracing::debug!(%stream, %consumer, error = %e, "log reader: consumer not deleted");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream info as nats-server 2.9 sends it, with `cluster` as given.
    fn info(cluster: &str) -> stream::Info {
        let json = format!(
            r#"{{"config":{{"name":"log","subjects":["log.>"],"retention":"limits","max_consumers":-1,
              "max_msgs":-1,"max_bytes":-1,"max_age":0,"max_msgs_per_subject":-1,"max_msg_size":-1,
              "discard":"old","storage":"file","num_replicas":3,"duplicate_window":120000000000}},"created":"2026-12-07T15:33:07.421644581Z",
              "state":{{"messages":0,"bytes":0,"first_seq":1,"first_ts":"1970-01-01T00:00:00Z",
              "last_seq":0,"last_ts":"0001-01-01T00:00:00Z","consumer_count":0}}{cluster}}}"#
        );
        serde_json::from_str(&json).expect("a stream info")
    }

    #[test]
    fn a_cluster_without_a_leader_is_leaderless() {
        // 2.9.10 sends no `raft_group`: the leader alone decides.
        let replicas = r#"[{"name":"n2","current":false,"active":0}]"#;
        assert!(leaderless(&info(&format!(
            r#","cluster":{{"name":"c","replicas":{replicas}}}"#
        ))));
        assert!(leaderless(&info(&format!(
            r#","cluster":{{"name":"c","leader":"","replicas":{replicas}}}"#
        ))));
        assert!(!leaderless(&info(&format!(
            r#","cluster":{{"name":"c","leader":"n1","replicas":{replicas}}}"#
        ))));
        // A single server reports no cluster.
        assert!(!leaderless(&info("")));
    }
}
