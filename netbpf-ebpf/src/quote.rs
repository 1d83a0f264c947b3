//! Rewrites of the packet an ICMP error quotes (RFC 5508: the error
//! carries the offending packet's headers, which the NAT translates as it
//! translated that packet), with every checksum it touches: the quoted IP
//! header's, the quoted transport checksum when the quote holds it, and
//! the ICMP error's own, which covers the quote. A rare path: the kernel's
//! helpers do the writes.

use aya_ebpf::programs::TcContext;
use netbpf_common::{Counter, csum_update, proto};

use crate::{
    parse::{Packet, Quoted, off},
    rewrite::{Side, raw4},
};

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
