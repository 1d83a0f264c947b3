//! `netbpf containers list|add|del` on a running datapath.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData};
use netbpf_common::{RouteUplink, container_if_flags, map_names};
use serde::Serialize;

use crate::{
    config::Container,
    maps::{self},
    neigh::{format_mac, ifname},
    rtnl::Rtnl,
};

use super::{error::*, tables::*, wire::*};

/// One row of `netbpf containers list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerRow {
    /// The container's address.
    pub address: Ipv4Addr,
    /// Its IPv6 address, if it has one.
    pub ipv6: Option<Ipv6Addr>,
    /// Host side of its veth (name, or `#index` if it is gone).
    pub interface: String,
    /// Its index.
    pub ifindex: u32,
    /// The container's MAC.
    pub mac: String,
    /// The host side's MAC (what the container's ARP gets).
    pub host_mac: String,
    /// Whether the daemon has attached the veth's program.
    pub attached: bool,
}

impl ContainerRow {
    /// Column headers of [`ContainerRow::cells`].
    pub const HEADER: [&'static str; 6] = [
        "ADDRESS",
        "IPV6",
        "INTERFACE",
        "MAC",
        "HOST MAC",
        "ATTACHED",
    ];

    /// The row as table cells.
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.address.to_string(),
            self.ipv6.map_or_else(|| "-".to_owned(), |a| a.to_string()),
            self.interface.clone(),
            self.mac.clone(),
            self.host_mac.clone(),
            if self.attached { "yes" } else { "no" }.to_owned(),
        ]
    }
}

/// The routed containers of the datapath pinned in `dir`, by address.
pub fn list(dir: &Path) -> Result<Vec<ContainerRow>, ContainersError> {
    let maps = RoutingMaps::open_pinned(dir)?;
    let ifs = maps.interfaces();
    let mut rows: Vec<ContainerRow> = maps
        .entries()
        .into_iter()
        .map(|(addr, e)| ContainerRow {
            address: Ipv4Addr::from(addr),
            ipv6: maps.ipv6_of(e.ifindex),
            interface: ifname(e.ifindex),
            ifindex: e.ifindex,
            mac: format_mac(&e.mac),
            host_mac: format_mac(&e.host_mac),
            attached: ifs
                .iter()
                .any(|(i, v)| *i == e.ifindex && v.flags & container_if_flags::ATTACHED != 0),
        })
        .collect();
    rows.sort_by_key(|r| r.address);
    Ok(rows)
}

/// `netbpf containers add`: routes `address` (and `ipv6`, if given) to the
/// container behind `interface` on the running datapath pinned in `dir`,
/// and waits until the daemon has attached the veth's program.
pub fn add(
    dir: &Path,
    address: Ipv4Addr,
    interface: &str,
    ipv6: Option<Ipv6Addr>,
) -> Result<ContainerRow, ContainersError> {
    if let Some(v6) = ipv6
        && !netbpf_common::forwardable_source6(&v6.octets())
    {
        return Err(ContainersError::NotRoutable6 {
            key: "--ipv6".into(),
            addr: v6,
        });
    }
    for m in maps::read_masquerade(dir)? {
        let cidr = crate::config::Ipv4Cidr {
            addr: Ipv4Addr::from(m.source),
            prefix_len: m.prefix_len as u8,
        };
        if cidr.contains(address) {
            return Err(ContainersError::Masqueraded {
                key: "--address".into(),
                addr: address,
                cidr: format!("{}/{}", cidr.addr, cidr.prefix_len),
            });
        }
    }
    let mut maps = RoutingMaps::open_pinned(dir)?;
    if let Some(v6) = ipv6
        && maps.v6.is_none()
    {
        return Err(ContainersError::NoIpv6Routing { addr: v6 });
    }
    let c = Container {
        ipv6,
        ..Container::ipv4(address, interface)
    };
    let mut rtnl = Rtnl::open().map_err(|source| ContainersError::Rtnl {
        key: "rtnetlink".into(),
        source,
    })?;
    let r = resolve(&mut rtnl, "--interface", &c)?;
    if maps.containers.get(&address.octets(), 0).is_ok() {
        return Err(ContainersError::Exists {
            what: address.to_string(),
        });
    }
    if maps.ifs.get(&r.ifindex, 0).is_ok() {
        return Err(ContainersError::Exists {
            what: interface.to_owned(),
        });
    }
    if let Some(v6) = ipv6
        && maps.has_ipv6(v6)
    {
        return Err(ContainersError::Exists {
            what: v6.to_string(),
        });
    }
    maps.insert(&r, false)?;
    let up = uplink(dir)?;
    install_route_and_announce(&mut rtnl, &r, up.ifindex, up.mac);
    // The daemon attaches the veth's program on its next pass.
    let wait = Duration::from_secs(5);
    let deadline = Instant::now() + wait;
    loop {
        if maps
            .ifs
            .get(&r.ifindex, 0)
            .is_ok_and(|v| v.flags & container_if_flags::ATTACHED != 0)
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(ContainersError::NotAttached {
                interface: interface.to_owned(),
                secs: wait.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    list(dir)?
        .into_iter()
        .find(|row| row.address == address)
        .ok_or(ContainersError::NotFound(address))
}

/// `netbpf containers del`: stops routing `address` on the running
/// datapath pinned in `dir` (the daemon detaches the veth's program on its
/// next pass) and removes its host route.
pub fn del(dir: &Path, address: Ipv4Addr) -> Result<(), ContainersError> {
    let mut maps = RoutingMaps::open_pinned(dir)?;
    let ipv6 = maps
        .containers
        .get(&address.octets(), 0)
        .ok()
        .and_then(|e| maps.ipv6_of(e.ifindex));
    let ifindex = maps.remove(address)?;
    let mut rtnl = Rtnl::open().map_err(|source| ContainersError::Rtnl {
        key: "rtnetlink".into(),
        source,
    })?;
    if let Some(v6) = ipv6 {
        let _ = rtnl.delete_host_route(v6, ifindex);
    }
    rtnl.delete_host_route(address, ifindex)
        .map_err(|source| ContainersError::Rtnl {
            key: format!("route to {address}"),
            source,
        })
}

/// The uplink entry of the datapath pinned in `dir`.
pub(crate) fn uplink(dir: &Path) -> Result<RouteUplink, ContainersError> {
    let name = map_names::ROUTE_UPLINK;
    let arr: Array<MapData, RouteUplink> =
        Array::try_from(Map::Array(maps::open_pinned(dir, name)?)).map_err(map_err(name))?;
    arr.get(&0, 0).map_err(map_err(name))
}
