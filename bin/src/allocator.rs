//! The process-wide memory allocator of the binaries, chosen at build time by cargo feature.
//!
//! `jemalloc` (the default, tikv-jemallocator) was chosen by measurement over the system
//! allocator (glibc malloc) and mimalloc: idle bytes per connection, connect CPU, fan-out CPU
//! and the memory given back after connections close (`scripts/bench-memory.sh`, the table in
//! docs/scaling.md, "Memory that returns, and the allocator"). `--no-default-features` builds
//! with the system allocator, `--no-default-features --features mimalloc` with mimalloc; when
//! both allocator features are on, jemalloc wins. The choice is logged at start-up ([`NAME`]).
//!
//! jemalloc keeps freed pages for reuse and gives them back to the OS as they age (its decay,
//! 10 s by default), but only while the process keeps calling it: a gateway whose connections
//! have closed goes quiet, and its RSS stays at the peak. [`start`] turns on jemalloc's
//! background thread (one thread, asleep between purges) through its safe control API, so that
//! freed memory returns to the OS while the process is idle.
//!
//! [`record_gauges`] publishes the allocator's own statistics (jemalloc: bytes the program holds,
//! bytes the allocator keeps resident) at each `/metrics` scrape, so that memory the program
//! keeps can be told from memory the allocator keeps (`scripts/bench-memory.sh` reads them).
//!
//! Other tuning is not compiled in (that needs an exported `malloc_conf`, i.e. unsafe code, which
//! the workspace forbids): jemalloc reads `_RJEM_MALLOC_CONF` (tikv-jemallocator prefixes its
//! symbols), mimalloc its `MIMALLOC_*` variables, glibc `MALLOC_*` / `GLIBC_TUNABLES`.

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The allocator this build uses: `jemalloc`, `mimalloc` or `system`.
pub const NAME: &str = if cfg!(feature = "jemalloc") {
    "jemalloc"
} else if cfg!(feature = "mimalloc") {
    "mimalloc"
} else {
    "system"
};

/// Sets the allocator up for a long-running server; call once at start-up. With jemalloc, starts
/// its background purging thread; the error says why it could not (the process runs on without).
#[cfg(feature = "jemalloc")]
pub fn start() -> Result<(), String> {
    tikv_jemalloc_ctl::background_thread::write(true).map_err(|e| e.to_string())
}

/// Sets the allocator up for a long-running server; nothing to do for this one.
#[cfg(not(feature = "jemalloc"))]
pub fn start() -> Result<(), String> {
    Ok(())
}

/// Bytes the program holds in allocations (jemalloc's `stats.allocated`).
pub const HEAP_ALLOCATED: &str = "switchboard_heap_allocated_bytes";
/// Bytes in pages the allocator keeps mapped and resident (jemalloc's `stats.resident`).
pub const HEAP_RESIDENT: &str = "switchboard_heap_resident_bytes";

/// Describes the allocator's gauges (they exist only with jemalloc).
pub fn describe() {
    if cfg!(feature = "jemalloc") {
        metrics::describe_gauge!(
            HEAP_ALLOCATED,
            metrics::Unit::Bytes,
            "Bytes the process holds in heap allocations (jemalloc stats.allocated)"
        );
        metrics::describe_gauge!(
            HEAP_RESIDENT,
            metrics::Unit::Bytes,
            "Bytes in pages the allocator keeps resident (jemalloc stats.resident)"
        );
    }
}

/// Reads the allocator's statistics into their gauges; call before rendering `/metrics`.
#[cfg(feature = "jemalloc")]
pub fn record_gauges() {
    use tikv_jemalloc_ctl::{epoch, stats};
    // The statistics are a snapshot taken when the epoch advances.
    if epoch::advance().is_err() {
        return;
    }
    if let (Ok(allocated), Ok(resident)) = (stats::allocated::read(), stats::resident::read()) {
        metrics::gauge!(HEAP_ALLOCATED).set(allocated as f64);
        metrics::gauge!(HEAP_RESIDENT).set(resident as f64);
    }
}

/// Reads the allocator's statistics into their gauges: none for this allocator.
#[cfg(not(feature = "jemalloc"))]
pub fn record_gauges() {}
