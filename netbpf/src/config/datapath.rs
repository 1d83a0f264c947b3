//! `[datapath]`: how translated packets leave the programs (the fast path,
//! or the host's stack) and its validation.

use serde::Deserialize;

/// The `[datapath]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatapathConfig {
    /// Translated and routed packets go from the program that handled them
    /// straight to their egress device (`true`, the default), or back to
    /// the host's stack, which routes them through netfilter's hooks as
    /// without netbpf (`false`: for comparison, or for a host whose
    /// `FORWARD` chain must see container traffic).
    pub fast_path: bool,
    /// With the fast path on: packets of established inbound NAT flows are
    /// translated and redirected by an XDP program on the uplink, before
    /// the kernel makes an skb (`true`, the default), where the uplink and
    /// the container's interface allow it; everything else, and all of it
    /// with `false`, takes the tc fast path.
    pub xdp: bool,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            fast_path: true,
            xdp: true,
        }
    }
}

impl DatapathConfig {
    /// The [`netbpf_common::settings_flags`] bits this section sets.
    pub fn settings_flags(&self) -> u32 {
        use netbpf_common::settings_flags::{NO_XDP, VIA_STACK};
        match (self.fast_path, self.xdp) {
            (false, _) => VIA_STACK,
            (true, false) => NO_XDP,
            (true, true) => 0,
        }
    }

    /// Whether the uplink's XDP program takes established inbound flows.
    pub fn xdp_fast_path(&self) -> bool {
        self.fast_path && self.xdp
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatapath {
    fast_path: Option<bool>,
    xdp: Option<bool>,
}

/// `[datapath]`; nothing in it can be invalid once it has parsed (serde
/// refuses a non-boolean `fast_path` or `xdp` and unknown keys).
pub(super) fn validate_datapath(raw: Option<RawDatapath>) -> DatapathConfig {
    let defaults = DatapathConfig::default();
    match raw {
        None => defaults,
        Some(raw) => DatapathConfig {
            fast_path: raw.fast_path.unwrap_or(defaults.fast_path),
            xdp: raw.xdp.unwrap_or(defaults.xdp),
        },
    }
}
