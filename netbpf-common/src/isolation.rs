//! Isolation between container networks (Docker's DOCKER-ISOLATION
//! chains): each network's subnets carry the network's number in the
//! `ISOLATION` trie; a packet from one numbered network to another is
//! dropped where it enters the host (`netbpf_inside`). Published ports
//! still connect them: a packet to a host address is not between two
//! networks. Addresses in no network are not isolated.
//!
//! Inside one network, Docker's `enable_icc=false` (`--icc=false`) cuts
//! the containers off from each other too. Their packets are switched by
//! the bridge and never reach a program on it, so `netbpf_icc` runs on
//! each of the bridge's ports (the containers' host-side veths), and
//! `ICC_PORTS` tells it, per port, the network's subnet and the bridge's
//! own address in it.

/// `ISOLATION`'s value: the number of the network a subnet belongs to
/// (LPM key: the subnet, `[u8; 4]` in network order).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsolationNet {
    /// Non-zero network number, distinct per network.
    pub id: u32,
}

const _: () = assert!(core::mem::size_of::<IsolationNet>() == 4);

#[cfg(feature = "user")]
// SAFETY: repr(C), one u32, no padding, any bit pattern valid.
unsafe impl aya::Pod for IsolationNet {}

/// Whether a packet from the network of `src` to that of `dst` is
/// refused: both are numbered, with different numbers.
#[inline(always)]
pub fn isolated(src: Option<IsolationNet>, dst: Option<IsolationNet>) -> bool {
    matches!((src, dst), (Some(a), Some(b)) if a.id != b.id)
}

/// `ICC_PORTS`' value (key: the ifindex of a bridge port, `u32`): the
/// subnet of the port's network, which has inter-container communication
/// off, and the bridge's own address in it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IccPort {
    /// The network's IPv4 subnet, host bits zero.
    pub subnet: [u8; 4],
    /// The bridge's address in it (the containers' gateway): still
    /// reachable. `0.0.0.0` if the bridge has none.
    pub gateway: [u8; 4],
    /// The subnet's prefix length, 1 to 32.
    pub prefix_len: u8,
    /// Zero.
    pub _pad: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<IccPort>() == 12);

#[cfg(feature = "user")]
// SAFETY: repr(C), byte arrays only, padding explicit, any bit pattern valid.
unsafe impl aya::Pod for IccPort {}

/// Whether a packet to `dst` that a container sends into its bridge port
/// is refused: `dst` is in the network's subnet (another container, the
/// subnet's broadcast) and is not the bridge itself. Everything else (the
/// gateway, the host's other addresses and published ports, other
/// networks, the outside) is left to the rest of the datapath.
#[inline(always)]
pub fn icc_refused(port: &IccPort, dst: [u8; 4]) -> bool {
    let mask = match port.prefix_len {
        0 => return false,
        n if n >= 32 => u32::MAX,
        n => u32::MAX << (32 - u32::from(n)),
    };
    let inside = u32::from_be_bytes(dst) & mask == u32::from_be_bytes(port.subnet) & mask;
    inside && dst != port.gateway
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_other_containers_of_the_subnet_are_refused() {
        let port = IccPort {
            subnet: [172, 18, 0, 0],
            gateway: [172, 18, 0, 1],
            prefix_len: 16,
            _pad: [0; 3],
        };
        assert!(icc_refused(&port, [172, 18, 0, 3]));
        assert!(icc_refused(&port, [172, 18, 255, 255]));
        assert!(!icc_refused(&port, [172, 18, 0, 1]), "the gateway");
        assert!(!icc_refused(&port, [172, 19, 0, 3]), "another network");
        assert!(
            !icc_refused(&port, [203, 0, 113, 1]),
            "the host, the outside"
        );
        let host = IccPort {
            prefix_len: 32,
            subnet: [10, 0, 0, 7],
            ..port
        };
        assert!(icc_refused(&host, [10, 0, 0, 7]));
        assert!(!icc_refused(&host, [10, 0, 0, 8]));
        let none = IccPort {
            prefix_len: 0,
            ..port
        };
        assert!(!icc_refused(&none, [172, 18, 0, 3]), "no subnet: nothing");
    }

    #[test]
    fn only_two_different_networks_are_isolated() {
        let a = Some(IsolationNet { id: 1 });
        let b = Some(IsolationNet { id: 2 });
        assert!(isolated(a, b));
        assert!(!isolated(a, a));
        assert!(!isolated(a, None));
        assert!(!isolated(None, b));
    }
}
