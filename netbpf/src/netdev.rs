//! Network interface lookups: index and IPv4 addresses.

use std::net::Ipv4Addr;

use nix::{ifaddrs::getifaddrs, net::if_::if_nametoindex};

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

/// Every IPv4 address of every interface in this network namespace.
pub fn all_ipv4() -> Result<Vec<Ipv4Addr>, NetdevError> {
    let addrs = getifaddrs().map_err(NetdevError::List)?;
    let mut out: Vec<Ipv4Addr> = addrs
        .filter_map(|a| a.address.and_then(|s| s.as_sockaddr_in().map(|sin| sin.ip())))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}
