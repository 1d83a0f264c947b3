//! The routing maps (`CONTAINERS`, `CONTAINER_IFS`, their IPv6 twins
//! `CONTAINERS6`, `CONTAINER_IFS6`), pinned or in the loaded object. A
//! datapath pinned by a netbpf from before IPv6 routing has no IPv6 twins:
//! its containers are listed and removed all the same, and adding one with
//! an IPv6 address is refused ([`ContainersError::NoIpv6Routing`]).

use std::{
    borrow::BorrowMut,
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use aya::{
    Ebpf,
    maps::{HashMap, Map, MapData, MapError},
};
use netbpf_common::{ContainerEntry, ContainerIf, ContainerIf6, container_if_flags, map_names};

use crate::maps::{self, MapsError};

use super::{error::*, wire::*};

/// Typed views of the routing maps (borrowed from a loaded object, or
/// opened from pins).
pub struct RoutingMaps<T> {
    /// Address → veth and MACs.
    pub containers: HashMap<T, [u8; 4], ContainerEntry>,
    /// Veth → address.
    pub ifs: HashMap<T, u32, ContainerIf>,
    /// The IPv6 twins; `None` on pins of a datapath started by a netbpf
    /// from before IPv6 routing.
    pub v6: Option<RoutingMaps6<T>>,
}

/// The IPv6 routing maps.
pub struct RoutingMaps6<T> {
    /// IPv6 address → veth and MACs.
    pub containers: HashMap<T, [u8; 16], ContainerEntry>,
    /// Veth → IPv6 address.
    pub ifs: HashMap<T, u32, ContainerIf6>,
}

impl RoutingMaps<MapData> {
    /// Opens the maps pinned in `dir`; the IPv6 ones only if the datapath
    /// has them (`CONTAINERS6` pinned).
    pub fn open_pinned(dir: &Path) -> Result<Self, ContainersError> {
        let open = |name: &'static str| -> Result<Map, ContainersError> {
            Ok(Map::HashMap(maps::open_pinned(dir, name)?))
        };
        let v6 = match maps::open_pinned(dir, map_names::CONTAINERS6) {
            Ok(data) => Some(RoutingMaps6 {
                containers: HashMap::try_from(Map::HashMap(data))
                    .map_err(map_err(map_names::CONTAINERS6))?,
                ifs: HashMap::try_from(open(map_names::CONTAINER_IFS6)?)
                    .map_err(map_err(map_names::CONTAINER_IFS6))?,
            }),
            Err(MapsError::NotPinned { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(Self {
            containers: HashMap::try_from(open(map_names::CONTAINERS)?)
                .map_err(map_err(map_names::CONTAINERS))?,
            ifs: HashMap::try_from(open(map_names::CONTAINER_IFS)?)
                .map_err(map_err(map_names::CONTAINER_IFS))?,
            v6,
        })
    }
}

/// The IPv6 addresses of the routed containers of the datapath pinned in
/// `dir` (what BGP announces as /128s); none if it predates IPv6 routing.
pub fn ipv6_addresses(dir: &Path) -> Result<std::collections::BTreeSet<Ipv6Addr>, ContainersError> {
    let maps = RoutingMaps::open_pinned(dir)?;
    Ok(maps
        .v6
        .map(|v6| {
            v6.containers
                .keys()
                .filter_map(Result::ok)
                .map(Ipv6Addr::from)
                .collect()
        })
        .unwrap_or_default())
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

    /// The IPv6 address routed to the veth `ifindex`, if any.
    pub fn ipv6_of(&self, ifindex: u32) -> Option<Ipv6Addr> {
        self.v6
            .as_ref()?
            .ifs
            .get(&ifindex, 0)
            .ok()
            .map(|i| Ipv6Addr::from(i.addr))
    }

    /// Whether `addr` is a routed container's IPv6 address.
    pub fn has_ipv6(&self, addr: Ipv6Addr) -> bool {
        self.v6
            .as_ref()
            .is_some_and(|v6| v6.containers.get(&addr.octets(), 0).is_ok())
    }

    /// Every routed veth with an IPv6 address: (ifindex, entry).
    pub fn interfaces6(&self) -> Vec<(u32, ContainerIf6)> {
        self.v6
            .as_ref()
            .map(|v6| v6.ifs.iter().filter_map(Result::ok).collect())
            .unwrap_or_default()
    }

    /// Adds (or replaces) a container: the veth entries first, so the
    /// container's own packets are checked from the moment the uplink
    /// forwards to it; the IPv6 entries before the IPv4 ones, so the
    /// veth's program (which starts from the IPv4 entry) sees both.
    /// `configured`: it comes from the config's `[[container]]` list
    /// ([`container_if_flags::CONFIGURED`]).
    pub fn insert(&mut self, r: &Resolved, configured: bool) -> Result<(), ContainersError> {
        self.insert6(r)?;
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

    /// The IPv6 half of [`RoutingMaps::insert`]: adds the container's IPv6
    /// entries, or removes those its veth had if it has no IPv6 address
    /// now. Refused if the datapath has no IPv6 maps.
    fn insert6(&mut self, r: &Resolved) -> Result<(), ContainersError> {
        let Some(v6) = r.ipv6 else {
            return self.remove6(r.ifindex);
        };
        let old = self.ipv6_of(r.ifindex);
        let Some(maps6) = self.v6.as_mut() else {
            return Err(ContainersError::NoIpv6Routing { addr: v6 });
        };
        if let Some(old) = old
            && old != v6
        {
            ignore_missing(maps6.containers.remove(&old.octets()))
                .map_err(map_err(map_names::CONTAINERS6))?;
        }
        maps6
            .ifs
            .insert(
                &r.ifindex,
                &ContainerIf6 {
                    addr: v6.octets(),
                    host_mac: r.host_mac,
                    _pad: [0; 2],
                },
                0,
            )
            .map_err(map_err(map_names::CONTAINER_IFS6))?;
        maps6
            .containers
            .insert(
                &v6.octets(),
                &ContainerEntry {
                    ifindex: r.ifindex,
                    host_mac: r.host_mac,
                    mac: r.mac,
                },
                0,
            )
            .map_err(map_err(map_names::CONTAINERS6))
    }

    /// Removes the IPv6 entries of the veth `ifindex` (address first), if
    /// it has any.
    fn remove6(&mut self, ifindex: u32) -> Result<(), ContainersError> {
        let Some(v6) = self.ipv6_of(ifindex) else {
            return Ok(());
        };
        let Some(maps6) = self.v6.as_mut() else {
            return Ok(());
        };
        ignore_missing(maps6.containers.remove(&v6.octets()))
            .map_err(map_err(map_names::CONTAINERS6))?;
        ignore_missing(maps6.ifs.remove(&ifindex)).map_err(map_err(map_names::CONTAINER_IFS6))
    }

    /// Removes a container (address first: the uplink stops forwarding to
    /// it and answering ARP for it), its IPv6 entries too, returning its
    /// veth index.
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
            self.remove6(entry.ifindex)?;
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
    crate::maps::absent_ok(r)
}

pub(crate) fn borrowed_maps(ebpf: &mut Ebpf) -> Result<RoutingMaps<&mut MapData>, ContainersError> {
    // Four disjoint maps borrowed from one object.
    let mut containers = None;
    let mut ifs = None;
    let mut containers6 = None;
    let mut ifs6 = None;
    for (name, map) in ebpf.maps_mut() {
        match name {
            n if n == map_names::CONTAINERS => containers = Some(map),
            n if n == map_names::CONTAINER_IFS => ifs = Some(map),
            n if n == map_names::CONTAINERS6 => containers6 = Some(map),
            n if n == map_names::CONTAINER_IFS6 => ifs6 = Some(map),
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
        v6: Some(RoutingMaps6 {
            containers: HashMap::try_from(
                containers6.ok_or_else(|| missing(map_names::CONTAINERS6))?,
            )
            .map_err(map_err(map_names::CONTAINERS6))?,
            ifs: HashMap::try_from(ifs6.ok_or_else(|| missing(map_names::CONTAINER_IFS6))?)
                .map_err(map_err(map_names::CONTAINER_IFS6))?,
        }),
    })
}

/// The two neighbour maps, borrowed from one object.
pub(crate) fn borrowed_neigh_maps(
    ebpf: &mut Ebpf,
) -> Result<crate::neigh::NeighMaps<&mut MapData>, ContainersError> {
    let mut v4 = None;
    let mut v6 = None;
    for (name, map) in ebpf.maps_mut() {
        match name {
            n if n == map_names::NEIGHBOURS => v4 = Some(map),
            n if n == map_names::NEIGHBOURS6 => v6 = Some(map),
            _ => {}
        }
    }
    let missing = |name: &'static str| ContainersError::Map {
        name,
        source: MapError::InvalidName {
            name: name.to_owned(),
        },
    };
    Ok(crate::neigh::NeighMaps {
        v4: HashMap::try_from(v4.ok_or_else(|| missing(map_names::NEIGHBOURS))?)
            .map_err(map_err(map_names::NEIGHBOURS))?,
        v6: HashMap::try_from(v6.ok_or_else(|| missing(map_names::NEIGHBOURS6))?)
            .map_err(map_err(map_names::NEIGHBOURS6))?,
    })
}
