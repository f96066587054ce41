//! What a Switchboard process reports about itself: logs on stderr and the Prometheus recorder.
//!
//! The libraries only emit (`tracing` events, `metrics` facade calls); installing the subscriber
//! and the recorder is the process's decision, made once, here, before anything records.
//!
//! Logs: `RUST_LOG` filters (default `info`); plain text without ANSI colour unless stderr is a
//! terminal; one JSON object per line with `[log] format = "json"` (or
//! `SWITCHBOARD_LOG_FORMAT=json`), for log collectors.

use std::io::IsTerminal as _;
use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use switchboard_broker::metrics::LATENCY_BUCKETS;
use tokio_util::sync::CancellationToken;

use crate::settings::LogFormat;

/// How often the recorder's histograms are compacted.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the process's log subscriber (stderr).
pub fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Installs the process-wide Prometheus recorder: histograms whose names end in `_seconds` get
/// [`LATENCY_BUCKETS`], each `(name, buckets)` of `histograms` its own buckets, so every
/// histogram renders as a Prometheus histogram (never a summary). Render the returned handle
/// from a `/metrics` route and keep [`upkeep`] running.
pub fn install_recorder(histograms: &[(&str, &[f64])]) -> Result<PrometheusHandle, BuildError> {
    let mut builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS)?;
    for (name, buckets) in histograms {
        builder = builder.set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets)?;
    }
    builder.install_recorder()
}

/// Runs the recorder's upkeep every [`UPKEEP_INTERVAL`] until `shutdown`.
pub async fn upkeep(handle: PrometheusHandle, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}
