//! Why a routed container could not be set up or changed.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::{maps::MapError, programs::ProgramError};

use crate::{maps::MapsError, netdev::NetdevError, rtnl::RtnlError};

/// Routing failures.
#[derive(Debug, thiserror::Error)]
pub enum ContainersError {
    /// A routed container's address lies in a masquerade CIDR.
    #[error(
        "{key}: {addr} is inside masquerade source {cidr}: a container is either routed ([[container]]) or masqueraded ([[masquerade]]), not both"
    )]
    Masqueraded {
        /// The config key (or command argument).
        key: String,
        /// The address.
        addr: Ipv4Addr,
        /// The masquerade CIDR it is in.
        cidr: String,
    },
    /// An IPv6 address a router does not forward (unspecified, loopback,
    /// multicast, link-local, IPv4-mapped).
    #[error(
        "{key}: {addr} is not a unicast address a router forwards (unspecified, loopback, multicast, link-local and IPv4-mapped addresses are not)"
    )]
    NotRoutable6 {
        /// The config key (or command argument).
        key: String,
        /// The address.
        addr: Ipv6Addr,
    },
    /// An IPv6 address for a datapath started by a netbpf from before IPv6
    /// routing: its pins have no IPv6 routing maps.
    #[error(
        "--ipv6 {addr}: the running datapath predates IPv6 routing (its pin directory has no {map} map): restart `netbpf daemon` with this netbpf, which adds the IPv6 maps and keeps the routed containers, then add the container again (without --ipv6 it can be added now)",
        map = netbpf_common::map_names::CONTAINERS6
    )]
    NoIpv6Routing {
        /// The IPv6 address asked for.
        addr: Ipv6Addr,
    },
    /// The interface is missing or unusable.
    #[error("{key}")]
    Interface {
        /// The config key.
        key: String,
        /// What went wrong.
        #[source]
        source: NetdevError,
    },
    /// Following the kernel's neighbour changes could not start (no tokio
    /// runtime, or the socket could not be registered with it).
    #[error("{what}")]
    Neighbours {
        /// What was being done.
        what: &'static str,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// An rtnetlink request failed.
    #[error("{key}")]
    Rtnl {
        /// The config key, or what was being done.
        key: String,
        /// What went wrong.
        #[source]
        source: RtnlError,
    },
    /// The interface is not a veth (no peer to learn the container's MAC
    /// from).
    #[error(
        "{key}: {interface:?} is not a veth whose peer netbpf can see (the container's side of a veth pair is needed for its MAC)"
    )]
    NotVeth {
        /// The config key.
        key: String,
        /// The interface.
        interface: String,
    },
    /// The address or the interface is already a routed container.
    #[error("{what} is already a routed container (netbpf containers list)")]
    Exists {
        /// The address or interface.
        what: String,
    },
    /// No routed container has this address.
    #[error("{0} is not a routed container (netbpf containers list)")]
    NotFound(Ipv4Addr),
    /// A map could not be read or written.
    #[error("map {name}")]
    Map {
        /// The map.
        name: &'static str,
        /// What went wrong.
        #[source]
        source: MapError,
    },
    /// The pinned maps could not be opened.
    #[error(transparent)]
    Maps(#[from] MapsError),
    /// A program failed to load, attach or detach.
    #[error("program {name}")]
    Program {
        /// The program.
        name: &'static str,
        /// What went wrong.
        #[source]
        source: ProgramError,
    },
    /// A program's pinned link could not be made, adopted or removed.
    #[error("program {name}")]
    Link {
        /// The program.
        name: &'static str,
        /// What went wrong.
        #[source]
        source: crate::links::LinkError,
    },
    /// The daemon did not attach the container's program in time.
    #[error(
        "the daemon did not attach netbpf_container to {interface} within {secs} s (is `netbpf daemon` running with this --pin-dir?)"
    )]
    NotAttached {
        /// The veth.
        interface: String,
        /// How long was waited.
        secs: u64,
    },
}

pub(crate) fn map_err(name: &'static str) -> impl FnOnce(MapError) -> ContainersError {
    move |source| ContainersError::Map { name, source }
}
