//! The shipped configuration (`config/default.toml`): it loads with an empty environment, says
//! what the docs promise, and its commented `/admin` example is a valid configuration once
//! uncommented.

use std::path::Path;
use std::time::Duration;

use switchboard_gateway::config::{
    Action, AllowedOrigins, AuthMode, Config, ConfigError, DEFAULT_TOML, KeySource,
};

const SECRET: &str = "an-example-secret-of-at-least-32-bytes";

fn shipped_file() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml")
}

#[test]
fn builtin_and_file_agree_and_need_no_environment() {
    let mut from_file = Config::from_file(shipped_file()).expect("default.toml parses");
    from_file
        .apply_env(|_| None)
        .expect("no environment needed");
    let mut builtin = Config::builtin().expect("built-in parses");
    builtin.apply_env(|_| None).expect("no environment needed");
    assert_eq!(from_file.server, builtin.server);
    assert_eq!(from_file.namespaces.len(), builtin.namespaces.len());
    assert!(builtin.secret_vars().is_empty());
}

#[test]
fn shipped_values() {
    let c = Config::builtin().expect("built-in parses");
    let s = &c.server;
    assert_eq!(
        (s.host.as_str(), s.port, s.path.as_str()),
        ("127.0.0.1", 3000, "/socket.io/")
    );
    assert_eq!(s.ping_interval, Duration::from_millis(25_000));
    assert_eq!(s.ping_timeout, Duration::from_millis(20_000));
    assert_eq!(s.max_payload_bytes, 1_000_000);
    assert_eq!(s.connect_timeout, Duration::from_millis(45_000));
    assert_eq!(s.upgrade_timeout, Duration::from_millis(10_000));
    assert_eq!(s.max_connections_per_ip, 0);
    assert_eq!(s.outbound_queue_max_messages, 1024);
    assert!(s.transports.polling && s.transports.websocket);
    assert!(s.serve_demo_page);
    assert_eq!(s.cors.allowed_origins, AllowedOrigins::Any);
    assert!(!s.cors.credentials);

    let root = c.namespace("/").expect("namespace /");
    assert_eq!(root.auth, AuthMode::None);
    assert!(root.events.is_empty());

    let chat = c.namespace("/chat").expect("namespace /chat");
    assert_eq!(chat.auth, AuthMode::None);
    let rl = chat.rate_limit.as_ref().expect("a rate limit");
    assert_eq!((rl.settings.per_second, rl.settings.burst), (20, 40));
    let kinds: Vec<(&str, &str)> = chat
        .events
        .iter()
        .map(|e| (e.name.as_str(), e.action.kind()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("join", "join"),
            ("leave", "leave"),
            ("say", "relay"),
            ("shout", "broadcast")
        ]
    );
    let Some(Action::Relay(say)) = chat.event("say").map(|e| &e.action) else {
        panic!("say is a relay");
    };
    assert!(say.member_only && !say.include_sender && say.as_event.is_none());
    assert_eq!(say.room.room_arg.to_string(), "0.room");
    let Some(Action::Join(join)) = chat.event("join").map(|e| &e.action) else {
        panic!("join is a join");
    };
    assert!(join.room.deny.iter().any(|p| p.matches("user:bob", None)));
    assert!(join.room.allow.iter().any(|p| p.matches("lobby", None)));
}

/// The commented example from `# [[namespace]]` on, uncommented once (`# # …` stays a comment).
fn admin_example() -> String {
    let start = DEFAULT_TOML
        .find("# [[namespace]]")
        .expect("the /admin example is there");
    DEFAULT_TOML[start..]
        .lines()
        .map(|l| {
            l.strip_prefix("# ")
                .or_else(|| l.strip_prefix('#'))
                .unwrap_or(l)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn admin_example_is_valid() {
    let text = admin_example();
    let mut c = Config::from_str(&text, "admin-example.toml").expect("the example parses");
    let admin = c.namespace("/admin").expect("namespace /admin");
    assert_eq!(admin.auth, AuthMode::Required);
    assert_eq!(admin.required_claims.len(), 1);
    assert_eq!(admin.auto_join.len(), 1);
    assert!(matches!(
        admin.jwt.as_ref().map(|j| &j.key_source),
        Some(KeySource::SecretEnv { var, .. }) if var == "SWITCHBOARD_JWT_SECRET"
    ));
    assert_eq!(c.secret_vars(), ["SWITCHBOARD_JWT_SECRET"]);

    let err = c
        .clone()
        .apply_env(|_| None)
        .expect_err("the secret is needed");
    assert!(matches!(err, ConfigError::Env(_)));
    let msg = err.to_string();
    assert!(msg.starts_with("admin-example.toml:"), "{msg}");
    assert!(msg.contains("SWITCHBOARD_JWT_SECRET is not set"), "{msg}");

    c.apply_env(|k| (k == "SWITCHBOARD_JWT_SECRET").then(|| SECRET.to_owned()))
        .expect("a 38-byte secret is accepted");
    assert!(
        c.namespace("/admin")
            .and_then(|n| n.jwt.as_ref())
            .is_some_and(|j| j.key.is_some())
    );
}
