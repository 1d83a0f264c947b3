//! Masquerade: source NAT on the way out, and the reverse on the way in.
//!
//! Behaviour (RFC 4787 / 5382 / 5508 terms):
//! * Endpoint-independent mapping: one inside `addr:port` gets one outside
//!   port for every destination ([`NAT_MAPPINGS`] is keyed by the inside
//!   endpoint only).
//! * Endpoint-independent filtering: any remote may reach a live mapping;
//!   for TCP only with an opening SYN.
//! * No port overloading: an outside port belongs to exactly one inside
//!   endpoint ([`NAT_REVERSE`] is inserted with `BPF_NOEXIST` first and acts
//!   as the lock, so two CPUs cannot take the same port).
//! * Port allocation (`crate::ports`) keeps the original port when it is
//!   free and in range, else tries random ports of the range, a bounded
//!   number of them. Without a configured range the port keeps its
//!   class (1–1023 or 1024–65535, RFC 4787 REQ-3a); ICMP identifiers may
//!   use 0–65535.
//!
//! Fragments are `crate::fragment`'s; the packet's tuple is
//! `crate::tuple`'s.

use aya_ebpf::{bindings::BPF_NOEXIST, maps::lpm_trie::Key, programs::TcContext};
use netbpf_common::{
    Counter, Endpoint, FlowKey, FlowValue, PublishRule, ReplyKey, ReplyValue, flow_flags, proto,
};

use crate::{
    Verdict,
    conntrack::{self, Dir},
    fragment::{fragment_in, fragment_out, remember_fragment},
    guard, hop, icmp,
    maps::{
        CONNTRACK, CONNTRACK_REPLY, EEXIST, LOCAL_ADDRS, MASQ_RULES, NAT_MAPPINGS, NAT_REVERSE,
    },
    parse::{ICMP_ECHO_REPLY, L4, Packet},
    ports::{log_exhausted, mapping_for},
    reorder,
    rewrite::{self, Side},
    rules::{guard_inside, is_icmp_error, masquerade_source, published, untranslatable},
    stats,
    tuple::{Translation, Tuple, out_tuple},
    unreach,
};

/// Source NAT for a packet leaving the uplink: an existing flow (a
/// masqueraded one, or the reply side of a published port), or a new
/// masquerade flow.
#[inline(always)]
pub(crate) fn snat(ctx: &TcContext, pkt: &Packet) -> Result<Verdict, Counter> {
    let Some(tuple) = out_tuple(pkt) else {
        return match pkt.l4 {
            L4::Icmp { icmp_type, .. } if is_icmp_error(icmp_type) => icmp::error_out(ctx, pkt),
            L4::Icmp { .. } => untranslatable(pkt, Counter::DropUnsupportedIcmp),
            L4::Fragment => fragment_out(ctx, pkt),
            _ => untranslatable(pkt, Counter::DropUnsupportedProto),
        };
    };
    let to = match outbound(ctx, pkt, &tuple) {
        Ok(Some(to)) => to,
        Ok(None) => return Ok(Verdict::Pass),
        Err(reason @ (Counter::DropPortExhausted | Counter::DropMappingTableFull)) => {
            return session_refused(ctx, pkt, reason);
        }
        Err(reason) => return Err(reason),
    };
    apply_snat(ctx, pkt, &tuple, &to)
}

/// Rewrites `pkt`'s source to its flow's outside endpoint `to` and counts
/// it.
#[inline(always)]
pub(crate) fn apply_snat(
    ctx: &TcContext,
    pkt: &Packet,
    tuple: &Tuple,
    to: &Translation,
) -> Result<Verdict, Counter> {
    rewrite::rewrite(ctx, pkt, Side::Source, to.addr, tuple.sport, to.port)?;
    remember_fragment(pkt, to.addr);
    stats::inc(Counter::SnatPackets);
    stats::add(Counter::SnatBytes, pkt.tot_len as u64);
    Ok(Verdict::Translated)
}

/// A container's new flow that could not get a session: dropped (counted
/// by `reason`), and the container told with an ICMP "administratively
/// prohibited" (RFC 5508 REQ-8) when there is a route back to it.
#[inline(always)]
fn session_refused(ctx: &TcContext, pkt: &Packet, reason: Counter) -> Result<Verdict, Counter> {
    let Some(rule) = MASQ_RULES.get(&Key::new(32, pkt.src)).copied() else {
        return Err(reason);
    };
    let verdict = unreach::prohibited(ctx, pkt, rule.to_addr, reason)?;
    stats::inc(reason);
    stats::inc(Counter::IcmpProhibitedSent);
    Ok(verdict)
}

/// Finds (or, for a masquerade source, creates) the outbound flow of a
/// packet and records the packet on it. `None`: not a NAT flow.
#[inline(always)]
pub(crate) fn outbound(
    ctx: &TcContext,
    pkt: &Packet,
    t: &Tuple,
) -> Result<Option<Translation>, Counter> {
    let key = FlowKey::new(t.proto, t.src, t.sport, t.dst, t.dport);
    let flow = match CONNTRACK.get_ptr_mut(&key) {
        Some(flow) => {
            conntrack::touch_out(&key, flow, pkt, conntrack::now_ns());
            flow
        }
        None => {
            // Not a NAT flow and not from a masquerade CIDR: the host's own
            // traffic, left before any clock read.
            let Some(rule) = MASQ_RULES.get(&Key::new(32, t.src)) else {
                return Ok(None);
            };
            let rule = *rule;
            let now = conntrack::now_ns();
            let inside = Endpoint::new(t.proto, t.src, t.sport);
            let outside = mapping_for(ctx, &inside, &rule, t, now).inspect_err(|e| {
                if *e == Counter::DropPortExhausted {
                    log_exhausted(ctx, &inside);
                }
            })?;
            let value = conntrack::new_flow(outside.addr, outside.port, 0, now);
            let flow = insert_flow(&key, &value)?;
            conntrack::touch_new(flow, Dir::Out, pkt, now);
            flow
        }
    };
    // SAFETY: map value pointer, valid for this run.
    let (addr, port, flags) =
        unsafe { ((*flow).outside_addr, (*flow).outside_port, (*flow).flags) };
    Ok(Some(Translation {
        addr,
        port,
        published: flags & flow_flags::PUBLISHED != 0,
    }))
}

/// Destination NAT for a packet arriving on the uplink: the reply to a
/// mapping, or a new or existing flow to a published port.
#[inline(always)]
pub(crate) fn reverse(ctx: &TcContext, pkt: &Packet) -> Result<Verdict, Counter> {
    let verdict = reverse_one(ctx, pkt)?;
    if pkt.first_fragment
        && matches!(verdict, Verdict::Pass)
        && LOCAL_ADDRS.get_ptr(&pkt.dst).is_some()
    {
        // The host's own datagram: its other fragments are the host's too
        // (without this they would wait for a first fragment that has
        // already gone by).
        remember_fragment(pkt, pkt.dst);
    }
    if pkt.first_fragment && !matches!(verdict, Verdict::Consumed) {
        // Fragments of this datagram may have come first and be held.
        return reorder::replay(ctx, pkt, verdict);
    }
    Ok(verdict)
}

/// [`reverse`] for one packet.
#[inline(always)]
fn reverse_one(ctx: &TcContext, pkt: &Packet) -> Result<Verdict, Counter> {
    let tuple = match pkt.l4 {
        L4::Ports { src, dst, .. } => Some(Tuple::of(pkt, src, dst)),
        // ... and the destination "port" of a reply.
        L4::Icmp {
            icmp_type: ICMP_ECHO_REPLY,
            id,
        } => Some(Tuple::of(pkt, 0, id)),
        _ => None,
    };
    // An established flow first: one lookup of its reply half. No half's
    // remote lies behind the NAT (a flow's remote is where its packets
    // went out of the uplink to), so the anti-spoofing lookup below is
    // for the packets that are not established.
    let established = match tuple {
        Some(t) => established(pkt, &t),
        None => None,
    };
    // Addresses behind the NAT never arrive from outside.
    if established.is_none() && masquerade_source(pkt.src) {
        return Err(Counter::DropSpoofedFromOutside);
    }
    let tuple = match tuple {
        Some(t) => t,
        None => return not_a_flow(ctx, pkt),
    };
    let to = match established {
        Some(to) => to,
        None => match find_or_open(ctx, pkt, &tuple)? {
            Some(to) => to,
            None => {
                guard_inside(pkt)?;
                return match conntrack::tcp_flags_of(pkt) {
                    Some(flags) if conntrack::is_syn(flags) => {
                        guard::unsolicited_syn(ctx, tuple.src, tuple.sport, tuple.dst, tuple.dport)
                    }
                    _ => Ok(Verdict::Pass),
                };
            }
        },
    };
    rewrite::rewrite(ctx, pkt, Side::Destination, to.addr, tuple.dport, to.port)?;
    remember_fragment(pkt, to.addr);
    count_inbound(pkt, &to);
    hop::to_container(ctx, pkt, to.addr)
}

/// An inbound packet that is not of a flow's tuple: an ICMP error (to
/// translate through the packet it quotes), a later fragment, anything
/// else (the host's, unless addressed straight to a container).
#[inline(always)]
fn not_a_flow(ctx: &TcContext, pkt: &Packet) -> Result<Verdict, Counter> {
    match pkt.l4 {
        L4::Icmp { icmp_type, .. } if is_icmp_error(icmp_type) => {
            // An error netbpf does not translate is the host's, unless it
            // is addressed straight to a container.
            match icmp::error_in(ctx, pkt)? {
                Verdict::Pass => guard_inside(pkt),
                Verdict::Translated => {
                    hop::to_stack(Counter::FastPathIcmpError);
                    Ok(Verdict::Translated)
                }
                done => Ok(done),
            }
        }
        L4::Fragment => fragment_in(ctx, pkt),
        _ => guard_inside(pkt),
    }
}

/// Counts an inbound packet translated to `to`: DNAT to a published port,
/// or a reply translated back.
#[inline(always)]
pub(crate) fn count_inbound(pkt: &Packet, to: &Translation) {
    if to.published {
        stats::inc(Counter::DnatPackets);
        stats::add(Counter::DnatBytes, pkt.tot_len as u64);
    } else {
        stats::inc(Counter::ReversePackets);
        stats::add(Counter::ReverseBytes, pkt.tot_len as u64);
    }
}

/// Finds (or opens) the inbound side of a flow for a packet from
/// `t.src:t.sport` to the outside endpoint `t.dst:t.dport`, records the
/// packet on it, and returns the inside endpoint. `None`: not for a
/// container. An established flow is found by its reply half, in one
/// lookup ([`established`]); the rest is [`find_or_open`]'s.
#[inline(always)]
pub(crate) fn inbound(
    ctx: &TcContext,
    pkt: &Packet,
    t: &Tuple,
) -> Result<Option<Translation>, Counter> {
    match established(pkt, t) {
        Some(to) => Ok(Some(to)),
        None => find_or_open(ctx, pkt, t),
    }
}

/// The established flow of an inbound packet, found by its reply half
/// ([`established_in`]), with the packet recorded on it. An opening TCP
/// SYN is left to [`find_or_open`] without a lookup here: it opens a flow
/// (or restarts a closed one, which the long way finds as well), so the
/// half would miss.
#[inline(always)]
fn established(pkt: &Packet, t: &Tuple) -> Option<Translation> {
    if conntrack::tcp_flags_of(pkt).is_some_and(conntrack::is_syn) {
        return None;
    }
    let (key, half, to) = established_in(t)?;
    conntrack::touch_in(&key, half, pkt, conntrack::now_ns());
    Some(to)
}

/// [`inbound`] for a packet without a reply half: an existing flow (its
/// first reply, a flow from before reply halves, or one whose half a full
/// map refused) is found the long way and its half written; otherwise a
/// new flow is opened if the packet may open one. For a new flow, a
/// published port wins over a mapping that happens to hold the same port,
/// and a host socket that owns the packet wins over the mapping's
/// endpoint-independent filtering.
#[inline(always)]
fn find_or_open(ctx: &TcContext, pkt: &Packet, t: &Tuple) -> Result<Option<Translation>, Counter> {
    let outside = Endpoint::new(t.proto, t.dst, t.dport);
    // Plain values rather than an `Option<Endpoint>`: the verifier rejects
    // the spill of an uninitialised payload that LLVM emits for the latter.
    let (mapped, inside) = match NAT_REVERSE.get_ptr(&outside) {
        // SAFETY: map value pointer, valid for this run.
        Some(inside) => (true, unsafe { *inside }),
        None => (false, Endpoint::default()),
    };
    if mapped {
        let key = FlowKey::new(t.proto, inside.addr, inside.port, t.src, t.sport);
        if let Some(flow) = CONNTRACK.get_ptr_mut(&key) {
            record_in(&key, flow, pkt, conntrack::now_ns());
            return Ok(Some(Translation {
                addr: inside.addr,
                port: inside.port,
                published: false,
            }));
        }
    }
    if t.proto != proto::ICMP
        && let Some(rule) = published(t.proto, t.dst, t.dport)
    {
        return published_flow(pkt, t, &rule).map(Some);
    }
    if !mapped {
        return Ok(None);
    }
    if guard::host_socket(ctx, t.proto, t.src, t.sport, t.dst, t.dport) {
        stats::inc(Counter::HostPortsKept);
        return Ok(None);
    }
    let now = conntrack::now_ns();
    let key = FlowKey::new(t.proto, inside.addr, inside.port, t.src, t.sport);
    match open_inbound(&key, &inside, &outside, pkt, now)? {
        Some(flow) => {
            conntrack::touch_new(flow, Dir::In, pkt, now);
            Ok(Some(Translation {
                addr: inside.addr,
                port: inside.port,
                published: false,
            }))
        }
        // A reverse entry whose mapping is being expired: not ours.
        None => Ok(None),
    }
}

/// Records an inbound packet of an existing flow `key` (`flow`), found the
/// long way, on the flow's reply half, writing the half from the flow if
/// it is missing (so the flow's next inbound packets take one lookup).
/// Should a full map refuse the half, the packet goes on unrecorded.
#[inline(always)]
fn record_in(key: &FlowKey, flow: *mut FlowValue, pkt: &Packet, now: u64) {
    // SAFETY: map value pointer, valid for this run.
    let (addr, port, flags) =
        unsafe { ((*flow).outside_addr, (*flow).outside_port, (*flow).flags) };
    let reply = ReplyKey::of_flow(key, addr, port);
    let half = match CONNTRACK_REPLY.get_ptr_mut(&reply) {
        Some(half) => half,
        None => {
            let inside = Endpoint::new(key.proto, key.inside_addr, key.inside_port);
            let value = ReplyValue::new(inside, flags, now);
            // Another CPU may have written it first: either way, look again.
            let _ = CONNTRACK_REPLY.insert(&reply, &value, BPF_NOEXIST as u64);
            let Some(half) = CONNTRACK_REPLY.get_ptr_mut(&reply) else {
                return;
            };
            half
        }
    };
    conntrack::touch_in(&reply, half, pkt, now);
}

/// The established flow a packet from `t.src:t.sport` to the outside
/// endpoint `t.dst:t.dport` belongs to, found by its reply half (one
/// lookup, for replies to mappings and published ports alike): the half's
/// key and value, and the inside endpoint to translate to. The packet is
/// not recorded (the caller touches the half once it knows the packet
/// goes on). Nothing is opened; a miss is [`inbound`]'s to decide. The
/// uplink's XDP program uses it alone.
#[inline(always)]
pub(crate) fn established_in(t: &Tuple) -> Option<(ReplyKey, *mut ReplyValue, Translation)> {
    let key = ReplyKey::new(t.proto, t.src, t.sport, t.dst, t.dport);
    let half = CONNTRACK_REPLY.get_ptr_mut(&key)?;
    // SAFETY: map value pointer, valid for this run.
    let (inside, flags) = unsafe { ((*half).inside, (*half).flags) };
    Some((
        key,
        half,
        Translation {
            addr: inside.addr,
            port: inside.port,
            published: flags & flow_flags::PUBLISHED != 0,
        },
    ))
}

/// The flow of a packet to a published port: existing, or opened by a SYN
/// (any UDP packet) within the source's budget.
#[inline(always)]
fn published_flow(pkt: &Packet, t: &Tuple, rule: &PublishRule) -> Result<Translation, Counter> {
    let now = conntrack::now_ns();
    let to_port = rule.container_port(t.dport);
    let key = FlowKey::new(t.proto, rule.to_addr, to_port, t.src, t.sport);
    match CONNTRACK.get_ptr_mut(&key) {
        Some(flow) => record_in(&key, flow, pkt, now),
        None => {
            if let Some(tcp) = conntrack::tcp_flags_of(pkt)
                && !conntrack::is_syn(tcp)
            {
                return Err(Counter::DropTcpNoFlow);
            }
            if !guard::source_admitted(t.src, now) {
                return Err(Counter::DropSourceLimit);
            }
            let flags = flow_flags::OPENED_IN | flow_flags::PUBLISHED;
            let value = conntrack::new_flow(t.dst, t.dport, flags, now);
            let flow = insert_flow(&key, &value)?;
            conntrack::touch_new(flow, Dir::In, pkt, now);
        }
    }
    Ok(Translation {
        addr: rule.to_addr,
        port: to_port,
        published: true,
    })
}

/// A remote this mapping has not talked to yet reaches it
/// (endpoint-independent filtering, RFC 4787 REQ-8 / RFC 5382 REQ-3):
/// open a flow for it, if the mapping is still live (`Ok(None)` if it is
/// not: the reverse entry outlives its mapping for a moment while userspace
/// expires it).
#[inline(always)]
fn open_inbound(
    key: &FlowKey,
    inside: &Endpoint,
    outside: &Endpoint,
    pkt: &Packet,
    now: u64,
) -> Result<Option<*mut FlowValue>, Counter> {
    if let Some(tcp) = conntrack::tcp_flags_of(pkt)
        && !conntrack::is_syn(tcp)
    {
        return Err(Counter::DropTcpNoFlow);
    }
    let Some(mapping) = NAT_MAPPINGS.get_ptr_mut(inside) else {
        return Ok(None);
    };
    if !guard::source_admitted(key.remote_addr, now) {
        return Err(Counter::DropSourceLimit);
    }
    // SAFETY: map value pointer, valid for this run.
    unsafe {
        if (*mapping).outside != *outside {
            return Ok(None);
        }
        (*mapping).last_used_ns = now;
    }
    let value = conntrack::new_flow(outside.addr, outside.port, flow_flags::OPENED_IN, now);
    insert_flow(key, &value).map(Some)
}

/// Inserts a new flow, or returns the one another CPU inserted first.
///
/// Its reply half is written later, by the first inbound packet that finds
/// the flow the long way ([`record_in`]): a new flow costs one insert, and
/// a flow nothing answers (or one packet opened) never needs a half. No
/// half can be waiting on a new flow's reply tuple for another container:
/// the daemon's collector removes halves without their flow before it
/// releases any mapping (`netbpf::conntrack::collect_garbage`), and an
/// outside endpoint belongs to one inside endpoint at a time.
#[inline(always)]
fn insert_flow(key: &FlowKey, value: &FlowValue) -> Result<*mut FlowValue, Counter> {
    match CONNTRACK.insert(key, value, BPF_NOEXIST as u64) {
        Ok(()) => stats::inc(Counter::FlowsCreated),
        Err(e) if e == -EEXIST => {}
        Err(_) => return Err(Counter::DropConntrackFull),
    }
    CONNTRACK.get_ptr_mut(key).ok_or(Counter::DropConntrackFull)
}
