//! `[datapath]`: how translated packets leave the programs (the fast path,
//! or the host's stack), the mode of the uplink's XDP program, and their
//! validation.

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
    /// translated by an XDP program on the uplink, before the kernel makes
    /// an skb (`true`, the default), where the uplink allows it;
    /// everything else, and all of it with `false`, takes the tc fast path.
    pub xdp: bool,
    /// How the uplink's XDP program runs and sends those packets on.
    pub xdp_mode: XdpModeChoice,
}

/// `[datapath] xdp_mode`: the uplink XDP program's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeChoice {
    /// Per device (the default): `generic` on a veth uplink or a device
    /// stacked on another (vlan, macvlan), `native` on any other (a NIC).
    #[default]
    Auto,
    /// Native (driver) mode, which the uplink's driver must have: XDP
    /// translates, and hands each packet to the uplink's tc ingress
    /// program in the skb's metadata, which redirects it (a native
    /// redirect into a veth is dropped unless the container's side has
    /// NAPI, which netbpf cannot see).
    Native,
    /// Generic (skb) mode on any uplink: XDP translates and redirects into
    /// the container-side veths itself.
    Generic,
}

impl XdpModeChoice {
    /// The name the config uses.
    pub fn name(self) -> &'static str {
        match self {
            XdpModeChoice::Auto => "auto",
            XdpModeChoice::Native => "native",
            XdpModeChoice::Generic => "generic",
        }
    }
}

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            fast_path: true,
            xdp: true,
            xdp_mode: XdpModeChoice::Auto,
        }
    }
}

impl DatapathConfig {
    /// The [`netbpf_common::settings_flags`] bits this section sets (the
    /// daemon adds `XDP_HANDOFF` or `NO_XDP` once it knows the uplink).
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
    xdp_mode: Option<XdpModeChoice>,
}

/// `[datapath]`; nothing in it can be invalid once it has parsed (serde
/// refuses a non-boolean `fast_path` or `xdp`, an `xdp_mode` other than
/// `auto`, `native` or `generic`, and unknown keys).
pub(super) fn validate_datapath(raw: Option<RawDatapath>) -> DatapathConfig {
    let defaults = DatapathConfig::default();
    match raw {
        None => defaults,
        Some(raw) => DatapathConfig {
            fast_path: raw.fast_path.unwrap_or(defaults.fast_path),
            xdp: raw.xdp.unwrap_or(defaults.xdp),
            xdp_mode: raw.xdp_mode.unwrap_or(defaults.xdp_mode),
        },
    }
}
