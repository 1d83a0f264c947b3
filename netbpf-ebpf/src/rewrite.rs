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
use netbpf_common::{Counter, csum_update, proto};

use crate::parse::{Packet, Quoted, off};

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

/// Rewrites only the address on one side of the outer IPv4 header (for
/// ICMP, whose checksum has no pseudo header).
#[inline(always)]
pub(crate) fn rewrite_addr(
    ctx: &TcContext,
    pkt: &Packet,
    side: Side,
    new_addr: [u8; 4],
) -> Result<(), Counter> {
    let (old_addr, addr_off) = match side {
        Side::Source => (pkt.src, off::IP_SRC),
        Side::Destination => (pkt.dst, off::IP_DST),
    };
    if old_addr == new_addr {
        return Ok(());
    }
    let fail = |_| Counter::DropRewriteFailed;
    ctx.l3_csum_replace(
        pkt.l3_off + off::IP_CHECK,
        raw4(old_addr),
        raw4(new_addr),
        4,
    )
    .map_err(fail)?;
    ctx.store(pkt.l3_off + addr_off, &new_addr, 0).map_err(fail)
}

/// Replaces bytes inside an ICMP message's payload and keeps the ICMP
/// checksum (at `icmp_check`) right.
#[inline(always)]
fn icmp_payload_replace<const N: usize>(
    ctx: &TcContext,
    icmp_check: usize,
    field: usize,
    old: [u8; N],
    new: [u8; N],
) -> Result<(), Counter> {
    if old == new {
        return Ok(());
    }
    let fail = |_| Counter::DropRewriteFailed;
    let (from, to) = if N == 4 {
        (
            raw4([old[0], old[1], old[2], old[3]]),
            raw4([new[0], new[1], new[2], new[3]]),
        )
    } else {
        (
            u16::from_ne_bytes([old[0], old[1]]) as u64,
            u16::from_ne_bytes([new[0], new[1]]) as u64,
        )
    };
    ctx.l4_csum_replace(icmp_check, from, to, N as u64)
        .map_err(fail)?;
    ctx.store(field, &new, 0).map_err(fail)
}

/// Rewrites one side (address and port / echo id) of the packet quoted in
/// an ICMP error, with its IP checksum, its transport checksum when the
/// quote includes it (a zero UDP checksum stays zero), and the ICMP
/// checksum of the error itself. `side` is the quoted packet's side.
#[inline(always)]
pub(crate) fn rewrite_quoted(
    ctx: &TcContext,
    pkt: &Packet,
    q: &Quoted,
    side: Side,
    new_addr: [u8; 4],
    new_port: u16,
) -> Result<(), Counter> {
    let fail = |_| Counter::DropRewriteFailed;
    let icmp_check = pkt.l4_off + off::ICMP_CHECK;
    let (old_addr, addr_off, old_port) = match side {
        Side::Source => (q.src, q.l3_off + off::IP_SRC, q.sport),
        Side::Destination => (q.dst, q.l3_off + off::IP_DST, q.dport),
    };
    // Quoted IP header: address and header checksum.
    let ip_check_off = q.l3_off + off::IP_CHECK;
    let old_ip_check: [u8; 2] = ctx.load(ip_check_off).map_err(fail)?;
    let new_ip_check = csum_update(old_ip_check, &old_addr, &new_addr);
    icmp_payload_replace(ctx, icmp_check, addr_off, old_addr, new_addr)?;
    icmp_payload_replace(ctx, icmp_check, ip_check_off, old_ip_check, new_ip_check)?;
    let (old_p, new_p) = (old_port.to_be_bytes(), new_port.to_be_bytes());
    match q.proto {
        proto::TCP | proto::UDP => {
            let (port_field, check_field) = match (q.proto, side) {
                (proto::TCP, Side::Source) => (off::TCP_SRC, off::TCP_CHECK),
                (proto::TCP, Side::Destination) => (off::TCP_DST, off::TCP_CHECK),
                (_, Side::Source) => (off::UDP_SRC, off::UDP_CHECK),
                (_, Side::Destination) => (off::UDP_DST, off::UDP_CHECK),
            };
            icmp_payload_replace(ctx, icmp_check, q.l4_off + port_field, old_p, new_p)?;
            if q.l4_len >= check_field + 2 {
                let check_off = q.l4_off + check_field;
                let old_check: [u8; 2] = ctx.load(check_off).map_err(fail)?;
                if q.proto == proto::UDP && old_check == [0, 0] {
                    return Ok(());
                }
                let c = csum_update(old_check, &old_addr, &new_addr);
                let mut c = csum_update(c, &old_p, &new_p);
                if q.proto == proto::UDP && c == [0, 0] {
                    c = [0xff, 0xff];
                }
                icmp_payload_replace(ctx, icmp_check, check_off, old_check, c)?;
            }
        }
        proto::ICMP => {
            // A quoted echo request: its identifier and its own checksum.
            icmp_payload_replace(ctx, icmp_check, q.l4_off + off::ICMP_ID, old_p, new_p)?;
            let check_off = q.l4_off + off::ICMP_CHECK;
            let old_check: [u8; 2] = ctx.load(check_off).map_err(fail)?;
            let c = csum_update(old_check, &old_p, &new_p);
            icmp_payload_replace(ctx, icmp_check, check_off, old_check, c)?;
        }
        _ => return Err(Counter::DropUnsupportedProto),
    }
    Ok(())
}

/// The TTL and protocol word of a packet that may be forwarded one more
/// hop, for [`decrement_ttl`]; `None` when its TTL is 0 or 1 (the kernel
/// then sends "time exceeded").
#[inline(always)]
pub(crate) fn forwardable_ttl(ctx: &TcContext, pkt: &Packet) -> Result<Option<[u8; 2]>, Counter> {
    let ttl: [u8; 2] = ctx
        .load(pkt.l3_off + off::IP_TTL)
        .map_err(|_| Counter::DropMalformedIp)?;
    Ok((ttl[0] > 1).then_some(ttl))
}

/// TTL minus one, with the header checksum fixed (RFC 1812 §5.3.1).
#[inline(always)]
pub(crate) fn decrement_ttl(
    ctx: &TcContext,
    pkt: &Packet,
    ttl_proto: [u8; 2],
) -> Result<(), Counter> {
    let new = [ttl_proto[0] - 1, ttl_proto[1]];
    let fail = |_| Counter::DropRewriteFailed;
    ctx.l3_csum_replace(
        pkt.l3_off + off::IP_CHECK,
        u16::from_ne_bytes(ttl_proto) as u64,
        u16::from_ne_bytes(new) as u64,
        2,
    )
    .map_err(fail)?;
    ctx.store(pkt.l3_off + off::IP_TTL, &new, 0).map_err(fail)
}
