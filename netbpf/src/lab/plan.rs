//! The lab's addresses and ports, and the config it publishes.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

/// The uplink address of the lab host.
pub const UPLINK_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

/// The outside machine's address.
pub const OUTSIDE_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

/// The port every server in the lab listens on.
pub const SERVICE_PORT: u16 = 4000;

/// The containers' subnet.
pub const CONTAINER_CIDR: &str = "10.77.0.0/24";

/// The segment subnet the peer and the routed containers share (the
/// seed's 10.0.1.0/24 picture): the host has [`SEGMENT_HOST_ADDR`] on its
/// uplink, the peer [`PEER_ADDR`], routed container `rN` `10.0.1.(100+N)`.
pub const SEGMENT_CIDR: &str = "10.0.1.0/24";

/// The host's address on the segment subnet (a second uplink address).
pub const SEGMENT_HOST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);

/// The peer's address: on the uplink's segment, no routes at all.
pub const PEER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);

/// The segment's IPv6 subnet (from the documentation prefix
/// 2001:db8::/32), next to [`SEGMENT_CIDR`]: the host has
/// [`SEGMENT_HOST_ADDR6`] on its uplink, the peer [`PEER_ADDR6`], routed
/// container `rN` [`routed_addr6`]`(N)`. Only routed containers have IPv6:
/// netbpf has no NAT66, so masqueraded and published containers stay IPv4.
pub const SEGMENT6_CIDR: &str = "2001:db8:1::/64";

/// The host's IPv6 address on the segment.
pub const SEGMENT_HOST_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);

/// The peer's IPv6 address on the segment.
pub const PEER_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);

/// Routed container `rN`'s IPv6 address (N from 1): `2001:db8:1::10N`,
/// which reads like its IPv4 address `10.0.1.10N`.
pub fn routed_addr6(n: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x100 + n as u16)
}

/// `netbpf lab` publishes container `cN`'s [`SERVICE_PORT`] on host port
/// `DEMO_PUBLISH_BASE + N` (c1 → 8081, c2 → 8082, ...), TCP and UDP.
pub const DEMO_PUBLISH_BASE: u16 = 8080;

/// A `[[publish]]` table for [`Lab::config_toml`]'s `extra`: `proto`
/// ("tcp" or "udp") host `port` (a number or a range "A-B") to `to`,
/// answering only on `address` if given.
pub fn publish_toml(
    proto: &str,
    port: &str,
    to: SocketAddrV4,
    address: Option<Ipv4Addr>,
) -> String {
    let port = if port.contains('-') {
        format!("\"{port}\"")
    } else {
        port.to_owned()
    };
    let mut s = format!("\n[[publish]]\nproto = \"{proto}\"\nport = {port}\nto = \"{to}\"\n");
    if let Some(a) = address {
        s.push_str(&format!("address = \"{a}\"\n"));
    }
    s
}
