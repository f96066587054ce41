//! `switchboard-admin token`: mints a JWT a namespace accepts, signed with the namespace's
//! configured HMAC secret (as Centrifugo's `gentoken`), for trying a configuration out and for
//! scripts.
//!
//! The key comes either from a gateway configuration file, read by the gateway's own loader
//! ([`Config::from_file`]): the `[namespace.jwt]` of the entry that applies to `--ns` gives the
//! algorithm and `secret_env`, and its `issuers` / `audiences` give `iss` / `aud` (the first of
//! each); or directly from `--secret-env VAR --alg HS256`. The secret is read from the process
//! environment (the variable the gateways read it from) and must be as long as the gateway
//! requires ([`auth::key_from_secret`]).
//!
//! Only HMAC secrets can be used: a namespace that verifies with a public key (RS*, ES*, EdDSA,
//! a JWKS) is refused with a message, since the private key is not the gateway's to hold.
//! Every failure here is the operator's to fix, so it is a usage error (exit status 2).

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Map, Value};
use switchboard_gateway::auth::{self, Algorithm, Claims};
use switchboard_gateway::config::{Config, KeySource};

use crate::{UsageError, usage};

/// The longest `--ttl`: a year (a token that lives longer is a password).
const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// Mints a JWT for a namespace's HMAC key.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("key").required(true).args(["config", "secret_env"])))]
pub(crate) struct TokenArgs {
    /// A gateway configuration file: the key, algorithm, issuer and audience of --ns's
    /// [namespace.jwt] (the secret from its secret_env variable).
    #[arg(long, value_name = "FILE", requires = "ns", conflicts_with_all = ["secret_env", "alg"])]
    config: Option<PathBuf>,
    /// The namespace the token is for (with --config).
    #[arg(long, requires = "config")]
    ns: Option<String>,
    /// The environment variable holding the HMAC secret (instead of --config).
    #[arg(long, value_name = "VAR", requires = "alg")]
    secret_env: Option<String>,
    /// The algorithm (with --secret-env).
    #[arg(long, value_name = "ALG", value_parser = ["HS256", "HS384", "HS512"])]
    alg: Option<String>,
    /// The subject (`sub`): the user id.
    #[arg(long, value_name = "USER")]
    sub: String,
    /// How long the token is valid: N, Ns, Nm, Nh or Nd (at most 366d).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_ttl)]
    ttl: Duration,
    /// A further claim (repeatable); VALUE is taken as JSON when it parses (5, true, ["a"]),
    /// else as a string. It overrides the claims made from the other options.
    #[arg(long = "claim", value_name = "NAME=VALUE", value_parser = parse_claim)]
    claims: Vec<(String, Value)>,
}

/// Parses `--ttl`: a positive number of seconds, or a number with `s`, `m`, `h` or `d`.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let seconds_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: expected N, Ns, Nm, Nh or Nd (e.g. 1h)")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected N, Ns, Nm, Nh or Nd (e.g. 1h)"))?;
    let ttl = Duration::from_secs(n.saturating_mul(seconds_per));
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(format!("{text:?}: must be between 1s and 366d"));
    }
    Ok(ttl)
}

/// Parses `--claim NAME=VALUE`.
fn parse_claim(text: &str) -> Result<(String, Value), String> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(format!("{text:?}: expected NAME=VALUE"));
    };
    if name.is_empty() {
        return Err(format!("{text:?}: the claim name is empty"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((name.to_owned(), value))
}

/// Where the key is and what the namespace expects besides the signature.
struct Key {
    algorithm: Algorithm,
    var: String,
    issuer: Option<String>,
    audience: Option<String>,
    required: Vec<auth::RequiredClaim>,
}

/// The key of `--config FILE --ns NS`, through the gateway's configuration loader.
fn configured_key(path: &std::path::Path, ns: &str) -> Result<Key, UsageError> {
    let config = Config::from_file(path).map_err(|e| usage(e.to_string()))?;
    let shown = path.display();
    let entry = config
        .namespace(ns)
        .ok_or_else(|| usage(format!("{shown}: no [[namespace]] entry applies to {ns:?}")))?;
    let Some(jwt) = &entry.jwt else {
        return Err(usage(format!(
            "{shown}: namespace {ns:?} takes no token (auth = \"none\")"
        )));
    };
    let var = match &jwt.key_source {
        KeySource::SecretEnv { var, .. } => var.clone(),
        KeySource::PublicKeyFile { path } => {
            return Err(usage(format!(
                "{shown}: namespace {ns:?} verifies {:?} tokens with the public key {}; a token \
                 for it must be signed with the private key, which switchboard-admin does not \
                 hold (only HS256/HS384/HS512 secrets can be used here)",
                jwt.algorithm,
                path.display()
            )));
        }
        KeySource::Jwks(origin) => {
            return Err(usage(format!(
                "{shown}: namespace {ns:?} verifies tokens with the key set {origin}; a token \
                 for it must be signed by that set's issuer (only HS256/HS384/HS512 secrets can \
                 be used here)"
            )));
        }
    };
    Ok(Key {
        algorithm: jwt.algorithm,
        var,
        issuer: jwt.issuers.first().cloned(),
        audience: jwt.audiences.first().cloned(),
        required: entry.required_claims.clone(),
    })
}

impl TokenArgs {
    /// The signed token, with the secret read through `env` and `iat` = `now_unix`.
    pub(crate) fn mint(
        &self,
        env: impl Fn(&str) -> Option<String>,
        now_unix: u64,
    ) -> Result<String, UsageError> {
        let key = match (&self.config, &self.ns, &self.secret_env, &self.alg) {
            (Some(path), Some(ns), _, _) => configured_key(path, ns)?,
            (None, _, Some(var), Some(alg)) => Key {
                algorithm: alg
                    .parse()
                    .map_err(|_| usage(format!("--alg {alg}: not an algorithm")))?,
                var: var.clone(),
                issuer: None,
                audience: None,
                required: Vec::new(),
            },
            // clap's group and `requires` rule these out.
            _ => {
                return Err(usage(
                    "give --config FILE --ns NS, or --secret-env VAR --alg ALG",
                ));
            }
        };
        let secret = match env(&key.var) {
            None => {
                return Err(usage(format!(
                    "environment variable {} is not set; it must hold the {:?} secret the \
                     gateways verify with",
                    key.var, key.algorithm
                )));
            }
            Some(secret) if secret.is_empty() => {
                return Err(usage(format!("environment variable {} is empty", key.var)));
            }
            Some(secret) => secret,
        };
        // The gateway's own check (the algorithm is HMAC, the secret long enough).
        auth::key_from_secret(key.algorithm, secret.as_bytes())
            .map_err(|e| usage(format!("{}: {e}", key.var)))?;

        let mut claims = Map::new();
        claims.insert("sub".into(), Value::String(self.sub.clone()));
        claims.insert("iat".into(), now_unix.into());
        claims.insert(
            "exp".into(),
            now_unix.saturating_add(self.ttl.as_secs()).into(),
        );
        if let Some(iss) = key.issuer {
            claims.insert("iss".into(), Value::String(iss));
        }
        if let Some(aud) = key.audience {
            claims.insert("aud".into(), Value::String(aud));
        }
        for (name, value) in &self.claims {
            claims.insert(name.clone(), value.clone());
        }
        let checked = Claims::new(claims);
        for rule in &key.required {
            rule.check(&checked).map_err(|e| {
                usage(format!(
                    "the namespace would refuse this token: {e} (accepted: {}); add --claim {}=…",
                    Value::Array(rule.accepted.clone()),
                    rule.name
                ))
            })?;
        }
        auth::install_crypto_provider();
        jsonwebtoken::encode(
            &Header::new(key.algorithm),
            &checked.into_map(),
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .map_err(|e| usage(format!("cannot sign the token: {e}")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ttl_forms() {
        let cases = [
            ("90", Some(90)),
            ("90s", Some(90)),
            ("15m", Some(900)),
            ("1h", Some(3600)),
            ("7d", Some(7 * 86_400)),
            ("366d", Some(366 * 86_400)),
            ("367d", None),
            ("0", None),
            ("0h", None),
            ("", None),
            ("h", None),
            ("1w", None),
            ("-1h", None),
            ("1.5h", None),
            ("99999999999999999999", None),
            ("18446744073709551615d", None),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse_ttl(text).ok(),
                want.map(Duration::from_secs),
                "{text:?}"
            );
        }
    }

    #[test]
    fn claim_values_are_json_or_strings() {
        let cases = [
            ("role=admin", Some(("role", Value::from("admin")))),
            ("n=5", Some(("n", Value::from(5)))),
            ("ok=true", Some(("ok", Value::from(true)))),
            (
                r#"rooms=["a","b"]"#,
                Some(("rooms", serde_json::json!(["a", "b"]))),
            ),
            (r#"id="5""#, Some(("id", Value::from("5")))),
            ("eq=a=b", Some(("eq", Value::from("a=b")))),
            ("empty=", Some(("empty", Value::from("")))),
            ("=x", None),
            ("novalue", None),
        ];
        for (text, want) in cases {
            let got = parse_claim(text).ok();
            let want = want.map(|(k, v)| (k.to_owned(), v));
            assert_eq!(got, want, "{text:?}");
        }
    }
}
