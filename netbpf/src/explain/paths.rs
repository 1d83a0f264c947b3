//! The paths a packet takes through the programs: leaving or arriving on
//! the uplink, and leaving a routed container.

use std::net::Ipv4Addr;

use netbpf_common::Counter;

use crate::neigh::format_mac;

use super::{icmp::*, lookup::*, model::*, routing::*, translate::*};

pub(super) fn egress(rules: &Rules, m: &impl Lookup, q: &Query, steps: &mut Vec<Step>) -> Outcome {
    if let Some(e) = &q.icmp_error {
        return icmp_out(rules, m, q, e, steps);
    }
    let (sport, dport) = ports(q, Direction::Egress);
    match outbound(rules, m, q, sport, dport, steps, EGRESS) {
        Out::None => Outcome::Passed,
        Out::Drop(c) => Outcome::dropped(c),
        Out::To(to) => Outcome::Translated {
            src: to,
            dst: q.dst,
            counter: Counter::SnatPackets.name(),
            quoted: None,
        },
    }
}

/// The uplink's ingress: `netbpf_ingress` (NAT), then, if it passes the
/// packet on, `netbpf_route_in` (routing).
pub(super) fn ingress(rules: &Rules, m: &impl Lookup, q: &Query, steps: &mut Vec<Step>) -> Outcome {
    let nat = nat_ingress(rules, m, q, steps);
    match nat {
        Outcome::Passed => route_in(m, q, steps),
        other => other,
    }
}

/// `nat::reverse_one`.
pub(super) fn nat_ingress(
    rules: &Rules,
    m: &impl Lookup,
    q: &Query,
    steps: &mut Vec<Step>,
) -> Outcome {
    if let Some(e) = rules.masq(*q.src.ip()) {
        steps.push(Step {
            program: INGRESS,
            detail: format!(
                "source {} is inside masquerade CIDR {}/{}: addresses behind the NAT never arrive from outside",
                q.src.ip(),
                Ipv4Addr::from(e.source),
                e.prefix_len
            ),
        });
        return Outcome::dropped(Counter::DropSpoofedFromOutside);
    }
    if let Some(e) = &q.icmp_error {
        return icmp_in(rules, m, q, e, steps);
    }
    let (sport, dport) = ports(q, Direction::Ingress);
    let arriving = Arriving {
        p: q.proto,
        tcp: q.tcp,
        src: (*q.src.ip(), sport),
        dst: (*q.dst.ip(), dport),
    };
    let result = inbound(rules, m, arriving, steps, INGRESS);
    match result {
        In::To(to, published) => Outcome::Translated {
            src: q.src,
            dst: to,
            counter: if published {
                Counter::DnatPackets.name()
            } else {
                Counter::ReversePackets.name()
            },
            quoted: None,
        },
        In::Drop(c) => Outcome::dropped(c),
        In::None => match guard_inside(rules, m, q, steps) {
            Outcome::Passed => unsolicited_syn(rules, q, steps),
            other => other,
        },
    }
}

/// `route::container` (`netbpf_container` at tc ingress of a routed
/// container's veth), for an IPv4 packet.
pub(super) fn from_routed(
    rules: &Rules,
    m: &impl Lookup,
    q: &Query,
    steps: &mut Vec<Step>,
) -> Outcome {
    let src = *q.src.ip();
    let dst = *q.dst.ip();
    let Some(iif) = q.iif.or_else(|| m.container(src).map(|c| c.ifindex)) else {
        return pass(
            steps,
            CONTAINER,
            format!(
                "{src} is not a routed container and no veth was given (--in): cannot tell where it arrives"
            ),
        );
    };
    let veth = ifname(iif);
    let Some(cif) = m.container_if(iif) else {
        return pass(
            steps,
            CONTAINER,
            format!(
                "{veth} (ifindex {iif}) is not in CONTAINER_IFS: netbpf_container does not handle it; passed"
            ),
        );
    };
    let own = Ipv4Addr::from(cif.addr);
    if src != own {
        steps.push(Step {
            program: CONTAINER,
            detail: format!(
                "CONTAINER_IFS: {veth} belongs to {own}, but the source is {src}: spoofed"
            ),
        });
        return Outcome::dropped(Counter::DropSpoofed);
    }
    let sent_to = format!(
        "from {own} on {veth}, the frame taken to be addressed to the veth's MAC {} (broadcast and multicast go to the kernel)",
        format_mac(&cif.host_mac)
    );
    if let Some(c) = m.container(dst) {
        if c.mac == [0; 6] {
            return pass(
                steps,
                CONTAINER,
                format!(
                    "{sent_to}; {dst} is a routed container whose MAC is not known yet: to the kernel, which routes it by its /32 host route"
                ),
            );
        }
        steps.push(Step {
            program: CONTAINER,
            detail: format!(
                "{sent_to}; {dst} is a routed container on this host (CONTAINERS) behind {}: straight to its veth",
                ifname(c.ifindex)
            ),
        });
        return forward(
            q,
            c.mac,
            c.host_mac,
            c.ifindex,
            Counter::RoutedLocal,
            CONTAINER,
            steps,
        );
    }
    let up = match m.route_uplink() {
        Some(up) if up.ifindex != 0 => up,
        _ => {
            return pass(
                steps,
                CONTAINER,
                format!(
                    "{sent_to}; {dst} is not a routed container and ROUTE_UPLINK is not set: to the kernel, which routes it"
                ),
            );
        }
    };
    let uplink = ifname(up.ifindex);
    let fib = m.fib(src, dst, iif);
    let (hop, how) = match fib {
        Fib::Via { ifindex, gateway } if ifindex == up.ifindex => match gateway {
            Some(g) => (g, format!("via gateway {g}")),
            None => (dst, "on-link".to_owned()),
        },
        Fib::Via { ifindex, gateway } => {
            let via = gateway.map(|g| format!(" via {g}")).unwrap_or_default();
            return pass(
                steps,
                CONTAINER,
                format!(
                    "{sent_to}; the kernel's route for {dst} (ip route get {dst} from {src} iif {veth}) goes out of {}{via}, not the uplink {uplink}: to the kernel, which forwards it",
                    ifname(ifindex)
                ),
            );
        }
        Fib::NotForwarded(why) => {
            return pass(
                steps,
                CONTAINER,
                format!(
                    "{sent_to}; the kernel does not forward {src} → {dst} out of the uplink ({why}): to the kernel"
                ),
            );
        }
        Fib::Unknown(why) => {
            return pass(
                steps,
                CONTAINER,
                format!(
                    "{sent_to}; next hop: the kernel's route for {dst} (not known here: {why}). If it leaves by the uplink {uplink} and its next hop is in NEIGHBOURS, netbpf forwards it (routed_out); otherwise the kernel does"
                ),
            );
        }
    };
    steps.push(Step {
        program: CONTAINER,
        detail: format!(
            "{sent_to}; the kernel's route for {dst} (ip route get {dst} from {src} iif {veth}, as bpf_fib_lookup asks; the MTU check not included) leaves by the uplink {uplink}, {how}: next hop {hop}"
        ),
    });
    let Some(n) = m.neighbour(hop) else {
        steps.push(Step {
            program: CONTAINER,
            detail: format!(
                "next hop {hop} is not in NEIGHBOURS: to the kernel, which resolves it and forwards the packet (the daemon then copies the neighbour into the map)"
            ),
        });
        return Outcome::ToKernel {
            counter: Counter::RouteNoNeighbour.name(),
        };
    };
    steps.push(Step {
        program: CONTAINER,
        detail: format!("NEIGHBOURS: {hop} is at {}", format_mac(&n.mac)),
    });
    let out = forward(
        q,
        n.mac,
        up.mac,
        up.ifindex,
        Counter::RoutedOut,
        CONTAINER,
        steps,
    );
    if !matches!(out, Outcome::Forwarded { .. }) {
        return out;
    }
    // The redirect goes through the uplink's tc egress: netbpf_egress
    // sees it (and passes it: routed addresses are not masqueraded).
    let forwarded = Query {
        ttl: q.ttl - 1,
        ..*q
    };
    match egress(rules, m, &forwarded, steps) {
        Outcome::Passed => out,
        other => other,
    }
}
