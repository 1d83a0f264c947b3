//! ICMP errors through the NAT (RFC 5508): an error is matched to its flow
//! through the packet it quotes, and both the outer header and the quoted
//! header are translated, so traceroute, tracepath and PMTU discovery work
//! from and to containers. Errors never create, refresh or end a flow
//! (RFC 5508 REQ-6, RFC 4787 REQ-12, RFC 5382 REQ-10).

use aya_ebpf::programs::TcContext;
use netbpf_common::{Counter, Endpoint, FlowKey, proto};

use crate::{
    Verdict, csum,
    maps::{CONNTRACK, NAT_REVERSE},
    parse::{self, ICMP_ECHO_REQUEST, Packet},
    quote,
    rewrite::{self, Side},
    rules::{masquerade_source, published, untranslatable},
    stats,
};

/// An ICMP error arriving on the uplink. The packet it quotes is one that
/// left through the NAT, so its source is an outside endpoint: find the
/// inside endpoint, check the flow exists (else drop: RFC 5508 REQ-4), and
/// translate the outer destination and the quoted source back.
#[inline(always)]
pub(crate) fn error_in(ctx: &TcContext, pkt: &Packet) -> Result<Verdict, Counter> {
    // A quote netbpf cannot read is not about a NAT flow: the host's.
    let Ok(q) = parse::parse_quoted(ctx, pkt) else {
        return Ok(Verdict::Pass);
    };
    // An error about a packet we sent comes back to that packet's source.
    if pkt.dst != q.src {
        return Ok(Verdict::Pass);
    }
    let (sport, dport) = match q.proto {
        proto::TCP | proto::UDP => (q.sport, q.dport),
        proto::ICMP if q.icmp_type == ICMP_ECHO_REQUEST => (q.sport, 0),
        _ => return Ok(Verdict::Pass),
    };
    let outside = Endpoint::new(q.proto, q.src, sport);
    let (addr, port) = match NAT_REVERSE.get_ptr(&outside) {
        // SAFETY: map value pointer, valid for this run.
        Some(inside) => unsafe { ((*inside).addr, (*inside).port) },
        None => {
            if q.proto == proto::ICMP {
                return Ok(Verdict::Pass);
            }
            match published(q.proto, q.src, sport) {
                Some(rule) => (rule.to_addr, rule.container_port(sport)),
                None => return Ok(Verdict::Pass),
            }
        }
    };
    let key = FlowKey::new(q.proto, addr, port, q.dst, dport);
    if CONNTRACK.get_ptr(&key).is_none() {
        return Err(Counter::DropIcmpNoFlow);
    }
    if !csum::icmp_error_ok(ctx, pkt, &q) {
        return Err(Counter::DropIcmpBadChecksum);
    }
    quote::rewrite_quoted(ctx, pkt, &q, Side::Source, addr, port)?;
    rewrite::rewrite_addr(ctx, pkt, Side::Destination, addr)?;
    stats::inc(Counter::IcmpErrorsTranslated);
    Ok(Verdict::Translated)
}

/// An ICMP error leaving the uplink, about a packet a container received
/// (sent by a container, or by this host while forwarding to one). The
/// quoted packet went remote → inside: translate its destination to the
/// outside endpoint, and the outer source too when it is the container.
#[inline(always)]
pub(crate) fn error_out(ctx: &TcContext, pkt: &Packet) -> Result<Verdict, Counter> {
    let q = match parse::parse_quoted(ctx, pkt) {
        Ok(q) => q,
        Err(reason) => return untranslatable(pkt, reason),
    };
    if q.proto != proto::TCP && q.proto != proto::UDP {
        return untranslatable(pkt, Counter::DropIcmpNoFlow);
    }
    let key = FlowKey::new(q.proto, q.dst, q.dport, q.src, q.sport);
    let Some(flow) = CONNTRACK.get_ptr(&key) else {
        return untranslatable(pkt, Counter::DropIcmpNoFlow);
    };
    // SAFETY: map value pointer, valid for this run.
    let (addr, port) = unsafe { ((*flow).outside_addr, (*flow).outside_port) };
    let from_container = pkt.src == q.dst;
    if !from_container && masquerade_source(pkt.src) {
        // Another inside host reporting on this flow: it would leave with
        // its private source, and it is not who the flow talks to.
        return Err(Counter::DropIcmpNoFlow);
    }
    if !csum::icmp_error_ok(ctx, pkt, &q) {
        return Err(Counter::DropIcmpBadChecksum);
    }
    quote::rewrite_quoted(ctx, pkt, &q, Side::Destination, addr, port)?;
    if from_container {
        rewrite::rewrite_addr(ctx, pkt, Side::Source, addr)?;
    }
    stats::inc(Counter::IcmpErrorsTranslated);
    Ok(Verdict::Translated)
}
