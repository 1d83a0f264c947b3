//! Mappings and port allocation: the outside endpoint an inside endpoint
//! gets (endpoint-independent, RFC 4787 REQ-1), the port claimed for it
//! (kept when free and in range, else random probes; never a
//! published port or one a host socket uses), and the event that reports
//! a new mapping.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_get_prandom_u32, programs::TcContext};
use aya_log_ebpf::warn;
use netbpf_common::{
    Counter, Endpoint, MAX_PORT_PROBES, MappingValue, MasqRule, NatEvent, event_kind, proto,
};

use crate::{
    guard,
    maps::{EEXIST, EVENTS, EVENTS_ON, NAT_MAPPINGS, NAT_REVERSE},
    rules::published,
    stats,
    tuple::Tuple,
};

/// The outside endpoint of an inside endpoint: the existing mapping, or a
/// newly allocated one (`t` is the packet that needs it).
#[inline(always)]
pub(crate) fn mapping_for(
    ctx: &TcContext,
    inside: &Endpoint,
    rule: &MasqRule,
    t: &Tuple,
    now: u64,
) -> Result<Endpoint, Counter> {
    if let Some(mapping) = NAT_MAPPINGS.get_ptr_mut(inside) {
        // SAFETY: map value pointer, valid for this run.
        unsafe {
            (*mapping).last_used_ns = now;
            return Ok((*mapping).outside);
        }
    }
    let outside = allocate_port(ctx, inside, rule, t)?;
    let value = MappingValue {
        outside,
        last_used_ns: now,
    };
    match NAT_MAPPINGS.insert(inside, &value, BPF_NOEXIST as u64) {
        Ok(()) => {
            stats::inc(Counter::MappingsCreated);
            mapping_event(inside, &outside, now);
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

/// Reports a new mapping on the events ring buffer, if events are on.
#[inline(always)]
fn mapping_event(inside: &Endpoint, outside: &Endpoint, now: u64) {
    match EVENTS_ON.get(0) {
        Some(on) if *on != 0 => {}
        _ => return,
    }
    let event = NatEvent {
        kind: event_kind::MAPPING_CREATED,
        _pad: 0,
        inside: *inside,
        outside: *outside,
        time_ns: now,
    };
    // A full ring drops the event; the daemon reads fast and the counters
    // still have the totals.
    let _ = EVENTS.output(&event, 0);
}

/// Claims a free outside port by inserting its reverse entry: the inside
/// port itself when it is free and in range, else random ports, a fresh
/// one per probe. (Probing onward from one random start failed when the
/// start fell into a long run of taken ports, as a container counting its
/// source ports up makes: 1 in 64,000 new flows was dropped at 77% of the
/// range in use. Independent probes each find a free port with the
/// range's free share, so 32 of them fail only at a far higher load.)
/// A port that is published, or that a host socket uses (listening or
/// bound, or connected to the packet's destination), is skipped: the
/// host's ports are never handed to a container.
#[inline(always)]
fn allocate_port(
    ctx: &TcContext,
    inside: &Endpoint,
    rule: &MasqRule,
    t: &Tuple,
) -> Result<Endpoint, Counter> {
    let (lo, hi) = rule.port_range(inside.proto, inside.port);
    if hi < lo {
        return Err(Counter::DropPortExhausted);
    }
    let size = hi - lo + 1;
    let original = inside.port as u32;
    let keep_original = original >= lo && original <= hi;
    let mut probe = 0u32;
    while probe < MAX_PORT_PROBES {
        let port = if probe == 0 && keep_original {
            original
        } else {
            // SAFETY: a helper without arguments or side effects.
            lo + unsafe { bpf_get_prandom_u32() } % size
        };
        let outside = Endpoint::new(inside.proto, rule.to_addr, port as u16);
        // A published port is never handed out as a mapping.
        if inside.proto != proto::ICMP
            && published(inside.proto, rule.to_addr, port as u16).is_some()
        {
            probe += 1;
            continue;
        }
        match NAT_REVERSE.insert(&outside, inside, BPF_NOEXIST as u64) {
            Ok(()) => {
                // Neither is a port a host socket uses: checked once the
                // port is claimed, so the verifier follows one path per
                // probe.
                if !guard::host_socket(ctx, inside.proto, t.dst, t.dport, rule.to_addr, port as u16)
                {
                    stats::port_probes(probe);
                    return Ok(outside);
                }
                let _ = NAT_REVERSE.remove(&outside);
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
pub(crate) fn log_exhausted(ctx: &TcContext, inside: &Endpoint) {
    warn!(
        ctx,
        "netbpf: no free port for proto {} port {}", inside.proto, inside.port
    );
}
