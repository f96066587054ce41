//! `switchboard-admin` against a real standalone `switchboard-gateway` (its in-process broker
//! serves the Admin API): every command, checked against what a connected client sees, the
//! address the server prints taken as it is, TLS with and without `--ca`, and `token`, whose
//! tokens the gateway's verifier (and a real connect) accept.
//!
//! The clients are Engine.IO long-polling sessions written by hand over `TcpStream` (no client
//! library in the workspace): handshake, CONNECT, events and acks. The TLS test makes its
//! certificates with `openssl` and fails, saying so, when it is missing.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;

use serde_json::{Value, json};
use switchboard_gateway::auth::Verifier;
use switchboard_gateway::config::Config;
use switchboard_tests::{WAIT, unique};

const GATEWAY: &str = env!("CARGO_BIN_EXE_switchboard-gateway");
const ADMIN: &str = env!("CARGO_BIN_EXE_switchboard-admin");
const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
const SECRET_VAR: &str = "SWITCHBOARD_TEST_JWT_SECRET";
const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

/// The test gateway's configuration: `/chat` open with recovery (so rooms have a history),
/// `/secure` behind an HS256 key.
const CONFIG: &str = r#"
[server]
host = "127.0.0.1"
port = 0

[[namespace]]
name = "/"

[[namespace]]
name = "/chat"

[namespace.recovery]
max_disconnection_ms = 60000

[[namespace]]
name = "/secure"
auth = "required"

[namespace.jwt]
algorithm = "HS256"
secret_env = "SWITCHBOARD_TEST_JWT_SECRET"
"#;

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(what));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A standalone gateway, killed on drop.
struct Gateway {
    child: Child,
    /// What it printed after `grpc on `.
    grpc: String,
    /// The client port's `HOST:PORT`.
    http: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command with none of Switchboard's variables from the test's environment.
fn clean_command(bin: &str) -> Command {
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("SWITCHBOARD_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

impl Gateway {
    fn start(config: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = clean_command(GATEWAY)
            .arg(config)
            .envs([
                ("SWITCHBOARD_ADMIN_TOKEN", ADMIN_TOKEN),
                ("SWITCHBOARD_GRPC_PORT", "0"),
                ("SWITCHBOARD_OPERATOR_PORT", "0"),
                ("SWITCHBOARD_NODE_ID", "solo"),
                (SECRET_VAR, SECRET),
            ])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the gateway binary starts");
        let lines = lines_of(child.stdout.take().unwrap());
        let mut grpc = None;
        let http = loop {
            let line = lines
                .recv_timeout(WAIT)
                .expect("the gateway prints its addresses");
            if let Some(addr) = line.strip_prefix("grpc on ") {
                grpc = Some(addr.to_owned());
            }
            if let Some(addr) = line.strip_prefix("listening on http://") {
                break addr.to_owned();
            }
        };
        Self {
            child,
            grpc: grpc.expect("`grpc on HOST:PORT` before `listening on`"),
            http,
        }
    }
}

/// The lines of a pipe, read on a thread.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `switchboard-admin --addr ADDR ARGS…` with the admin token in the environment.
fn admin(addr: &str, args: &[&str]) -> Output {
    clean_command(ADMIN)
        .args(["--addr", addr, "--timeout-ms", "10000"])
        .args(args)
        .env("SWITCHBOARD_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("switchboard-admin runs")
}

/// Its stdout, asserting exit status 0.
fn ok(addr: &str, args: &[&str]) -> String {
    let out = admin(addr, args);
    assert!(
        out.status.success(),
        "switchboard-admin {args:?}: {:?}\n{}",
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Each stdout line as JSON.
fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// The first `n` elements of a JSON array.
fn head(array: &Value, n: usize) -> Value {
    Value::Array(array.as_array().unwrap().iter().take(n).cloned().collect())
}

fn ids(values: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = values
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

// ---------------------------------------------------------------------------------------------
// A Socket.IO client over Engine.IO long-polling
// ---------------------------------------------------------------------------------------------

/// One HTTP/1.1 exchange on a fresh connection; (status, body).
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = text(&response);
    let (head, body) = response.split_once("\r\n\r\n").expect("a response head");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    )
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size");
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// A connected Socket.IO socket (one namespace) over polling.
struct Client {
    http: String,
    path: String,
    ns: String,
    /// The socket id the server gave.
    id: String,
}

impl Client {
    /// Opens a session and connects to `ns` with `auth` (a JSON object or empty).
    fn connect(http_addr: &str, ns: &str, auth: &str) -> Result<Self, String> {
        let (status, open) = http(http_addr, "GET", "/socket.io/?EIO=4&transport=polling", "");
        assert_eq!(status, 200, "{open}");
        let handshake: Value = serde_json::from_str(open.strip_prefix('0').unwrap()).unwrap();
        let sid = handshake["sid"].as_str().unwrap();
        let mut client = Self {
            http: http_addr.to_owned(),
            path: format!("/socket.io/?EIO=4&transport=polling&sid={sid}"),
            ns: ns.to_owned(),
            id: String::new(),
        };
        client.post(&format!("40{ns},{auth}"));
        let reply = client.poll_one();
        let prefix = format!("40{ns},");
        match reply.strip_prefix(&prefix) {
            Some(json) => {
                let v: Value = serde_json::from_str(json).unwrap();
                client.id = v["sid"].as_str().unwrap().to_owned();
                Ok(client)
            }
            None => Err(reply),
        }
    }

    fn post(&self, packet: &str) {
        let (status, body) = http(&self.http, "POST", &self.path, packet);
        assert_eq!((status, body.as_str()), (200, "ok"), "POST {packet}");
    }

    /// The next packets (a long poll).
    fn poll(&self) -> Vec<String> {
        let (status, body) = http(&self.http, "GET", &self.path, "");
        assert_eq!(status, 200, "{body}");
        body.split('\x1e')
            .filter(|p| *p != "2") // a ping: answered by the next POST
            .map(str::to_owned)
            .collect()
    }

    fn poll_one(&self) -> String {
        let mut packets = self.poll();
        assert_eq!(packets.len(), 1, "{packets:?}");
        packets.remove(0)
    }

    /// Waits for an event packet; (ack id, `[event, args…]`).
    fn event(&self) -> (Option<u64>, Value) {
        let prefix = format!("42{},", self.ns);
        for _ in 0..10 {
            for packet in self.poll() {
                if let Some(rest) = packet.strip_prefix(&prefix) {
                    let digits = rest.find('[').unwrap();
                    let id = rest[..digits].parse().ok();
                    return (id, serde_json::from_str(&rest[digits..]).unwrap());
                }
            }
        }
        panic!("no event arrived");
    }
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

#[test]
fn every_command_against_a_standalone_gateway() {
    let dir = TempDir::new("admin-cli");
    let config = dir.write("gateway.toml", CONFIG);
    let gw = Gateway::start(&config, &[]);
    // What the server prints is what --addr takes; so is the URL form.
    let addr = gw.grpc.as_str();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let [stats] = &json_lines(&ok(addr, &["stats", "--json"]))[..] else {
        panic!()
    };
    assert_eq!(stats["sockets"], 0);
    assert!(ok(&format!("http://{addr}"), &["stats"]).contains("total: 1 node, 0 sockets"));

    let a = Client::connect(&gw.http, "/chat", "").unwrap();
    let b = Client::connect(&gw.http, "/chat", "").unwrap();

    // sockets and stream list the same sockets; stream prints one line each.
    let listed = json_lines(&ok(addr, &["sockets", "--ns", "/chat", "--json"]));
    let mut both = vec![a.id.clone(), b.id.clone()];
    both.sort();
    assert_eq!(ids(&listed), both);
    let streamed = json_lines(&ok(addr, &["stream", "--ns", "/chat", "--json"]));
    assert_eq!(ids(&streamed), both);
    let plain = ok(addr, &["stream", "--ns", "/chat", "--socket", &a.id]);
    assert_eq!(plain, format!("{}  solo  -\n", a.id));

    // join: "joined N"; members and rooms show it.
    assert_eq!(
        ok(
            addr,
            &["join", "--ns", "/chat", "--socket", &a.id, "lobby", "vip"]
        ),
        "joined 1\n"
    );
    assert_eq!(
        ok(addr, &["join", "--ns", "/chat", "--socket", &b.id, "lobby"]),
        "joined 1\n"
    );
    let vip = json_lines(&ok(
        addr,
        &["members", "--ns", "/chat", "--room", "vip", "--json"],
    ));
    assert_eq!(ids(&vip), [a.id.as_str()]);
    let lobby = ok(addr, &["members", "--ns", "/chat", "--room", "lobby"]);
    assert!(lobby.ends_with("2 sockets\n"), "{lobby}");
    let rooms = json_lines(&ok(addr, &["rooms", "--ns", "/chat", "--json"]));
    assert!(
        rooms.contains(&json!({"name": "vip", "members": 1, "users": 0})),
        "{rooms:?}"
    );

    // emit: the client gets it; "sent".
    assert_eq!(
        ok(
            addr,
            &[
                "emit",
                "--ns",
                "/chat",
                "--socket",
                &a.id,
                "--event",
                "hello",
                "--args",
                "[1,\"x\"]"
            ]
        ),
        "sent\n"
    );
    // (In a namespace with recovery, every emit carries its offset last.)
    let (no_ack, event) = a.event();
    assert_eq!((no_ack, head(&event, 3)), (None, json!(["hello", 1, "x"])));
    // emit with an ack: the CLI waits for the client's answer and prints it.
    let waiting = clean_command(ADMIN)
        .args([
            "--addr", addr, "--json", "emit", "--ns", "/chat", "--socket", &a.id,
        ])
        .args(["--event", "ping", "--ack-timeout-ms", "10000"])
        .env("SWITCHBOARD_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (ack_id, event) = a.event();
    assert_eq!(head(&event, 1), json!(["ping"]));
    let ack_id = ack_id.expect("the emit asks for an ack");
    a.post(&format!("43/chat,{ack_id}[\"pong\",7]"));
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let [answer] = &json_lines(&text(&out.stdout))[..] else {
        panic!()
    };
    assert_eq!(answer["found"], true);
    assert_eq!(answer["ack"]["args"], json!(["pong", 7]));
    assert_eq!(answer["ack"]["timed_out"], false);
    // An unknown socket: exit 1, said on stderr.
    let missing = admin(
        addr,
        &[
            "emit",
            "--ns",
            "/chat",
            "--socket",
            "solo.nobody",
            "--event",
            "e",
        ],
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("NotFound: no socket solo.nobody"),
        "{}",
        text(&missing.stderr)
    );

    // broadcast to a room reaches its members and goes into the room's history.
    assert_eq!(
        ok(
            addr,
            &[
                "broadcast",
                "--ns",
                "/chat",
                "--room",
                "lobby",
                "--event",
                "news",
                "--args",
                "[\"n1\"]"
            ]
        ),
        "targeted 2\n"
    );
    for client in [&a, &b] {
        let (_, event) = client.event();
        assert_eq!(head(&event, 2), json!(["news", "n1"]));
    }
    let history = json_lines(&ok(
        addr,
        &["history", "--ns", "/chat", "--room", "lobby", "--json"],
    ));
    let last = history.last().expect("the broadcast is in the history");
    assert_eq!(
        (&last["event"], &last["args"]),
        (&json!("news"), &json!(["n1"]))
    );
    let table = ok(addr, &["history", "--ns", "/chat", "--room", "lobby"]);
    let count = match history.len() {
        1 => "1 message\n".to_owned(),
        n => format!("{n} messages\n"),
    };
    assert!(table.ends_with(&count), "{table}");

    // set-data: later queries show it; an unknown socket exits 1.
    assert_eq!(
        ok(
            addr,
            &[
                "set-data",
                "--socket",
                &b.id,
                "--data",
                r#"{"tier":"gold"}"#
            ]
        ),
        "updated\n"
    );
    let [shown] = &json_lines(&ok(
        addr,
        &["sockets", "--ns", "/chat", "--socket", &b.id, "--json"],
    ))[..] else {
        panic!()
    };
    assert_eq!(shown["data"], json!({"tier": "gold"}));
    let unknown = admin(
        addr,
        &["set-data", "--socket", "solo.nobody", "--data", "1"],
    );
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown.stderr));

    // leave: "left N"; the room is gone with its last member.
    assert_eq!(
        ok(addr, &["leave", "--ns", "/chat", "--room", "vip", "vip"]),
        "left 1\n"
    );
    assert_eq!(
        ok(
            addr,
            &["members", "--ns", "/chat", "--room", "vip", "--json"]
        ),
        ""
    );

    // A token minted by `token` for /secure connects there, and user-sockets finds its user.
    let minted = clean_command(ADMIN)
        .args(["token", "--config"])
        .arg(&config)
        .args(["--ns", "/secure", "--sub", "alice", "--ttl", "5m"])
        .env(SECRET_VAR, SECRET)
        .output()
        .unwrap();
    assert!(minted.status.success(), "{}", text(&minted.stderr));
    let token = text(&minted.stdout).trim().to_owned();
    let refused = Client::connect(&gw.http, "/secure", r#"{"token":"not-a-token"}"#);
    assert!(refused.is_err(), "a bad token is refused");
    let alice =
        Client::connect(&gw.http, "/secure", &json!({ "token": token }).to_string()).unwrap();
    let found = json_lines(&ok(addr, &["user-sockets", "--user", "alice", "--json"]));
    assert_eq!(ids(&found), [alice.id.as_str()]);
    assert_eq!(found[0]["user"], "alice");
    let scoped = ok(addr, &["user-sockets", "--user", "alice", "--ns", "/chat"]);
    assert_eq!(scoped.lines().last(), Some("0 sockets"), "{scoped}");

    // kick still works, and the wrong token is a call failure (exit 1).
    assert_eq!(
        ok(addr, &["kick", "--ns", "/chat", "--socket", &b.id]),
        "disconnected 1\n"
    );
    let denied = clean_command(ADMIN)
        .args(["--addr", addr, "--token", "wrong-token-0123456789", "stats"])
        .output()
        .unwrap();
    assert_eq!(denied.status.code(), Some(1));
    assert!(text(&denied.stderr).contains("Unauthenticated"));
}

/// Runs `openssl` with the words of `args` in `dir`, failing the test (with how to install it)
/// if it is missing.
fn openssl(dir: &Path, args: &str) {
    let status = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| {
            panic!("openssl is needed for this test (apt-get install openssl): {e}")
        });
    assert!(status.success(), "openssl {args}");
}

/// A self-signed CA certificate `NAME.pem` (key `NAME.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &format!(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}.key \
             -out {name}.pem -days 2 -subj /CN={name}"
        ),
    );
}

#[test]
fn https_uses_the_system_roots_or_only_the_given_ca() {
    let dir = TempDir::new("admin-tls");
    let d = &dir.0;
    // A private CA and a certificate for 127.0.0.1 signed by it.
    make_ca(d, "ca");
    openssl(
        d,
        "req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -out leaf.csr \
         -subj /CN=127.0.0.1",
    );
    dir.write("leaf.ext", "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    openssl(
        d,
        "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 \
         -extfile leaf.ext",
    );
    let config = dir.write("gateway.toml", CONFIG);
    let cert = d.join("cert.pem");
    let key = d.join("key.pem");
    let gw = Gateway::start(
        &config,
        &[
            ("SWITCHBOARD_GRPC_TLS_CERT", cert.to_str().unwrap()),
            ("SWITCHBOARD_GRPC_TLS_KEY", key.to_str().unwrap()),
        ],
    );
    let url = format!("https://{}", gw.grpc);
    // Without --ca: the system's roots, which do not know this CA.
    let refused = admin(&url, &["stats"]);
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!("switchboard-admin: cannot connect to {url}: ")),
        "{stderr}"
    );
    assert!(stderr.contains("--ca FILE"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // With --ca: accepted.
    let ca = d.join("ca.pem");
    let out = ok(&url, &["--ca", ca.to_str().unwrap(), "stats", "--json"]);
    assert_eq!(json_lines(&out)[0]["sockets"], 0);
    // Only the given roots: another CA file does not vouch for this server.
    make_ca(d, "other");
    let other = d.join("other.pem");
    let wrong = admin(&url, &["--ca", other.to_str().unwrap(), "stats"]);
    assert_eq!(wrong.status.code(), Some(1), "{}", text(&wrong.stderr));
}

/// The verifier the gateway builds for `ns` of the configuration at `path` (as its policy does),
/// with every secret variable holding `secret`.
fn verifier(path: &Path, ns: &str, secret: &str) -> Verifier {
    let mut config = Config::from_file(path).unwrap();
    config.apply_env(|_| Some(secret.to_owned())).unwrap();
    let entry = config.namespace(ns).unwrap();
    let jwt = entry.jwt.as_ref().unwrap();
    Verifier::new(jwt.algorithm, jwt.key.clone().unwrap())
        .unwrap()
        .with_issuers(jwt.issuers.clone())
        .with_audiences(jwt.audiences.clone())
        .with_leeway_seconds(jwt.leeway_seconds)
        .with_required_claims(entry.required_claims.clone())
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(args: &[&str], env: &[(&str, &str)]) -> Output {
    clean_command(ADMIN)
        .arg("token")
        .args(args)
        .env_remove("CHAT_JWT_SECRET")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn token_mints_what_the_namespace_accepts() {
    // The worked example's configuration, as the README runs it.
    let chat = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/chat.toml");
    let chat = chat.to_str().unwrap();
    let secret = "worked-example-secret-0123456789abcdef";
    let out = token(
        &[
            "--config",
            chat,
            "--ns",
            "/chat",
            "--sub",
            "alice",
            "--ttl",
            "1h",
            "--claim",
            "role=admin",
            "--claim",
            "n=3",
        ],
        &[("CHAT_JWT_SECRET", secret)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let minted = text(&out.stdout).trim().to_owned();
    let claims = verifier(Path::new(chat), "/chat", secret)
        .verify(&minted, now_unix())
        .expect("the gateway's verifier accepts the token");
    assert_eq!(claims.subject(), Some(&json!("alice")));
    assert_eq!(claims.lookup("role"), Some(&json!("admin")));
    assert_eq!(claims.lookup("n"), Some(&json!(3)));
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 3600);
    // Another secret's verifier refuses it: the signature is the configured key's.
    let other = verifier(
        Path::new(chat),
        "/chat",
        "another-secret-0123456789abcdef-xyz",
    );
    assert!(other.verify(&minted, now_unix()).is_err());
    // --json, and --secret-env / --alg directly.
    let out = token(
        &[
            "--secret-env",
            "MY_SECRET",
            "--alg",
            "HS384",
            "--sub",
            "bob",
            "--json",
        ],
        &[("MY_SECRET", &"k".repeat(48))],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    let header = switchboard_gateway::auth::peek_header(v["token"].as_str().unwrap()).unwrap();
    assert_eq!(header.alg, switchboard_gateway::auth::Algorithm::HS384);
}

#[test]
fn token_failures_exit_2_saying_why() {
    let dir = TempDir::new("admin-token");
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/tests/keys");
    let config = dir.write(
        "gateway.toml",
        &format!(
            r#"
[[namespace]]
name = "/open"

[[namespace]]
name = "/hs"
auth = "required"
required_claims = {{ role = ["admin", "ops"] }}
[namespace.jwt]
algorithm = "HS512"
secret_env = "HS_SECRET"
issuer = "https://issuer.example"
audience = "switchboard"

[[namespace]]
name = "/rs"
auth = "required"
[namespace.jwt]
algorithm = "RS256"
public_key_file = "{}"
"#,
            keys.join("rs256-public.pem").display()
        ),
    );
    let config = config.to_str().unwrap();
    let long = "s".repeat(64);
    // (the options besides --config and --sub, the environment, what stderr says)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case<'_>; 7] = [
        (
            &["--ns", "/hs"],
            &[],
            "environment variable HS_SECRET is not set",
        ),
        (&["--ns", "/hs"], &[("HS_SECRET", "")], "HS_SECRET is empty"),
        (&["--ns", "/hs"], &[("HS_SECRET", "short")], "HS_SECRET"),
        (
            &["--ns", "/hs"],
            &[("HS_SECRET", &long)],
            "claim role missing",
        ),
        (&["--ns", "/rs"], &[], "private key"),
        (&["--ns", "/open"], &[], "takes no token"),
        (&["--ns", "nope"], &[], "no [[namespace]] entry applies"),
    ];
    for (args, env, want) in cases {
        let mut all = vec!["--config", config, "--sub", "alice"];
        all.extend_from_slice(args);
        let out = token(&all, env);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(want),
            "{args:?}: {want} missing from {stderr}"
        );
        assert!(out.stdout.is_empty());
    }
    // With the required claim, the issuer and audience come from the configuration.
    let out = token(
        &[
            "--config", config, "--ns", "/hs", "--sub", "carol", "--claim", "role=ops",
        ],
        &[("HS_SECRET", &long)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let minted = text(&out.stdout).trim().to_owned();
    let claims = verifier(Path::new(config), "/hs", &long)
        .verify(&minted, now_unix())
        .expect("accepted");
    assert_eq!(claims.lookup("iss"), Some(&json!("https://issuer.example")));
    // A missing config file is a usage error too.
    let out = token(
        &[
            "--config",
            "/nonexistent/gw.toml",
            "--ns",
            "/",
            "--sub",
            "a",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read config file"));
}
