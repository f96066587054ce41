//! The process's termination signals: SIGTERM (an orchestrator stopping it) and SIGINT
//! (Ctrl-C). Only binaries listen for them; the libraries take a token or a future.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGTERM and SIGINT, installed once at startup so that none is missed.
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs the handlers (fails only if the runtime has no signal driver).
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
