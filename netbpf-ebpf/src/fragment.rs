//! Fragments through the NAT: a first fragment's translation is remembered
//! (`FRAGS`, keyed as the datagram appears on the wire) and given to the
//! fragments that follow; a fragment that comes before its first is held
//! (`crate::reorder`).

use aya_ebpf::programs::TcContext;
use netbpf_common::{Counter, FRAG_TIMEOUT_S, FragValue, coarse_expired, coarse_seconds};

use crate::{
    Verdict, conntrack,
    maps::FRAGS,
    parse::Packet,
    reorder,
    rewrite::{self, Side},
    rules::{guard_inside, untranslatable},
    stats,
};

/// After translating a first fragment, remembers its new address for the
/// fragments that follow (keyed as they will appear on the wire).
#[inline(always)]
pub(crate) fn remember_fragment(pkt: &Packet, addr: [u8; 4]) {
    if !pkt.first_fragment {
        return;
    }
    let key = pkt.frag_key();
    let value = FragValue {
        addr,
        stamp_s: coarse_seconds(conntrack::now_ns()),
    };
    // LRU map: a full table evicts the oldest datagram, never fails.
    let _ = FRAGS.insert(&key, &value, 0);
}

/// The translation remembered for a non-first fragment's datagram.
#[inline(always)]
fn fragment_translation(pkt: &Packet) -> Option<[u8; 4]> {
    let key = pkt.frag_key();
    // SAFETY: map value pointer, valid for this run.
    let value = unsafe { *FRAGS.get_ptr(&key)? };
    // An entry from before the reassembly timeout belongs to an earlier
    // datagram with the same IP ID.
    if coarse_expired(
        value.stamp_s,
        coarse_seconds(conntrack::now_ns()),
        FRAG_TIMEOUT_S,
    ) {
        let _ = FRAGS.remove(&key);
        return None;
    }
    Some(value.addr)
}

/// A non-first fragment leaving the uplink: the source its first fragment
/// got, or dropped if it comes from a masquerade CIDR without one.
#[inline(always)]
pub(crate) fn fragment_out(ctx: &TcContext, pkt: &Packet) -> Result<Verdict, Counter> {
    let Some(addr) = fragment_translation(pkt) else {
        return untranslatable(pkt, Counter::DropFragment);
    };
    translate_fragment(ctx, pkt, Side::Source, addr)
}

/// Gives a non-first fragment the address its first fragment got, and
/// counts it with its direction's packets.
#[inline(always)]
fn translate_fragment(
    ctx: &TcContext,
    pkt: &Packet,
    side: Side,
    addr: [u8; 4],
) -> Result<Verdict, Counter> {
    rewrite::rewrite_addr(ctx, pkt, side, addr)?;
    let (packets, bytes) = match side {
        Side::Source => (Counter::SnatPackets, Counter::SnatBytes),
        Side::Destination => (Counter::ReversePackets, Counter::ReverseBytes),
    };
    stats::inc(Counter::FragmentsTranslated);
    stats::inc(packets);
    stats::add(bytes, pkt.tot_len as u64);
    Ok(Verdict::Translated)
}

/// A non-first fragment arriving on the uplink: the destination its first
/// fragment got, else the host's (or dropped if addressed to a container).
#[inline(always)]
pub(crate) fn fragment_in(ctx: &TcContext, pkt: &Packet) -> Result<Verdict, Counter> {
    let Some(addr) = fragment_translation(pkt) else {
        guard_inside(pkt)?;
        // Its first fragment may still come (out of order): hold it.
        if let Some(held) = reorder::hold(ctx, pkt) {
            return Ok(held);
        }
        stats::inc(Counter::FragmentsPassed);
        return Ok(Verdict::Pass);
    };
    if addr == pkt.dst {
        // Its first fragment was the host's.
        stats::inc(Counter::FragmentsPassed);
        return Ok(Verdict::Pass);
    }
    translate_fragment(ctx, pkt, Side::Destination, addr)
}
