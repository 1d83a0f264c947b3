//! `[metrics]`: where the daemon serves Prometheus metrics, and its
//! validation.

use std::net::{Ipv4Addr, SocketAddr};

use serde::Deserialize;

use super::errors::*;

/// Default address of the Prometheus metrics endpoint: loopback only, so
/// nothing is exposed beyond the host unless the config says so.
pub const DEFAULT_METRICS_ADDRESS: SocketAddr =
    SocketAddr::V4(std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9469));

/// The `[metrics]` table: where the daemon serves Prometheus metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Listen address (`address`), [`DEFAULT_METRICS_ADDRESS`] by default.
    pub address: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            address: DEFAULT_METRICS_ADDRESS,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    address: Option<String>,
}

/// `[metrics]`; a bad address is recorded in `p` and the default kept.
pub(super) fn validate_metrics(raw: Option<RawMetrics>, p: &mut Problems) -> MetricsConfig {
    let Some(address) = raw.and_then(|r| r.address) else {
        return MetricsConfig::default();
    };
    p.check(metrics_address(&address))
        .map_or_else(MetricsConfig::default, |address| MetricsConfig { address })
}

fn metrics_address(address: &str) -> Result<SocketAddr, ConfigError> {
    let key = "metrics.address";
    let addr: SocketAddr = address.trim().parse().map_err(|_| {
        invalid(
            key,
            format!(
                "{address:?} is not an address:port (e.g. \"{DEFAULT_METRICS_ADDRESS}\", or \"[::1]:9469\")"
            ),
        )
    })?;
    if addr.port() == 0 {
        return Err(invalid(
            key,
            format!("{address:?} has port 0; a scraper needs a fixed port"),
        ));
    }
    if addr.ip().is_multicast() {
        return Err(invalid(
            key,
            format!("{address:?} is a multicast address; expected a local address to listen on"),
        ));
    }
    if let SocketAddr::V4(v4) = addr
        && v4.ip().is_broadcast()
    {
        return Err(invalid(
            key,
            format!("{address:?} is the broadcast address; expected a local address to listen on"),
        ));
    }
    Ok(addr)
}
