//! Routed containers (`netbpf-ebpf/src/route.rs`), described: the uplink's
//! forward to a container's veth.

use netbpf_common::Counter;

use crate::neigh::format_mac;

use super::{lookup::*, model::*};

/// `route::inbound` (`netbpf_route_in`), for a packet `netbpf_ingress`
/// passed on.
pub(super) fn route_in(m: &impl Lookup, q: &Query, steps: &mut Vec<Step>) -> Outcome {
    let dst = *q.dst.ip();
    let Some(c) = m.container(dst) else {
        // Not a routed container: nothing to add (the program, if
        // attached, passes it without a trace).
        return Outcome::Passed;
    };
    let up = m.route_uplink().unwrap_or_default();
    if up.mac == [0; 6] {
        return pass(
            steps,
            ROUTE_IN,
            format!(
                "{dst} is in CONTAINERS, but ROUTE_UPLINK has no MAC (routing is off on this uplink): to the kernel"
            ),
        );
    }
    if c.mac == [0; 6] {
        return pass(
            steps,
            ROUTE_IN,
            format!(
                "{dst} is in CONTAINERS, but its MAC is not known yet: to the kernel, which routes it by the /32 host route to {}",
                ifname(c.ifindex)
            ),
        );
    }
    steps.push(Step {
        program: ROUTE_IN,
        detail: format!(
            "{dst} is a routed container (CONTAINERS) behind {} (ifindex {}); the frame is taken to be addressed to the uplink's MAC {} (the host answers ARP for {dst} with it)",
            ifname(c.ifindex),
            c.ifindex,
            format_mac(&up.mac)
        ),
    });
    forward(
        q,
        c.mac,
        c.host_mac,
        c.ifindex,
        Counter::RoutedIn,
        ROUTE_IN,
        steps,
    )
}

/// `route::forward`: TTL check, new MACs, redirect.
pub(super) fn forward(
    q: &Query,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    ifindex: u32,
    counter: Counter,
    program: &'static str,
    steps: &mut Vec<Step>,
) -> Outcome {
    if q.ttl <= 1 {
        steps.push(Step {
            program,
            detail: format!(
                "TTL {}: not forwarded; to the kernel, which sends time exceeded",
                q.ttl
            ),
        });
        return Outcome::ToKernel {
            counter: Counter::RouteTtlExpired.name(),
        };
    }
    let interface = ifname(ifindex);
    steps.push(Step {
        program,
        detail: format!(
            "TTL {} → {}, Ethernet {} → {}, redirected to the egress of {interface}",
            q.ttl,
            q.ttl - 1,
            format_mac(&src_mac),
            format_mac(&dst_mac)
        ),
    });
    Outcome::Forwarded {
        interface,
        ifindex,
        src_mac: format_mac(&src_mac),
        dst_mac: format_mac(&dst_mac),
        ttl: q.ttl - 1,
        counter: counter.name(),
    }
}
