//! The broker binary's configuration, from environment variables.
//!
//! Every value is read and validated here, before anything binds a port or connects; an error
//! names the variable. The lookup is a function so tests need not touch the process environment.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `SWITCHBOARD_NATS_URL` | (required) | NATS server URL(s), comma-separated |
//! | `SWITCHBOARD_NATS_USER`, `SWITCHBOARD_NATS_PASSWORD` | | NATS user and password |
//! | `SWITCHBOARD_NATS_PASSWORD_FILE` | | a file holding the password instead (a Secret volume) |
//! | `SWITCHBOARD_NATS_TOKEN` | | NATS token |
//! | `SWITCHBOARD_NATS_CREDS` | | path of a NATS `.creds` file |
//! | `SWITCHBOARD_NATS_NKEY_SEED_FILE` | | path of a file holding a NATS nkey seed (`SU...`) |
//! | `SWITCHBOARD_BROKER_HOST` | `127.0.0.1` | IP address the HTTP port binds |
//! | `SWITCHBOARD_BROKER_HTTP_PORT` | `9090` | HTTP port (`/health`, `/metrics`, `/v1/state`); 0 = any free port |
//! | `SWITCHBOARD_LEASE_MS` | `6000` | a gateway silent this long is lost; also the leader lease |
//! | `SWITCHBOARD_HEARTBEAT_MS` | `2000` | the gateways' heartbeat interval (must be below the lease) |
//! | `SWITCHBOARD_SUBJECT_PREFIX` | `sio` | NATS subject prefix of the cluster |
//! | `SWITCHBOARD_BROKER_ID` | random | this broker's id (`A-Z a-z 0-9 _ -`, at most 64) |
//! | `SWITCHBOARD_BROKER_LEADER` | `kv` | `kv` (JetStream lease, several brokers) or `always` (one broker) |

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use switchboard_bus::NatsOptions;
use switchboard_proto::subject::{DEFAULT_PREFIX, Subjects};

use crate::{BrokerConfig, LeaderMode};

/// Default HTTP port.
pub const DEFAULT_HTTP_PORT: u16 = 9090;
/// Default node lease.
pub const DEFAULT_LEASE: Duration = Duration::from_millis(6000);
/// Default gateway heartbeat interval.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(2000);
/// Longest broker id.
pub const MAX_ID_BYTES: usize = 64;

/// A configuration value that is missing or unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn err(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        message: message.into(),
    }
}

/// Everything the binary needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// How to reach NATS.
    pub nats: NatsOptions,
    /// Where the HTTP port binds.
    pub http: SocketAddr,
    /// The broker itself.
    pub broker: BrokerConfig,
}

impl Config {
    /// Reads the configuration through `var` (the process environment: `|k| std::env::var(k).ok()`).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &'static str| var(name).filter(|v| !v.is_empty());

        const URL: &str = "SWITCHBOARD_NATS_URL";
        let url = get(URL).ok_or_else(|| err(URL, "required (e.g. nats://127.0.0.1:4222)"))?;
        // The same variables as the gateway's, so one environment serves both tiers.
        const PASSWORD: &str = "SWITCHBOARD_NATS_PASSWORD";
        const PASSWORD_FILE: &str = "SWITCHBOARD_NATS_PASSWORD_FILE";
        let password = match (get(PASSWORD), get(PASSWORD_FILE)) {
            (Some(_), Some(_)) => {
                return Err(err(PASSWORD_FILE, "set with SWITCHBOARD_NATS_PASSWORD"));
            }
            (None, Some(path)) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|e| err(PASSWORD_FILE, format!("{path}: {e}")))?
                    .trim()
                    .to_owned(),
            ),
            (password, None) => password,
        };
        let user = match (get("SWITCHBOARD_NATS_USER"), password) {
            (Some(u), password) => Some((u, password.unwrap_or_default())),
            (None, Some(_)) => return Err(err(PASSWORD, "set without SWITCHBOARD_NATS_USER")),
            (None, None) => None,
        };
        let token = get("SWITCHBOARD_NATS_TOKEN");
        let file = |name: &'static str| match get(name).map(PathBuf::from) {
            Some(path) if !path.is_file() => Err(err(
                name,
                format!("{} is not a readable file", path.display()),
            )),
            path => Ok(path),
        };
        let credentials_file = file("SWITCHBOARD_NATS_CREDS")?;
        let nkey_seed_file = file("SWITCHBOARD_NATS_NKEY_SEED_FILE")?;

        const HOST: &str = "SWITCHBOARD_BROKER_HOST";
        let host: IpAddr = match get(HOST) {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(v) => v
                .parse()
                .map_err(|_| err(HOST, format!("{v:?} is not an IP address")))?,
        };
        const PORT: &str = "SWITCHBOARD_BROKER_HTTP_PORT";
        let port = match get(PORT) {
            None => DEFAULT_HTTP_PORT,
            Some(v) => v
                .parse::<u16>()
                .map_err(|_| err(PORT, format!("{v:?} is not a port number (0-65535)")))?,
        };

        let millis = |name: &'static str, default: Duration| -> Result<Duration, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(v) => match v.parse::<u64>() {
                    Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
                    _ => Err(err(
                        name,
                        format!("{v:?} is not a positive number of milliseconds"),
                    )),
                },
            }
        };
        const LEASE: &str = "SWITCHBOARD_LEASE_MS";
        let lease = millis(LEASE, DEFAULT_LEASE)?;
        let heartbeat = millis("SWITCHBOARD_HEARTBEAT_MS", DEFAULT_HEARTBEAT)?;
        if lease <= heartbeat {
            return Err(err(
                LEASE,
                format!(
                    "the lease ({} ms) must exceed SWITCHBOARD_HEARTBEAT_MS ({} ms)",
                    lease.as_millis(),
                    heartbeat.as_millis()
                ),
            ));
        }

        const PREFIX: &str = "SWITCHBOARD_SUBJECT_PREFIX";
        let prefix = get(PREFIX).unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
        Subjects::new(&prefix).map_err(|e| err(PREFIX, e.to_string()))?;

        const ID: &str = "SWITCHBOARD_BROKER_ID";
        let id = match get(ID) {
            None => random_id(),
            Some(v) => {
                let ok = v.len() <= MAX_ID_BYTES
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !ok {
                    return Err(err(
                        ID,
                        format!("{v:?}: expected 1 to {MAX_ID_BYTES} of A-Z a-z 0-9 _ -"),
                    ));
                }
                v
            }
        };

        const LEADER: &str = "SWITCHBOARD_BROKER_LEADER";
        let leader = match get(LEADER).as_deref() {
            None | Some("kv") => LeaderMode::KvLease,
            Some("always") => LeaderMode::Always,
            Some(v) => return Err(err(LEADER, format!("{v:?}: expected kv or always"))),
        };

        Ok(Config {
            nats: NatsOptions {
                url,
                name: format!("switchboard-broker {id}"),
                user,
                token,
                credentials_file,
                nkey_seed_file,
            },
            http: SocketAddr::new(host, port),
            broker: BrokerConfig {
                id,
                prefix,
                lease,
                heartbeat,
                leader,
            },
        })
    }
}

/// A short random id (`b` and 8 hex digits).
fn random_id() -> String {
    format!("b{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|k| env.get(k).cloned())
    }

    const URL: (&str, &str) = ("SWITCHBOARD_NATS_URL", "nats://127.0.0.1:4222");

    #[test]
    fn defaults() {
        let cfg = parse(&[URL]).expect("valid");
        assert_eq!(cfg.nats.url, "nats://127.0.0.1:4222");
        assert_eq!(cfg.http, "127.0.0.1:9090".parse().expect("addr"));
        assert_eq!(cfg.broker.lease, DEFAULT_LEASE);
        assert_eq!(cfg.broker.heartbeat, DEFAULT_HEARTBEAT);
        assert_eq!(cfg.broker.prefix, "sio");
        assert_eq!(cfg.broker.leader, LeaderMode::KvLease);
        assert!(cfg.broker.id.starts_with('b') && cfg.broker.id.len() == 9);
        assert_eq!(cfg.nats.user, None);
    }

    #[test]
    fn explicit_values() {
        let cfg = parse(&[
            URL,
            ("SWITCHBOARD_NATS_USER", "u"),
            ("SWITCHBOARD_NATS_PASSWORD", "p:w"),
            ("SWITCHBOARD_NATS_TOKEN", "t"),
            ("SWITCHBOARD_BROKER_HOST", "::1"),
            ("SWITCHBOARD_BROKER_HTTP_PORT", "0"),
            ("SWITCHBOARD_LEASE_MS", "1200"),
            ("SWITCHBOARD_HEARTBEAT_MS", "200"),
            ("SWITCHBOARD_SUBJECT_PREFIX", "test.x1"),
            ("SWITCHBOARD_BROKER_ID", "broker-1"),
            ("SWITCHBOARD_BROKER_LEADER", "always"),
        ])
        .expect("valid");
        assert_eq!(cfg.nats.user, Some(("u".to_owned(), "p:w".to_owned())));
        assert_eq!(cfg.nats.token.as_deref(), Some("t"));
        assert_eq!(cfg.http, "[::1]:0".parse().expect("addr"));
        assert_eq!(cfg.broker.lease, Duration::from_millis(1200));
        assert_eq!(cfg.broker.heartbeat, Duration::from_millis(200));
        assert_eq!(cfg.broker.prefix, "test.x1");
        assert_eq!(cfg.broker.id, "broker-1");
        assert_eq!(cfg.broker.leader, LeaderMode::Always);
    }

    #[test]
    fn nats_credentials_from_files() {
        let dir =
            std::env::temp_dir().join(format!("switchboard-broker-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let password = dir.join("password");
        std::fs::write(&password, "sbsecret\n").expect("write");
        let password = password.to_str().expect("utf-8 path");
        let cfg = parse(&[
            URL,
            ("SWITCHBOARD_NATS_USER", "broker"),
            ("SWITCHBOARD_NATS_PASSWORD_FILE", password),
            ("SWITCHBOARD_NATS_NKEY_SEED_FILE", password),
        ])
        .expect("valid");
        assert_eq!(
            cfg.nats.user,
            Some(("broker".to_owned(), "sbsecret".to_owned()))
        );
        assert_eq!(
            cfg.nats.nkey_seed_file.as_deref(),
            Some(std::path::Path::new(password))
        );
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[URL, ("SWITCHBOARD_NATS_PASSWORD_FILE", "/nonexistent/p")],
                "SWITCHBOARD_NATS_PASSWORD_FILE",
            ),
            (
                &[
                    URL,
                    ("SWITCHBOARD_NATS_PASSWORD", "p"),
                    ("SWITCHBOARD_NATS_PASSWORD_FILE", password),
                ],
                "SWITCHBOARD_NATS_PASSWORD_FILE",
            ),
            (
                &[URL, ("SWITCHBOARD_NATS_NKEY_SEED_FILE", "/nonexistent/s")],
                "SWITCHBOARD_NATS_NKEY_SEED_FILE",
            ),
        ];
        for (pairs, var) in cases {
            let e = parse(pairs).expect_err("invalid");
            assert_eq!(e.var, *var, "{e}");
            assert!(!e.to_string().contains("sbsecret"), "{e}");
        }
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "SWITCHBOARD_NATS_URL"),
            (
                &[URL, ("SWITCHBOARD_NATS_PASSWORD", "secret")],
                "SWITCHBOARD_NATS_PASSWORD",
            ),
            (
                &[URL, ("SWITCHBOARD_NATS_CREDS", "/nonexistent/x.creds")],
                "SWITCHBOARD_NATS_CREDS",
            ),
            (
                &[URL, ("SWITCHBOARD_BROKER_HOST", "localhost")],
                "SWITCHBOARD_BROKER_HOST",
            ),
            (
                &[URL, ("SWITCHBOARD_BROKER_HTTP_PORT", "70000")],
                "SWITCHBOARD_BROKER_HTTP_PORT",
            ),
            (
                &[URL, ("SWITCHBOARD_BROKER_HTTP_PORT", "-1")],
                "SWITCHBOARD_BROKER_HTTP_PORT",
            ),
            (
                &[URL, ("SWITCHBOARD_LEASE_MS", "0")],
                "SWITCHBOARD_LEASE_MS",
            ),
            (
                &[URL, ("SWITCHBOARD_LEASE_MS", "6s")],
                "SWITCHBOARD_LEASE_MS",
            ),
            (
                &[URL, ("SWITCHBOARD_HEARTBEAT_MS", "x")],
                "SWITCHBOARD_HEARTBEAT_MS",
            ),
            (
                &[
                    URL,
                    ("SWITCHBOARD_LEASE_MS", "2000"),
                    ("SWITCHBOARD_HEARTBEAT_MS", "2000"),
                ],
                "SWITCHBOARD_LEASE_MS",
            ),
            (
                &[URL, ("SWITCHBOARD_SUBJECT_PREFIX", "a b")],
                "SWITCHBOARD_SUBJECT_PREFIX",
            ),
            (
                &[URL, ("SWITCHBOARD_SUBJECT_PREFIX", "a..b")],
                "SWITCHBOARD_SUBJECT_PREFIX",
            ),
            (
                &[URL, ("SWITCHBOARD_BROKER_ID", "a.b")],
                "SWITCHBOARD_BROKER_ID",
            ),
            (
                &[URL, ("SWITCHBOARD_BROKER_LEADER", "raft")],
                "SWITCHBOARD_BROKER_LEADER",
            ),
        ];
        for (env, var) in cases {
            let e = parse(env).expect_err(var);
            assert_eq!(e.var, *var, "{e}");
            assert!(e.to_string().starts_with(var), "{e}");
        }
    }
}
