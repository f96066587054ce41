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
