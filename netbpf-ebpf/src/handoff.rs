//! The tc side of the native XDP fast path: the uplink's tc ingress
//! program reads the [`XdpHandoff`] record the XDP program left in the
//! skb's metadata (`crate::xdp`, native mode) before anything else, and
//! sends the packet, already translated, to the record's interface: TTL
//! minus one (RFC 1624 update of the header checksum), the record's MACs,
//! `bpf_redirect` to the interface's egress. No parse, no lookup.
//!
//! The record is cleared once read, so that it cannot steer the packet
//! again further on (a container that runs netbpf itself). What the
//! record cannot send goes to the host's stack, translated and with TTL
//! and MACs as they came (an ordinary packet to the container, which the
//! stack forwards), counted by reason: an 802.1Q tag in the skb's
//! metadata (`fast_path_not_forwarded`), headers not in the linear data
//! after a pull (the same), TTL 1 or 0 (`fast_path_ttl`; XDP checked it,
//! so never).

use core::mem::size_of;

use aya_ebpf::{bindings::TC_ACT_OK, helpers::bpf_redirect, programs::TcContext};
use netbpf_common::{Counter, XdpHandoff};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    fib::{skb, skb_vlan_present},
    hop,
    parse::off,
    stats,
};

/// The headers the hand-off writes: Ethernet and an IPv4 header without
/// options (XDP takes no other).
const HDRS: usize = EthHdr::LEN + Ipv4Hdr::LEN;

/// The verdict for a packet XDP handed off, or `None` for any other
/// packet (no record, or not ours).
#[inline(always)]
pub(crate) fn take(ctx: &TcContext) -> Option<i32> {
    let record = read(ctx)?;
    Some(match send(ctx, &record) {
        Ok(verdict) => verdict,
        Err(reason) => {
            stats::inc(reason);
            // TCX_PASS: the stack forwards the translated packet.
            TC_ACT_OK
        }
    })
}

/// The record in front of the packet, if there is one of ours; cleared.
#[inline(always)]
fn read(ctx: &TcContext) -> Option<XdpHandoff> {
    const LEN: usize = size_of::<XdpHandoff>();
    // SAFETY: the context of a tc program is an __sk_buff.
    let (meta, data) = unsafe { ((*skb(ctx)).data_meta as usize, ctx.data()) };
    if meta + LEN > data {
        return None;
    }
    let at = meta as *mut XdpHandoff;
    // SAFETY: `[meta, meta + LEN)` lies within the metadata, checked above.
    let record = unsafe { core::ptr::read_unaligned(at) };
    if !record.is_ours() {
        return None;
    }
    // SAFETY: as above; tc programs may write the metadata.
    unsafe { core::ptr::write_unaligned(core::ptr::addr_of_mut!((*at).magic), 0) };
    Some(record)
}

/// TTL minus one, the record's MACs, redirected; `Err` is why the stack
/// gets it instead.
#[inline(always)]
fn send(ctx: &TcContext, record: &XdpHandoff) -> Result<i32, Counter> {
    if skb_vlan_present(ctx) {
        return Err(Counter::FastPathNotForwarded);
    }
    let (mut start, mut end) = (ctx.data(), ctx.data_end());
    if start + HDRS > end {
        // A driver may leave only part of the headers in the linear data.
        ctx.pull_data(HDRS as u32)
            .map_err(|_| Counter::FastPathNotForwarded)?;
        (start, end) = (ctx.data(), ctx.data_end());
        if start + HDRS > end {
            return Err(Counter::FastPathNotForwarded);
        }
    }
    // SAFETY: within [start, start + HDRS), checked above; a byte array.
    let ttl: [u8; 2] =
        unsafe { core::ptr::read_unaligned((start + EthHdr::LEN + off::IP_TTL) as *const [u8; 2]) };
    if ttl[0] <= 1 {
        return Err(Counter::FastPathTtl);
    }
    if !hop::write_hop(ctx, EthHdr::LEN, ttl, record.macs()) {
        return Err(Counter::FastPathNotForwarded);
    }
    stats::inc(Counter::FastPathIn);
    // SAFETY: plain helper call; flags 0 = the device's egress.
    Ok(unsafe { bpf_redirect(record.ifindex, 0) } as i32)
}
