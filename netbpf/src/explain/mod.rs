//! `netbpf explain`: what the datapath would do with one packet, and why.
//!
//! It walks the live maps in the order the tc programs do
//! (`netbpf-ebpf/src/nat.rs` and `hairpin.rs`), without changing them:
//!
//! * **From a container** (`netbpf_inside` at tc ingress of the
//!   container-side interface): a TCP/UDP packet to an outside endpoint of
//!   this NAT (a `NAT_REVERSE` entry or a published port) is hairpinned if
//!   its sender is masqueraded; anything else goes on to the kernel, which
//!   routes it out of the uplink, where `netbpf_egress` sees it.
//! * **Leaving the uplink** (`netbpf_egress`): the conntrack flow of the
//!   packet's tuple, else the longest `MASQ_RULES` prefix holding its
//!   source, with the source's `NAT_MAPPINGS` entry or a new port from the
//!   rule's range; neither: left alone.
//! * **Arriving on the uplink** (`netbpf_ingress`): a source in a
//!   masquerade CIDR is dropped as spoofed; then `NAT_REVERSE` for the
//!   destination (the reply to a mapping, or a new remote reaching it:
//!   endpoint-independent filtering, TCP only with an opening SYN), else a
//!   published port (a rule bound to the destination address, else one for
//!   any address if the destination is one of `LOCAL_ADDRS`, never
//!   127.0.0.0/8); neither: dropped if addressed straight into a
//!   masquerade CIDR, else left to the host.
//! * **Routed containers** (`netbpf-ebpf/src/route.rs`): on the uplink,
//!   `netbpf_route_in` runs after `netbpf_ingress` (attached later; tcx
//!   runs in attach order) and forwards a packet whose destination is in
//!   `CONTAINERS` to its veth (TTL 1 or 0: to the kernel). On a routed
//!   container's veth (`CONTAINER_IFS`), `netbpf_container` drops spoofed
//!   sources, forwards to another local routed container, else asks the
//!   FIB for the next hop and, if it is out of the uplink and in
//!   `NEIGHBOURS`, forwards it there. The FIB is the one thing not read
//!   from a map: the live explanation asks the kernel (`ip route get ...
//!   iif VETH`), which is what `bpf_fib_lookup` consults too, minus the MTU
//!   check.
//! * **ICMP errors** (`netbpf-ebpf/src/icmp.rs`), given with the packet
//!   they quote ([`IcmpError`]): arriving, the quoted source must be the
//!   outer destination, and is mapped back through `NAT_REVERSE` or a
//!   published port, if its flow exists (else `drop_icmp_no_flow`);
//!   leaving, the flow is found from the quoted packet (remote → inside)
//!   and an error from another inside host is dropped.
//!
//! ICMP is otherwise explained for echo (the port is the identifier: echo
//! requests going out, echo replies coming in); fragments and malformed
//! packets are not. The frame is assumed unicast to the host (the uplink's
//! MAC, or the veth's for a routed container) and IPv4.

mod icmp;
mod lookup;
mod model;
mod paths;
mod routing;
#[cfg(test)]
mod tests;
mod translate;

use std::net::Ipv4Addr;

use netbpf_common::{Endpoint, FlowKey};

pub use lookup::{Fib, LiveMaps, Lookup, MemMaps, Rules, parse_route_get};
pub use model::*;
use paths::{egress, from_routed, ingress};
use translate::hairpin;

/// Explains `q` seen first at `direction`.
pub fn explain(rules: &Rules, m: &impl Lookup, q: &Query, direction: Direction) -> Explanation {
    let mut steps = Vec::new();
    let outcome = match direction {
        Direction::Ingress => ingress(rules, m, q, &mut steps),
        Direction::Egress => egress(rules, m, q, &mut steps),
        Direction::FromRoutedContainer => from_routed(rules, m, q, &mut steps),
        Direction::FromContainer => match hairpin(rules, m, q, &mut steps) {
            Some(outcome) => outcome,
            None => {
                steps.push(Step {
                    program: "kernel",
                    detail: format!(
                        "routes the packet to {}; out of the uplink, presumably",
                        q.dst.ip()
                    ),
                });
                egress(rules, m, q, &mut steps)
            }
        },
    };
    Explanation {
        direction,
        steps,
        outcome,
    }
}

/// Whether interface `iface` (in this network namespace) is the uplink:
/// it holds an address masqueraded traffic leaves with, or, with no
/// masquerade rule, it carries the default route.
pub fn is_uplink(rules: &Rules, iface: &str) -> Result<bool, crate::netdev::NetdevError> {
    crate::netdev::ifindex(iface)?;
    let to: Vec<Ipv4Addr> = rules
        .masquerade
        .iter()
        .map(|e| Ipv4Addr::from(e.rule.to_addr))
        .collect();
    if to.is_empty() {
        let routes = crate::netdev::routes()?;
        return Ok(routes.iter().any(|r| r.prefix_len == 0 && r.iface == iface));
    }
    let addrs = nix::ifaddrs::getifaddrs().map_err(crate::netdev::NetdevError::List)?;
    Ok(addrs
        .filter(|a| a.interface_name == iface)
        .filter_map(|a| {
            a.address
                .and_then(|s| s.as_sockaddr_in().map(|sin| sin.ip()))
        })
        .any(|ip| to.contains(&ip)))
}

/// Where a packet is seen first when `--in` is not given: from a routed
/// container if its source is one, from a container if its source is
/// masqueraded or has a flow, arriving on the uplink if its destination is
/// a host address, an outside endpoint or a container (masqueraded or
/// routed), else leaving the uplink.
pub fn infer_direction(rules: &Rules, m: &impl Lookup, q: &Query) -> Direction {
    if q.iif.is_some_and(|i| m.container_if(i).is_some()) || m.container(*q.src.ip()).is_some() {
        return Direction::FromRoutedContainer;
    }
    let (sport, dport) = ports(q, Direction::Egress);
    let out_key = FlowKey::new(
        q.proto,
        q.src.ip().octets(),
        sport,
        q.dst.ip().octets(),
        dport,
    );
    if rules.masq(*q.src.ip()).is_some() || m.flow(&out_key).is_some() {
        return Direction::FromContainer;
    }
    let (_, dport) = ports(q, Direction::Ingress);
    let dst = *q.dst.ip();
    if rules.local_addrs.contains(&dst)
        || rules
            .masquerade
            .iter()
            .any(|e| Ipv4Addr::from(e.rule.to_addr) == dst)
        || m.reverse(&Endpoint::new(q.proto, dst.octets(), dport))
            .is_some()
        || rules.masq(dst).is_some()
        || m.container(dst).is_some()
    {
        return Direction::Ingress;
    }
    Direction::Egress
}
