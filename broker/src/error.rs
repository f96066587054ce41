//! Why a broker could not start. Its own module because both `service` (which starts the broker)
//! and `leader` (which opens the lease bucket during start-up) return it, and leader must not
//! import service, which drives it.

use switchboard_bus::BusError;

/// Why a broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The configuration is unusable.
    #[error("invalid broker configuration: {0}")]
    Config(String),
    /// Subscribing or publishing on the bus failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// Leader election needs JetStream, which the bus does not offer.
    #[error(
        "JetStream is required to elect a leader among several brokers (run nats-server with -js), \
         or run a single broker with leader mode `always`: {0}"
    )]
    JetStreamRequired(String),
}
