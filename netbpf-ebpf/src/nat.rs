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
//! * Port allocation keeps the original port when it is free and in range,
//!   else walks the range from a random start for at most
//!   [`MAX_PORT_PROBES`] ports. Without a configured range the port keeps
//!   its class (1–1023 or 1024–65535, RFC 4787 REQ-3a); ICMP identifiers may
//!   use 0–65535.

use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::bpf_get_prandom_u32, maps::lpm_trie::Key, programs::TcContext,
};
use aya_log_ebpf::warn;
use netbpf_common::{
    Counter, Endpoint, FlowKey, MAX_PORT_PROBES, MappingValue, MasqRule, flow_flags, proto,
};

use crate::{
    Verdict,
    conntrack::{self, Dir},
    maps::{CONNTRACK, MASQ_RULES, NAT_MAPPINGS, NAT_REVERSE},
    parse::{ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, L4, Packet},
    rewrite::{self, Side},
    stats,
};

/// `EEXIST`, as map updates return it (negated).
const EEXIST: i32 = 17;

/// Source NAT for a packet leaving the uplink.
#[inline(always)]
pub(crate) fn snat(ctx: &TcContext, pkt: &Packet) -> Result<Verdict, Counter> {
    let Some(rule) = MASQ_RULES.get(&Key::new(32, pkt.src)) else {
        return Ok(Verdict::Pass);
    };
    let rule = *rule;
    // From here on the packet comes from a masquerade CIDR: it leaves
    // translated or not at all, never with its private source.
    let (inside_port, remote_port) = match pkt.l4 {
        L4::Ports { src, dst, .. } => (src, dst),
        L4::Icmp {
            icmp_type: ICMP_ECHO_REQUEST,
            id,
            ..
        } => (id, 0),
        L4::Icmp { .. } => return Err(Counter::DropUnsupportedIcmp),
        L4::Fragment => return Err(Counter::DropFragment),
        L4::Other => return Err(Counter::DropUnsupportedProto),
    };
    let key = FlowKey::new(pkt.proto, pkt.src, inside_port, pkt.dst, remote_port);
    let now = conntrack::now_ns();
    let flow = match CONNTRACK.get_ptr_mut(&key) {
        Some(flow) => flow,
        None => {
            let inside = Endpoint::new(pkt.proto, pkt.src, inside_port);
            let outside = mapping_for(&inside, &rule, now).inspect_err(|e| {
                if *e == Counter::DropPortExhausted {
                    log_exhausted(ctx, &inside);
                }
            })?;
            let value = conntrack::new_flow(outside.addr, outside.port, 0, now);
            insert_flow(&key, &value)?
        }
    };
    conntrack::touch(flow, Dir::Out, pkt, now);
    // SAFETY: map value pointer, valid for this run.
    let (outside_addr, outside_port) = unsafe { ((*flow).outside_addr, (*flow).outside_port) };
    rewrite::rewrite(
        ctx,
        pkt,
        Side::Source,
        outside_addr,
        inside_port,
        outside_port,
    )?;
    stats::inc(Counter::SnatPackets);
    stats::add(Counter::SnatBytes, pkt.tot_len as u64);
    Ok(Verdict::Translated)
}

/// Reverse translation for a packet arriving on the uplink.
#[inline(always)]
pub(crate) fn reverse(ctx: &TcContext, pkt: &Packet) -> Result<Verdict, Counter> {
    let (outside_port, remote_port) = match pkt.l4 {
        L4::Ports { src, dst, .. } => (dst, src),
        L4::Icmp {
            icmp_type: ICMP_ECHO_REPLY,
            id,
            ..
        } => (id, 0),
        L4::Fragment => {
            stats::inc(Counter::FragmentsPassed);
            return Ok(Verdict::Pass);
        }
        L4::Icmp { .. } | L4::Other => return Ok(Verdict::Pass),
    };
    let outside = Endpoint::new(pkt.proto, pkt.dst, outside_port);
    let Some(inside) = NAT_REVERSE.get_ptr(&outside) else {
        return Ok(Verdict::Pass);
    };
    // SAFETY: map value pointer, valid for this run.
    let inside = unsafe { *inside };
    let key = FlowKey::new(pkt.proto, inside.addr, inside.port, pkt.src, remote_port);
    let now = conntrack::now_ns();
    let flow = match CONNTRACK.get_ptr_mut(&key) {
        Some(flow) => flow,
        None => match open_inbound(&key, &inside, &outside, pkt, now)? {
            Some(flow) => flow,
            // A reverse entry whose mapping is being expired: not ours.
            None => return Ok(Verdict::Pass),
        },
    };
    conntrack::touch(flow, Dir::In, pkt, now);
    rewrite::rewrite(
        ctx,
        pkt,
        Side::Destination,
        inside.addr,
        outside_port,
        inside.port,
    )?;
    stats::inc(Counter::ReversePackets);
    stats::add(Counter::ReverseBytes, pkt.tot_len as u64);
    Ok(Verdict::Translated)
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
) -> Result<Option<*mut netbpf_common::FlowValue>, Counter> {
    if let Some(tcp) = conntrack::tcp_flags_of(pkt)
        && !conntrack::is_syn(tcp)
    {
        return Err(Counter::DropTcpNoFlow);
    }
    let Some(mapping) = NAT_MAPPINGS.get_ptr_mut(inside) else {
        return Ok(None);
    };
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
#[inline(always)]
fn insert_flow(
    key: &FlowKey,
    value: &netbpf_common::FlowValue,
) -> Result<*mut netbpf_common::FlowValue, Counter> {
    match CONNTRACK.insert(key, value, BPF_NOEXIST as u64) {
        Ok(()) => stats::inc(Counter::FlowsCreated),
        Err(e) if e == -EEXIST => {}
        Err(_) => return Err(Counter::DropConntrackFull),
    }
    CONNTRACK.get_ptr_mut(key).ok_or(Counter::DropConntrackFull)
}

/// The outside endpoint of an inside endpoint: the existing mapping, or a
/// newly allocated one.
#[inline(always)]
fn mapping_for(inside: &Endpoint, rule: &MasqRule, now: u64) -> Result<Endpoint, Counter> {
    if let Some(mapping) = NAT_MAPPINGS.get_ptr_mut(inside) {
        // SAFETY: map value pointer, valid for this run.
        unsafe {
            (*mapping).last_used_ns = now;
            return Ok((*mapping).outside);
        }
    }
    let outside = allocate_port(inside, rule)?;
    let value = MappingValue {
        outside,
        last_used_ns: now,
    };
    match NAT_MAPPINGS.insert(inside, &value, BPF_NOEXIST as u64) {
        Ok(()) => {
            stats::inc(Counter::MappingsCreated);
            Ok(outside)
        }
        Err(e) => {
            // Give the port back, then use the mapping that won the race.
            let _ = NAT_REVERSE.remove(&outside);
            if e != -EEXIST {
                return Err(Counter::DropMappingTableFull);
            }
            match NAT_MAPPINGS.get_ptr(inside) {
                // SAFETY: map value pointer, valid for this run.
                Some(mapping) => Ok(unsafe { (*mapping).outside }),
                None => Err(Counter::DropMappingTableFull),
            }
        }
    }
}

/// The port range a rule allows for an inside endpoint, inclusive.
#[inline(always)]
fn port_range(inside: &Endpoint, rule: &MasqRule) -> (u32, u32) {
    if rule.port_min != 0 || rule.port_max != 0 {
        return (rule.port_min as u32, rule.port_max as u32);
    }
    match inside.proto {
        proto::ICMP => (0, 65535),
        _ if inside.port < 1024 => (1, 1023),
        _ => (1024, 65535),
    }
}

/// Claims a free outside port by inserting its reverse entry.
#[inline(always)]
fn allocate_port(inside: &Endpoint, rule: &MasqRule) -> Result<Endpoint, Counter> {
    let (lo, hi) = port_range(inside, rule);
    if hi < lo {
        return Err(Counter::DropPortExhausted);
    }
    let size = hi - lo + 1;
    let original = inside.port as u32;
    let keep_original = original >= lo && original <= hi;
    let start = unsafe { bpf_get_prandom_u32() } % size;
    let mut probe = 0u32;
    while probe < MAX_PORT_PROBES {
        let port = if probe == 0 && keep_original {
            original
        } else {
            lo + (start + probe) % size
        };
        let outside = Endpoint::new(inside.proto, rule.to_addr, port as u16);
        match NAT_REVERSE.insert(&outside, inside, BPF_NOEXIST as u64) {
            Ok(()) => {
                stats::port_probes(probe);
                return Ok(outside);
            }
            Err(e) if e == -EEXIST => {}
            Err(_) => return Err(Counter::DropMappingTableFull),
        }
        probe += 1;
    }
    stats::port_probes(MAX_PORT_PROBES);
    Err(Counter::DropPortExhausted)
}

/// Logs a port exhaustion (the counters carry the totals; the log says
/// who was affected).
#[inline(never)]
fn log_exhausted(ctx: &TcContext, inside: &Endpoint) {
    warn!(
        ctx,
        "netbpf: no free port for proto {} port {}", inside.proto, inside.port
    );
}
