//! Routed containers' IPv6 addresses: the map types the IPv6 routing
//! programs share with userspace, and the address rules both sides apply.
//!
//! The IPv4 maps are not widened: an IPv6 container address is a second
//! key in maps of its own (`CONTAINERS6`, `CONTAINER_IFS6`,
//! `NEIGHBOURS6`), so the IPv4 layouts (and pinned IPv4 maps) stay as they
//! are. `CONTAINERS6` and `NEIGHBOURS6` reuse the IPv4 value types
//! ([`crate::ContainerEntry`], [`crate::Neighbour`]): what a frame to a
//! container or a next hop needs does not depend on the family.

use core::mem::size_of;

/// An IPv6 address as on the wire (network order).
pub type Ipv6Bytes = [u8; 16];

/// Value of [`crate::map_names::CONTAINER_IFS6`]: the IPv6 address of the
/// container behind a host-side veth. IPv6 packets arriving from the veth
/// must come from `addr` (or from a link-local or the unspecified address,
/// which never leave the link).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContainerIf6 {
    /// The container's IPv6 address, network order.
    pub addr: Ipv6Bytes,
    /// MAC of this (host-side) veth: the answer to the container's
    /// Neighbour Solicitations.
    pub host_mac: [u8; 6],
    /// Always zero.
    pub _pad: [u8; 2],
}

const _: () = assert!(size_of::<ContainerIf6>() == 24);

/// `::`, the unspecified address.
#[inline(always)]
pub const fn is_unspecified6(a: &Ipv6Bytes) -> bool {
    u128::from_be_bytes(*a) == 0
}

/// `fe80::/10`, link-local unicast: never forwarded (RFC 4291 §2.5.6).
#[inline(always)]
pub const fn is_link_local6(a: &Ipv6Bytes) -> bool {
    a[0] == 0xfe && a[1] & 0xc0 == 0x80
}

/// `ff00::/8`, multicast.
#[inline(always)]
pub const fn is_multicast6(a: &Ipv6Bytes) -> bool {
    a[0] == 0xff
}

/// `::1`, loopback.
#[inline(always)]
pub const fn is_loopback6(a: &Ipv6Bytes) -> bool {
    u128::from_be_bytes(*a) == 1
}

/// `::ffff:0:0/96`, IPv4-mapped: never on the wire (RFC 4291 §2.5.5.2).
#[inline(always)]
pub const fn is_v4_mapped6(a: &Ipv6Bytes) -> bool {
    u128::from_be_bytes(*a) >> 32 == 0xffff
}

/// Whether `src` may be the source of a packet a router forwards: not
/// unspecified, loopback, multicast, link-local or IPv4-mapped (RFC 4291;
/// RFC 4861 §8 for link-local). The map checks (another routed container
/// of this host) come on top, in the programs.
#[inline(always)]
pub const fn forwardable_source6(src: &Ipv6Bytes) -> bool {
    !(is_unspecified6(src)
        || is_loopback6(src)
        || is_multicast6(src)
        || is_link_local6(src)
        || is_v4_mapped6(src))
}

/// The solicited-node multicast address of `a` (RFC 4291 §2.7.1):
/// `ff02::1:ff00:0/104` with `a`'s low 24 bits.
#[inline(always)]
pub const fn solicited_node(a: &Ipv6Bytes) -> Ipv6Bytes {
    [
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, a[13], a[14], a[15],
    ]
}

/// `ff02::1`, all nodes on the link.
pub const ALL_NODES: Ipv6Bytes = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// The Ethernet address a multicast IPv6 destination maps to (RFC 2464
/// §7): `33:33` and its low 32 bits.
#[inline(always)]
pub const fn multicast_mac(a: &Ipv6Bytes) -> [u8; 6] {
    [0x33, 0x33, a[12], a[13], a[14], a[15]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn b(s: &str) -> Ipv6Bytes {
        s.parse::<Ipv6Addr>().expect("address").octets()
    }

    #[test]
    fn address_classes_match_std() {
        for s in [
            "::",
            "::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::5",
            "::ffff:10.0.0.1",
            "fd00::2",
        ] {
            let a: Ipv6Addr = s.parse().expect("address");
            let o = a.octets();
            assert_eq!(is_unspecified6(&o), a.is_unspecified(), "{s}");
            assert_eq!(is_loopback6(&o), a.is_loopback(), "{s}");
            assert_eq!(is_multicast6(&o), a.is_multicast(), "{s}");
            assert_eq!(is_link_local6(&o), a.is_unicast_link_local(), "{s}");
            assert_eq!(is_v4_mapped6(&o), a.to_ipv4_mapped().is_some(), "{s}");
        }
    }

    #[test]
    fn only_global_and_ula_sources_are_forwarded() {
        assert!(forwardable_source6(&b("2001:db8::5")));
        assert!(forwardable_source6(&b("fd00::2")));
        for s in ["::", "::1", "fe80::1", "ff02::1", "::ffff:10.0.0.1"] {
            assert!(!forwardable_source6(&b(s)), "{s}");
        }
    }

    #[test]
    fn solicited_node_and_multicast_mac() {
        assert_eq!(
            solicited_node(&b("2001:db8::12:3456")),
            b("ff02::1:ff12:3456")
        );
        assert_eq!(
            multicast_mac(&b("ff02::1:ff12:3456")),
            [0x33, 0x33, 0xff, 0x12, 0x34, 0x56]
        );
        assert_eq!(multicast_mac(&ALL_NODES), [0x33, 0x33, 0, 0, 0, 1]);
    }
}
