//! What the log tests of both backends share (`hub_log.rs`, `nats_log.rs`).
#![allow(dead_code, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use switchboard_bus::{Bus, LogReader};

/// Publishes and waits for the sequence.
pub(crate) async fn publish(bus: &Bus, subject: &str, payload: &str, id: &str) -> u64 {
    bus.log_publish(subject.into(), Bytes::from(payload.to_owned()), id.into())
        .await
        .expect("publish")
        .await
        .expect("ack")
}

/// The next entry as (seq, subject, payload), failing after a deadline instead of hanging.
pub(crate) async fn next(reader: &mut LogReader) -> Option<(u64, String, String)> {
    let item = tokio::time::timeout(Duration::from_secs(30), reader.next())
        .await
        .expect("the reader answers in time")?;
    let e = item.expect("an entry");
    Some((
        e.seq,
        e.subject,
        String::from_utf8_lossy(&e.payload).into_owned(),
    ))
}

/// The sequences a read yields until it ends.
pub(crate) async fn seqs(mut reader: LogReader) -> Vec<u64> {
    let mut out = Vec::new();
    while let Some((seq, _, _)) = next(&mut reader).await {
        out.push(seq);
    }
    out
}
