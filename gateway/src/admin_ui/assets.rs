//! The Admin UI's files (`@socket.io/admin-ui`'s `ui/dist`), served under a mount path.
//!
//! The directory is read once, at start-up, into memory (bounded by [`MAX_FILES`] and
//! [`MAX_TOTAL_BYTES`]); a request is answered by a lookup in that table, never by opening a path
//! built from the request, so no request can reach a file outside the directory. Symbolic links
//! and anything but regular files and directories are skipped.

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;

/// The most files loaded (the package has about ten).
pub const MAX_FILES: usize = 256;
/// The most bytes loaded (the package has under 5 MiB).
pub const MAX_TOTAL_BYTES: u64 = 32 * 1024 * 1024;
/// The deepest directory nesting followed.
const MAX_DEPTH: usize = 8;

/// Why the files could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AssetsError {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// There are more files or bytes than allowed, or nesting is too deep.
    #[error("{0}: more than {MAX_FILES} files, {MAX_TOTAL_BYTES} bytes or {MAX_DEPTH} levels")]
    TooLarge(String),
    /// The directory has no `index.html`.
    #[error("{0}: no index.html (expected the package's ui/dist)")]
    NoIndex(String),
    /// The mount path does not start and end with `/`.
    #[error("mount path {0:?} must start and end with '/'")]
    Mount(String),
}

/// The UI's files by path, with their content types.
#[derive(Debug)]
pub struct Assets {
    mount: String,
    files: HashMap<String, (&'static str, Bytes)>,
}

impl Assets {
    /// Loads `dir` to be served under `mount` (e.g. `/admin-ui/`).
    pub fn load(dir: &Path, mount: &str) -> Result<Self, AssetsError> {
        if !(mount.starts_with('/') && mount.ends_with('/')) {
            return Err(AssetsError::Mount(mount.to_owned()));
        }
        let mut files = HashMap::new();
        let mut total = 0;
        walk(dir, "", 0, &mut files, &mut total)?;
        if !files.contains_key("index.html") {
            return Err(AssetsError::NoIndex(dir.display().to_string()));
        }
        Ok(Self {
            mount: mount.to_owned(),
            files,
        })
    }

    /// The mount path.
    pub fn mount(&self) -> &str {
        &self.mount
    }

    /// The file a request path names (its content type and bytes): the mount path itself is
    /// `index.html`. `None` for a path outside the mount or a file that is not there.
    pub fn get(&self, path: &str) -> Option<(&'static str, Bytes)> {
        let rest = path.strip_prefix(&self.mount)?;
        let name = if rest.is_empty() { "index.html" } else { rest };
        self.files.get(name).cloned()
    }
}

fn walk(
    dir: &Path,
    prefix: &str,
    depth: usize,
    files: &mut HashMap<String, (&'static str, Bytes)>,
    total: &mut u64,
) -> Result<(), AssetsError> {
    let io = |source| AssetsError::Io {
        path: dir.display().to_string(),
        source,
    };
    let too_large = || AssetsError::TooLarge(dir.display().to_string());
    if depth > MAX_DEPTH {
        return Err(too_large());
    }
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let kind = entry.file_type().map_err(io)?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue; // not UTF-8: no URL names it
        };
        let path = format!("{prefix}{name}");
        if kind.is_dir() {
            walk(&entry.path(), &format!("{path}/"), depth + 1, files, total)?;
        } else if kind.is_file() {
            let len = entry.metadata().map_err(io)?.len();
            *total += len;
            if files.len() >= MAX_FILES || *total > MAX_TOTAL_BYTES {
                return Err(too_large());
            }
            let bytes = std::fs::read(entry.path()).map_err(io)?;
            files.insert(path, (content_type(&name), Bytes::from(bytes)));
        }
    }
    Ok(())
}

/// The content type of a file of the UI, by its extension.
fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "application/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("map" | "json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("woff") => "font/woff",
        Some("ttf") => "font/ttf",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sb-admin-ui-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        for (path, body) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        dir
    }

    #[test]
    fn files_are_served_under_the_mount_and_nothing_else() {
        let dir = tree(&[
            ("index.html", "<html>"),
            ("js/app.js", "js"),
            ("css/app.css", "css"),
            ("img/logo.svg", "svg"),
        ]);
        let a = Assets::load(&dir, "/admin-ui/").unwrap();
        let cases = [
            ("/admin-ui/", Some(("text/html; charset=utf-8", "<html>"))),
            (
                "/admin-ui/index.html",
                Some(("text/html; charset=utf-8", "<html>")),
            ),
            (
                "/admin-ui/js/app.js",
                Some(("application/javascript; charset=utf-8", "js")),
            ),
            (
                "/admin-ui/css/app.css",
                Some(("text/css; charset=utf-8", "css")),
            ),
            ("/admin-ui/img/logo.svg", Some(("image/svg+xml", "svg"))),
            ("/admin-ui/js/", None),
            ("/admin-ui/../secret.txt", None),
            ("/admin-ui/js/../../secret.txt", None),
            ("/admin-ui/%2e%2e/secret.txt", None),
            ("/admin-ui", None),
            ("/index.html", None),
            ("/js/app.js", None),
        ];
        for (path, want) in cases {
            let got = a.get(path);
            let got = got
                .as_ref()
                .map(|(t, b)| (*t, std::str::from_utf8(b).unwrap()));
            assert_eq!(got, want, "{path}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_directory_without_index_or_a_bad_mount_is_refused() {
        let dir = tree(&[("js/app.js", "js")]);
        assert!(matches!(
            Assets::load(&dir, "/admin-ui/"),
            Err(AssetsError::NoIndex(_))
        ));
        std::fs::write(dir.join("index.html"), "x").unwrap();
        for mount in ["admin-ui/", "/admin-ui", ""] {
            assert!(
                matches!(Assets::load(&dir, mount), Err(AssetsError::Mount(_))),
                "{mount}"
            );
        }
        assert!(matches!(
            Assets::load(&dir.join("missing"), "/a/"),
            Err(AssetsError::Io { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_package_files_are_bounded() {
        let many: Vec<(String, &str)> =
            (0..=MAX_FILES).map(|i| (format!("f{i}.js"), "x")).collect();
        let mut files: Vec<(&str, &str)> = many.iter().map(|(p, b)| (p.as_str(), *b)).collect();
        files.push(("index.html", "x"));
        let dir = tree(&files);
        assert!(matches!(
            Assets::load(&dir, "/a/"),
            Err(AssetsError::TooLarge(_))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
