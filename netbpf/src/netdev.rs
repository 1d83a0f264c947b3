//! Network interface lookups: index and IPv4 addresses.

use std::net::Ipv4Addr;

use nix::{ifaddrs::getifaddrs, net::if_::if_nametoindex};

use crate::config::Ipv4Cidr;

/// Interface lookup failures.
#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    /// No interface with that name exists (in this network namespace).
    #[error("no interface named {name:?} in this network namespace")]
    NotFound {
        /// The interface name.
        name: String,
    },
    /// The interface exists but has no IPv4 address.
    #[error("interface {name:?} has no IPv4 address (set uplink.address)")]
    NoAddress {
        /// The interface name.
        name: String,
    },
    /// Listing addresses failed.
    #[error("listing interface addresses")]
    List(#[source] nix::Error),
    /// Reading the routing table failed.
    #[error("reading /proc/net/route")]
    Routes(#[source] std::io::Error),
}

/// The index of interface `name`.
pub fn ifindex(name: &str) -> Result<u32, NetdevError> {
    if_nametoindex(name).map_err(|_| NetdevError::NotFound {
        name: name.to_owned(),
    })
}

/// The first IPv4 address of interface `name`, in the order the kernel
/// lists them (the primary address first).
pub fn first_ipv4(name: &str) -> Result<Ipv4Addr, NetdevError> {
    let addrs = getifaddrs().map_err(NetdevError::List)?;
    addrs
        .filter(|a| a.interface_name == name)
        .filter_map(|a| {
            a.address
                .and_then(|s| s.as_sockaddr_in().map(|sin| sin.ip()))
        })
        .next()
        .ok_or_else(|| NetdevError::NoAddress {
            name: name.to_owned(),
        })
}

/// Every IPv4 address of interface `name` with its prefix length (host
/// bits kept: `10.1.2.3/24`), in the order the kernel lists them.
pub fn ipv4_networks(name: &str) -> Result<Vec<Ipv4Cidr>, NetdevError> {
    let addrs = getifaddrs().map_err(NetdevError::List)?;
    Ok(addrs
        .filter(|a| a.interface_name == name)
        .filter_map(|a| {
            let addr = a.address?.as_sockaddr_in()?.ip();
            let prefix_len = a
                .netmask
                .and_then(|m| {
                    m.as_sockaddr_in()
                        .map(|m| u32::from(m.ip()).count_ones() as u8)
                })
                .unwrap_or(32);
            Some(Ipv4Cidr { addr, prefix_len })
        })
        .collect())
}

/// Every IPv4 address of every interface in this network namespace.
pub fn all_ipv4() -> Result<Vec<Ipv4Addr>, NetdevError> {
    let addrs = getifaddrs().map_err(NetdevError::List)?;
    let mut out: Vec<Ipv4Addr> = addrs
        .filter_map(|a| {
            a.address
                .and_then(|s| s.as_sockaddr_in().map(|sin| sin.ip()))
        })
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// One IPv4 route of the main table, from `/proc/net/route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Output interface.
    pub iface: String,
    /// Destination network.
    pub dst: Ipv4Addr,
    /// Prefix length of the destination.
    pub prefix_len: u8,
}

/// The IPv4 routes of this network namespace's main table.
pub fn routes() -> Result<Vec<Route>, NetdevError> {
    let text = std::fs::read_to_string("/proc/net/route").map_err(NetdevError::Routes)?;
    Ok(parse_routes(&text))
}

/// Parses `/proc/net/route` (addresses are printed as the native-endian
/// value of the network-order address).
pub fn parse_routes(text: &str) -> Vec<Route> {
    let hex = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.to_ne_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (iface, dst, mask) = (f.first()?, hex(f.get(1)?)?, hex(f.get(7)?)?);
            Some(Route {
                iface: (*iface).to_owned(),
                dst,
                prefix_len: u32::from(mask).count_ones() as u8,
            })
        })
        .collect()
}
