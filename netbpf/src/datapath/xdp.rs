//! The uplink's XDP program for NAT: in which mode it runs, which devices
//! it may redirect to (`XDP_TARGETS`), and its pinned link.
//!
//! A redirect into a veth in native XDP delivers only when the veth's
//! peer (the container's side) has NAPI: GRO on, or an XDP program of its
//! own; otherwise the kernel drops the frame. The peer lives in the
//! container's namespace, which netbpf neither knows nor configures, so it
//! cannot tell. Generic (skb) XDP redirects an skb and has no such
//! condition. Hence, per device:
//! * a veth uplink runs the program in generic mode (as the ARP responder
//!   always has there), and every container-side veth is a target;
//! * another uplink runs it natively, and no veth is a target: every
//!   packet takes the tc fast path, and the program is not attached for
//!   NAT at all (`NO_XDP`) unless routing needs it for ARP.
//!
//! Bridges and other devices are never targets (a native redirect into a
//! bridge is dropped). What is not a target passes to tc, so nothing is
//! lost because of XDP.

use std::path::{Path, PathBuf};

use aya::{
    Ebpf,
    maps::{DevMapHash, MapError, xdp::XdpMapError},
    programs::{Xdp, XdpMode},
};
use log::info;
use netbpf_common::{map_names, settings_flags};

use crate::{
    links,
    loader::{self, programs},
    pins,
    rtnl::Rtnl,
};

use super::{error::DatapathError, fill::map_mut};

/// The container-side interfaces XDP may redirect to in `mode`: veths,
/// and only in generic mode (see the module's comment).
pub(crate) fn targets(rtnl: &mut Rtnl, mode: XdpMode, inside: &[(String, u32)]) -> Vec<u32> {
    if mode != XdpMode::Skb {
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

/// Sets `NO_XDP` in `SETTINGS` beside what the config set (the config
/// wants XDP, but it has nowhere to redirect to).
pub(crate) fn turn_off(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    let name = map_names::SETTINGS;
    let err = |source| DatapathError::Map { name, source };
    let mut array: aya::maps::Array<_, netbpf_common::Settings> =
        aya::maps::Array::try_from(map_mut(ebpf, name)?).map_err(err)?;
    let mut s = array.get(&0, 0).map_err(err)?;
    s.flags |= settings_flags::NO_XDP;
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
