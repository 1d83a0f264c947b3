//! The lab's addresses: the segment, each host's uplink and containers,
//! the route reflector's router, and how the hosts peer.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::racks::Racks;

/// The AS every lab host is in (iBGP full mesh).
pub const LAB_AS: u32 = 64512;

/// The segment's subnet.
pub const SEGMENT: &str = "10.0.0.0/24";

/// Host `h`'s uplink address.
pub fn host_addr(h: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 10 + h as u8)
}

/// Container `i` of host `h`.
pub fn container_addr(h: usize, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 10, h as u8, i as u8)
}

/// The segment's IPv6 subnet (documentation prefix), with
/// [`MultiHost::wire_ipv6`](super::MultiHost::wire_ipv6).
pub const SEGMENT6: &str = "2001:db8:ff::/64";

/// `n` (below 100) written in decimal but read as hex, so that IPv6
/// addresses read like their IPv4 twins (`10.0.0.11` ↔ `2001:db8:ff::11`).
fn like_decimal(n: usize) -> u16 {
    ((n / 10) * 16 + n % 10) as u16
}

/// Host `h`'s IPv6 address on the segment: `2001:db8:ff::{10+h}`.
pub fn host_addr6(h: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, like_decimal(10 + h))
}

/// The IPv6 address of container `i` of host `h`: `2001:db8:10:{h}::{i}`
/// (its IPv4 address is `10.10.h.i`).
pub fn container_addr6(h: usize, i: usize) -> Ipv6Addr {
    Ipv6Addr::new(
        0x2001,
        0xdb8,
        0x10,
        like_decimal(h),
        0,
        0,
        0,
        like_decimal(i),
    )
}

/// The route reflector's IPv6 address on the segment (BIRD resolves the
/// IPv6 next hops it reflects through it).
pub const REFLECTOR_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 2);

/// The route reflector's address on the segment (`--reflector`): a
/// router namespace running BIRD alone.
pub const REFLECTOR_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// How the lab's hosts exchange their routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// iBGP full mesh: every host peers with every other (`[[bgp.peer]]`).
    FullMesh,
    /// Every host is a client (`[[bgp.reflector]]`) of one route reflector:
    /// BIRD in a router namespace at [`REFLECTOR_ADDR`].
    Reflector,
    /// Host 1 is the route reflector (a netbpf host with a
    /// `[[bgp.client]]` per other host, announcing its own containers
    /// too); every other host is its client.
    HostReflector,
    /// Hosts in racks, each rack on its own segment behind a top-of-rack
    /// router running BIRD with its own AS; every host peers over eBGP
    /// with its rack's router, and the routers with each other.
    Racks(Racks),
}

impl Topology {
    /// Host `h`'s AS: [`LAB_AS`], or its own in racks.
    pub fn host_as(&self, h: usize) -> u32 {
        match self {
            Topology::Racks(plan) => plan.session(h).host_as,
            _ => LAB_AS,
        }
    }
}
