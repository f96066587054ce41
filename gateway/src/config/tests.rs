//! Loading and validating whole configuration texts: defaults, every section, the problem
//! messages with their locations, and the environment.

use std::path::Path;

use serde_json::{Value, json};

use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "test.toml", Path::new(env!("CARGO_MANIFEST_DIR")))
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |k| {
        pairs
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    }
}

#[test]
fn empty_file_gives_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.server, ServerConfig::default());
    assert!(c.namespaces.is_empty());
}

#[test]
fn builtin_config_loads_without_environment() {
    let mut c = Config::builtin().unwrap();
    c.apply_env(|_| None).unwrap();
    assert!(c.namespace("/").is_some());
    let chat = c.namespace("/chat").unwrap();
    let names: Vec<&str> = chat.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["join", "leave", "say", "shout"]);
    assert!(chat.rate_limit.is_some());
    assert!(c.secret_vars().is_empty());
}

#[test]
fn server_section_is_read() {
    let c = parse(
        r#"
            [server]
            host = "0.0.0.0"
            port = 8080
            path = "/rt"
            ping_interval_ms = 1000
            ping_timeout_ms = 500
            max_payload_bytes = 2048
            connect_timeout_ms = 3000
            upgrade_timeout_ms = 4000
            max_connections_per_ip = 7
            outbound_queue_max_messages = 16
            transports = ["websocket"]
            serve_demo_page = true
            body_timeout_ms = 2500
            max_query_bytes = 512
            max_kept_header_bytes = 1024
            [server.cors]
            allowed_origins = ["https://app.example.com", "http://localhost:5173"]
            credentials = true
            [operator]
            host = "0.0.0.0"
            port = 9100
            "#,
    )
    .unwrap();
    let s = &c.server;
    assert_eq!(s.host, "0.0.0.0");
    assert_eq!(s.port, 8080);
    assert_eq!(s.path, "/rt/");
    assert_eq!(s.ping_interval, Duration::from_secs(1));
    assert_eq!(s.ping_timeout, Duration::from_millis(500));
    assert_eq!(s.max_payload_bytes, 2048);
    assert_eq!(s.connect_timeout, Duration::from_secs(3));
    assert_eq!(s.upgrade_timeout, Duration::from_secs(4));
    assert_eq!(s.max_connections_per_ip, 7);
    assert_eq!(s.outbound_queue_max_messages, 16);
    assert_eq!(
        s.transports,
        Transports {
            polling: false,
            websocket: true
        }
    );
    assert!(s.serve_demo_page);
    assert!(s.cors.credentials);
    assert!(s.cors.allows("http://localhost:5173"));
    assert!(s.cors.allows("HTTPS://APP.EXAMPLE.COM"));
    assert!(!s.cors.allows("https://evil.example"));
    assert_eq!(s.body_timeout, Duration::from_millis(2500));
    assert_eq!((s.max_query_bytes, s.max_kept_header_bytes), (512, 1024));
    assert_eq!(
        c.operator,
        OperatorConfig {
            host: "0.0.0.0".into(),
            port: 9100
        }
    );
}

#[test]
fn the_shared_tables_are_accepted_and_left_to_the_binaries() {
    let c = parse(
        "[nats]\nurl = \"nats://x:4222\"\n[cluster]\nheartbeat_ms = \"anything\"\n\
         [broker]\n[grpc]\n[log]\nformat = \"json\"\n[server]\nport = 1",
    )
    .unwrap();
    assert_eq!(c.server.port, 1);
    let e = err("[clusters]\nheartbeat_ms = 5");
    assert!(e.contains("clusters"), "{e}");
}

#[test]
fn compression_follows_node_defaults_and_is_configurable() {
    let d = parse("").unwrap().server;
    assert!(!d.per_message_deflate);
    assert!(d.http_compression);
    let e = d.engine_config();
    assert_eq!(e.per_message_deflate, None);
    assert_eq!(e.http_compression, Some(1024));

    let c = parse(
        "[server]\nper_message_deflate = true\nper_message_deflate_threshold_bytes = 0\n\
         http_compression = false\nhttp_compression_threshold_bytes = 64",
    )
    .unwrap()
    .server;
    assert_eq!(
        (
            c.per_message_deflate_threshold_bytes,
            c.http_compression_threshold_bytes
        ),
        (0, 64)
    );
    let e = c.engine_config();
    assert_eq!(e.per_message_deflate, Some(0));
    assert_eq!(e.http_compression, None);

    // The built-in file says the same as the defaults.
    let builtin = Config::builtin().unwrap().server;
    assert_eq!(
        (
            builtin.per_message_deflate,
            builtin.per_message_deflate_threshold_bytes
        ),
        (false, 1024)
    );
    assert_eq!(
        (
            builtin.http_compression,
            builtin.http_compression_threshold_bytes
        ),
        (true, 1024)
    );

    let err = parse("[server]\nper_message_deflate = 1")
        .unwrap_err()
        .to_string();
    assert!(err.contains("test.toml:2:"), "{err}");
}

#[test]
fn operator_listener_defaults_to_loopback() {
    let c = parse("").unwrap();
    assert_eq!(c.operator, OperatorConfig::default());
    assert_eq!(c.operator.host, "127.0.0.1");
    assert_eq!(c.operator.port, 9464);
    let e = err("[operator]\nhost = \"exa mple\"\nport = 1");
    assert!(
        e.contains("test.toml:2:") && e.contains("operator.host"),
        "{e}"
    );
    let e = err("[server]\nbody_timeout_ms = 0\nmax_query_bytes = 0\nmax_kept_header_bytes = 0");
    for key in [
        "body_timeout_ms",
        "max_query_bytes",
        "max_kept_header_bytes",
    ] {
        assert!(e.contains(key), "{key}: {e}");
    }
}

#[test]
fn limits_section_is_read_and_checked() {
    let d = parse("").unwrap();
    assert_eq!(d.limits, crate::sio::Limits::default());
    assert_eq!(d.sio_config().limits, d.limits);
    assert_eq!(
        Config::builtin().unwrap().limits,
        crate::sio::Limits::default(),
        "default.toml states the defaults"
    );
    // Attachment bytes follow max_payload_bytes unless set.
    let c = parse("[server]\nmax_payload_bytes = 5000").unwrap();
    assert_eq!(c.limits.max_attachment_bytes, 5000);
    let c = parse(
        r#"
            [limits]
            max_name_bytes = 10
            max_attachments = 2
            max_attachment_bytes = 300
            binary_timeout_ms = 700
            max_namespaces = 3
            connects_per_interval = 4
            connect_interval_ms = 900
            max_pending_acks = 5
            "#,
    )
    .unwrap();
    assert_eq!(
        c.limits,
        crate::sio::Limits {
            max_name_bytes: 10,
            max_attachments: 2,
            max_attachment_bytes: 300,
            binary_timeout: Duration::from_millis(700),
            max_namespaces: 3,
            connects_per_interval: 4,
            connect_interval: Duration::from_millis(900),
            max_pending_acks: 5,
        }
    );
    // (text, expected substrings of the error)
    let table: &[(&str, &[&str])] = &[
        (
            "[limits]\nmax_name_bytes = 0",
            &[
                "test.toml:2:18",
                "limits.max_name_bytes must be greater than 0",
            ],
        ),
        (
            "[limits]\nmax_name_bytes = 257",
            &[
                "test.toml:2:18",
                "limits.max_name_bytes must be at most 256",
            ],
        ),
        (
            "[limits]\nbinary_timeout_ms = 0",
            &[
                "test.toml:2:21",
                "limits.binary_timeout_ms must be greater than 0",
            ],
        ),
        (
            "[limits]\nconnects_per_interval = 5000000000",
            &["limits.connects_per_interval is too large"],
        ),
        (
            "[limits]\nmax_namespace = 3",
            &["test.toml:2:1", "unknown field `max_namespace`"],
        ),
    ];
    for (text, want) in table {
        let e = err(text);
        for w in *want {
            assert!(e.contains(w), "{text:?}: {e}");
        }
    }
}

/// (name, config text, expected substrings of the error, including file:line:col)
#[test]
fn errors_table() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("toml syntax", "[server\nport = 1", &["test.toml:1:"]),
        (
            "unknown top key",
            "colour = 1",
            &["test.toml:1:1:", "unknown field `colour`"],
        ),
        (
            "unknown server key",
            "[server]\nprot = 1",
            &["test.toml:2:1:", "unknown field `prot`"],
        ),
        (
            "wrong type",
            "[server]\nport = \"x\"",
            &["test.toml:2:8:", "invalid type"],
        ),
        ("port range", "[server]\nport = 70000", &["test.toml:2:8:"]),
        (
            "zero duration",
            "[server]\nping_interval_ms = 0",
            &["test.toml:2:20:", "ping_interval_ms must be greater than 0"],
        ),
        (
            "negative duration",
            "[server]\nping_timeout_ms = -5",
            &["test.toml:2:"],
        ),
        (
            "js timer overflow",
            "[server]\nping_interval_ms = 2147483000\nping_timeout_ms = 1000",
            &["test.toml:2:", "JavaScript timers"],
        ),
        (
            "zero payload",
            "[server]\nmax_payload_bytes = 0",
            &["test.toml:2:", "max_payload_bytes must be greater than 0"],
        ),
        (
            "zero queue",
            "[server]\noutbound_queue_max_messages = 0",
            &["outbound_queue_max_messages must be greater than 0"],
        ),
        (
            "bad host",
            "[server]\nhost = \"exa mple\"",
            &["test.toml:2:8:", "not an IP address or host name"],
        ),
        (
            "bad path",
            "[server]\npath = \"socket.io\"",
            &["test.toml:2:", "must start with /"],
        ),
        (
            "no transports",
            "[server]\ntransports = []",
            &["test.toml:2:", "at least one"],
        ),
        (
            "unknown transport",
            "[server]\ntransports = [\"ws\"]",
            &["test.toml:2:", "unknown variant `ws`"],
        ),
        (
            "twice transport",
            "[server]\ntransports = [\"polling\", \"polling\"]",
            &["listed twice"],
        ),
        (
            "star with credentials",
            "[server.cors]\nallowed_origins = [\"*\"]\ncredentials = true",
            &["test.toml:3:", "cannot be combined"],
        ),
        (
            "star not alone",
            "[server.cors]\nallowed_origins = [\"*\", \"https://a.b\"]",
            &["must be the only entry"],
        ),
        (
            "origin with path",
            "[server.cors]\nallowed_origins = [\"https://a.b/\"]",
            &["test.toml:2:", "trailing slash"],
        ),
        (
            "origin without scheme",
            "[server.cors]\nallowed_origins = [\"a.b\"]",
            &["is not an origin"],
        ),
        (
            "namespace without name",
            "[[namespace]]\nauth = \"none\"",
            &["test.toml:", "needs `name"],
        ),
        (
            "name and pattern",
            "[[namespace]]\nname = \"/a\"\npattern = \"/b\"",
            &["test.toml:2:", "not both"],
        ),
        (
            "name without slash",
            "[[namespace]]\nname = \"chat\"",
            &["test.toml:2:8:", "starts with /"],
        ),
        (
            "duplicate namespace",
            "[[namespace]]\nname = \"/a\"\n[[namespace]]\nname = \"/a\"",
            &["test.toml:4:8:", "defined twice (first at line 2)"],
        ),
        (
            "bad regex",
            "[[namespace]]\npattern = \"/t-[\"",
            &[
                "test.toml:2:11:",
                "not a valid regex: unclosed character class",
            ],
        ),
        (
            "unknown namespace key",
            "[[namespace]]\nname = \"/a\"\nauht = \"none\"",
            &["test.toml:3:1:", "unknown field `auht`"],
        ),
        (
            "bad auth",
            "[[namespace]]\nname = \"/a\"\nauth = \"maybe\"",
            &["test.toml:3:8:", "unknown variant `maybe`"],
        ),
        (
            "auth without jwt",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"",
            &["test.toml:3:8:", "needs a [namespace.jwt] section"],
        ),
        (
            "jwt without auth",
            "[[namespace]]\nname = \"/a\"\n[namespace.jwt]\nalgorithm = \"HS256\"\nsecret_env = \"S\"",
            &["test.toml:", "auth = \"none\""],
        ),
        (
            "bad algorithm",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"none\"",
            &["test.toml:5:13:", "not supported"],
        ),
        (
            "jwks algorithm none",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = [\"RS256\", \"none\"]\njwks_url = \"https://idp.example/jwks\"",
            &["test.toml:5:13:", "\"none\" is not supported"],
        ),
        (
            "algorithm list without jwks",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = [\"RS256\", \"ES256\"]\npublic_key_file = \"x.pem\"",
            &["test.toml:5:13:", "a list of algorithms needs a key set"],
        ),
        (
            "empty algorithm list",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = []\njwks_url = \"https://idp.example/jwks\"",
            &["test.toml:5:13:", "non-empty list"],
        ),
        (
            "mixed hmac and public",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = [\"HS256\", \"RS256\"]\njwks_url = \"https://idp.example/jwks\"",
            &["test.toml:5:13:", "mixes HMAC"],
        ),
        (
            "jwks url not a url",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"\njwks_url = \"idp.example/jwks\"",
            &["test.toml:6:12:", "jwt.jwks_url: not a URL"],
        ),
        (
            "jwks url no host",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"\njwks_url = \"/jwks\"",
            &["test.toml:6:12:", "needs a scheme and a host"],
        ),
        (
            "jwks url and durations all reported",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"\njwks_url = \"http://idp.example/jwks\"\njwks_timeout_ms = 0",
            &[
                "test.toml:6:12:",
                "loopback",
                "test.toml:7:19:",
                "jwks_timeout_ms must be greater than 0",
            ],
        ),
        (
            "jwks url ftp",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"\njwks_url = \"ftp://idp.example/jwks\"",
            &["test.toml:6:12:", "the scheme must be https"],
        ),
        (
            "jwks url http remote",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"\njwks_url = \"http://idp.example/jwks\"",
            &["test.toml:6:12:", "http is only allowed to a loopback host"],
        ),
        (
            "jwks url credentials",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"\njwks_url = \"https://me:pw@idp.example/jwks\"",
            &["test.toml:6:12:", "credentials"],
        ),
        (
            "jwks url and file",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"\njwks_url = \"https://idp.example/jwks\"\njwks_file = \"jwks.json\"",
            &["test.toml:7:13:", "not both"],
        ),
        (
            "jwks with a key file",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"\njwks_url = \"https://idp.example/jwks\"\npublic_key_file = \"x.pem\"",
            &[
                "test.toml:7:19:",
                "public_key_file cannot be used with a key set",
            ],
        ),
        (
            "jwks file missing",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"\njwks_file = \"no-such-jwks.json\"",
            &["test.toml:6:13:", "cannot read jwks_file"],
        ),
        (
            "jwks keys without jwks",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"\npublic_key_file = \"tests/keys/rs256-public.pem\"\njwks_grace_ms = 10",
            &[
                "test.toml:7:17:",
                "jwt.jwks_grace_ms needs jwks_url or jwks_file",
            ],
        ),
        (
            "jwks refresh zero",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"\njwks_url = \"https://idp.example/jwks\"\njwks_refresh_ms = 0",
            &["test.toml:7:19:", "jwks_refresh_ms must be greater than 0"],
        ),
        (
            "jwks min over max",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"\njwks_url = \"https://idp.example/jwks\"\njwks_refresh_min_ms = 5000\njwks_refresh_max_ms = 1000",
            &["test.toml:7:", "must not exceed jwks_refresh_max_ms"],
        ),
        (
            "jwks timeout too long",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"\njwks_url = \"https://idp.example/jwks\"\njwks_timeout_ms = 600000",
            &["test.toml:7:19:", "at most 60000"],
        ),
        (
            "jwks grace too long",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"\njwks_url = \"https://idp.example/jwks\"\njwks_grace_ms = 86400001",
            &["test.toml:7:17:", "at most 86400000"],
        ),
        (
            "hs without secret",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"HS256\"",
            &["test.toml:5:", "needs secret_env"],
        ),
        (
            "bad env name",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"HS256\"\nsecret_env = \"MY-SECRET\"",
            &["test.toml:6:14:", "not an environment variable name"],
        ),
        (
            "hs with key file",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"HS256\"\nsecret_env = \"S\"\npublic_key_file = \"x.pem\"",
            &["test.toml:7:", "not public_key_file"],
        ),
        (
            "rs without key file",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"",
            &["test.toml:5:", "needs public_key_file"],
        ),
        (
            "missing key file",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"\npublic_key_file = \"nope.pem\"",
            &["test.toml:6:19:", "cannot read public_key_file", "nope.pem"],
        ),
        (
            "private key file",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"\npublic_key_file = \"tests/keys/rs256-private.pem\"",
            &["test.toml:6:", "private key"],
        ),
        (
            "wrong curve",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"ES256\"\npublic_key_file = \"tests/keys/es384-public.pem\"",
            &["test.toml:6:", "ES256"],
        ),
        (
            "leeway too large",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"\npublic_key_file = \"tests/keys/rs256-public.pem\"\nleeway_seconds = 86400",
            &["test.toml:7:", "at most 3600"],
        ),
        (
            "bad audience",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"\npublic_key_file = \"tests/keys/rs256-public.pem\"\naudience = []",
            &["test.toml:7:", "non-empty list"],
        ),
        (
            "claims without auth",
            "[[namespace]]\nname = \"/a\"\nrequired_claims = { role = \"admin\" }",
            &["test.toml:3:", "required_claims needs auth"],
        ),
        (
            "empty claim list",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\nrequired_claims = { role = [] }\n[namespace.jwt]\nalgorithm = \"HS256\"\nsecret_env = \"S\"",
            &["test.toml:4:", "non-empty list"],
        ),
        (
            "table claim",
            "[[namespace]]\nname = \"/a\"\nauth = \"required\"\nrequired_claims = { role = { x = 1 } }\n[namespace.jwt]\nalgorithm = \"HS256\"\nsecret_env = \"S\"",
            &["test.toml:4:", "required_claims.role"],
        ),
        (
            "template without claims",
            "[[namespace]]\nname = \"/a\"\nauto_join = [\"user:{sub}\"]",
            &["test.toml:3:14:", "no claims"],
        ),
        (
            "bad template",
            "[[namespace]]\nname = \"/a\"\nauto_join = [\"user:{sub\"]",
            &["test.toml:3:14:", "unclosed"],
        ),
        (
            "star in auto_join",
            "[[namespace]]\nname = \"/a\"\nauto_join = [\"room*\"]",
            &["test.toml:3:", "`*`"],
        ),
        (
            "rate zero",
            "[[namespace]]\nname = \"/a\"\nrate_limit = { per_second = 0 }",
            &["test.toml:3:", "per_second must be between 1"],
        ),
        (
            "rate window zero",
            "[[namespace]]\nname = \"/a\"\nrate_limit = { per_second = 1, violation_window_ms = 0 }",
            &["violation_window_ms must be greater than 0"],
        ),
        (
            "rate unknown key",
            "[[namespace]]\nname = \"/a\"\nrate_limit = { per_second = 1, brust = 2 }",
            &["test.toml:3:", "unknown field `brust`"],
        ),
        (
            "rate reserved event",
            "[[namespace]]\nname = \"/a\"\nrate_limit = { per_second = 1, error_event = \"disconnect\" }",
            &["reserved"],
        ),
        (
            "forward timeout",
            "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"forward\"\ntimeout_ms = 0",
            &["test.toml:6:14:", "timeout_ms must be between 1 and 600000"],
        ),
        (
            "forward with a room",
            "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"forward\"\nroom_arg = 0",
            &["`room_arg` does not apply to action \"forward\""],
        ),
        (
            "presence on a pattern",
            "[[namespace]]\npattern = \"^/t-\\\\d+$\"\npresence = { rooms = true }",
            &["presence is only available on namespaces with a fixed name"],
        ),
        (
            "presence event reserved",
            "[[namespace]]\nname = \"/a\"\npresence = { event = \"connect\" }",
            &["presence.event"],
        ),
        (
            "unknown action",
            "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"jump\"",
            &["test.toml:5:10:", "unknown variant `jump`"],
        ),
        (
            "missing action",
            "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"",
            &["test.toml:", "missing field `action`"],
        ),
        (
            "unknown event key",
            "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"join\"\nroom = 0",
            &["test.toml:6:1:", "unknown field `room`"],
        ),
        (
            "duplicate event",
            "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"join\"\n[[namespace.event]]\nname = \"x\"\naction = \"leave\"",
            &["test.toml:7:8:", "two rules (first at line 4)"],
        ),
        (
            "reserved event",
            "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"disconnect\"\naction = \"echo\"",
            &["test.toml:4:8:", "reserved by Socket.IO"],
        ),
        (
            "empty event",
            "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"\"\naction = \"echo\"",
            &["non-empty name"],
        ),
        (
            "field for other action",
            "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"relay\"\nmax_members = 3",
            &[
                "test.toml:6:15:",
                "`max_members` does not apply to action \"relay\" (only to: join)",
            ],
        ),
        (
            "room_arg negative",
            "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"join\"\nroom_arg = -1",
            &["test.toml:6:12:", "negative"],
        ),
        (
            "room_arg bad path",
            "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"join\"\nroom_arg = \"room\"",
            &["test.toml:6:12:", "room_arg"],
        ),
        (
            "room_arg bool",
            "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"join\"\nroom_arg = true",
            &["room_arg must be"],
        ),
        (
            "allow empty",
            "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"join\"\nallow = []",
            &["test.toml:6:9:", "permits no room"],
        ),
        (
            "allow claim without auth",
            "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"join\"\nallow = [\"u:{sub}\"]",
            &["test.toml:6:10:", "no claims"],
        ),
        (
            "deny bad template",
            "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"join\"\ndeny = [\"a}\"]",
            &["test.toml:6:9:", "deny pattern"],
        ),
        (
            "max_members zero",
            "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"join\"\nmax_members = 0",
            &["test.toml:6:15:", "max_members must be greater than 0"],
        ),
        (
            "reserved as_event",
            "[[namespace]]\nname = \"/a\"\n[[namespace.event]]\nname = \"x\"\naction = \"echo\"\nas_event = \"connect\"",
            &["test.toml:6:12:", "reserved"],
        ),
    ];
    for (name, text, want) in cases {
        let msg = err(text);
        for w in *want {
            assert!(msg.contains(w), "{name}: {w:?} not in:\n{msg}");
        }
    }
}

#[test]
fn all_problems_are_reported_together() {
    let msg = err(
        "[server]\nping_interval_ms = 0\n[[namespace]]\nname = \"x\"\n[[namespace]]\npattern = \"(\"",
    );
    let lines: Vec<&str> = msg.lines().collect();
    assert_eq!(lines.len(), 3, "{msg}");
    assert!(lines[0].starts_with("test.toml:2:"), "{msg}");
    assert!(lines[1].starts_with("test.toml:4:"), "{msg}");
    assert!(lines[2].starts_with("test.toml:6:"), "{msg}");
}

#[test]
fn namespaces_and_rules_are_compiled() {
    let c = parse(
        r#"
            [[namespace]]
            name = "/chat"
            max_rooms = 5
            rate_limit = { per_second = 2, max_violations = 0 }
            [[namespace.event]]
            name = "join"
            action = "join"
            allow = ["*"]
            deny = ["user:*"]
            max_members = 10
            announce = "joined"
            [[namespace.event]]
            name = "say"
            action = "relay"
            room_arg = "0.room"
            [[namespace.event]]
            name = "all"
            action = "broadcast"
            include_sender = true
            as_event = "everyone"
            [[namespace.event]]
            name = "ping"
            action = "echo"
            as_event = "pong"

            [[namespace]]
            pattern = "/tenant-[a-z0-9]+"
            "#,
    )
    .unwrap();
    let chat = c.namespace("/chat").unwrap();
    assert_eq!(chat.max_rooms, 5);
    let rl = chat.rate_limit.as_ref().unwrap();
    assert_eq!(rl.settings.per_second, 2);
    assert_eq!(rl.settings.burst, 2);
    assert_eq!(rl.settings.max_violations, 0);
    assert_eq!(rl.error_event.as_deref(), Some("error"));
    let Action::Join(join) = &chat.event("join").unwrap().action else {
        panic!()
    };
    assert_eq!(join.max_members, 10);
    assert_eq!(join.announce.as_deref(), Some("joined"));
    assert_eq!(join.room.room_arg, ArgPath::index(0));
    assert_eq!(join.room.allow.len(), 1);
    let Action::Relay(relay) = &chat.event("say").unwrap().action else {
        panic!()
    };
    assert!(relay.member_only, "member_only defaults to true");
    assert!(!relay.include_sender);
    assert_eq!(relay.room.room_arg.to_string(), "0.room");
    let Action::Broadcast(b) = &chat.event("all").unwrap().action else {
        panic!()
    };
    assert!(b.include_sender);
    assert_eq!(b.as_event.as_deref(), Some("everyone"));
    let Action::Echo(e) = &chat.event("ping").unwrap().action else {
        panic!()
    };
    assert_eq!(e.as_event.as_deref(), Some("pong"));

    // Patterns are anchored.
    assert!(c.namespace("/tenant-abc1").is_some());
    assert!(c.namespace("/tenant-ABC").is_none());
    assert!(c.namespace("/x/tenant-abc").is_none());
    assert!(c.namespace("/tenant-abc/x").is_none());
}

#[test]
fn jwt_with_public_key_and_claims() {
    let c = parse(
        r#"
            [[namespace]]
            name = "/admin"
            auth = "required"
            auto_join = ["user:{sub}", "admins"]
            required_claims = { role = "admin", tier = ["gold", "silver"], level = 3 }
            [namespace.jwt]
            algorithm = "ES256"
            public_key_file = "tests/keys/es256-public.pem"
            issuer = "https://auth.example"
            audience = ["switchboard", "admin"]
            leeway_seconds = 5
            "#,
    )
    .unwrap();
    let ns = c.namespace("/admin").unwrap();
    let jwt = ns.jwt.as_ref().unwrap();
    assert_eq!(jwt.algorithm, Algorithm::ES256);
    assert!(jwt.key.is_some());
    assert_eq!(jwt.issuers, ["https://auth.example"]);
    assert_eq!(jwt.audiences, ["switchboard", "admin"]);
    assert_eq!(jwt.leeway_seconds, 5);
    assert_eq!(ns.auto_join.len(), 2);
    let claims: Vec<(&str, Vec<Value>)> = ns
        .required_claims
        .iter()
        .map(|r| (r.name.as_str(), r.accepted.clone()))
        .collect();
    assert_eq!(
        claims,
        vec![
            ("level", vec![json!(3)]),
            ("role", vec![json!("admin")]),
            ("tier", vec![json!("gold"), json!("silver")]),
        ]
    );
}

const HS_NS: &str = r#"
        [[namespace]]
        name = "/admin"
        auth = "required"
        [namespace.jwt]
        algorithm = "HS256"
        secret_env = "ADMIN_SECRET"
    "#;

#[test]
fn secrets_table() {
    // (name, env, expected host, port (untouched), or error substrings)
    type Case = (
        &'static str,
        &'static [(&'static str, &'static str)],
        Result<(&'static str, u16), &'static [&'static str]>,
    );
    let cases: &[Case] = &[
        (
            "nothing set",
            &[("ADMIN_SECRET", SECRET)],
            Ok(("127.0.0.1", 3000)),
        ),
        (
            "missing secret",
            &[],
            Err(&[
                "test.toml:7:22:",
                "namespace \"/admin\"",
                "ADMIN_SECRET is not set",
            ]),
        ),
        (
            "empty secret",
            &[("ADMIN_SECRET", "")],
            Err(&["ADMIN_SECRET is empty"]),
        ),
        (
            "weak secret",
            &[("ADMIN_SECRET", "hunter2")],
            Err(&["ADMIN_SECRET", "7 bytes long; it must be at least 32"]),
        ),
        (
            "other variables are not read here",
            &[
                ("ADMIN_SECRET", SECRET),
                ("SWITCHBOARD_HOST", "a b"),
                ("PORT", "x"),
            ],
            Ok(("127.0.0.1", 3000)),
        ),
    ];
    for (name, env, want) in cases {
        let mut c = parse(HS_NS).unwrap();
        assert!(c.namespaces[0].jwt.as_ref().unwrap().key.is_none());
        let got = c.apply_env(env_of(env));
        match (got, want) {
            (Ok(()), Ok((host, port))) => {
                assert_eq!(
                    (c.server.host.as_str(), c.server.port),
                    (*host, *port),
                    "{name}"
                );
                assert!(
                    c.namespaces[0].jwt.as_ref().unwrap().key.is_some(),
                    "{name}"
                );
            }
            (Err(e), Err(subs)) => {
                let msg = e.to_string();
                assert!(matches!(e, ConfigError::Env(_)), "{name}");
                for s in *subs {
                    assert!(msg.contains(s), "{name}: {s:?} not in {msg}");
                }
                assert!(!msg.contains("hunter2"), "{name}: secret leaked: {msg}");
            }
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn secret_vars_lists_needed_variables() {
    assert_eq!(parse(HS_NS).unwrap().secret_vars(), ["ADMIN_SECRET"]);
}

#[test]
fn from_file_names_the_file_and_resolves_keys_next_to_it() {
    let dir = std::env::temp_dir().join(format!("switchboard-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = include_str!("../../tests/keys/rs256-public.pem");
    std::fs::write(dir.join("jwt.pem"), key).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\nalgorithm = \"RS256\"\npublic_key_file = \"jwt.pem\"\n",
    )
    .unwrap();
    let c = Config::from_file(&good).unwrap();
    assert_eq!(
        c.namespaces[0].jwt.as_ref().unwrap().key_source,
        KeySource::PublicKeyFile {
            path: dir.join("jwt.pem")
        }
    );
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[server]\nport = 1\nportt = 2\n").unwrap();
    let msg = Config::from_file(&bad).unwrap_err().to_string();
    assert!(msg.starts_with(&format!("{}:3:1:", bad.display())), "{msg}");
    let missing = Config::from_file(dir.join("missing.toml")).unwrap_err();
    assert!(matches!(missing, ConfigError::Read { .. }));
    assert!(missing.to_string().contains("missing.toml"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn runtime_options_follow_the_server_section() {
    let d = ServerConfig::default();
    let (e, ed) = (d.engine_config(), crate::engine::Config::default());
    assert_eq!(
        (
            e.ping_interval,
            e.ping_timeout,
            e.max_payload,
            e.upgrade_timeout
        ),
        (
            ed.ping_interval,
            ed.ping_timeout,
            ed.max_payload,
            ed.upgrade_timeout
        )
    );
    assert_eq!(
        (
            e.max_queued_frames,
            e.allow_polling,
            e.allow_websocket,
            e.max_connections_per_ip
        ),
        (
            ed.max_queued_frames,
            ed.allow_polling,
            ed.allow_websocket,
            ed.max_connections_per_ip
        )
    );
    assert_eq!(
        Config::builtin().unwrap().sio_config().connect_timeout,
        crate::sio::Config::default().connect_timeout
    );
    let c = parse(
        "[server]\ntransports = [\"websocket\"]\nmax_payload_bytes = 10\n[server.cors]\nallowed_origins = [\"https://a.b\"]\ncredentials = true",
    )
    .unwrap();
    let e = c.server.engine_config();
    assert!(!e.allow_polling && e.allow_websocket);
    assert_eq!(e.max_payload, 10);
    let cors = c.server.http_cors();
    assert_eq!(
        (cors.origins, cors.credentials),
        (vec!["https://a.b".to_owned()], true)
    );
    let any = parse("[server.cors]\nallowed_origins = [\"*\"]").unwrap();
    assert_eq!(any.server.http_cors().origins, ["*"]);
    assert!(parse("").unwrap().server.http_cors().origins.is_empty());
}

#[test]
fn recovery_is_off_unless_set_and_has_socket_io_defaults() {
    let c = parse("[[namespace]]\nname = \"/a\"\n").unwrap();
    assert_eq!(c.namespaces[0].recovery, None);
    let c = parse("[[namespace]]\nname = \"/a\"\n[namespace.recovery]\n").unwrap();
    assert_eq!(
        c.namespaces[0].recovery,
        Some(RecoveryRule {
            window: DEFAULT_RECOVERY_WINDOW,
            skip_middlewares: true,
            max_replay_packets: DEFAULT_MAX_REPLAY_PACKETS,
            max_replay_bytes: DEFAULT_MAX_REPLAY_BYTES,
        })
    );
    let c = parse(
        "[[namespace]]\nname = \"/a\"\n[namespace.recovery]\nenabled = false\nmax_disconnection_ms = 5\n",
    )
    .unwrap();
    assert_eq!(c.namespaces[0].recovery, None);
    let c = parse(
        "[[namespace]]\nname = \"/a\"\n[namespace.recovery]\nmax_disconnection_ms = 5000\nskip_middlewares = false\nmax_replay_packets = 10\nmax_replay_bytes = 1000\n",
    )
    .unwrap();
    let r = c.namespaces[0].recovery.unwrap();
    assert_eq!(r.window, Duration::from_millis(5000));
    assert!(!r.skip_middlewares);
    assert_eq!((r.max_replay_packets, r.max_replay_bytes), (10, 1000));
    // The demo /chat has it on.
    let builtin = Config::builtin().unwrap();
    let chat = builtin
        .namespaces
        .iter()
        .find(|n| matches!(&n.matcher, NamespaceMatch::Static(s) if s == "/chat"))
        .unwrap();
    assert!(chat.recovery.is_some());
}

#[test]
fn recovery_problems_are_located_and_bounded_by_the_outbound_queue() {
    let e = err("[[namespace]]\npattern = \"^/x\"\n[namespace.recovery]\n");
    assert!(
        e.contains("test.toml:3:1")
            && e.contains("recovery is only available on namespaces with a fixed name"),
        "{e}"
    );
    let e = err("[[namespace]]\nname = \"/a\"\n[namespace.recovery]\nmax_disconnection_ms = 0\n");
    assert!(
        e.contains("test.toml:4:24")
            && e.contains("recovery.max_disconnection_ms must be greater than 0"),
        "{e}"
    );
    let e = err(
        "[server]\noutbound_queue_max_messages = 100\n[[namespace]]\nname = \"/a\"\n[namespace.recovery]\nmax_replay_packets = 50\n",
    );
    assert!(
        e.contains("test.toml:6:22")
            && e.contains("at most (server.outbound_queue_max_messages - 16) / 2 = 42"),
        "{e}"
    );
    let e =
        err("[[namespace]]\nname = \"/a\"\n[namespace.recovery]\nmax_replay_bytes = 100000000\n");
    assert!(
        e.contains("max_replay_bytes must be at most 8388608"),
        "{e}"
    );
    let e = err("[[namespace]]\nname = \"/a\"\n[namespace.recovery]\nwindow = 1\n");
    assert!(e.contains("unknown field `window`"), "{e}");
}

#[test]
fn jwks_settings() {
    let text = "[[namespace]]\nname = \"/a\"\nauth = \"required\"\n[namespace.jwt]\n\
                algorithm = [\"RS256\", \"ES256\", \"RS256\"]\njwks_url = \"http://127.0.0.1:8080/jwks\"\n\
                jwks_refresh_ms = 60000\njwks_refresh_min_ms = 1000\njwks_refresh_max_ms = 3600000\n\
                jwks_unknown_kid_interval_ms = 2000\njwks_grace_ms = 300000\njwks_timeout_ms = 3000\n\
                [[namespace]]\nname = \"/b\"\nauth = \"optional\"\n[namespace.jwt]\n\
                algorithm = \"ES256\"\njwks_url = \"http://idp.internal/jwks\"\njwks_allow_http = true\n";
    let c = Config::from_str(text, "test.toml").unwrap();
    let jwt = c.namespaces[0].jwt.as_ref().unwrap();
    assert_eq!(jwt.algorithms, vec![Algorithm::RS256, Algorithm::ES256]);
    assert!(jwt.key.is_none());
    let s = jwt.jwks.as_ref().unwrap().settings();
    assert_eq!(
        s.origin,
        crate::jwks::Origin::Url("http://127.0.0.1:8080/jwks".parse().unwrap())
    );
    assert_eq!(jwt.key_source, KeySource::Jwks(s.origin.clone()));
    assert_eq!(s.refresh, Duration::from_secs(60));
    assert_eq!(s.min_refresh, Duration::from_secs(1));
    assert_eq!(s.max_refresh, Duration::from_secs(3600));
    assert_eq!(s.unknown_kid_interval, Duration::from_secs(2));
    assert_eq!(s.grace, Duration::from_secs(300));
    assert_eq!(s.timeout, Duration::from_secs(3));
    let b = c.namespaces[1].jwt.as_ref().unwrap().jwks.as_ref().unwrap();
    assert_eq!(b.settings().grace, crate::jwks::DEFAULT_GRACE);
    assert_eq!(b.settings().refresh, crate::jwks::DEFAULT_REFRESH);
    assert_eq!(c.jwks_sources().len(), 2);
    assert!(c.secret_vars().is_empty());
}
