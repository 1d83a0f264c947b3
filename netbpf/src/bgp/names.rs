//! The names netbpf gives to what it puts in BIRD's config: its
//! protocols and filters, and one BGP protocol per neighbour.

use std::net::Ipv4Addr;

/// Name of the static protocol holding the announced routes.
pub const STATIC_PROTOCOL: &str = "netbpf_containers";

/// Name of the static protocol holding the announced IPv6 routes (the
/// routed containers' IPv6 addresses as /128s).
pub const STATIC_PROTOCOL6: &str = "netbpf_containers6";

/// Name of the kernel protocol in a main config netbpf writes.
pub const KERNEL_PROTOCOL: &str = "netbpf_kernel";

/// Name of the IPv6 kernel protocol in a main config netbpf writes.
pub const KERNEL_PROTOCOL6: &str = "netbpf_kernel6";

/// Name of the import filter of every session's IPv6 channel.
pub const IMPORT_FILTER6: &str = "netbpf_learn6";

/// Shortest IPv6 prefix learned from a peer: a /64 (a subnet) down to the
/// /128s of routed containers; never a default route or an aggregate.
pub const IMPORT_MIN_LEN6: u8 = 64;

/// IPv6 ranges never learned from a peer: `::/8` (unspecified, loopback,
/// IPv4-mapped), link-local, multicast.
pub const SPECIAL_PURPOSE6: [&str; 3] = ["::/8", "fe80::/10", "ff00::/8"];

/// Name of the import filter on every peer's session.
pub const IMPORT_FILTER: &str = "netbpf_learn";

/// Name of the export filter of a session that carries this host's
/// routes only.
pub const ANNOUNCE_FILTER: &str = "netbpf_announce";

/// Name of the export filter of a route reflector's iBGP sessions: this
/// host's routes and the BGP routes it reflects.
pub const REFLECT_FILTER: &str = "netbpf_reflect";

/// Name of the direct protocol the fragment adds when a session is
/// multihop: BIRD resolves such a peer's next hop through its table, which
/// then holds the connected subnets.
pub const DIRECT_PROTOCOL: &str = "netbpf_direct";

/// Name of the BGP protocol for the peer at `addr` (stable across
/// reorderings of `[[bgp.peer]]`, so a reload does not restart sessions).
pub fn peer_protocol(addr: Ipv4Addr) -> String {
    let o = addr.octets();
    format!("netbpf_peer_{}_{}_{}_{}", o[0], o[1], o[2], o[3])
}
