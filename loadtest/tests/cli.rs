//! `switchboard-loadtest` is a command line: `--help` (also of each scenario) and `--version`
//! answer and exit 0.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-loadtest");

#[test]
fn help_and_version() {
    let out = Command::new(BIN).arg("--version").output().expect("runs");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().next(),
        Some(concat!("switchboard-loadtest ", env!("CARGO_PKG_VERSION"))),
    );
    for args in [
        &["--help"][..],
        &["idle", "--help"],
        &["connect", "--help"],
        &["fanout", "--help"],
        &["cluster", "--help"],
        &["polling", "--help"],
        &["rooms", "--help"],
        &["floor", "--help"],
        &["admin", "--help"],
    ] {
        let out = Command::new(BIN).args(args).output().expect("runs");
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage:"),
            "{args:?}"
        );
    }
    let out = Command::new(BIN).arg("burst").output().expect("runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// A target on another machine is refused (exit 2, saying how to allow it) unless
/// `--allow-remote` is given (that it is then accepted is the parser's unit test: no traffic
/// leaves the machine from a test).
#[test]
fn remote_targets_need_allow_remote() {
    let args = [
        "fanout",
        "--url",
        "http://192.0.2.1:3000",
        "--pid",
        "4294967295",
        "--members",
        "1",
        "--rate",
        "1",
        "--seconds",
        "1",
        "--quiet",
    ];
    let out = Command::new(BIN).args(args).output().expect("runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("non-loopback target 192.0.2.1") && stderr.contains("--allow-remote"),
        "{stderr}"
    );
}
