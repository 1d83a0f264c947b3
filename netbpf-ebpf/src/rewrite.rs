//! Header rewrites on an skb with byte-exact checksum updates.
//!
//! A rewrite writes the skb's linear data directly, with RFC 1624
//! updates of the checksums (`netbpf_common::csum_update`), wherever that
//! is right for every `ip_summed` state the skb may be in, and leaves the
//! rest to the kernel's `bpf_l4_csum_replace`, which knows the state:
//! * **IP header and ICMP**: an address, TTL or echo identifier changes
//!   together with its own checksum, so the bytes' total stays the same and
//!   no state (not even a `CHECKSUM_COMPLETE` sum) is affected: always
//!   direct.
//! * **TCP/UDP checksum**: with `CHECKSUM_PARTIAL` (offloaded transmit, as
//!   every container's packet over a veth) the field holds only the pseudo
//!   header's sum (the seed, [`pseudo_header_seed`]), which a port change
//!   must leave alone; any other state holds a complete checksum. A field
//!   that equals the seed (always for `CHECKSUM_PARTIAL`, by a 1-in-65536
//!   chance otherwise) goes through the two helper calls, which are right
//!   in every state; any other field is not a seed, so it is updated in
//!   place, and `bpf_csum_update` carries the change into a
//!   `CHECKSUM_COMPLETE` skb's sum (`complete_sum_change`: the pseudo
//!   header's part, which the sum does not cover; the helper refuses in
//!   other states).
//!
//! Five helper calls per rewritten side before (two checksum replaces, the
//! IP checksum replace, two stores); now one, or two for a seed.
//! Headers outside the linear data (never after the parse's pull, but the
//! verifier cannot know) take the helpers only.
//!
//! UDP: a zero checksum means "none" and stays zero, and a computed zero
//! is sent as 0xffff (RFC 768): `udp_csum_update`, and the helpers'
//! `BPF_F_MARK_MANGLED_0`.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    helpers::bpf_csum_update,
    programs::TcContext,
};
use netbpf_common::{
    Counter, complete_sum_change, csum_update, proto, pseudo_header_seed, udp_csum_update,
};
use network_types::{ip::Ipv4Hdr, tcp::TcpHdr, udp::UdpHdr};

use crate::{
    fib,
    parse::{MAX_L3_OFF, MAX_L4_OFF, Packet, off},
};

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
pub(crate) fn raw4(addr: [u8; 4]) -> u64 {
    u32::from_ne_bytes(addr) as u64
}

/// The IPv4 header and the first `L4` bytes of the transport header in
/// the skb's linear data, as addresses the program may read and write:
/// `None` when they are not all there. Taken again after every helper
/// call that may move the data.
#[derive(Clone, Copy)]
struct Linear {
    ip: usize,
    l4: usize,
}

impl Linear {
    #[inline(always)]
    fn of<const L4: usize>(ctx: &TcContext, pkt: &Packet) -> Option<Linear> {
        if pkt.l3_off > MAX_L3_OFF || pkt.l4_off > MAX_L4_OFF {
            return None;
        }
        let (start, end) = (ctx.data(), ctx.data_end());
        let (ip, l4) = (start + pkt.l3_off, start + pkt.l4_off);
        if ip + Ipv4Hdr::LEN > end || l4 + L4 > end {
            return None;
        }
        Some(Linear { ip, l4 })
    }

    /// The `N` bytes at `at`.
    ///
    /// # Safety
    /// `at..at + N` lies within what [`Linear::of`] checked.
    #[inline(always)]
    unsafe fn get<const N: usize>(at: usize) -> [u8; N] {
        // SAFETY: the caller's; byte arrays have alignment 1.
        unsafe { core::ptr::read_unaligned(at as *const [u8; N]) }
    }

    /// Writes `v` at `at`.
    ///
    /// # Safety
    /// As [`Linear::get`]; tc programs may write packet data (the kernel
    /// unclones the skb for a program that does).
    #[inline(always)]
    unsafe fn set<const N: usize>(at: usize, v: [u8; N]) {
        // SAFETY: the caller's.
        unsafe { core::ptr::write_unaligned(at as *mut [u8; N], v) }
    }
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
    let change = Change {
        side,
        new_addr,
        old_port,
        new_port,
    };
    rewrite_side(ctx, pkt, &change)
}

/// What [`rewrite`] changes.
#[derive(Clone, Copy)]
struct Change {
    side: Side,
    new_addr: [u8; 4],
    old_port: u16,
    new_port: u16,
}

/// [`rewrite`]'s work. Not inlined: one copy serves every caller, which
/// keeps the programs' stack and size in the verifier's bounds (inlined
/// into each caller, they were not).
#[inline(never)]
fn rewrite_side(ctx: &TcContext, pkt: &Packet, change: &Change) -> Result<(), Counter> {
    let Change {
        side,
        new_addr,
        old_port,
        new_port,
    } = *change;
    let (old_addr, addr_off) = match side {
        Side::Source => (pkt.src, off::IP_SRC),
        Side::Destination => (pkt.dst, off::IP_DST),
    };
    let (old_p, new_p) = (old_port.to_be_bytes(), new_port.to_be_bytes());
    // The transport header first (its checksum's pseudo header covers the
    // address, which is still the old one in the packet), then the IP
    // header.
    match (pkt.proto, side) {
        (proto::TCP, Side::Source) => transport::<
            { off::TCP_CHECK },
            { off::TCP_SRC },
            { TcpHdr::LEN },
        >(ctx, pkt, (old_addr, new_addr), (old_p, new_p))?,
        (proto::TCP, Side::Destination) => transport::<
            { off::TCP_CHECK },
            { off::TCP_DST },
            { TcpHdr::LEN },
        >(
            ctx, pkt, (old_addr, new_addr), (old_p, new_p)
        )?,
        (proto::UDP, Side::Source) => transport::<
            { off::UDP_CHECK },
            { off::UDP_SRC },
            { UdpHdr::LEN },
        >(ctx, pkt, (old_addr, new_addr), (old_p, new_p))?,
        (proto::UDP, Side::Destination) => transport::<
            { off::UDP_CHECK },
            { off::UDP_DST },
            { UdpHdr::LEN },
        >(
            ctx, pkt, (old_addr, new_addr), (old_p, new_p)
        )?,
        // The ICMP checksum has no pseudo header: only the id matters.
        (proto::ICMP, _) => echo_id(ctx, pkt, old_p, new_p)?,
        _ => return Err(Counter::DropUnsupportedProto),
    }
    ip_addr(ctx, pkt, addr_off, old_addr, new_addr)
}

/// A TCP or UDP header's port at `PORT` and its checksum at `CHECK` (the
/// header is `HDR` bytes): `addr` is the pseudo header's address and
/// `port` the port, each (old, new). See the module's comment for which
/// way the checksum goes.
#[inline(always)]
fn transport<const CHECK: usize, const PORT: usize, const HDR: usize>(
    ctx: &TcContext,
    pkt: &Packet,
    addr: ([u8; 4], [u8; 4]),
    port: ([u8; 2], [u8; 2]),
) -> Result<(), Counter> {
    if addr.0 == addr.1 && port.0 == port.1 {
        return Ok(());
    }
    let udp = pkt.proto == proto::UDP;
    if let Some(at) = Linear::of::<HDR>(ctx, pkt) {
        // SAFETY: the IP header and HDR transport bytes, checked by `of`.
        let (ends, check) = unsafe {
            (
                Linear::get::<8>(at.ip + off::IP_SRC),
                Linear::get::<2>(at.l4 + CHECK),
            )
        };
        // The addresses as they are now (a hairpin rewrites both sides).
        let (src, dst) = (
            [ends[0], ends[1], ends[2], ends[3]],
            [ends[4], ends[5], ends[6], ends[7]],
        );
        // The transport length of the pseudo header (a total length of 0,
        // as in a BIG TCP packet, makes no seed: the helpers then).
        let l4_len = (pkt.tot_len as usize).saturating_sub(pkt.l4_off - pkt.l3_off);
        let seed = pseudo_header_seed(src, dst, pkt.proto, l4_len as u16);
        if l4_len != 0 && check != [0, 0] && check != seed {
            // A complete checksum: in place.
            let (a, p) = (addr, port);
            let old = [a.0[0], a.0[1], a.0[2], a.0[3], p.0[0], p.0[1]];
            let new = [a.1[0], a.1[1], a.1[2], a.1[3], p.1[0], p.1[1]];
            let c = if udp {
                udp_csum_update(check, &old, &new)
            } else {
                csum_update(check, &old, &new)
            };
            // SAFETY: as above.
            unsafe {
                Linear::set(at.l4 + CHECK, c);
                Linear::set(at.l4 + PORT, port.1);
            }
            if addr.0 != addr.1 {
                // A CHECKSUM_COMPLETE sum follows the pseudo header's part
                // of the change; any other state refuses, which is right.
                let change = complete_sum_change(addr.0, addr.1);
                // SAFETY: plain helper call on this program's skb.
                unsafe { bpf_csum_update(fib::skb(ctx), change) };
            }
            return Ok(());
        }
        // A zero UDP checksum (none) or a field that may be a seed.
        if udp && check == [0, 0] {
            // SAFETY: as above.
            unsafe { Linear::set(at.l4 + PORT, port.1) };
            return Ok(());
        }
    }
    // A seed, or headers outside the linear data: the helpers.
    let fail = |_| Counter::DropRewriteFailed;
    let flags = if udp { BPF_F_MARK_MANGLED_0 as u64 } else { 0 };
    let check = pkt.l4_off + CHECK;
    if addr.0 != addr.1 {
        ctx.l4_csum_replace(
            check,
            raw4(addr.0),
            raw4(addr.1),
            flags | BPF_F_PSEUDO_HDR as u64 | 4,
        )
        .map_err(fail)?;
    }
    if port.0 != port.1 {
        let (from, to) = (u16::from_ne_bytes(port.0), u16::from_ne_bytes(port.1));
        ctx.l4_csum_replace(check, from as u64, to as u64, flags | 2)
            .map_err(fail)?;
        match Linear::of::<HDR>(ctx, pkt) {
            // SAFETY: checked by `of`, after the helpers moved the data.
            Some(at) => unsafe { Linear::set(at.l4 + PORT, port.1) },
            None => ctx.store(pkt.l4_off + PORT, &port.1, 0).map_err(fail)?,
        }
    }
    Ok(())
}

/// An ICMP echo's identifier, with the ICMP checksum (no pseudo header).
#[inline(always)]
fn echo_id(ctx: &TcContext, pkt: &Packet, old: [u8; 2], new: [u8; 2]) -> Result<(), Counter> {
    if old == new {
        return Ok(());
    }
    const HDR: usize = off::ICMP_ID + 2;
    if let Some(at) = Linear::of::<HDR>(ctx, pkt) {
        // SAFETY: within the HDR transport bytes checked by `of`.
        unsafe {
            let check = Linear::get::<2>(at.l4 + off::ICMP_CHECK);
            Linear::set(at.l4 + off::ICMP_CHECK, csum_update(check, &old, &new));
            Linear::set(at.l4 + off::ICMP_ID, new);
        }
        return Ok(());
    }
    let fail = |_| Counter::DropRewriteFailed;
    let (from, to) = (u16::from_ne_bytes(old), u16::from_ne_bytes(new));
    ctx.l4_csum_replace(pkt.l4_off + off::ICMP_CHECK, from as u64, to as u64, 2)
        .map_err(fail)?;
    ctx.store(pkt.l4_off + off::ICMP_ID, &new, 0).map_err(fail)
}

/// The IPv4 header's address at `addr_off` and its header checksum.
#[inline(always)]
fn ip_addr(
    ctx: &TcContext,
    pkt: &Packet,
    addr_off: usize,
    old: [u8; 4],
    new: [u8; 4],
) -> Result<(), Counter> {
    if old == new {
        return Ok(());
    }
    if let Some(at) = Linear::of::<0>(ctx, pkt) {
        // SAFETY: within the IP header checked by `of`; `addr_off` is the
        // source's or the destination's offset.
        unsafe {
            let check = Linear::get::<2>(at.ip + off::IP_CHECK);
            Linear::set(at.ip + off::IP_CHECK, csum_update(check, &old, &new));
            Linear::set(at.ip + addr_off, new);
        }
        return Ok(());
    }
    let fail = |_| Counter::DropRewriteFailed;
    ctx.l3_csum_replace(pkt.l3_off + off::IP_CHECK, raw4(old), raw4(new), 4)
        .map_err(fail)?;
    ctx.store(pkt.l3_off + addr_off, &new, 0).map_err(fail)
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
    match side {
        Side::Source => ip_addr(ctx, pkt, off::IP_SRC, pkt.src, new_addr),
        Side::Destination => ip_addr(ctx, pkt, off::IP_DST, pkt.dst, new_addr),
    }
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
