//! The NAT decisions of `netbpf-ebpf/src/nat.rs` and `hairpin.rs`,
//! described: outbound (source NAT), inbound (mappings and published
//! ports), the guards, hairpinning.

use std::net::{Ipv4Addr, SocketAddrV4};

use netbpf_common::{Counter, Endpoint, FlowKey, proto};

use crate::maps::proto_name;

use super::{lookup::*, model::*};

/// The result of the outbound (source NAT) lookup.
pub(super) enum Out {
    /// Not a NAT flow.
    None,
    /// Translate the source to this endpoint.
    To(SocketAddrV4),
    /// Dropped.
    Drop(Counter),
}

/// `nat::outbound`, described.
pub(super) fn outbound(
    rules: &Rules,
    m: &impl Lookup,
    q: &Query,
    sport: u16,
    dport: u16,
    steps: &mut Vec<Step>,
    program: &'static str,
) -> Out {
    let (src, dst) = (q.src.ip().octets(), q.dst.ip().octets());
    let key = FlowKey::new(q.proto, src, sport, dst, dport);
    if let Some(v) = m.flow(&key) {
        steps.push(Step {
            program,
            detail: format!("conntrack hit: {}", flow_desc(&key, &v)),
        });
        return Out::To(sa(v.outside_addr, v.outside_port));
    }
    let Some(rule) = rules.masq(*q.src.ip()) else {
        steps.push(Step {
            program,
            detail: format!(
                "no conntrack flow, and {} is in no masquerade CIDR: not a NAT flow",
                q.src.ip()
            ),
        });
        return Out::None;
    };
    let cidr = format!("{}/{}", Ipv4Addr::from(rule.source), rule.prefix_len);
    let inside = Endpoint::new(q.proto, src, sport);
    let to = Ipv4Addr::from(rule.rule.to_addr);
    if let Some(mapping) = m.mapping(&inside) {
        steps.push(Step {
            program,
            detail: format!(
                "no conntrack flow; source in masquerade CIDR {cidr}; existing mapping {} → {} (endpoint-independent: same for every destination); a new flow is created",
                ep(&inside),
                ep(&mapping.outside)
            ),
        });
        lru_note(rules, program, steps);
        return Out::To(ep(&mapping.outside));
    }
    let (lo, hi) = rule.rule.port_range(q.proto, sport);
    let range = if rule.rule.port_min == 0 && rule.rule.port_max == 0 {
        format!("{lo}-{hi} (class-preserving)")
    } else {
        format!("{lo}-{hi}")
    };
    if rules.mappings_full {
        steps.push(Step {
            program,
            detail: format!(
                "source in masquerade CIDR {cidr}, no mapping yet, and the mapping table is full"
            ),
        });
        return Out::Drop(Counter::DropMappingTableFull);
    }
    let keep = u32::from(sport) >= lo && u32::from(sport) <= hi;
    let free = |port: u16| {
        m.reverse(&Endpoint::new(q.proto, rule.rule.to_addr, port))
            .is_none()
            && (q.proto == proto::ICMP || rules.published(q.proto, to, port).is_none())
    };
    let choice = if keep && free(sport) {
        steps.push(Step {
            program,
            detail: format!(
                "no conntrack flow; source in masquerade CIDR {cidr} → {to}, port range {range}; no mapping for {} yet: new mapping keeps port {sport} (free); a new flow is created",
                ep(&inside)
            ),
        });
        SocketAddrV4::new(to, sport)
    } else {
        let why = if keep {
            format!("port {sport} is taken")
        } else {
            format!("port {sport} is outside the range")
        };
        let used = (lo..=hi).filter(|p| !free(*p as u16)).count();
        let size = (hi - lo + 1) as usize;
        steps.push(Step {
            program,
            detail: format!(
                "no conntrack flow; source in masquerade CIDR {cidr} → {to}, port range {range}; no mapping for {} yet and {why}: a new mapping gets a random free port of the range (at most {} probes; {used} of {size} taken now); a new flow is created",
                ep(&inside),
                netbpf_common::MAX_PORT_PROBES
            ),
        });
        if used >= size {
            return Out::Drop(Counter::DropPortExhausted);
        }
        SocketAddrV4::new(to, 0)
    };
    lru_note(rules, program, steps);
    Out::To(choice)
}

/// The result of the inbound (reverse / DNAT) lookup.
pub(super) enum In {
    None,
    To(SocketAddrV4, bool),
    Drop(Counter),
}

/// A packet as the inbound lookups see it: protocol, TCP flags, from
/// `src:sport` to the outside endpoint `dst:dport`.
#[derive(Clone, Copy)]
pub(super) struct Arriving {
    pub(super) p: u8,
    pub(super) tcp: TcpFlags,
    pub(super) src: (Ipv4Addr, u16),
    pub(super) dst: (Ipv4Addr, u16),
}

impl Arriving {
    /// The outside endpoint it is addressed to.
    fn outside(&self) -> Endpoint {
        Endpoint::new(self.p, self.dst.0.octets(), self.dst.1)
    }

    /// Whether only an opening SYN may open its flow (TCP, not a SYN).
    fn needs_syn(&self) -> bool {
        self.p == proto::TCP && self.tcp == TcpFlags::NotSyn
    }
}

/// `nat::inbound`, described.
pub(super) fn inbound(
    rules: &Rules,
    m: &impl Lookup,
    a: Arriving,
    steps: &mut Vec<Step>,
    program: &'static str,
) -> In {
    let Arriving {
        p,
        src: (src, sport),
        dst: (dst, dport),
        ..
    } = a;
    let outside = a.outside();
    let needs_syn = a.needs_syn();
    if let Some(inside) = m.reverse(&outside) {
        let key = FlowKey::new(p, inside.addr, inside.port, src.octets(), sport);
        if let Some(v) = m.flow(&key) {
            steps.push(Step {
                program,
                detail: format!(
                    "NAT_REVERSE: {} belongs to {}; conntrack hit: {}",
                    ep(&outside),
                    ep(&inside),
                    flow_desc(&key, &v)
                ),
            });
            return In::To(ep(&inside), false);
        }
        if p != proto::ICMP && rules.published(p, dst, dport).is_some() {
            steps.push(Step {
                program,
                detail: format!(
                    "NAT_REVERSE: {} belongs to {}, but {src}:{sport} has no flow with it, and for a new flow a published port wins over a mapping that holds the same port",
                    ep(&outside),
                    ep(&inside)
                ),
            });
            return published_flow(rules, m, a, steps, program);
        }
        steps.push(Step {
            program,
            detail: format!(
                "a host socket listening on (or connected from) {dst}:{dport} would take it instead of {}: the kernel looks that up; explain cannot see host sockets",
                ep(&inside)
            ),
        });
        if needs_syn {
            steps.push(Step {
                program,
                detail: format!(
                    "NAT_REVERSE: {} belongs to {}, but {src}:{sport} has no flow with it and a TCP packet that is not an opening SYN cannot open one",
                    ep(&outside),
                    ep(&inside)
                ),
            });
            return In::Drop(Counter::DropTcpNoFlow);
        }
        match m.mapping(&inside) {
            Some(mapping) if mapping.outside == outside => {
                steps.push(Step {
                    program,
                    detail: format!(
                        "NAT_REVERSE: {} belongs to {}; no flow with {src}:{sport} yet: endpoint-independent filtering lets any remote reach a live mapping, so a new flow is opened",
                        ep(&outside),
                        ep(&inside)
                    ),
                });
                lru_note(rules, program, steps);
                return In::To(ep(&inside), false);
            }
            _ => {
                steps.push(Step {
                    program,
                    detail: format!(
                        "NAT_REVERSE has {} → {}, but its mapping is gone (being expired): not for a container",
                        ep(&outside),
                        ep(&inside)
                    ),
                });
                return In::None;
            }
        }
    }
    if p == proto::ICMP {
        steps.push(Step {
            program,
            detail: format!("no mapping holds ICMP id {dport} on {dst}"),
        });
        return In::None;
    }
    published_flow(rules, m, a, steps, program)
}

/// `nat::published_flow`, described: the flow to a published port.
pub(super) fn published_flow(
    rules: &Rules,
    m: &impl Lookup,
    a: Arriving,
    steps: &mut Vec<Step>,
    program: &'static str,
) -> In {
    let Arriving {
        p,
        src: (src, sport),
        dst: (dst, dport),
        ..
    } = a;
    let outside = a.outside();
    let needs_syn = a.needs_syn();
    let Some((rule, any)) = rules.published(p, dst, dport) else {
        let why = if dst.octets()[0] == 127 {
            " (never for 127.0.0.0/8)"
        } else {
            ""
        };
        steps.push(Step {
            program,
            detail: format!(
                "no NAT_REVERSE entry for {} and no published port {} {dst}:{dport}{why}",
                ep(&outside),
                proto_name(p)
            ),
        });
        return In::None;
    };
    let to_port = rule.container_port(dport);
    let to = SocketAddrV4::new(Ipv4Addr::from(rule.to_addr), to_port);
    let host = if any {
        format!("*:{} (any host address; {dst} is one)", span(&rule))
    } else {
        format!("{dst}:{}", span(&rule))
    };
    let key = FlowKey::new(p, rule.to_addr, to_port, src.octets(), sport);
    if let Some(v) = m.flow(&key) {
        steps.push(Step {
            program,
            detail: format!(
                "published port {} {host} → {to}; conntrack hit: {}",
                proto_name(p),
                flow_desc(&key, &v)
            ),
        });
        return In::To(to, true);
    }
    if needs_syn {
        steps.push(Step {
            program,
            detail: format!(
                "published port {} {host} → {to}, but no flow from {src}:{sport} and a TCP packet that is not an opening SYN cannot open one",
                proto_name(p)
            ),
        });
        return In::Drop(Counter::DropTcpNoFlow);
    }
    steps.push(Step {
        program,
        detail: format!(
            "published port {} {host} → {to}; no flow yet: a new one is opened (the container sees the client's address), if {src} is within its budget of new flows ([inbound] new_flows_per_source)",
            proto_name(p)
        ),
    });
    lru_note(rules, program, steps);
    In::To(to, true)
}

/// A new flow in a full conntrack table (an LRU map) takes the place of
/// the least recently used flow; says so when the table is full.
pub(super) fn lru_note(rules: &Rules, program: &'static str, steps: &mut Vec<Step>) {
    if rules.conntrack_full {
        steps.push(Step {
            program,
            detail: "the conntrack table is full: the new flow takes the place of the least recently used one (an LRU map)".into(),
        });
    }
}

/// `nat::unsolicited_syn`: an opening SYN to the host's address that no
/// mapping or published port takes is dropped, unless a host socket takes
/// it (the kernel looks that up; explain cannot see host sockets).
pub(super) fn unsolicited_syn(rules: &Rules, q: &Query, steps: &mut Vec<Step>) -> Outcome {
    if q.proto != proto::TCP || q.tcp != TcpFlags::Syn || !rules.local_addrs.contains(q.dst.ip()) {
        return Outcome::Passed;
    }
    if rules.settings.flags & netbpf_common::settings_flags::PASS_UNSOLICITED_SYN != 0 {
        return pass(
            steps,
            INGRESS,
            format!(
                "an opening SYN to {} that no mapping or published port takes: handed to the host's stack ([inbound] unsolicited_syn = \"pass\": netfilter DNAT, IPVS or kube-proxy may own it)",
                q.dst
            ),
        );
    }
    steps.push(Step {
        program: INGRESS,
        detail: format!(
            "an opening SYN to {} that no mapping or published port takes: dropped silently (RFC 5382 REQ-4) unless a host socket listens on it (the kernel checks; explain cannot see host sockets)",
            q.dst
        ),
    });
    Outcome::dropped(Counter::DropUnsolicitedSyn)
}

/// `nat::guard_inside`: dropped if addressed into a masquerade CIDR.
pub(super) fn guard_inside(
    rules: &Rules,
    m: &impl Lookup,
    q: &Query,
    steps: &mut Vec<Step>,
) -> Outcome {
    if let Some(e) = rules.masq(*q.dst.ip()) {
        steps.push(Step {
            program: INGRESS,
            detail: format!(
                "{} is inside masquerade CIDR {}/{}: containers behind the NAT are reached only through mappings and published ports",
                q.dst.ip(),
                Ipv4Addr::from(e.source),
                e.prefix_len
            ),
        });
        return Outcome::dropped(Counter::DropDirectToInside);
    }
    let detail = if m.container(*q.dst.ip()).is_some() {
        "not for a container behind the NAT: passed on"
    } else {
        "not for a container: left to the host"
    };
    steps.push(Step {
        program: INGRESS,
        detail: detail.into(),
    });
    Outcome::Passed
}

/// `hairpin::inside`; `None` when the packet goes on to the kernel.
pub(super) fn hairpin(
    rules: &Rules,
    m: &impl Lookup,
    q: &Query,
    steps: &mut Vec<Step>,
) -> Option<Outcome> {
    if q.proto != proto::TCP && q.proto != proto::UDP {
        steps.push(Step {
            program: INSIDE,
            detail: "only TCP and UDP are hairpinned: passed".into(),
        });
        return None;
    }
    let target = Endpoint::new(q.proto, q.dst.ip().octets(), q.dst.port());
    if m.reverse(&target).is_none()
        && rules
            .published(q.proto, *q.dst.ip(), q.dst.port())
            .is_none()
    {
        steps.push(Step {
            program: INSIDE,
            detail: format!("{} is not an outside endpoint of this NAT: passed", q.dst),
        });
        return None;
    }
    steps.push(Step {
        program: INSIDE,
        detail: format!(
            "{} is an outside endpoint of this NAT: hairpin (source NAT, then destination NAT, then redirect)",
            q.dst
        ),
    });
    let from = match outbound(rules, m, q, q.src.port(), q.dst.port(), steps, INSIDE) {
        Out::None => {
            steps.push(Step {
                program: INSIDE,
                detail: "the sender is not masqueraded: passed".into(),
            });
            return None;
        }
        Out::Drop(c) => return Some(Outcome::dropped(c)),
        Out::To(from) => from,
    };
    let arriving = Arriving {
        p: q.proto,
        tcp: q.tcp,
        src: (*from.ip(), from.port()),
        dst: (*q.dst.ip(), q.dst.port()),
    };
    match inbound(rules, m, arriving, steps, INSIDE) {
        In::To(to, _) => Some(Outcome::Translated {
            src: from,
            dst: to,
            counter: Counter::HairpinPackets.name(),
            quoted: None,
        }),
        In::Drop(c) => Some(Outcome::dropped(c)),
        In::None => None,
    }
}
