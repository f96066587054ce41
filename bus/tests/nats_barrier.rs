//! Against a real `nats-server` (found as `$NATS_SERVER`, on `PATH`, or `/usr/sbin/nats-server`;
//! the README's test command installs it): after [`Bus::barrier`] returns, a subscription made
//! just before receives what another client publishes next. With only a buffer flush, the SUB
//! may still be unread at the server when the other client's PUB arrives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use switchboard_bus::{Bus, NatsOptions};

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nats_server_bin() -> String {
    if let Ok(p) = std::env::var("NATS_SERVER") {
        return p;
    }
    let on_path = Command::new("sh")
        .args(["-c", "command -v nats-server"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    on_path.unwrap_or_else(|| "/usr/sbin/nats-server".to_owned())
}

fn start() -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bin = nats_server_bin();
    let child = Command::new(&bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin} (install nats-server): {e}"));
    Server { child, port }
}

async fn connect(port: u16, name: &str) -> Bus {
    let bus = Bus::connect(&NatsOptions {
        url: format!("nats://127.0.0.1:{port}"),
        name: name.into(),
        ..NatsOptions::default()
    })
    .await
    .unwrap();
    let mut link = bus.link();
    tokio::time::timeout(Duration::from_secs(10), link.wait_for(|l| l.up))
        .await
        .expect("NATS never came up")
        .unwrap();
    bus
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_in_effect_once_the_barrier_returns() {
    let server = start();
    let subscriber = connect(server.port, "subscriber").await;
    let publisher = connect(server.port, "publisher").await;
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
