//! Isolation between container networks (Docker's DOCKER-ISOLATION
//! chains): each network's subnets carry the network's number in the
//! `ISOLATION` trie; a packet from one numbered network to another is
//! dropped where it enters the host (`netbpf_inside`). Published ports
//! still connect them: a packet to a host address is not between two
//! networks. Addresses in no network are not isolated.

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

#[cfg(test)]
mod tests {
    use super::*;

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
