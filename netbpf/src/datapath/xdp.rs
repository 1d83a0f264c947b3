//! The uplink's XDP program for NAT: in which mode it runs, how it sends
//! the packets it translates on, which devices it may redirect to
//! (`XDP_TARGETS`), and its pinned link.
//!
//! A redirect into a veth in native XDP delivers only when the veth's
//! peer (the container's side) has NAPI: GRO on, or an XDP program of its
//! own; otherwise the kernel drops the frame. The peer lives in the
//! container's namespace, which netbpf neither knows nor configures, so it
//! cannot tell. Generic (skb) XDP redirects an skb and has no such
//! condition. Hence two ways on ([`XdpPath`]):
//! * **redirect**, in generic mode: every container-side veth is a
//!   target, and XDP redirects into it;
//! * **hand-off**, in native mode: XDP translates and passes the packet
//!   with a metadata record saying where it goes (`XDP_HANDOFF`), and the
//!   uplink's tc ingress program redirects the skb, which every device
//!   takes. No device is a target.
//!
//! `[datapath] xdp_mode` picks ([`plan`]): `auto` (the default) keeps
//! generic mode and redirect on a veth uplink and on stacked devices
//! (vlan, macvlan: no native XDP), as the ARP responder always had there,
//! and uses native hand-off on any other uplink (a NIC; the kernel falls
//! back to generic mode for a driver without XDP, where the hand-off
//! works the same); `native` forces native mode with the hand-off (the
//! attach fails on a device without it); `generic` forces generic mode
//! with redirect. Bridges and other devices are never targets (a native
//! redirect into a bridge is dropped). What is not a target passes to tc,
//! so nothing is lost because of XDP.

use std::path::{Path, PathBuf};

use aya::{
    Ebpf,
    maps::{DevMapHash, MapError, xdp::XdpMapError},
    programs::{Xdp, XdpMode},
};
use log::info;
use netbpf_common::{map_names, settings_flags};

use crate::{
    config::XdpModeChoice,
    links,
    loader::{self, programs},
    pins,
    rtnl::Rtnl,
};

use super::{error::DatapathError, fill::map_mut};

/// How the uplink's XDP program sends the packets it translates on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum XdpPath {
    /// Not at all: every packet takes tc (`NO_XDP`).
    Off,
    /// Generic mode: it redirects them into `XDP_TARGETS` itself.
    Redirect,
    /// Native mode: it hands them to tc in the skb's metadata
    /// (`XDP_HANDOFF`).
    Handoff,
}

impl XdpPath {
    /// Whether the program takes established inbound flows.
    pub(crate) fn on(self) -> bool {
        self != XdpPath::Off
    }

    /// The [`settings_flags`] bits the daemon adds to the config's.
    pub(crate) fn flags(self) -> u32 {
        match self {
            XdpPath::Off => settings_flags::NO_XDP,
            XdpPath::Redirect => 0,
            XdpPath::Handoff => settings_flags::XDP_HANDOFF,
        }
    }
}

/// The mode to attach in and the way on, for `choice` on an uplink that is
/// (`stacked`) or is not a veth or a device on another one.
pub(crate) fn plan(choice: XdpModeChoice, stacked: bool) -> (XdpMode, XdpPath) {
    match choice {
        XdpModeChoice::Auto if stacked => (XdpMode::Skb, XdpPath::Redirect),
        XdpModeChoice::Auto => (XdpMode::Default, XdpPath::Handoff),
        XdpModeChoice::Native => (XdpMode::Driver, XdpPath::Handoff),
        XdpModeChoice::Generic => (XdpMode::Skb, XdpPath::Redirect),
    }
}

/// The container-side interfaces XDP may redirect to on `path`: veths,
/// and only for [`XdpPath::Redirect`] (see the module's comment).
pub(crate) fn targets(rtnl: &mut Rtnl, path: XdpPath, inside: &[(String, u32)]) -> Vec<u32> {
    if path != XdpPath::Redirect {
        return Vec::new();
    }
    inside
        .iter()
        .filter(|(_, ifindex)| rtnl.link(*ifindex, None).is_ok_and(|l| l.veth))
        .map(|(_, ifindex)| *ifindex)
        .collect()
}

/// Writes `XDP_TARGETS` (removing entries an earlier daemon left).
pub(crate) fn fill_targets(ebpf: &mut Ebpf, targets: &[u32]) -> Result<(), DatapathError> {
    let name = map_names::XDP_TARGETS;
    let err = |source| DatapathError::Map { name, source };
    let mut map: DevMapHash<_> = DevMapHash::try_from(map_mut(ebpf, name)?).map_err(err)?;
    let stale: Vec<u32> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !targets.contains(k))
        .collect();
    for k in stale {
        map.remove(k).map_err(err)?;
    }
    for &ifindex in targets {
        match map.insert(ifindex, ifindex, None, 0) {
            Ok(()) => {}
            Err(XdpMapError::MapError(source)) => return Err(err(source)),
            // Only returned for a chained program, and none is given.
            Err(XdpMapError::ChainedProgramNotSupported) => {
                return Err(err(MapError::ProgIdNotSupported));
            }
        }
    }
    Ok(())
}

/// Sets `path`'s flags in `SETTINGS` beside what the config set (`NO_XDP`
/// when the config wants XDP but it has nowhere to redirect to).
pub(crate) fn set_flags(ebpf: &mut Ebpf, path: XdpPath) -> Result<(), DatapathError> {
    let name = map_names::SETTINGS;
    let err = |source| DatapathError::Map { name, source };
    let mut array: aya::maps::Array<_, netbpf_common::Settings> =
        aya::maps::Array::try_from(map_mut(ebpf, name)?).map_err(err)?;
    let mut s = array.get(&0, 0).map_err(err)?;
    s.flags |= path.flags();
    array.set(0, &s, 0).map_err(err)
}

/// Attaches `netbpf_arp` to the uplink in `mode` through a link pinned
/// under `pin_dir`, or swaps it into the link an earlier daemon pinned.
pub(crate) fn attach_pinned(
    ebpf: &mut Ebpf,
    uplink: (&str, u32),
    mode: XdpMode,
    pin_dir: &Path,
) -> Result<PathBuf, DatapathError> {
    let name = programs::ARP;
    let prog: &mut Xdp =
        loader::loaded(ebpf, name).map_err(|source| DatapathError::Program { name, source })?;
    let pin = pins::link_pin(pin_dir, name, uplink.0);
    match links::attach_xdp(prog, uplink.1, mode, &pin)
        .map_err(|source| DatapathError::Link { name, source })?
    {
        links::Attached::Swapped => info!(
            "{name}: new program swapped into the pinned XDP link on {}",
            uplink.0
        ),
        links::Attached::Fresh { .. } => info!(
            "{name}: attached to {} (XDP, {mode:?} mode) for NAT",
            uplink.0
        ),
    }
    Ok(pin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_keeps_generic_redirect_on_a_veth_and_hands_off_natively_elsewhere() {
        assert_eq!(
            plan(XdpModeChoice::Auto, true),
            (XdpMode::Skb, XdpPath::Redirect)
        );
        assert_eq!(
            plan(XdpModeChoice::Auto, false),
            (XdpMode::Default, XdpPath::Handoff)
        );
    }

    #[test]
    fn a_forced_mode_ignores_the_device() {
        for stacked in [true, false] {
            assert_eq!(
                plan(XdpModeChoice::Native, stacked),
                (XdpMode::Driver, XdpPath::Handoff)
            );
            assert_eq!(
                plan(XdpModeChoice::Generic, stacked),
                (XdpMode::Skb, XdpPath::Redirect)
            );
        }
    }

    #[test]
    fn each_path_sets_its_flag() {
        assert_eq!(XdpPath::Off.flags(), settings_flags::NO_XDP);
        assert_eq!(XdpPath::Redirect.flags(), 0);
        assert_eq!(XdpPath::Handoff.flags(), settings_flags::XDP_HANDOFF);
        assert!(!XdpPath::Off.on() && XdpPath::Redirect.on() && XdpPath::Handoff.on());
    }
}
