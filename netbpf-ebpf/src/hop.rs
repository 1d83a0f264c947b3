//! One hop onward, past the host's stack: where a packet goes next (the
//! kernel's FIB, remembered in `FAST_HOPS`), and sending it there with its
//! TTL decremented and new Ethernet addresses. The fast path
//! ([`to_container`] here for inbound NAT, `crate::fast` for outbound) and
//! the routed path (`crate::route`) send their packets through [`send`].
//!
//! What cannot go onward goes to the host's stack as it did before the
//! fast path existed, counted by reason ([`to_stack`]): TTL 1 or 0 (the
//! kernel sends time exceeded), a next hop whose MAC the kernel does not
//! know yet (it resolves it, and the next packet goes fast), a packet
//! larger than the egress MTU (the kernel fragments it or answers
//! "fragmentation needed"), a destination the FIB does not forward (local,
//! unreachable, forwarding disabled), fragments and ICMP errors (their
//! bookkeeping stays in one place), an 802.1Q tag in the skb's metadata.
//! `[datapath] fast_path = false` (`VIA_STACK`) sends everything the old
//! way.
//!
//! From tc, `bpf_fib_lookup` is asked without a length (`tot_len` 0), so
//! the kernel checks the skb itself against the egress MTU, GSO segments
//! included; from XDP (`crate::xdp`, which shares [`next_hop`] and the
//! cache) with the frame's IP length.
//! Its answer (egress interface, MACs, MTU) is remembered per input
//! interface and destination in `FAST_HOPS` for [`HOP_VALID_S`]: the
//! lookup costs about 300 ns here, the cache hit one hash lookup. A cached
//! hop is not used for a packet larger than its MTU (the FIB is asked, and
//! knows about GSO); a neighbour the kernel forgets is believed for at most
//! that long (the redirected frames still carry the MAC it had).

use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::bpf_redirect,
    programs::TcContext,
};
use netbpf_common::{
    Counter, HOP_VALID_S, HopKey, HopValue, coarse_expired, coarse_seconds, settings_flags,
};

use crate::{
    Verdict,
    conntrack::now_ns,
    fib::{self, FibCtx},
    guard,
    maps::FAST_HOPS,
    parse::{MAX_L3_OFF, Packet, off},
    rewrite, stats,
};

/// Whether the config sends translated packets back to the stack.
#[inline(always)]
pub(crate) fn via_stack() -> bool {
    guard::settings().flags & settings_flags::VIA_STACK != 0
}

/// Where the FIB sends a packet, when it can go there at once.
pub(crate) struct Hop {
    pub(crate) ifindex: u32,
    pub(crate) dst_mac: [u8; 6],
    pub(crate) src_mac: [u8; 6],
}

/// `pkt`'s next hop towards `dst`: remembered in `FAST_HOPS` for a second
/// or two, else asked of the FIB (and remembered). `Err` is the counted
/// reason it must go to the stack instead; `Ok(None)`: the FIB sends it
/// out of another device than `want` (when one is wanted), not a case for
/// the fast path and not counted.
#[inline(always)]
pub(crate) fn next_hop<C: FibCtx>(
    ctx: &C,
    pkt: &Packet,
    dst: [u8; 4],
    want: Option<u32>,
) -> Result<Option<Hop>, Counter> {
    let key = HopKey {
        ifindex_in: ctx.ifindex_in(),
        dst,
    };
    let now_s = coarse_seconds(now_ns());
    if let Some(hop) = FAST_HOPS.get_ptr(&key) {
        // SAFETY: map value pointer, valid for this run.
        let hop = unsafe { *hop };
        // A packet larger than the MTU asks the FIB, which knows GSO.
        if !coarse_expired(hop.checked_s, now_s, HOP_VALID_S) && pkt.tot_len <= hop.mtu as u32 {
            if want.is_some_and(|ifindex| ifindex != hop.ifindex) {
                return Ok(None);
            }
            return Ok(Some(Hop {
                ifindex: hop.ifindex,
                dst_mac: hop.dst_mac,
                src_mac: hop.src_mac,
            }));
        }
    }
    let (rc, params) = fib::route(ctx, pkt, dst);
    let elsewhere = match want {
        Some(ifindex) => params.ifindex != ifindex,
        None => false,
    };
    if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        // SAFETY: plain byte-array and integer union fields, set on
        // success (the MTU because no length was given).
        let (dst_mac, src_mac, mtu) = unsafe {
            let macs = params.__bindgen_anon_6.__bindgen_anon_2;
            (macs.dmac, macs.smac, params.__bindgen_anon_1.mtu_result)
        };
        let value = HopValue {
            ifindex: params.ifindex,
            dst_mac,
            src_mac,
            mtu,
            _pad: 0,
            checked_s: now_s,
        };
        // LRU: a full cache forgets the least used hop, never fails.
        let _ = FAST_HOPS.insert(&key, &value, 0);
        if elsewhere {
            return Ok(None);
        }
        return Ok(Some(Hop {
            ifindex: params.ifindex,
            dst_mac,
            src_mac,
        }));
    }
    if rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        return if elsewhere {
            Ok(None)
        } else {
            Err(Counter::FastPathNoNeighbour)
        };
    }
    if rc == BPF_FIB_LKUP_RET_FRAG_NEEDED as i64 {
        return if elsewhere {
            Ok(None)
        } else {
            Err(Counter::FastPathMtu)
        };
    }
    Err(Counter::FastPathNotForwarded)
}

/// After reverse SNAT or DNAT on the uplink (the packet now addressed to
/// `dst`, a container): straight to the interface that leads to it, or
/// `Translated` for the stack to route.
#[inline(always)]
pub(crate) fn to_container(
    ctx: &TcContext,
    pkt: &Packet,
    dst: [u8; 4],
) -> Result<Verdict, Counter> {
    if via_stack() {
        return Ok(Verdict::Translated);
    }
    let reason = match onward_in(ctx, pkt, dst)? {
        Ok(verdict) => return Ok(verdict),
        Err(reason) => reason,
    };
    stats::inc(reason);
    Ok(Verdict::Translated)
}

/// [`to_container`]'s work; the inner `Err` is why the stack gets it.
#[inline(always)]
fn onward_in(
    ctx: &TcContext,
    pkt: &Packet,
    dst: [u8; 4],
) -> Result<Result<Verdict, Counter>, Counter> {
    if pkt.first_fragment {
        return Ok(Err(Counter::FastPathFragment));
    }
    if fib::skb_vlan_present(ctx) {
        return Ok(Err(Counter::FastPathNotForwarded));
    }
    let Some(ttl) = rewrite::forwardable_ttl(ctx, pkt)? else {
        return Ok(Err(Counter::FastPathTtl));
    };
    let hop = match next_hop(ctx, pkt, dst, None) {
        Ok(Some(hop)) => hop,
        Ok(None) => return Ok(Err(Counter::FastPathNotForwarded)),
        Err(reason) => return Ok(Err(reason)),
    };
    send(ctx, pkt, ttl, &hop, Counter::FastPathIn).map(Ok)
}

/// Counts why a NAT packet goes to the stack rather than the fast path
/// (nothing when the config sends every packet there).
#[inline(always)]
pub(crate) fn to_stack(reason: Counter) {
    if !via_stack() {
        stats::inc(reason);
    }
}

/// Sends `pkt` one hop: TTL minus one (`ttl` is its TTL and protocol
/// bytes, TTL above 1), the hop's Ethernet addresses, redirected to its
/// interface's egress; counted as `counter`.
///
/// The writes go straight to packet memory: the IP header checksum follows
/// the TTL by RFC 1624, which is right whatever the skb's `ip_summed` (the
/// header's sum does not change, so neither does a `CHECKSUM_COMPLETE`
/// sum), and the MACs are outside every checksum. Two helper calls fewer
/// than `bpf_l3_csum_replace` + `bpf_skb_store_bytes` (about 13 ns each).
/// Should the header not be in the linear data (the parse pulled it, but a
/// rewrite helper may have moved it), the helpers do it.
#[inline(always)]
pub(crate) fn send(
    ctx: &TcContext,
    pkt: &Packet,
    ttl: [u8; 2],
    hop: &Hop,
    counter: Counter,
) -> Result<Verdict, Counter> {
    let (dst_mac, src_mac) = (hop.dst_mac, hop.src_mac);
    let macs = [
        dst_mac[0], dst_mac[1], dst_mac[2], dst_mac[3], dst_mac[4], dst_mac[5], src_mac[0],
        src_mac[1], src_mac[2], src_mac[3], src_mac[4], src_mac[5],
    ];
    if !write_hop(ctx, pkt.l3_off, ttl, macs) {
        rewrite::decrement_ttl(ctx, pkt, ttl)?;
        ctx.store(0, &macs, 0)
            .map_err(|_| Counter::DropRewriteFailed)?;
    }
    stats::inc(counter);
    // SAFETY: plain helper call; flags 0 = the device's egress.
    let rc = unsafe { bpf_redirect(hop.ifindex, 0) };
    Ok(Verdict::Redirect(rc as i32))
}

/// Writes one hop into the packet's linear data: TTL minus one (`ttl` is
/// the TTL and protocol word of the IPv4 header at `l3_off`, TTL above 1)
/// with its header checksum (RFC 1624), and `macs` (destination, then
/// source) over the Ethernet addresses. `false`, with nothing written,
/// when those bytes are not in the linear data.
#[inline(always)]
pub(crate) fn write_hop(ctx: &TcContext, l3_off: usize, ttl: [u8; 2], macs: [u8; 12]) -> bool {
    let new_ttl = [ttl[0] - 1, ttl[1]];
    let (start, end) = (ctx.data(), ctx.data_end());
    let ip = start + l3_off;
    if l3_off > MAX_L3_OFF || ip + off::IP_CHECK + 2 > end || start + 12 > end {
        return false;
    }
    // SAFETY: every byte written is checked above to lie within the
    // packet's linear data; tc programs may write it (the kernel unclones
    // the skb for a program that does).
    unsafe {
        let check_at = (ip + off::IP_CHECK) as *mut [u8; 2];
        let check = core::ptr::read_unaligned(check_at);
        core::ptr::write_unaligned(check_at, netbpf_common::csum_update(check, &ttl, &new_ttl));
        core::ptr::write_unaligned((ip + off::IP_TTL) as *mut [u8; 2], new_ttl);
        core::ptr::write_unaligned(start as *mut [u8; 12], macs);
    }
    true
}
