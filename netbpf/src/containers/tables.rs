//! The routing maps (`CONTAINERS`, `CONTAINER_IFS`, `ROUTE_UPLINK`), pinned or in the loaded object.

use std::{borrow::BorrowMut, net::Ipv4Addr, path::Path};

use aya::{
    Ebpf,
    maps::{HashMap, Map, MapData, MapError},
};
use netbpf_common::{ContainerEntry, ContainerIf, container_if_flags, map_names};

use crate::maps::{self};

use super::{error::*, wire::*};

/// Typed views of the routing maps (borrowed from a loaded object, or
/// opened from pins).
pub struct RoutingMaps<T> {
    /// Address → veth and MACs.
    pub containers: HashMap<T, [u8; 4], ContainerEntry>,
    /// Veth → address.
    pub ifs: HashMap<T, u32, ContainerIf>,
}

impl RoutingMaps<MapData> {
    /// Opens the maps pinned in `dir`.
    pub fn open_pinned(dir: &Path) -> Result<Self, ContainersError> {
        let open = |name: &'static str| -> Result<Map, ContainersError> {
            Ok(Map::HashMap(maps::open_pinned(dir, name)?))
        };
        Ok(Self {
            containers: HashMap::try_from(open(map_names::CONTAINERS)?)
                .map_err(map_err(map_names::CONTAINERS))?,
            ifs: HashMap::try_from(open(map_names::CONTAINER_IFS)?)
                .map_err(map_err(map_names::CONTAINER_IFS))?,
        })
    }
}

impl<T: BorrowMut<MapData>> RoutingMaps<T> {
    /// Every routed container: (address, entry).
    pub fn entries(&self) -> Vec<([u8; 4], ContainerEntry)> {
        self.containers.iter().filter_map(Result::ok).collect()
    }

    /// Every routed veth: (ifindex, entry).
    pub fn interfaces(&self) -> Vec<(u32, ContainerIf)> {
        self.ifs.iter().filter_map(Result::ok).collect()
    }

    /// Adds (or replaces) a container: the veth entry first, so the
    /// container's own packets are checked from the moment the uplink
    /// forwards to it. `configured`: it comes from the config's
    /// `[[container]]` list ([`container_if_flags::CONFIGURED`]).
    pub fn insert(&mut self, r: &Resolved, configured: bool) -> Result<(), ContainersError> {
        let attached = self
            .ifs
            .get(&r.ifindex, 0)
            .map(|v| v.flags & container_if_flags::ATTACHED)
            .unwrap_or_default();
        let flags = if configured {
            attached | container_if_flags::CONFIGURED
        } else {
            attached
        };
        self.ifs
            .insert(
                &r.ifindex,
                &ContainerIf {
                    addr: r.address.octets(),
                    host_mac: r.host_mac,
                    flags,
                },
                0,
            )
            .map_err(map_err(map_names::CONTAINER_IFS))?;
        self.containers
            .insert(
                &r.address.octets(),
                &ContainerEntry {
                    ifindex: r.ifindex,
                    host_mac: r.host_mac,
                    mac: r.mac,
                },
                0,
            )
            .map_err(map_err(map_names::CONTAINERS))
    }

    /// Removes a container (address first: the uplink stops forwarding to
    /// it and answering ARP for it), returning its veth index.
    pub fn remove(&mut self, addr: Ipv4Addr) -> Result<u32, ContainersError> {
        let entry = match self.containers.get(&addr.octets(), 0) {
            Ok(e) => e,
            Err(MapError::KeyNotFound) => return Err(ContainersError::NotFound(addr)),
            Err(source) => {
                return Err(ContainersError::Map {
                    name: map_names::CONTAINERS,
                    source,
                });
            }
        };
        ignore_missing(self.containers.remove(&addr.octets()))
            .map_err(map_err(map_names::CONTAINERS))?;
        if self
            .ifs
            .get(&entry.ifindex, 0)
            .is_ok_and(|i| i.addr == addr.octets())
        {
            ignore_missing(self.ifs.remove(&entry.ifindex))
                .map_err(map_err(map_names::CONTAINER_IFS))?;
        }
        Ok(entry.ifindex)
    }

    /// Sets or clears the ATTACHED flag of a veth entry.
    pub(crate) fn mark_attached(
        &mut self,
        ifindex: u32,
        attached: bool,
    ) -> Result<(), ContainersError> {
        let Ok(mut v) = self.ifs.get(&ifindex, 0) else {
            return Ok(());
        };
        if attached {
            v.flags |= container_if_flags::ATTACHED;
        } else {
            v.flags &= !container_if_flags::ATTACHED;
        }
        self.ifs
            .insert(&ifindex, &v, 0)
            .map_err(map_err(map_names::CONTAINER_IFS))
    }
}

pub(crate) fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

pub(crate) fn borrowed_maps(ebpf: &mut Ebpf) -> Result<RoutingMaps<&mut MapData>, ContainersError> {
    // Two disjoint maps borrowed from one object.
    let mut containers = None;
    let mut ifs = None;
    for (name, map) in ebpf.maps_mut() {
        match name {
            n if n == map_names::CONTAINERS => containers = Some(map),
            n if n == map_names::CONTAINER_IFS => ifs = Some(map),
            _ => {}
        }
    }
    let missing = |name: &'static str| ContainersError::Map {
        name,
        source: MapError::InvalidName {
            name: name.to_owned(),
        },
    };
    Ok(RoutingMaps {
        containers: HashMap::try_from(containers.ok_or_else(|| missing(map_names::CONTAINERS))?)
            .map_err(map_err(map_names::CONTAINERS))?,
        ifs: HashMap::try_from(ifs.ok_or_else(|| missing(map_names::CONTAINER_IFS))?)
            .map_err(map_err(map_names::CONTAINER_IFS))?,
    })
}
