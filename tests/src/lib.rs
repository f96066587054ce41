//! The shared harness of the Rust integration tests (`broker/tests`, `bus/tests`): a real
//! `nats-server` as a child process, bus clients connected to it, and polling with a deadline.
//! The end-to-end tests that drive real clients against the binaries are in `tests/e2e/` (node).
//!
//! A test that needs `nats-server` and cannot find it fails, saying how to install it; it does
//! not pass silently.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use switchboard_bus::{Bus, NatsOptions};

/// How long a server or a condition gets before the test fails.
pub const WAIT: Duration = Duration::from_secs(15);

/// A name no other test (in this or another process) uses: `what` plus the process id, a counter
/// and the clock's nanoseconds.
pub fn unique(what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{what}{}x{}x{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A loopback port that was free a moment ago (for a child process that cannot bind port 0 and
/// report it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The `nats-server` to run: `$NATS_SERVER`, else the one on `PATH`, else Debian's
/// `/usr/sbin/nats-server`.
pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return p.into();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| "/usr/sbin/nats-server".into())
}

/// A `nats-server` child process on a loopback port, killed (and its JetStream store removed)
/// on drop.
pub struct NatsServer {
    child: Child,
    store: Option<PathBuf>,
    /// A configuration file written for it, removed on drop.
    config: Option<PathBuf>,
    port: u16,
}

impl NatsServer {
    /// Starts core NATS and waits until it accepts connections.
    pub fn start() -> Self {
        Self::spawn(false, None)
    }

    /// Starts NATS with JetStream (in a fresh store) and waits until it accepts connections.
    pub fn start_jetstream() -> Self {
        Self::spawn(true, None)
    }

    /// Starts core NATS with `config` as its configuration file's text (limits such as
    /// `max_pending` and `max_payload`; the address and port are set here).
    pub fn start_configured(config: &str) -> Self {
        Self::spawn(false, Some(config))
    }

    fn spawn(jetstream: bool, config: Option<&str>) -> Self {
        let bin = nats_server_bin();
        let port = free_port();
        let mut cmd = Command::new(&bin);
        let config = config.map(|text| {
            let path = std::env::temp_dir().join(unique("switchboard-nats-") + ".conf");
            std::fs::write(&path, text).expect("a temporary nats-server configuration");
            cmd.arg("-c").arg(&path);
            path
        });
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
        let store = jetstream.then(|| {
            let dir = std::env::temp_dir().join(unique("switchboard-nats-"));
            std::fs::create_dir_all(&dir).expect("a temporary JetStream store");
            cmd.arg("-js").arg("-sd").arg(&dir);
            dir
        });
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): install it (apt-get install nats-server) or set \
                     NATS_SERVER to its path",
                    bin.display()
                )
            });
        let server = Self {
            child,
            store,
            config,
            port,
        };
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// Its client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.store {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(file) = &self.config {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// A bus client named `name`, connected to `url`, once its link is up.
pub async fn connect(url: &str, name: &str) -> Bus {
    let bus = Bus::connect(&NatsOptions {
        url: url.to_owned(),
        name: name.to_owned(),
        ..NatsOptions::default()
    })
    .await
    .expect("the bus connects");
    let mut link = bus.link();
    tokio::time::timeout(WAIT, link.wait_for(|l| l.up))
        .await
        .expect("the NATS link comes up")
        .expect("the link watch stays open");
    bus
}

/// Polls `cond` until it holds, failing (naming `what`) after `within` of tokio time.
pub async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
