//! The in-process hub's log, through the [`Bus`] API the gateway uses: the same contract as
//! JetStream's (`nats_log.rs` checks that one against a real server).
#![allow(clippy::expect_used)]

mod log_support;

use std::time::Duration;

use bytes::Bytes;
use log_support::{next, publish, seqs};
use switchboard_bus::{Bus, BusError, Hub, LogConfig};

const STREAM: &str = "t_log";

fn config() -> LogConfig {
    LogConfig {
        stream: STREAM.into(),
        subjects: vec!["t.log.>".into()],
        max_age: Duration::from_secs(60),
        max_bytes: 1 << 20,
        replicas: 1,
        memory: true,
        duplicate_window: Duration::from_secs(10),
    }
}

async fn hub_with_log(cfg: &LogConfig) -> Bus {
    let bus = Hub::new().client();
    bus.log_ensure(cfg).await.expect("ensure");
    bus
}

#[tokio::test]
async fn sequences_start_at_one_and_info_follows() {
    let bus = Hub::new().client();
    let fresh = bus.log_ensure(&config()).await.expect("ensure");
    assert_eq!((fresh.first_seq, fresh.last_seq), (1, 0));
    assert!(fresh.tag > 0);
    assert_eq!(publish(&bus, "t.log.a", "1", "m1").await, 1);
    assert_eq!(publish(&bus, "t.log.b", "2", "m2").await, 2);
    let info = bus.log_info(STREAM).await.expect("info");
    assert_eq!((info.tag, info.first_seq, info.last_seq), (fresh.tag, 1, 2));
    // Ensuring again keeps what is stored.
    assert_eq!(bus.log_ensure(&config()).await.expect("again"), info);
}

#[tokio::test]
async fn a_missing_log_is_no_log() {
    let bus = Hub::new().client();
    assert!(matches!(bus.log_info(STREAM).await, Err(BusError::NoLog)));
    assert!(matches!(
        bus.log_follow(STREAM, "t.log.>".into(), None).await,
        Err(BusError::NoLog)
    ));
    bus.log_ensure(&config()).await.expect("ensure");
    // As on JetStream (no responders), the ack tells.
    let ack = bus
        .log_publish("other.x".into(), Bytes::new(), String::new())
        .await
        .expect("sent");
    assert!(matches!(ack.await, Err(BusError::NoLog)));
}

#[tokio::test]
async fn the_tag_is_per_hub_and_shared_by_its_clients() {
    let hub = Hub::new();
    let a = hub.client().log_ensure(&config()).await.expect("ensure");
    let b = hub.client().log_info(STREAM).await.expect("info");
    assert_eq!(a.tag, b.tag);
}

#[tokio::test]
async fn a_follower_from_now_gets_later_entries_in_order_whoever_publishes() {
    let hub = Hub::new();
    let (p1, p2, reader_bus) = (hub.client(), hub.client(), hub.client());
    reader_bus.log_ensure(&config()).await.expect("ensure");
    publish(&p1, "t.log.a", "before", "b").await;
    let mut follower = reader_bus
        .log_follow(STREAM, "t.log.>".into(), None)
        .await
        .expect("follow");
    // The follower's own client publishing is delivered too: the log has no "no echo".
    let mut expected = Vec::new();
    for i in 0..50 {
        let (bus, subject) = match i % 3 {
            0 => (&p1, "t.log.a"),
            1 => (&p2, "t.log.b.c"),
            _ => (&reader_bus, "t.log.d"),
        };
        let seq = publish(bus, subject, &i.to_string(), &format!("id{i}")).await;
        expected.push((seq, subject.to_owned(), i.to_string()));
    }
    for want in expected {
        assert_eq!(next(&mut follower).await, Some(want));
    }
}

#[tokio::test]
async fn a_follower_waits_for_entries_stored_later() {
    let bus = hub_with_log(&config()).await;
    let mut follower = bus
        .log_follow(STREAM, "t.log.>".into(), Some(0))
        .await
        .expect("follow");
    let waiting = tokio::spawn(async move { next(&mut follower).await });
    tokio::task::yield_now().await;
    publish(&bus, "t.log.x", "late", "late").await;
    let got = waiting.await.expect("the follower task");
    assert_eq!(got, Some((1, "t.log.x".into(), "late".into())));
}

#[tokio::test]
async fn a_follower_from_a_sequence_starts_right_after_it_and_filters() {
    let bus = hub_with_log(&config()).await;
    for i in 1..=10 {
        let subject = if i % 2 == 0 {
            "t.log.even"
        } else {
            "t.log.odd.x"
        };
        publish(&bus, subject, &i.to_string(), &i.to_string()).await;
    }
    let mut even = bus
        .log_follow(STREAM, "t.log.even".into(), Some(4))
        .await
        .expect("follow");
    for seq in [6, 8, 10] {
        assert_eq!(next(&mut even).await.map(|e| e.0), Some(seq));
    }
    let mut odd = bus
        .log_follow(STREAM, "t.log.*.x".into(), Some(0))
        .await
        .expect("follow");
    for seq in [1, 3, 5, 7, 9] {
        assert_eq!(next(&mut odd).await.map(|e| e.0), Some(seq));
    }
    publish(&bus, "t.log.odd.x", "11", "11").await;
    assert_eq!(next(&mut odd).await.map(|e| e.0), Some(11));
}

#[tokio::test]
async fn a_slow_follower_loses_nothing_retention_keeps() {
    let bus = hub_with_log(&LogConfig {
        max_bytes: 64 << 20,
        ..config()
    })
    .await;
    let mut follower = bus
        .log_follow(STREAM, "t.log.>".into(), None)
        .await
        .expect("follow");
    // Far more than any subscription buffer (8 192), before the follower reads one.
    for i in 0..20_000u64 {
        bus.log_publish("t.log.x".into(), Bytes::from(i.to_string()), String::new())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    for seq in 1..=20_000 {
        assert_eq!(next(&mut follower).await.map(|e| e.0), Some(seq));
    }
}

#[tokio::test]
async fn read_gives_a_closed_range_then_ends() {
    let bus = hub_with_log(&config()).await;
    for i in 1..=8 {
        let subject = if i % 4 == 0 {
            "t.log.other"
        } else {
            "t.log.mine"
        };
        publish(&bus, subject, &i.to_string(), &i.to_string()).await;
    }
    let read = |after, until| bus.log_read(STREAM, "t.log.mine".into(), after, until);
    assert_eq!(seqs(read(2, 6).await.expect("read")).await, vec![3, 5, 6]);
    assert_eq!(
        seqs(read(0, 8).await.expect("read")).await,
        vec![1, 2, 3, 5, 6, 7]
    );
    // An empty range, a range past the end (ends when caught up), a range of others' entries.
    assert_eq!(
        seqs(read(5, 5).await.expect("read")).await,
        Vec::<u64>::new()
    );
    assert_eq!(seqs(read(6, 100).await.expect("read")).await, vec![7]);
    assert_eq!(
        seqs(read(7, 8).await.expect("read")).await,
        Vec::<u64>::new()
    );
    let all = bus
        .log_read(STREAM, "t.log.>".into(), 0, 8)
        .await
        .expect("read");
    assert_eq!(seqs(all).await, (1..=8).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_republished_id_is_stored_once_within_the_window() {
    let bus = hub_with_log(&config()).await;
    assert_eq!(publish(&bus, "t.log.a", "x", "same").await, 1);
    assert_eq!(publish(&bus, "t.log.a", "x", "same").await, 1);
    assert_eq!(publish(&bus, "t.log.b", "y", "other").await, 2);
    // No id: no dedup.
    assert_eq!(publish(&bus, "t.log.a", "z", "").await, 3);
    assert_eq!(publish(&bus, "t.log.a", "z", "").await, 4);
    let all = bus
        .log_read(STREAM, "t.log.>".into(), 0, 10)
        .await
        .expect("read");
    assert_eq!(seqs(all).await, vec![1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn an_id_is_forgotten_after_the_window() {
    let bus = hub_with_log(&config()).await;
    assert_eq!(publish(&bus, "t.log.a", "x", "same").await, 1);
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(publish(&bus, "t.log.a", "x", "same").await, 2);
}

#[tokio::test]
async fn eviction_by_bytes_makes_reads_fail_and_followers_skip() {
    // Each entry counts its subject, payload and 32 bytes: 7 + 100 + 32 = 139; 1 000 bytes
    // hold 7 of them.
    let bus = hub_with_log(&LogConfig {
        max_bytes: 1000,
        ..config()
    })
    .await;
    let payload = "p".repeat(100);
    for i in 0..20 {
        publish(&bus, "t.log.a", &payload, &i.to_string()).await;
    }
    let info = bus.log_info(STREAM).await.expect("info");
    assert_eq!((info.first_seq, info.last_seq), (14, 20));
    let mut read = bus
        .log_read(STREAM, "t.log.>".into(), 5, 20)
        .await
        .expect("read");
    assert!(matches!(read.next().await, Some(Err(BusError::LogEvicted))));
    assert!(read.next().await.is_none());
    // Nothing after 13 was evicted: that range reads whole.
    let whole = bus
        .log_read(STREAM, "t.log.>".into(), 13, 20)
        .await
        .expect("read");
    assert_eq!(seqs(whole).await, (14..=20).collect::<Vec<_>>());
    // A follower behind the retention resumes at the first entry kept.
    let mut follower = bus
        .log_follow(STREAM, "t.log.>".into(), Some(2))
        .await
        .expect("follow");
    assert_eq!(next(&mut follower).await.map(|e| e.0), Some(14));
}

#[tokio::test(start_paused = true)]
async fn eviction_by_age() {
    let bus = hub_with_log(&config()).await;
    publish(&bus, "t.log.a", "old", "1").await;
    publish(&bus, "t.log.a", "old", "2").await;
    tokio::time::advance(Duration::from_secs(61)).await;
    let info = bus.log_info(STREAM).await.expect("info");
    assert_eq!(
        (info.first_seq, info.last_seq),
        (3, 2),
        "empty: first = last + 1"
    );
    let mut read = bus
        .log_read(STREAM, "t.log.>".into(), 0, 2)
        .await
        .expect("read");
    assert!(matches!(read.next().await, Some(Err(BusError::LogEvicted))));
    publish(&bus, "t.log.a", "new", "3").await;
    let mut follower = bus
        .log_follow(STREAM, "t.log.>".into(), Some(0))
        .await
        .expect("follow");
    assert_eq!(next(&mut follower).await.map(|e| e.0), Some(3));
}

#[tokio::test]
async fn ensure_updates_the_bounds_of_an_existing_log() {
    let bus = hub_with_log(&config()).await;
    let payload = "p".repeat(100);
    for i in 0..20 {
        publish(&bus, "t.log.a", &payload, &i.to_string()).await;
    }
    let info = bus
        .log_ensure(&LogConfig {
            max_bytes: 1000,
            ..config()
        })
        .await
        .expect("update");
    assert_eq!((info.first_seq, info.last_seq), (14, 20));
}

#[tokio::test]
async fn payloads_over_the_bound_are_refused() {
    let bus = Hub::with_max_payload(10).client();
    bus.log_ensure(&config()).await.expect("ensure");
    assert!(matches!(
        bus.log_publish("t.log.a".into(), Bytes::from(vec![0; 11]), String::new())
            .await,
        Err(BusError::TooLarge { .. })
    ));
}
