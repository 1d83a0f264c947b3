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
//!
//! The rest of a hairpinned datagram follows its first fragment
//! (`HAIRPIN_FRAGS` remembers both new addresses), and an ICMP error that
//! one container sends about a hairpinned packet goes to the other
//! container with both quoted endpoints translated back (RFC 5508 REQ-7,
//! RFC 7857 §12).

use aya_ebpf::programs::TcContext;
use netbpf_common::{
    Counter, Endpoint, FRAG_TIMEOUT_S, FlowKey, HairpinFrag, coarse_expired, coarse_seconds, proto,
};

use crate::{
    Verdict,
    conntrack::now_ns,
    csum, fib,
    maps::{CONNTRACK, HAIRPIN_FRAGS, NAT_REVERSE},
    nat,
    parse::{self, L4, Packet},
    quote,
    rewrite::{self, Side},
    rules::{self, is_icmp_error, published},
    stats,
    tuple::Tuple,
};

/// A packet from a container: hairpinned if it targets one of the NAT's
/// outside endpoints, else left to the stack (and to the uplink programs).
#[inline(always)]
pub(crate) fn inside(ctx: &TcContext, pkt: &Packet) -> Result<Verdict, Counter> {
    if rules::isolated(pkt.src, pkt.dst) {
        return Err(Counter::DropIsolated);
    }
    let (src, dst) = match pkt.l4 {
        L4::Ports { src, dst, .. } => (src, dst),
        L4::Fragment => return fragment(ctx, pkt),
        L4::Icmp { icmp_type, .. } if is_icmp_error(icmp_type) => return icmp_error(ctx, pkt),
        _ => return Ok(Verdict::Pass),
    };
    if pkt.proto != proto::TCP && pkt.proto != proto::UDP {
        return Ok(Verdict::Pass);
    }
    let target = Endpoint::new(pkt.proto, pkt.dst, dst);
    if NAT_REVERSE.get_ptr(&target).is_none() && published(pkt.proto, pkt.dst, dst).is_none() {
        return Ok(Verdict::Pass);
    }
    // Expiring: the stack answers (it owns the destination address).
    let Some(ttl) = rewrite::forwardable_ttl(ctx, pkt)? else {
        return Ok(Verdict::Pass);
    };
    let out_tuple = Tuple::of(pkt, src, dst);
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
    if pkt.first_fragment {
        let value = HairpinFrag {
            src: from.addr,
            dst: to.addr,
            stamp_s: coarse_seconds(now_ns()),
            _pad: 0,
        };
        // LRU map: a full table evicts the oldest datagram, never fails.
        let _ = HAIRPIN_FRAGS.insert(&pkt.frag_key(), &value, 0);
    }
    stats::inc(Counter::HairpinPackets);
    fib::redirect_to(ctx, pkt, to.addr)
}

/// A non-first fragment of a hairpinned datagram: both addresses its first
/// fragment got, then the same redirect. Any other fragment is the stack's.
#[inline(always)]
fn fragment(ctx: &TcContext, pkt: &Packet) -> Result<Verdict, Counter> {
    let key = pkt.frag_key();
    // SAFETY: map value pointer, valid for this run.
    let Some(hf) = HAIRPIN_FRAGS.get_ptr(&key).map(|v| unsafe { *v }) else {
        return Ok(Verdict::Pass);
    };
    if coarse_expired(hf.stamp_s, coarse_seconds(now_ns()), FRAG_TIMEOUT_S) {
        let _ = HAIRPIN_FRAGS.remove(&key);
        return Ok(Verdict::Pass);
    }
    let Some(ttl) = rewrite::forwardable_ttl(ctx, pkt)? else {
        return Ok(Verdict::Pass);
    };
    rewrite::rewrite_addr(ctx, pkt, Side::Source, hf.src)?;
    rewrite::rewrite_addr(ctx, pkt, Side::Destination, hf.dst)?;
    rewrite::decrement_ttl(ctx, pkt, ttl)?;
    stats::inc(Counter::FragmentsTranslated);
    stats::inc(Counter::HairpinPackets);
    fib::redirect_to(ctx, pkt, hf.dst)
}

/// An ICMP error a container (X) sends about a packet it received through
/// hairpinning: the quote is `outside(Y) → X`, where `outside(Y)` is the
/// other container's mapping or the published port it used. Both quoted
/// endpoints are translated back (the quote becomes `Y → outside(X)`, as
/// Y sent it), the outer header becomes `host → Y`, and the error is
/// redirected to Y. Errors about anything else are the stack's.
#[inline(always)]
fn icmp_error(ctx: &TcContext, pkt: &Packet) -> Result<Verdict, Counter> {
    let Ok(q) = parse::parse_quoted(ctx, pkt) else {
        return Ok(Verdict::Pass);
    };
    // X reports on a packet it received.
    if pkt.src != q.dst || (q.proto != proto::TCP && q.proto != proto::UDP) {
        return Ok(Verdict::Pass);
    }
    // X's side of the flow: its outside endpoint.
    let x_key = FlowKey::new(q.proto, q.dst, q.dport, q.src, q.sport);
    // SAFETY: map value pointer, valid for this run.
    let Some((x_addr, x_port)) = CONNTRACK
        .get_ptr(&x_key)
        .map(|f| unsafe { ((*f).outside_addr, (*f).outside_port) })
    else {
        return Ok(Verdict::Pass);
    };
    // Y: whoever holds the quoted source, a mapping or a published port.
    let quoted_src = Endpoint::new(q.proto, q.src, q.sport);
    let (y_addr, y_port) = match NAT_REVERSE.get_ptr(&quoted_src) {
        // SAFETY: map value pointer, valid for this run.
        Some(y) => unsafe { ((*y).addr, (*y).port) },
        None => match published(q.proto, q.src, q.sport) {
            Some(rule) => (rule.to_addr, rule.container_port(q.sport)),
            None => return Ok(Verdict::Pass),
        },
    };
    // Y must have the matching flow towards X's outside endpoint.
    let y_key = FlowKey::new(q.proto, y_addr, y_port, x_addr, x_port);
    if CONNTRACK.get_ptr(&y_key).is_none() {
        return Err(Counter::DropIcmpNoFlow);
    }
    if !csum::icmp_error_ok(ctx, pkt, &q) {
        return Err(Counter::DropIcmpBadChecksum);
    }
    let Some(ttl) = rewrite::forwardable_ttl(ctx, pkt)? else {
        return Ok(Verdict::Pass);
    };
    quote::rewrite_quoted(ctx, pkt, &q, Side::Source, y_addr, y_port)?;
    quote::rewrite_quoted(ctx, pkt, &q, Side::Destination, x_addr, x_port)?;
    rewrite::rewrite_addr(ctx, pkt, Side::Source, x_addr)?;
    rewrite::rewrite_addr(ctx, pkt, Side::Destination, y_addr)?;
    rewrite::decrement_ttl(ctx, pkt, ttl)?;
    stats::inc(Counter::IcmpErrorsTranslated);
    stats::inc(Counter::HairpinPackets);
    fib::redirect_to(ctx, pkt, y_addr)
}
