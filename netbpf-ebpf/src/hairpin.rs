//! Hairpinning (RFC 4787 REQ-9/9a, RFC 5382 REQ-8): a container reaching
//! an outside endpoint of this NAT — a published port or another
//! container's mapping — through the host's address.
//!
//! The packet never reaches the uplink (its destination is a local
//! address), so `netbpf_inside` runs at tc ingress of the interfaces that
//! lead to containers. It does what the two uplink programs would do one
//! after the other: source NAT (the sender gets its endpoint-independent
//! mapping, so the server sees the host's address and the client's outside
//! port), then destination NAT to the target. The result has a local source
//! address, which the stack would reject as martian, so it is redirected to
//! the target's interface directly, with the TTL decremented as a router
//! does.

use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::bpf_redirect_neigh,
    programs::TcContext,
};
use netbpf_common::{Counter, Endpoint, proto};

use crate::{
    Verdict, fib,
    maps::NAT_REVERSE,
    nat::{self, Tuple, published},
    parse::{L4, Packet, off},
    rewrite::{self, Side},
    stats,
};

/// A packet from a container: hairpinned if it targets one of the NAT's
/// outside endpoints, else left to the stack (and to the uplink programs).
#[inline(always)]
pub(crate) fn inside(ctx: &TcContext, pkt: &Packet) -> Result<Verdict, Counter> {
    let L4::Ports { src, dst, .. } = pkt.l4 else {
        return Ok(Verdict::Pass);
    };
    if pkt.proto != proto::TCP && pkt.proto != proto::UDP {
        return Ok(Verdict::Pass);
    }
    let target = Endpoint::new(pkt.proto, pkt.dst, dst);
    if NAT_REVERSE.get_ptr(&target).is_none() && published(pkt.proto, pkt.dst, dst).is_none() {
        return Ok(Verdict::Pass);
    }
    let ttl: [u8; 2] = ctx
        .load(pkt.l3_off + off::IP_TTL)
        .map_err(|_| Counter::DropMalformedIp)?;
    if ttl[0] <= 1 {
        // Expired: the stack answers (it owns the destination address).
        return Ok(Verdict::Pass);
    }
    let out_tuple = Tuple {
        proto: pkt.proto,
        src: pkt.src,
        sport: src,
        dst: pkt.dst,
        dport: dst,
    };
    // Source NAT first: only masqueraded senders (or the server side of an
    // existing hairpin flow) can be hairpinned; others go to the stack.
    let Some(from) = nat::outbound(ctx, pkt, &out_tuple)? else {
        return Ok(Verdict::Pass);
    };
    let in_tuple = Tuple {
        proto: pkt.proto,
        src: from.addr,
        sport: from.port,
        dst: pkt.dst,
        dport: dst,
    };
    let Some(to) = nat::inbound(ctx, pkt, &in_tuple)? else {
        return Ok(Verdict::Pass);
    };
    rewrite::rewrite(ctx, pkt, Side::Source, from.addr, src, from.port)?;
    rewrite::rewrite(ctx, pkt, Side::Destination, to.addr, dst, to.port)?;
    rewrite::decrement_ttl(ctx, pkt, ttl)?;
    stats::inc(Counter::HairpinPackets);
    redirect(ctx, pkt, to.addr)
}

/// Sends the translated packet straight to the interface that leads to
/// `dst`, with the kernel filling in the Ethernet addresses.
#[inline(always)]
fn redirect(ctx: &TcContext, pkt: &Packet, dst: [u8; 4]) -> Result<Verdict, Counter> {
    let (rc, params) = fib::lookup(ctx, pkt, dst);
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 && rc != BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        return Err(Counter::DropHairpinNoRoute);
    }
    // SAFETY: plain helper call; NULL params make the kernel resolve the
    // next hop from the packet's destination.
    let rc = unsafe { bpf_redirect_neigh(params.ifindex, core::ptr::null_mut(), 0, 0) };
    if rc < 0 {
        return Err(Counter::DropHairpinNoRoute);
    }
    Ok(Verdict::Redirect(rc as i32))
}
