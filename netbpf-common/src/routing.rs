//! Routed containers: their veths and MACs, the neighbour map, the uplink;
//! the fast path's cache of next hops.

use core::mem::size_of;

/// Value of [`map_names::CONTAINERS`]: where a routed container is and the
/// Ethernet addresses a frame to it carries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContainerEntry {
    /// Index of the host side of the container's veth.
    pub ifindex: u32,
    /// MAC of the host side of the veth (source of frames to the container).
    pub host_mac: [u8; 6],
    /// The container's MAC (destination of frames to it).
    pub mac: [u8; 6],
}

const _: () = assert!(size_of::<ContainerEntry>() == 16);

/// Bits of [`ContainerIf::flags`].
pub mod container_if_flags {
    /// The daemon has attached the container-side program to this veth.
    /// Set and read by userspace only (`netbpf containers add` waits for it).
    pub const ATTACHED: u16 = 1 << 0;
    /// The entry comes from the config's `[[container]]` list (not from
    /// `netbpf containers add`): a daemon that starts on a config without
    /// it removes it. Set and read by userspace only.
    pub const CONFIGURED: u16 = 1 << 1;
}

/// Value of [`map_names::CONTAINER_IFS`]: the container behind a host-side
/// veth. Packets arriving from the veth must come from `addr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContainerIf {
    /// The container's address, network order.
    pub addr: [u8; 4],
    /// MAC of this (host-side) veth: the answer to the container's ARP.
    pub host_mac: [u8; 6],
    /// [`container_if_flags`] bits.
    pub flags: u16,
}

const _: () = assert!(size_of::<ContainerIf>() == 12);

/// Value of [`map_names::NEIGHBOURS`]: a next hop's MAC on the uplink.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Neighbour {
    /// Its MAC.
    pub mac: [u8; 6],
    /// The kernel's `NUD_*` state bits when the entry was copied.
    pub state: u16,
    /// Interface it was learnt on (the uplink).
    pub ifindex: u32,
}

const _: () = assert!(size_of::<Neighbour>() == 12);

/// Value of [`map_names::ROUTE_UPLINK`] (index 0): the uplink as the
/// routing programs see it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteUplink {
    /// Uplink ifindex (0 = routing not configured).
    pub ifindex: u32,
    /// Uplink MAC: what ARP on the uplink answers for containers, and the
    /// source of frames forwarded out of it.
    pub mac: [u8; 6],
    /// Always zero.
    pub _pad: [u8; 2],
}

const _: () = assert!(size_of::<RouteUplink>() == 12);

/// Key of [`map_names::FAST_HOPS`]: a destination as seen from the
/// interface a packet arrived on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HopKey {
    /// The interface the packet arrived on (the FIB's input interface).
    pub ifindex_in: u32,
    /// The destination address, network order.
    pub dst: [u8; 4],
}

const _: () = assert!(size_of::<HopKey>() == 8);

/// Value of [`map_names::FAST_HOPS`]: what `bpf_fib_lookup` answered for a
/// [`HopKey`], so that an established packet does not ask again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HopValue {
    /// The egress interface.
    pub ifindex: u32,
    /// Destination MAC (the next hop's).
    pub dst_mac: [u8; 6],
    /// Source MAC (the egress interface's).
    pub src_mac: [u8; 6],
    /// The egress interface's MTU: a larger packet asks the FIB again
    /// (which knows about GSO).
    pub mtu: u16,
    /// Always zero.
    pub _pad: u16,
    /// When the FIB answered ([`crate::coarse_seconds`]).
    pub checked_s: u32,
}

const _: () = assert!(size_of::<HopValue>() == 24);

/// How long a [`HopValue`] is believed, in [`crate::coarse_seconds`] units
/// (a little over a second each): a changed route or neighbour (a
/// container replaced under the same address) reaches the fast path within
/// about two seconds, sooner than the kernel's own neighbour cache would
/// notice a new MAC.
pub const HOP_VALID_S: u32 = 1;
