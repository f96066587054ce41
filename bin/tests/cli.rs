//! Every binary is a command line: `--help` and `--version` answer and exit 0, help shows the
//! environment fallbacks, and a bad configuration exits 2 listing every problem.

use std::process::{Command, Output};

const BINARIES: [(&str, &str); 3] = [
    (
        "switchboard-gateway",
        env!("CARGO_BIN_EXE_switchboard-gateway"),
    ),
    (
        "switchboard-broker",
        env!("CARGO_BIN_EXE_switchboard-broker"),
    ),
    ("switchboard-admin", env!("CARGO_BIN_EXE_switchboard-admin")),
];

/// Runs `bin` with `args` and only the `env` given of Switchboard's variables.
fn run(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("SWITCHBOARD_") || k == "PORT" {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn version_prints_the_name_and_version() {
    for (name, bin) in BINARIES {
        let out = run(bin, &["--version"], &[]);
        assert!(out.status.success(), "{name}: {out:?}");
        let stdout = text(&out.stdout);
        assert_eq!(
            stdout.lines().next(),
            Some(format!("{name} {}", env!("CARGO_PKG_VERSION")).as_str()),
            "{name}: {stdout}"
        );
    }
}

#[test]
fn help_answers_and_shows_the_environment_fallbacks() {
    let wanted: [(&str, &[&str]); 3] = [
        ("switchboard-gateway", &["[env: SWITCHBOARD_CONFIG=]"]),
        ("switchboard-broker", &["[env: SWITCHBOARD_CONFIG=]"]),
        (
            "switchboard-admin",
            &[
                "[env: SWITCHBOARD_ADMIN_ADDR=]",
                "[env: SWITCHBOARD_ADMIN_TOKEN",
            ],
        ),
    ];
    for ((name, bin), (_, wanted)) in BINARIES.into_iter().zip(wanted) {
        let out = run(bin, &["--help"], &[]);
        assert!(out.status.success(), "{name}: {out:?}");
        let stdout = text(&out.stdout);
        assert!(stdout.contains("Usage:"), "{name}: {stdout}");
        for want in wanted {
            assert!(
                stdout.contains(want),
                "{name}: {want} missing from\n{stdout}"
            );
        }
    }
    // Every admin command answers --help too.
    let (_, admin) = BINARIES[2];
    for command in [
        "sockets",
        "stream",
        "rooms",
        "members",
        "presence",
        "history",
        "user-sockets",
        "stats",
        "kick",
        "broadcast",
        "emit",
        "join",
        "leave",
        "set-data",
        "token",
    ] {
        let out = run(admin, &[command, "--help"], &[]);
        assert!(out.status.success(), "{command}: {out:?}");
    }
}

/// An empty `SWITCHBOARD_CONFIG` counts as unset, like every other variable: the built-in
/// configuration is used (here with a bad variable beside it, so the gateway exits 2 on that
/// instead of starting), not a usage error.
#[test]
fn an_empty_config_variable_counts_as_unset() {
    for (name, bin) in &BINARIES[..2] {
        let out = run(
            bin,
            &[],
            &[
                ("SWITCHBOARD_CONFIG", ""),
                ("SWITCHBOARD_HEARTBEAT_MS", "x"),
            ],
        );
        assert_eq!(out.status.code(), Some(2), "{name}: {out:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("invalid configuration") && stderr.contains("SWITCHBOARD_HEARTBEAT_MS"),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn a_bad_configuration_exits_2_listing_every_problem() {
    let (_, gateway) = BINARIES[0];
    let out = run(
        gateway,
        &[],
        &[
            ("SWITCHBOARD_HEARTBEAT_MS", "x"),
            ("SWITCHBOARD_PORT", "99999"),
            ("SWITCHBOARD_LOG_FORMAT", "xml"),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = text(&out.stderr);
    for var in [
        "SWITCHBOARD_HEARTBEAT_MS",
        "SWITCHBOARD_PORT",
        "SWITCHBOARD_LOG_FORMAT",
    ] {
        assert!(stderr.contains(var), "{var} missing from\n{stderr}");
    }
    let (_, broker) = BINARIES[1];
    let dir = std::env::temp_dir().join(format!("switchboard-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("broker.toml");
    std::fs::write(&file, "[broker]\nleader = \"raft\"\nhttp_port = -1\n").expect("write");
    let out = run(broker, &[file.to_str().expect("utf-8 path")], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = text(&out.stderr);
    let origin = file.display().to_string();
    for want in [
        format!("{origin}:2:10: "),
        format!("{origin}:3:13: "),
        "SWITCHBOARD_NATS_URL".to_owned(),
    ] {
        assert!(stderr.contains(&want), "{want} missing from\n{stderr}");
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
