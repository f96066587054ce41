//! Builds the official Socket.IO browser client into the gateway, for the demo page.
//!
//! The client is not in the repository: it is socket.io-client's own bundle
//! (`dist/socket.io.min.js`) from its npm tarball, fetched from registry.npmjs.org with `curl`
//! and checked against the pinned SHA-512 (npm's `integrity`) before anything is read from it.
//! The verified tarball is cached under the target directory, so a rebuild (debug or release,
//! any features) does not fetch it again.
//!
//! It must never fail the build: without network, without `curl`, or with
//! `SWITCHBOARD_CLIENT_FETCH=0`, it warns and writes an empty file, and the gateway serves the
//! client from `[server] client_js` (or a copy installed by the test suite's `npm ci`) instead;
//! the demo page says how to get one.
//!
//! Output: `$OUT_DIR/socket.io.min.js` (empty: none), read by `include_bytes!`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use sha2::{Digest as _, Sha512};

/// The pinned release (the e2e suite's `package-lock.json` resolves the same one).
const VERSION: &str = "4.8.4";
/// npm's `dist.integrity` of that release's tarball.
const INTEGRITY: &str = "sha512-7wjKAvVXYOJsbmUgkWbnhPD4bFpkqrUR0++XOjpGFmqDqsqV1CI93VTraeExLxpjxEqrWgFoSRZu1ihjLWfkAA==";
/// The bundle inside the tarball.
const ENTRY: &str = "package/dist/socket.io.min.js";
/// Larger than any tarball or bundle of this package (0.3 MB and 50 kB for 4.8.4).
const MAX_BYTES: u64 = 8 << 20;
/// How long the download may take.
const FETCH_SECONDS: &str = "60";
/// Set to `0` to build without the client (no network use).
const FETCH_VAR: &str = "SWITCHBOARD_CLIENT_FETCH";

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-env-changed={FETCH_VAR}");
    let off = std::env::var(FETCH_VAR).is_ok_and(|v| v == "0");
    let client = match if off { Ok(Vec::new()) } else { client(&out) } {
        Ok(js) => {
            // Once the client is in (or not wanted), nothing but this script or the variable
            // changes it.
            println!("cargo:rerun-if-changed=build.rs");
            js
        }
        Err(why) => {
            // A file that never exists: cargo runs the script again at the next build, which
            // retries the download.
            println!("cargo:rerun-if-changed={}", out.join("retry").display());
            println!(
                "cargo:warning=the demo page's Socket.IO client is not built in ({why}); the \
                 gateway serves [server] client_js or tests/e2e/node_modules' copy instead. The \
                 next build retries; {FETCH_VAR}=0 builds without it"
            );
            Vec::new()
        }
    };
    fs::write(out.join("socket.io.min.js"), client).expect("OUT_DIR is writable");
}

/// The bundle, from the cached tarball or a fresh download.
fn client(out: &Path) -> Result<Vec<u8>, String> {
    let cache = cache_dir(out);
    fs::create_dir_all(&cache).map_err(|e| format!("creating {}: {e}", cache.display()))?;
    let tarball = cache.join(format!("socket.io-client-{VERSION}.tgz"));
    let bytes = match fs::read(&tarball) {
        Ok(bytes) if verified(&bytes) => bytes,
        _ => {
            let bytes = download(&cache)?;
            if !verified(&bytes) {
                return Err(format!("the download does not match {INTEGRITY}"));
            }
            // Renamed into place whole: builds running at once never read half a file.
            let partial = cache.join(format!(
                "socket.io-client-{VERSION}.{}.partial",
                std::process::id()
            ));
            fs::write(&partial, &bytes)
                .and_then(|()| fs::rename(&partial, &tarball))
                .map_err(|e| format!("caching {}: {e}", tarball.display()))?;
            bytes
        }
    };
    unpack(&bytes)
}

/// `<target>/socket.io-client` when `out` has cargo's usual shape
/// (`<target>[/<triple>]/<profile>/build/<package>-<hash>/out`), else `out` itself.
fn cache_dir(out: &Path) -> PathBuf {
    match out.ancestors().nth(4) {
        Some(dir) if out.ancestors().nth(2).and_then(Path::file_name) == Some("build".as_ref()) => {
            dir.join("socket.io-client")
        }
        _ => out.join("socket.io-client"),
    }
}

fn verified(tarball: &[u8]) -> bool {
    let digest = base64::engine::general_purpose::STANDARD.encode(Sha512::digest(tarball));
    INTEGRITY.strip_prefix("sha512-") == Some(digest.as_str())
}

fn download(cache: &Path) -> Result<Vec<u8>, String> {
    let url =
        format!("https://registry.npmjs.org/socket.io-client/-/socket.io-client-{VERSION}.tgz");
    let target = cache.join(format!("download.{}.partial", std::process::id()));
    let status = Command::new("curl")
        .args(["--fail", "--silent", "--show-error", "--location"])
        .args(["--proto", "=https", "--max-time", FETCH_SECONDS])
        .args(["--max-filesize", &MAX_BYTES.to_string(), "--output"])
        .arg(&target)
        .arg(&url)
        .status()
        .map_err(|e| format!("cannot run curl to fetch {url}: {e}"))?;
    if !status.success() {
        return Err(format!("curl could not fetch {url} ({status})"));
    }
    let bytes = fs::read(&target).map_err(|e| format!("reading {}: {e}", target.display()))?;
    let _ = fs::remove_file(&target);
    Ok(bytes)
}

fn unpack(tarball: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tarball));
    let entries = archive
        .entries()
        .map_err(|e| format!("reading the tarball: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading the tarball: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("reading the tarball: {e}"))?;
        if path.as_ref() == Path::new(ENTRY) {
            let mut js = Vec::new();
            entry
                .take(MAX_BYTES)
                .read_to_end(&mut js)
                .map_err(|e| format!("unpacking {ENTRY}: {e}"))?;
            return Ok(js);
        }
    }
    Err(format!("{ENTRY} is not in the tarball"))
}
