//! "Communication administratively prohibited" back to a container whose
//! new flow could not get a NAT session (RFC 5508 REQ-8: port range
//! exhausted, mapping table full): the container's stack learns at once
//! instead of retrying into silence.
//!
//! The packet that could not be translated is turned, in place, into an
//! ICMP destination unreachable (type 3, code 13) from the NAT's outside
//! address to the container, quoting the packet's IP header and first
//! eight bytes (RFC 792), and redirected to the container's interface as
//! hairpinned packets are. Only towards containers: an outside sender over
//! its budget gets nothing (an answer would feed a flood). Without a route
//! to the container the packet is dropped as before.

use aya_ebpf::{
    bindings::BPF_F_RECOMPUTE_CSUM,
    helpers::{bpf_csum_diff, bpf_skb_load_bytes, bpf_skb_store_bytes},
    programs::TcContext,
};
use netbpf_common::{Counter, csum_fold};

use crate::{
    Verdict,
    fib::{self, skb},
    parse::Packet,
};

/// Most bytes quoted: the longest IPv4 header and eight bytes.
const QUOTE_MAX: usize = 60 + 8;
/// Scratch size for the quote (a power of two, for the verifier's sake).
const QUOTE_BUF: usize = 128;
/// Ethernet + IPv4 + ICMP headers of the error.
const HDR_LEN: usize = 14 + 20 + 8;

/// Turns `pkt` into an ICMP 3/13 from `from` to its source and redirects
/// it there. `Err(reason)`: it could not be sent; the caller's drop stands.
#[inline(always)]
pub(crate) fn prohibited(
    ctx: &TcContext,
    pkt: &Packet,
    from: [u8; 4],
    reason: Counter,
) -> Result<Verdict, Counter> {
    // Only with a way back: a packet that cannot be answered is dropped
    // as it came.
    let ifindex = fib::egress_for(ctx, pkt, pkt.src).ok_or(reason)?;
    let ihl = pkt.l4_off - pkt.l3_off;
    let want = ihl + 8;
    let tot = pkt.tot_len as usize;
    let qlen = if want < tot { want } else { tot };
    // 1..=QUOTE_MAX, in a form the verifier can follow.
    let qlen = ((qlen.wrapping_sub(1)) & (QUOTE_BUF - 1)) + 1;
    if qlen > QUOTE_MAX {
        return Err(reason);
    }
    // The ICMP message: header (checksum zero for now), then the quote,
    // zero-padded to a multiple of four for bpf_csum_diff.
    let mut icmp = [0u8; 8 + QUOTE_BUF];
    icmp[0] = 3;
    icmp[1] = 13;
    // SAFETY: `qlen` <= QUOTE_MAX fits the buffer after the 8-byte header.
    let rc = unsafe {
        bpf_skb_load_bytes(
            skb(ctx).cast(),
            pkt.l3_off as u32,
            icmp[8..].as_mut_ptr().cast(),
            qlen as u32,
        )
    };
    if rc != 0 {
        return Err(reason);
    }
    let icmp_len = 8 + qlen;
    let padded = (icmp_len + 3) & !3;
    if padded > icmp.len() {
        return Err(reason);
    }
    // SAFETY: `padded` bytes of the buffer; a null `from` of size 0.
    let sum = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            icmp.as_mut_ptr().cast(),
            padded as u32,
            0,
        )
    };
    if sum < 0 {
        return Err(reason);
    }
    let check = !csum_fold(sum as u64);
    icmp[2..4].copy_from_slice(&check.to_ne_bytes());

    // Ethernet (addresses filled in by the redirect) + IPv4 + ICMP header.
    let total = (20 + icmp_len) as u16;
    let mut hdr = [0u8; HDR_LEN];
    hdr[12] = 0x08;
    hdr[14] = 0x45;
    hdr[14 + 1] = 0xc0; // precedence: internetwork control (RFC 1812 §4.3.2.5)
    hdr[16..18].copy_from_slice(&total.to_be_bytes());
    hdr[22] = 64;
    hdr[23] = 1; // ICMP
    hdr[26..30].copy_from_slice(&from);
    hdr[30..34].copy_from_slice(&pkt.src);
    // SAFETY: the 20-byte IPv4 header in the stack buffer.
    let sum = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            hdr[14..34].as_mut_ptr().cast(),
            20,
            0,
        )
    };
    if sum < 0 {
        return Err(reason);
    }
    hdr[24..26].copy_from_slice(&(!csum_fold(sum as u64)).to_ne_bytes());
    hdr[34..42].copy_from_slice(&icmp[..8]);

    let fail = |_| reason;
    ctx.change_tail((HDR_LEN + qlen) as u32, 0).map_err(fail)?;
    // SAFETY: the skb was just sized to HDR_LEN + qlen bytes; both stores
    // lie within it and within their buffers.
    unsafe {
        if bpf_skb_store_bytes(skb(ctx), 0, hdr.as_ptr().cast(), HDR_LEN as u32, 0) != 0
            || bpf_skb_store_bytes(
                skb(ctx),
                HDR_LEN as u32,
                icmp[8..].as_ptr().cast(),
                qlen as u32,
                BPF_F_RECOMPUTE_CSUM as u64,
            ) != 0
        {
            return Err(reason);
        }
    }
    fib::redirect_neigh(ifindex).ok_or(reason)
}
