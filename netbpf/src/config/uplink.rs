//! `[uplink]`: the host's outside interface and its validation.

use std::net::Ipv4Addr;

use serde::Deserialize;

use super::{errors::*, types::*};

/// The `[uplink]` table: the host's outside interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    /// Interface name, e.g. `eth0`.
    pub interface: String,
    /// Address to masquerade to; `None` means "the interface's first IPv4
    /// address" (resolved outside this module).
    pub address: Option<Ipv4Addr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUplink {
    interface: Option<String>,
    address: Option<String>,
}

/// The uplink, or `None` (recorded in `p`) when it has no usable interface.
/// A bad `uplink.address` is recorded and left out, so the rules that
/// depend on it are still checked against what is known.
pub(super) fn validate_uplink(raw: Option<RawUplink>, p: &mut Problems) -> Option<Uplink> {
    let Some(raw) = raw else {
        p.check::<()>(Err(invalid(
            "uplink",
            "the [uplink] table is required (it names the host's outside interface)",
        )));
        return None;
    };
    let interface = p.check(interface_value(
        "uplink.interface",
        raw.interface,
        "the host's outside interface, e.g. \"eth0\"",
    ));
    let address = raw
        .address
        .and_then(|s| p.check(unicast_value("uplink.address", &s)));
    Some(Uplink {
        interface: interface?,
        address,
    })
}
