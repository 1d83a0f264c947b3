//! Header rewrites on an skb with byte-exact checksum updates.
//!
//! All updates go through the kernel's `bpf_l3_csum_replace` /
//! `bpf_l4_csum_replace`, which handle every `ip_summed` state of the skb:
//! with `CHECKSUM_PARTIAL` (offloaded transmit, common on veth) only the
//! pseudo-header part of a TCP/UDP checksum is adjusted, because the
//! payload sum is still to be computed by the device; with
//! `CHECKSUM_COMPLETE` the skb's running sum is kept right. A hand-written
//! incremental update would corrupt offloaded packets.
//!
//! UDP uses `BPF_F_MARK_MANGLED_0`: a zero UDP checksum means "none" and
//! must stay zero, and a computed zero is sent as 0xffff (RFC 768).

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use netbpf_common::{Counter, proto};

use crate::parse::{Packet, off};

/// Which side of the packet to rewrite.
#[derive(Clone, Copy)]
pub(crate) enum Side {
    /// Source address and source port / echo identifier.
    Source,
    /// Destination address and destination port / echo identifier.
    Destination,
}

/// Raw value of an address as the helpers want it (memory order).
#[inline(always)]
fn raw4(addr: [u8; 4]) -> u64 {
    u32::from_ne_bytes(addr) as u64
}

/// Raw value of a host-order port as the helpers want it (memory order of
/// the network-order bytes).
#[inline(always)]
fn raw2(port: u16) -> u64 {
    u16::from_ne_bytes(port.to_be_bytes()) as u64
}

/// Rewrites one side's address and port (or ICMP echo identifier) of a
/// TCP, UDP or ICMP echo packet. `old_port`/`new_port` are host order; for
/// ICMP they are the echo identifier.
#[inline(always)]
pub(crate) fn rewrite(
    ctx: &TcContext,
    pkt: &Packet,
    side: Side,
    new_addr: [u8; 4],
    old_port: u16,
    new_port: u16,
) -> Result<(), Counter> {
    let (old_addr, addr_off) = match side {
        Side::Source => (pkt.src, off::IP_SRC),
        Side::Destination => (pkt.dst, off::IP_DST),
    };
    let l3 = pkt.l3_off;
    let l4 = pkt.l4_off;
    let fail = |_| Counter::DropRewriteFailed;

    // Transport checksum first (its pseudo header covers the address), then
    // the port, then the address and the IP header checksum.
    match pkt.proto {
        proto::TCP | proto::UDP => {
            let (check_off, port_off, mangled) = match (pkt.proto, side) {
                (proto::TCP, Side::Source) => (off::TCP_CHECK, off::TCP_SRC, 0),
                (proto::TCP, Side::Destination) => (off::TCP_CHECK, off::TCP_DST, 0),
                (_, Side::Source) => (off::UDP_CHECK, off::UDP_SRC, BPF_F_MARK_MANGLED_0),
                (_, Side::Destination) => (off::UDP_CHECK, off::UDP_DST, BPF_F_MARK_MANGLED_0),
            };
            let check = l4 + check_off;
            let flags = mangled as u64;
            if old_addr != new_addr {
                ctx.l4_csum_replace(
                    check,
                    raw4(old_addr),
                    raw4(new_addr),
                    flags | BPF_F_PSEUDO_HDR as u64 | 4,
                )
                .map_err(fail)?;
            }
            if old_port != new_port {
                ctx.l4_csum_replace(check, raw2(old_port), raw2(new_port), flags | 2)
                    .map_err(fail)?;
                ctx.store(l4 + port_off, &new_port.to_be_bytes(), 0)
                    .map_err(fail)?;
            }
        }
        proto::ICMP => {
            // The ICMP checksum has no pseudo header: only the id matters.
            if old_port != new_port {
                let check = l4 + off::ICMP_CHECK;
                ctx.l4_csum_replace(check, raw2(old_port), raw2(new_port), 2)
                    .map_err(fail)?;
                ctx.store(l4 + off::ICMP_ID, &new_port.to_be_bytes(), 0)
                    .map_err(fail)?;
            }
        }
        _ => return Err(Counter::DropUnsupportedProto),
    }
    if old_addr != new_addr {
        ctx.l3_csum_replace(l3 + off::IP_CHECK, raw4(old_addr), raw4(new_addr), 4)
            .map_err(fail)?;
        ctx.store(l3 + addr_off, &new_addr, 0).map_err(fail)?;
    }
    Ok(())
}
