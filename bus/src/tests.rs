//! The in-process hub's semantics, which standalone mode relies on being the same as NATS's.

use std::time::Duration;

use bytes::Bytes;

use crate::{BusError, Hub};

#[tokio::test]
async fn publish_reaches_other_clients_not_the_publisher() {
    let hub = Hub::new();
    let (a, b) = (hub.client(), hub.client());
    let mut on_a = a.subscribe("x.*".into()).await.expect("subscribe");
    let mut on_b = b.subscribe("x.*".into()).await.expect("subscribe");
    a.publish("x.1".into(), Bytes::from_static(b"hi"))
        .await
        .expect("publish");
    let m = on_b.next().await.expect("b receives");
    assert_eq!((m.subject.as_str(), &m.payload[..]), ("x.1", &b"hi"[..]));
    b.publish("x.2".into(), Bytes::from_static(b"back"))
        .await
        .expect("publish");
    let m = on_a.next().await.expect("a receives b's message");
    // a's own message never came back: the first thing a sees is b's.
    assert_eq!(m.subject, "x.2");
}

#[tokio::test]
async fn order_is_kept_and_drop_unsubscribes() {
    let hub = Hub::new();
    let (a, b) = (hub.client(), hub.client());
    let mut sub = b.subscribe("r".into()).await.expect("subscribe");
    for i in 0..100u8 {
        a.publish("r".into(), Bytes::from(vec![i]))
            .await
            .expect("publish");
    }
    for i in 0..100u8 {
        assert_eq!(sub.next().await.expect("message").payload[0], i);
    }
    drop(sub);
    assert!(matches!(
        a.request("r".into(), Bytes::new(), Duration::from_millis(50))
            .await,
        Err(BusError::NoResponders)
    ));
}

#[tokio::test]
async fn queue_groups_share_messages() {
    let hub = Hub::new();
    let p = hub.client();
    let (w1, w2) = (hub.client(), hub.client());
    let mut s1 = w1
        .queue_subscribe("job".into(), "workers".into())
        .await
        .expect("sub");
    let mut s2 = w2
        .queue_subscribe("job".into(), "workers".into())
        .await
        .expect("sub");
    for _ in 0..10 {
        p.publish("job".into(), Bytes::new())
            .await
            .expect("publish");
    }
    let mut got = 0;
    for s in [&mut s1, &mut s2] {
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(20), s.next()).await {
            got += 1;
        }
    }
    // Each message to exactly one member.
    assert_eq!(got, 10);
}

#[tokio::test]
async fn request_reply_and_timeout() {
    let hub = Hub::new();
    let (client, server) = (hub.client(), hub.client());
    let mut sub = server.subscribe("echo".into()).await.expect("sub");
    let answer = tokio::spawn({
        let server = server.clone();
        async move {
            let m = sub.next().await.expect("request");
            let reply = m.reply.expect("has a reply subject");
            server.publish(reply, m.payload).await.expect("reply");
            // Keep the subscription until the second (unanswered) request arrives.
            sub.next().await
        }
    });
    let got = client
        .request(
            "echo".into(),
            Bytes::from_static(b"ping"),
            Duration::from_secs(5),
        )
        .await
        .expect("answered");
    assert_eq!(&got[..], b"ping");
    tokio::time::pause();
    let late = client
        .request(
            "echo".into(),
            Bytes::from_static(b"2"),
            Duration::from_millis(100),
        )
        .await;
    assert!(matches!(late, Err(BusError::Timeout)), "{late:?}");
    answer.abort();
}

#[tokio::test]
async fn invalid_subjects_are_refused() {
    let hub = Hub::new();
    let c = hub.client();
    for bad in ["", "a..b", "a.>.b", "a b"] {
        assert!(c.subscribe(bad.into()).await.is_err(), "{bad:?}");
    }
}

#[test]
fn nats_options_never_print_their_secrets() {
    let opts = crate::NatsOptions {
        url: "nats://127.0.0.1:4222".into(),
        user: Some(("gateway-gw1".into(), "sb-password-1".into())),
        token: Some("sb-token-2".into()),
        ..Default::default()
    };
    let shown = format!("{opts:?} {opts:#?}");
    assert!(
        shown.contains("gateway-gw1") && shown.contains("<redacted>"),
        "{shown}"
    );
    assert!(
        !shown.contains("sb-password-1") && !shown.contains("sb-token-2"),
        "{shown}"
    );
}

#[tokio::test]
async fn a_payload_over_the_bound_is_refused_whole() {
    let hub = Hub::with_max_payload(8);
    let (a, b) = (hub.client(), hub.client());
    assert_eq!(a.max_payload(), 8);
    let mut sub = b.subscribe("p".into()).await.expect("subscribe");
    let refused = a
        .publish("p".into(), Bytes::from_static(b"123456789"))
        .await;
    assert!(
        matches!(refused, Err(BusError::TooLarge { size: 9, max: 8 })),
        "{refused:?}"
    );
    let refused = a
        .request("p".into(), Bytes::from(vec![0; 9]), Duration::from_secs(1))
        .await;
    assert!(
        matches!(refused, Err(BusError::TooLarge { .. })),
        "{refused:?}"
    );
    a.publish("p".into(), Bytes::from_static(b"12345678"))
        .await
        .expect("at the bound");
    assert_eq!(sub.next().await.expect("message").payload.len(), 8);
}

#[test]
fn a_url_list_is_every_server_in_order() {
    let addrs =
        crate::server_addrs(" nats://127.0.0.1:4222,127.0.0.1:4223 , tls://n3.example:4224")
            .expect("three servers");
    let shown: Vec<(String, u16)> = addrs
        .iter()
        .map(|a| (a.host().to_owned(), a.port()))
        .collect();
    assert_eq!(
        shown,
        [
            ("127.0.0.1".to_owned(), 4222),
            ("127.0.0.1".to_owned(), 4223),
            ("n3.example".to_owned(), 4224)
        ]
    );
    assert_eq!(crate::server_addrs("nats://a:1").expect("one").len(), 1);
}

#[test]
fn a_bad_url_list_is_refused_without_echoing_it() {
    for (url, why) in [
        ("", "empty NATS URL"),
        (" , ", "empty NATS URL"),
        ("nats://a:1,,nats://b:2", "entry 2 of 3 is empty"),
        (
            "nats://a:1,nats://u:sb-secret@b:notaport",
            "entry 2 of 2 is not a server URL",
        ),
    ] {
        let e = crate::server_addrs(url).expect_err(url).to_string();
        assert!(e.contains(why), "{url}: {e}");
        assert!(!e.contains("sb-secret"), "{url}: {e}");
    }
}
