//! The neighbour maps: the uplink's IPv4 (`NEIGHBOURS`) and IPv6
//! (`NEIGHBOURS6`) neighbours (next hops) copied from the kernel's
//! neighbour table, so routed containers' packets leave with the right
//! destination MAC without a trip through the kernel.
//!
//! The daemon subscribes to neighbour changes first, then dumps the table
//! into the map, then a task on the daemon's runtime applies every change
//! as it comes (woken by the netlink socket, no polling): an entry that is
//! resolved (or static) is written, one that becomes incomplete or failed,
//! or is deleted, is removed. When the kernel reports that changes were
//! lost (`ENOBUFS`), the task dumps the table again.

use std::{
    borrow::BorrowMut,
    io,
    net::{IpAddr, Ipv4Addr},
    path::Path,
};

use tokio::io::{Interest, unix::AsyncFd};

use aya::maps::{HashMap, MapData, MapError};
use log::{debug, warn};
use netbpf_common::{Neighbour, map_names};
use serde::Serialize;

use crate::{
    maps::{self, MapsError},
    rtnl::{NeighEntry, NeighEvent, NeighMonitor, Rtnl},
};

/// The two neighbour maps, one per family.
pub struct NeighMaps<T> {
    /// IPv4 next hop → MAC.
    pub v4: HashMap<T, [u8; 4], Neighbour>,
    /// IPv6 next hop → MAC.
    pub v6: HashMap<T, [u8; 16], Neighbour>,
}

/// Writes `value` under `key`, or removes `key` when `value` is `None`
/// (a missing key is not an error).
fn set<T: BorrowMut<MapData>, const N: usize>(
    map: &mut HashMap<T, [u8; N], Neighbour>,
    key: [u8; N],
    value: Option<Neighbour>,
) -> Result<(), MapError> {
    match value {
        Some(v) => map.insert(&key, &v, 0),
        None => crate::maps::absent_ok(map.remove(&key)),
    }
}

/// Writes one kernel entry into its family's map (or removes it if not
/// usable). Entries on other interfaces than `uplink` are ignored.
pub fn apply<T: BorrowMut<MapData>>(
    maps: &mut NeighMaps<T>,
    uplink: u32,
    event: &NeighEvent,
) -> Result<(), MapError> {
    let (e, keep) = match event {
        NeighEvent::New(e) => (e, e.usable()),
        NeighEvent::Del(e) => (e, false),
    };
    if e.ifindex != uplink {
        return Ok(());
    }
    let value = match (keep, e.mac) {
        (true, Some(mac)) => Some(Neighbour {
            mac,
            state: e.state,
            ifindex: e.ifindex,
        }),
        _ => None,
    };
    match e.addr {
        IpAddr::V4(a) => set(&mut maps.v4, a.octets(), value),
        IpAddr::V6(a) => set(&mut maps.v6, a.octets(), value),
    }
}

/// Replaces the maps' contents with the uplink's usable entries of `table`.
pub fn fill<T: BorrowMut<MapData>>(
    maps: &mut NeighMaps<T>,
    uplink: u32,
    table: &[NeighEntry],
) -> Result<(), MapError> {
    let usable = |addr: IpAddr| {
        table
            .iter()
            .any(|e| e.ifindex == uplink && e.usable() && e.addr == addr)
    };
    let stale4: Vec<[u8; 4]> = maps
        .v4
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !usable(IpAddr::from(*k)))
        .collect();
    for k in stale4 {
        let _ = maps.v4.remove(&k);
    }
    let stale6: Vec<[u8; 16]> = maps
        .v6
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !usable(IpAddr::from(*k)))
        .collect();
    for k in stale6 {
        let _ = maps.v6.remove(&k);
    }
    for e in table {
        apply(maps, uplink, &NeighEvent::New(e.clone()))?;
    }
    Ok(())
}

/// The task that keeps the map in sync, on the daemon's tokio runtime; it
/// wakes only when the kernel reports a neighbour change (the netlink
/// socket under `AsyncFd`), and stops on drop.
pub struct NeighSync {
    task: tokio::task::JoinHandle<()>,
}

impl NeighSync {
    /// Starts applying `monitor`'s changes to `maps` (the uplink's
    /// entries). Must be called on the daemon's runtime.
    pub fn spawn(
        monitor: NeighMonitor,
        mut maps: NeighMaps<MapData>,
        uplink: u32,
    ) -> io::Result<Self> {
        let handle = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        // AsyncFd registers with the runtime's reactor: enter it first.
        let _guard = handle.enter();
        // SAFETY: the monitor owns its netlink socket for its whole life,
        // and `as_raw_fd` always returns that socket's descriptor.
        let mut fd = unsafe { AsyncFd::register_with_interest(monitor, Interest::READABLE) }
            .map_err(|e| io::Error::other(e.to_string()))?;
        let task = handle.spawn(async move {
            loop {
                let mut ready = match fd.readable_mut().await {
                    Ok(ready) => ready,
                    Err(e) => {
                        warn!("neighbour changes: {e}; no longer followed");
                        return;
                    }
                };
                match ready.get_inner_mut().drain() {
                    Ok(events) => {
                        // drain() read until EWOULDBLOCK.
                        ready.clear_ready();
                        for ev in &events {
                            debug!("neighbour change: {ev:?}");
                            if let Err(e) = apply(&mut maps, uplink, ev) {
                                warn!("neighbour map update failed: {e}");
                            }
                        }
                    }
                    Err(e) => {
                        // Most likely ENOBUFS: changes were lost. Start over
                        // from a dump (and read the socket again).
                        warn!("neighbour changes: {e}; reading the whole table again");
                        match Rtnl::open().and_then(|mut r| r.neighbours()) {
                            Ok(table) => {
                                if let Err(e) = fill(&mut maps, uplink, &table) {
                                    warn!("neighbour map refill failed: {e}");
                                }
                            }
                            Err(e) => warn!("neighbour table dump failed: {e}"),
                        }
                    }
                }
            }
        });
        Ok(Self { task })
    }
}

impl Drop for NeighSync {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One row of `netbpf neigh list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NeighRow {
    /// Next-hop address.
    pub address: IpAddr,
    /// Its MAC.
    pub mac: String,
    /// Interface (name, or index if it is gone).
    pub interface: String,
    /// Kernel state when copied (`reachable`, `stale`, ...).
    pub state: String,
}

impl NeighRow {
    /// Column headers of [`NeighRow::cells`].
    pub const HEADER: [&'static str; 4] = ["ADDRESS", "MAC", "INTERFACE", "STATE"];

    /// The row as table cells.
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.address.to_string(),
            self.mac.clone(),
            self.interface.clone(),
            self.state.clone(),
        ]
    }
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Names the `NUD_*` bits of a neighbour state.
pub fn state_name(state: u16) -> String {
    const NAMES: [(u16, &str); 8] = [
        (0x01, "incomplete"),
        (0x02, "reachable"),
        (0x04, "stale"),
        (0x08, "delay"),
        (0x10, "probe"),
        (0x20, "failed"),
        (0x40, "noarp"),
        (0x80, "permanent"),
    ];
    let names: Vec<&str> = NAMES
        .iter()
        .filter(|(bit, _)| state & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(",")
    }
}

/// Interface name of `ifindex` in this namespace, or the number.
pub fn ifname(ifindex: u32) -> String {
    nix::net::if_::if_indextoname(ifindex)
        .ok()
        .and_then(|c| c.into_string().ok())
        .unwrap_or_else(|| format!("#{ifindex}"))
}

/// The neighbour maps of the datapath pinned in `dir`, IPv4 then IPv6,
/// each sorted by address. A datapath pinned by a netbpf without
/// `NEIGHBOURS6` lists its IPv4 neighbours only.
pub fn list(dir: &Path) -> Result<Vec<NeighRow>, MapsError> {
    let row = |k: IpAddr, v: Neighbour| NeighRow {
        address: k,
        mac: format_mac(&v.mac),
        interface: ifname(v.ifindex),
        state: state_name(v.state),
    };
    let name = map_names::NEIGHBOURS;
    let map: HashMap<MapData, [u8; 4], Neighbour> =
        HashMap::try_from(aya::maps::Map::HashMap(maps::open_pinned(dir, name)?))
            .map_err(|source| MapsError::Map { name, source })?;
    let mut rows: Vec<NeighRow> = map
        .iter()
        .filter_map(Result::ok)
        .map(|(k, v)| row(IpAddr::V4(Ipv4Addr::from(k)), v))
        .collect();
    let name = map_names::NEIGHBOURS6;
    if let Ok(pinned) = maps::open_pinned(dir, name) {
        let map: HashMap<MapData, [u8; 16], Neighbour> =
            HashMap::try_from(aya::maps::Map::HashMap(pinned))
                .map_err(|source| MapsError::Map { name, source })?;
        rows.extend(
            map.iter()
                .filter_map(Result::ok)
                .map(|(k, v)| row(IpAddr::from(k), v)),
        );
    }
    rows.sort_by_key(|r| r.address);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_macs_are_named() {
        assert_eq!(state_name(0x02), "reachable");
        assert_eq!(state_name(0x80), "permanent");
        assert_eq!(state_name(0), "none");
        assert_eq!(format_mac(&[2, 0, 0, 0, 0xab, 1]), "02:00:00:00:ab:01");
    }

    #[test]
    fn only_resolved_entries_are_usable() {
        let e = |state, mac| NeighEntry {
            ifindex: 2,
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 1, 2)),
            mac,
            state,
        };
        assert!(e(0x02, Some([2; 6])).usable());
        assert!(e(0x04, Some([2; 6])).usable());
        assert!(!e(0x01, None).usable());
        assert!(!e(0x20, Some([2; 6])).usable());
        assert!(!e(0x02, None).usable());
    }
}
