//! Against a real `nats-server` (found as `$NATS_SERVER`, on `PATH`, or `/usr/sbin/nats-server`;
//! the README's test command installs it): after [`Bus::barrier`] returns, a subscription made
//! just before receives what another client publishes next. With only a buffer flush, the SUB
//! may still be unread at the server when the other client's PUB arrives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use switchboard_tests::{NatsServer, connect};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_in_effect_once_the_barrier_returns() {
    let server = NatsServer::start();
    let subscriber = connect(&server.url(), "subscriber").await;
    let publisher = connect(&server.url(), "publisher").await;
    let mut missed = Vec::new();
    for i in 0..300 {
        let subject = format!("barrier.test.{i}");
        let mut sub = subscriber.subscribe(subject.clone()).await.unwrap();
        subscriber.barrier(Duration::from_secs(5)).await.unwrap();
        publisher
            .publish(subject, Bytes::from(format!("{i}")))
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
            Ok(Some(m)) => assert_eq!(m.payload, Bytes::from(format!("{i}"))),
            _ => missed.push(i),
        }
    }
    assert_eq!(
        missed,
        Vec::<i32>::new(),
        "published right after the barrier, not received"
    );
}

#[tokio::test]
async fn the_barrier_of_an_in_process_hub_returns_at_once() {
    let hub = switchboard_bus::Hub::new();
    hub.client()
        .barrier(Duration::from_millis(1))
        .await
        .unwrap();
}
