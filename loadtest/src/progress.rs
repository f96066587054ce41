//! The progress display: what a run is doing, on stderr, so stdout keeps only the table and
//! the JSON line. While a scenario measures, a [`Ticker`] prints one line a second; `--quiet`
//! silences all of it (errors still go to stderr from `main`).
//!
//! The quiet switch is process-wide state set once by `main` before anything runs.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often the ticker prints.
const TICK: Duration = Duration::from_secs(1);

static QUIET: AtomicBool = AtomicBool::new(false);

/// Silences (or not) every progress line from now on.
pub(crate) fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Prints one progress line unless quiet.
pub(crate) fn line(args: fmt::Arguments<'_>) {
    if !QUIET.load(Ordering::Relaxed) {
        eprintln!("{args}");
    }
}

/// A task printing `status(elapsed)` every second until dropped.
pub(crate) struct Ticker(tokio::task::JoinHandle<()>);

impl Ticker {
    /// Starts printing `what: <elapsed> s, <status()>` once a second.
    pub(crate) fn start(
        what: &'static str,
        mut status: impl FnMut() -> String + Send + 'static,
    ) -> Self {
        let started = Instant::now();
        Self(tokio::spawn(async move {
            let mut every = tokio::time::interval_at((started + TICK).into(), TICK);
            loop {
                every.tick().await;
                line(format_args!(
                    "{what}: {:>5.1} s  {}",
                    started.elapsed().as_secs_f64(),
                    status()
                ));
            }
        }))
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `eprintln!` for progress lines: silent under `--quiet`.
macro_rules! progress {
    ($($arg:tt)*) => {
        $crate::progress::line(format_args!($($arg)*))
    };
}
pub(crate) use progress;
