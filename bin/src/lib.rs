//! Switchboard's binaries and what they share: the composition of the tiers.
//!
//! `switchboard-gateway` (a gateway; standalone it embeds the broker over an in-process bus),
//! `switchboard-broker` and `switchboard-admin` live in `src/bin/`. The libraries they compose
//! (`switchboard-gateway`, `switchboard-broker`, `switchboard-bus`) never read the process
//! environment or OS signals, print, or install a log subscriber or metrics recorder; this crate
//! does all of that, once per process:
//!
//! - [`allocator`]: the global allocator (cargo features `jemalloc`, default, and `mimalloc`);
//! - [`admin_ui`]: the Socket.IO Admin UI's view of the cluster, over the broker's admin service;
//! - [`process`]: command line, configuration check (exit 2), runtime and exit status;
//! - [`settings`]: the settings both tiers share (file and environment, one table, one parser);
//! - [`telemetry`]: logs and the Prometheus recorder;
//! - [`signal`]: SIGTERM / SIGINT.
//!
//! Shutdown is one tree per process: a root `CancellationToken`, child tokens for the parts that
//! stop at different moments, and one `TaskTracker` every long-lived task is spawned on, which
//! the binary waits for before it exits.

pub mod admin_ui;
pub mod allocator;
pub mod process;
pub mod settings;
pub mod signal;
pub mod telemetry;
