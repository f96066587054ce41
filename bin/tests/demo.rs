//! The demo page works from the binary alone: the gateway serves the official Socket.IO client
//! that its build fetched (`build.rs`) where Node's socket.io serves it, and the page loads it
//! from there — nothing from `tests/e2e/node_modules` or a CDN.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-gateway");
/// What the build put into the binary (empty: it could not fetch the client).
const BUILT_IN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/socket.io.min.js"));

/// The gateway, killed on drop.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (status, headers, body) of `GET path`.
fn get(addr: &str, path: &str) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head");
    let head = String::from_utf8_lossy(&response[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, head, response[end + 4..].to_vec())
}

#[test]
fn the_demo_page_loads_the_client_the_gateway_serves() {
    assert!(
        !BUILT_IN.is_empty(),
        "this build has no Socket.IO client built in: its build script could not fetch it from \
         registry.npmjs.org (see the build's warning; it needs curl and network access, and \
         SWITCHBOARD_CLIENT_FETCH unset)"
    );
    assert!(
        String::from_utf8_lossy(&BUILT_IN[..200.min(BUILT_IN.len())]).contains("Socket.IO v4.8."),
        "the built-in file is the 4.8 client"
    );
    // Started elsewhere than the checkout, with no client configured.
    let dir = std::env::temp_dir();
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("SWITCHBOARD_") || k == "PORT" {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .current_dir(&dir)
        .env("SWITCHBOARD_PORT", "0")
        .env("SWITCHBOARD_OPERATOR_PORT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the gateway starts");
    let stdout = child.stdout.take().expect("stdout piped");
    let gateway = Gateway(child);
    let addr = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("listening on http://").map(str::to_owned))
        .expect("the gateway prints its address");

    let (status, _, page) = get(&addr, "/");
    assert_eq!(status, 200);
    let page = String::from_utf8_lossy(&page);
    let src = page
        .split("<script src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page loads a script");
    assert!(
        src.starts_with('/'),
        "the page loads {src}, not from the gateway"
    );
    let (status, head, js) = get(&addr, src);
    assert_eq!(status, 200, "{src}: {head}");
    assert!(head.contains("application/javascript"), "{head}");
    assert!(js == BUILT_IN, "{src} is not the built-in client");
    // Node's other path serves it too.
    let (status, _, js) = get(&addr, "/socket.io/socket.io.js");
    assert_eq!(status, 200);
    assert!(js == BUILT_IN);
    drop(gateway);
}
