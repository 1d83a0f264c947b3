//! Why the daemon did not start, or did not stop cleanly: one variant per
//! step of [`super::run`], each keeping the error of the module it called.

use std::{io, path::PathBuf};

use crate::{
    bgp::BgpError, config::ConfigError, datapath::DatapathError, maps::MapsError,
    metrics::MetricsError, pins::PinsError,
};

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The config file did not load.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Another daemon holds the pins, or the pin directory is unusable.
    #[error(transparent)]
    Pins(#[from] PinsError),
    /// A signal handler could not be installed.
    #[error("installing {signal} handler")]
    Signal {
        /// The signal, e.g. `SIGTERM`.
        signal: &'static str,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The metrics endpoint could not be bound.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The `--events` file could not be opened.
    #[error("--events {}", path.display())]
    Events {
        /// The file as given.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// Attaching or adopting the datapath failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// BGP through BIRD could not be started.
    #[error(transparent)]
    Bgp(#[from] BgpError),
    /// The pinned maps could not be opened or written.
    #[error(transparent)]
    Maps(#[from] MapsError),
    /// Detaching on the way out failed (the cause is logged).
    #[error("stopping failed")]
    Stopping,
}
