//! What a JWKS server sends the gateway (`gateway/src/jwks.rs`): its `Cache-Control` header and
//! its body. The key material itself is parsed by `jsonwebtoken` (`Jwk`, `DecodingKey::from_jwk`);
//! this target checks what the gateway does around it:
//!
//! - `max_age` never panics; it answers only for a header naming `max-age`, `no-cache` or
//!   `no-store`, and a header naming none of them, followed by `, max-age=N`, gives exactly N;
//! - `parse_set` never panics; a set it accepts has 1 ..= `MAX_JWKS_KEYS` keys with distinct
//!   `kid`s, and each key serves a non-empty subset of the configured algorithms, all of the
//!   key's own family;
//! - the same body parses the same way twice (no hidden state).
#![no_main]

use std::time::Duration;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use switchboard_gateway::auth::Algorithm;
use switchboard_gateway::jwks::{MAX_JWKS_KEYS, max_age, parse_set};

const CONFIGS: [&[Algorithm]; 6] = [
    &[Algorithm::RS256],
    &[Algorithm::RS256, Algorithm::ES256],
    &[Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA],
    &[Algorithm::PS256, Algorithm::RS512],
    &[Algorithm::HS256],
    &[Algorithm::HS256, Algorithm::HS512],
];

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let header: &str = u.arbitrary()?;
    let lower = header.to_ascii_lowercase();
    let names_one = ["max-age", "no-cache", "no-store"]
        .iter()
        .any(|d| lower.contains(d));
    if max_age(header).is_some() {
        assert!(names_one, "{header:?}");
    }
    let n: u32 = u.arbitrary()?;
    if !names_one {
        assert_eq!(
            max_age(&format!("{header}, max-age={n}")),
            Some(Duration::from_secs(n.into())),
            "{header:?}"
        );
    }

    let algorithms = CONFIGS[usize::from(u.arbitrary::<u8>()?) % CONFIGS.len()];
    let body = u.bytes(u.len())?;
    let first = parse_set(body, algorithms);
    let again = parse_set(body, algorithms);
    match (&first, &again) {
        (Ok(a), Ok(b)) => {
            let kids = |ks: &[switchboard_gateway::jwks::Key]| {
                ks.iter()
                    .map(|k| k.kid().map(str::to_owned))
                    .collect::<Vec<_>>()
            };
            assert_eq!(kids(a), kids(b));
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("two parses of one body disagree"),
    }
    if let Ok(keys) = first {
        assert!(!keys.is_empty() && keys.len() <= MAX_JWKS_KEYS);
        for (i, k) in keys.iter().enumerate() {
            assert!(!k.algorithms().is_empty());
            let family = k.algorithms()[0].family();
            for a in k.algorithms() {
                assert!(algorithms.contains(a), "{a:?} is not configured");
                assert_eq!(a.family(), family);
            }
            assert!(
                keys[..i].iter().all(|o| o.kid() != k.kid()),
                "duplicate kid"
            );
        }
    }
    Ok(())
}
