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

/// A fresh directory for one test's files (removed by the test).
fn temp_dir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("switchboard-cli-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn print_config_prints_a_file_check_config_accepts() {
    let (_, gateway) = BINARIES[0];
    let out = run(gateway, &["print-config"], &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("[server]"), "{out:?}");
    let dir = temp_dir("print");
    let file = dir.join("my.toml");
    std::fs::write(&file, &out.stdout).expect("write");
    let path = file.to_str().expect("utf-8 path");
    let out = run(gateway, &["check-config", path], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout).trim(), format!("{path}: valid"));
    // Still the file the gateway runs with (the positional CONFIG is not taken for a command):
    // a bad environment makes the same file fail the check, as it would fail the start.
    let out = run(
        gateway,
        &["check-config", path],
        &[("SWITCHBOARD_HEARTBEAT_MS", "x")],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).contains("SWITCHBOARD_HEARTBEAT_MS"),
        "{out:?}"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn check_config_lists_every_problem_and_starts_nothing() {
    let (_, gateway) = BINARIES[0];
    let dir = temp_dir("check");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nport = 3000\nping_interval_ms = 0\n\n[limits]\nmax_namespaces = 0\n\n\
         [cluster]\nheartbeat_ms = \"x\"\n",
    )
    .expect("write");
    let origin = bad.display().to_string();
    // SWITCHBOARD_CONFIG names another file: the command's FILE is the one checked.
    let out = run(
        gateway,
        &["check-config", &origin],
        &[("SWITCHBOARD_CONFIG", "/nonexistent.toml")],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = text(&out.stderr);
    for at in ["3:20", "6:18", "9:16"] {
        let want = format!("{origin}:{at}: ");
        assert!(stderr.contains(&want), "{want} missing from\n{stderr}");
    }
    assert!(text(&out.stdout).is_empty(), "{out:?}");
    // A valid file whose ports are taken: the check binds nothing, so it passes (serving it
    // could not).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let good = dir.join("taken.toml");
    std::fs::write(
        &good,
        format!("[server]\nport = {port}\n\n[operator]\nport = {port}\n"),
    )
    .expect("write");
    let out = run(
        gateway,
        &["check-config", good.to_str().expect("utf-8")],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // A missing file is a problem too, and a missing FILE a usage error.
    let out = run(gateway, &["check-config", "/nonexistent.toml"], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("/nonexistent.toml"), "{out:?}");
    let out = run(gateway, &["check-config"], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("<FILE>"), "{out:?}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn the_broker_checks_its_configuration_too() {
    let (_, broker) = BINARIES[1];
    let dir = temp_dir("broker");
    let file = dir.join("broker.toml");
    std::fs::write(&file, "[nats]\nurl = \"nats://127.0.0.1:4222\"\n").expect("write");
    let path = file.to_str().expect("utf-8 path");
    let out = run(broker, &["check-config", path], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    std::fs::write(&file, "[broker]\nleader = \"raft\"\n").expect("write");
    let out = run(broker, &["check-config", path], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = text(&out.stderr);
    for want in [format!("{path}:2:10: "), "SWITCHBOARD_NATS_URL".to_owned()] {
        assert!(stderr.contains(&want), "{want} missing from\n{stderr}");
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// The subcommands and long flags `--help` lists for `args` (its `Commands:` and `Options:`
/// sections), without clap's own `help` command.
fn listed(bin: &str, args: &[&str]) -> (Vec<String>, Vec<String>) {
    let help = text(&run(bin, &[args, &["--help"]].concat(), &[]).stdout);
    let (mut commands, mut flags) = (Vec::new(), Vec::new());
    let mut section = "";
    for line in help.lines().filter(|l| !l.is_empty()) {
        if !line.starts_with(' ') {
            section = line;
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or("");
        match section {
            "Commands:" if first != "help" => commands.push(first.to_owned()),
            // The flags are in the line's spec, before the two spaces that start its help text.
            "Options:" | "Arguments:" => flags.extend(
                line.trim_start()
                    .split("  ")
                    .next()
                    .unwrap_or("")
                    .split([' ', ','])
                    .filter(|w| w.starts_with("--"))
                    .map(|w| w.split(['=', '[', '<']).next().unwrap_or(w).to_owned()),
            ),
            _ => {}
        }
    }
    (commands, flags)
}

#[test]
fn completions_name_every_command_and_flag() {
    for (name, bin) in BINARIES {
        let (commands, flags) = listed(bin, &[]);
        assert!(
            commands.contains(&"completions".to_owned()),
            "{name}: {commands:?}"
        );
        if name != "switchboard-admin" {
            assert!(
                commands.contains(&"check-config".to_owned()),
                "{name}: {commands:?}"
            );
        }
        // Each command's own flags are in the script too.
        let mut flags = flags;
        for command in &commands {
            flags.extend(listed(bin, &[command]).1);
        }
        assert!(flags.contains(&"--version".to_owned()), "{name}: {flags:?}");
        for shell in ["bash", "zsh", "fish"] {
            let out = run(bin, &["completions", shell], &[]);
            assert!(out.status.success(), "{name} {shell}: {out:?}");
            let script = text(&out.stdout);
            assert!(script.contains(name), "{name} {shell}: no command name");
            for word in commands.iter().chain(&flags) {
                // fish names long flags without their dashes (`-l version`).
                let bare = word.trim_start_matches('-');
                assert!(
                    script.contains(word.as_str()) || (shell == "fish" && script.contains(bare)),
                    "{name} {shell}: {word} missing"
                );
            }
        }
        let out = run(bin, &["completions", "tcsh"], &[]);
        assert_eq!(out.status.code(), Some(2), "{name}: {out:?}");
    }
}

#[test]
fn the_configuration_file_is_still_the_first_argument_or_the_variable() {
    let (_, gateway) = BINARIES[0];
    let dir = temp_dir("positional");
    // Named like a command: given as a path, it is a configuration file.
    let file = dir.join("check-config");
    std::fs::write(&file, "[server]\nping_interval_ms = 0\n").expect("write");
    let path = file.to_str().expect("utf-8 path");
    let want = format!("{path}:2:20: ");
    for (args, env) in [
        (&[path][..], &[][..]),
        (&[], &[("SWITCHBOARD_CONFIG", path)][..]),
    ] {
        let out = run(gateway, args, env);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {out:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(&want), "{args:?} {env:?}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
