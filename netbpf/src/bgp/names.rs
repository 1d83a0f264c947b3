//! The names netbpf gives to what it puts in BIRD's config: its
//! protocols and filters, and one BGP protocol per neighbour.

use std::net::Ipv4Addr;

/// Name of the static protocol holding the announced routes.
pub const STATIC_PROTOCOL: &str = "netbpf_containers";

/// Name of the kernel protocol in a main config netbpf writes.
pub const KERNEL_PROTOCOL: &str = "netbpf_kernel";

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
