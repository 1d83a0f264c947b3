//! The fast path out: a packet from a masquerade source that the FIB sends
//! out of the uplink is source-translated where it enters the host
//! (`netbpf_fast_out`, tc ingress of the interfaces that lead to
//! containers, after the hairpin program) with the same code the uplink's
//! egress program runs ([`nat::outbound`], [`nat::apply_snat`]), and sent
//! straight to the uplink ([`crate::hop::send`]). The uplink's egress program still
//! sees it and passes it: its source is the host's. The way in is
//! [`crate::hop::to_container`], after the uplink's ingress program translated.
//! What cannot go fast is left untouched for the stack and the uplink's
//! egress program, counted by reason (see `crate::hop`).

use aya_ebpf::programs::TcContext;
use netbpf_common::Counter;

use crate::{
    Verdict,
    hop::{next_hop, send, to_stack, via_stack},
    maps::ROUTE_UPLINK,
    nat,
    parse::{L4, Packet},
    rewrite,
    rules::{is_icmp_error, masquerade_source},
    stats,
    tuple::out_tuple,
};

/// A packet from a container that no hairpin took: if it is masqueraded
/// and leaves through the uplink, translated here and sent straight to the
/// uplink; otherwise `Pass` (the stack routes it, and the uplink's egress
/// program translates it as before).
#[inline(always)]
pub(crate) fn from_container(ctx: &TcContext, pkt: &Packet) -> Result<Verdict, Counter> {
    let Some(tuple) = out_tuple(pkt) else {
        // Fragments and ICMP errors keep their bookkeeping in the uplink's
        // egress program.
        return match pkt.l4 {
            L4::Fragment => counted_pass(Counter::FastPathFragment, pkt),
            L4::Icmp { icmp_type, .. } if is_icmp_error(icmp_type) => {
                counted_pass(Counter::FastPathIcmpError, pkt)
            }
            _ => Ok(Verdict::Pass),
        };
    };
    if pkt.first_fragment {
        return counted_pass(Counter::FastPathFragment, pkt);
    }
    if via_stack() || !masquerade_source(pkt.src) {
        return Ok(Verdict::Pass);
    }
    let Some(up) = ROUTE_UPLINK.get(0).copied() else {
        return Ok(Verdict::Pass);
    };
    if up.ifindex == 0 {
        return Ok(Verdict::Pass);
    }
    let Some(ttl) = rewrite::forwardable_ttl(ctx, pkt)? else {
        stats::inc(Counter::FastPathTtl);
        return Ok(Verdict::Pass);
    };
    let hop = match next_hop(ctx, pkt, pkt.dst, Some(up.ifindex)) {
        Ok(Some(hop)) => hop,
        Ok(None) => return Ok(Verdict::Pass),
        Err(reason) => {
            stats::inc(reason);
            return Ok(Verdict::Pass);
        }
    };
    let to = match nat::outbound(ctx, pkt, &tuple) {
        Ok(Some(to)) => to,
        Ok(None) => return Ok(Verdict::Pass),
        // No session: the uplink's egress program refuses it the same way
        // and tells the container (ICMP 3/13).
        Err(Counter::DropPortExhausted | Counter::DropMappingTableFull) => {
            return Ok(Verdict::Pass);
        }
        Err(reason) => return Err(reason),
    };
    nat::apply_snat(ctx, pkt, &tuple, &to)?;
    send(ctx, pkt, ttl, &hop, Counter::FastPathOut)
}

/// `Pass`, counting why a masqueraded packet did not take the fast path.
#[inline(always)]
fn counted_pass(reason: Counter, pkt: &Packet) -> Result<Verdict, Counter> {
    if masquerade_source(pkt.src) {
        to_stack(reason);
    }
    Ok(Verdict::Pass)
}
