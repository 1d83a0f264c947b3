//! The record the uplink's XDP program leaves in front of a packet it
//! translated in native mode (`bpf_xdp_adjust_meta`), for the uplink's tc
//! ingress program to send the packet on without a lookup.
//!
//! Native XDP cannot redirect into a veth whose peer has no NAPI (the
//! frame is dropped), and netbpf cannot see the container's side. So in
//! native mode XDP does the flow lookup and the translation, passes the
//! packet (`XDP_PASS`) with this record as the skb's metadata, and tc,
//! which sees the skb, reads it from `data_meta` and redirects (TTL − 1,
//! the MACs). A packet without the record (a driver without metadata
//! support) is passed untouched and takes the tc path whole.

use core::mem::size_of;

/// [`XdpHandoff::magic`]: "nbx" and the record's version, 1. A record of
/// another version, or another program's metadata, is not read.
pub const XDP_HANDOFF_MAGIC: u32 = 0x6e62_7801;

/// The metadata record (20 bytes: `bpf_xdp_adjust_meta` takes multiples
/// of 4 up to 32).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpHandoff {
    /// [`XDP_HANDOFF_MAGIC`], in host order.
    pub magic: u32,
    /// The egress interface (the container's host-side link).
    pub ifindex: u32,
    /// The next hop's MAC (the container's).
    pub dst_mac: [u8; 6],
    /// The egress interface's MAC.
    pub src_mac: [u8; 6],
}

const _: () = assert!(size_of::<XdpHandoff>() == 20);
const _: () = assert!(size_of::<XdpHandoff>() % 4 == 0);

impl XdpHandoff {
    /// The record for a packet to send to `ifindex` with these MACs.
    pub const fn new(ifindex: u32, dst_mac: [u8; 6], src_mac: [u8; 6]) -> Self {
        XdpHandoff {
            magic: XDP_HANDOFF_MAGIC,
            ifindex,
            dst_mac,
            src_mac,
        }
    }

    /// Whether the record is one this version wrote.
    pub const fn is_ours(&self) -> bool {
        self.magic == XDP_HANDOFF_MAGIC
    }

    /// The 12 Ethernet address bytes to write in front of the packet.
    pub const fn macs(&self) -> [u8; 12] {
        let (d, s) = (self.dst_mac, self.src_mac);
        [
            d[0], d[1], d[2], d[3], d[4], d[5], s[0], s[1], s[2], s[3], s[4], s[5],
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_ours_only_with_the_magic() {
        let r = XdpHandoff::new(7, [1; 6], [2; 6]);
        assert!(r.is_ours());
        assert!(!XdpHandoff::default().is_ours());
        assert!(
            !XdpHandoff {
                magic: XDP_HANDOFF_MAGIC + 1,
                ..r
            }
            .is_ours()
        );
    }

    #[test]
    fn the_macs_are_destination_then_source() {
        let r = XdpHandoff::new(7, [1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]);
        assert_eq!(r.macs(), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    }
}
