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
//! * **Arriving on the uplink** (`netbpf_ingress`): `NAT_REVERSE` for the
//!   destination (the reply to a mapping, or a new remote reaching it:
//!   endpoint-independent filtering, TCP only with an opening SYN), else a
//!   published port (a rule bound to the destination address, else one for
//!   any address if the destination is one of `LOCAL_ADDRS`, never
//!   127.0.0.0/8); neither: dropped if addressed straight into a
//!   masquerade CIDR, else left to the host.
//!
//! ICMP is explained for echo (the port is the identifier: echo requests
//! going out, echo replies coming in); ICMP errors, fragments and malformed
//! packets are not (the errors are matched through the packet they quote,
//! see `netbpf-ebpf/src/icmp.rs`).

use std::{
    collections::HashMap,
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
};

use netbpf_common::{
    Counter, Endpoint, FlowKey, FlowValue, MappingValue, MasqRule, PUBLISH_KEY_BITS,
    PUBLISH_KEY_FIXED_BITS, PublishRule, flow_flags, map_names, proto,
};
use serde::Serialize;

use crate::{
    conntrack::{FlowState, proto_name},
    maps::{self, MapsError, MasqEntry, NatMaps, PublishEntry},
};

/// Where the packet is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Arrives from a container on a container-side interface (hairpin
    /// check, then out of the uplink).
    FromContainer,
    /// Leaves through the uplink (the host's own traffic or forwarded).
    Egress,
    /// Arrives on the uplink from outside.
    Ingress,
}

/// TCP flags of the packet, as far as the datapath cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpFlags {
    /// An opening SYN (SYN without ACK): may open a flow.
    Syn,
    /// Anything else (ACK, SYN-ACK, FIN, RST, data): needs a flow.
    NotSyn,
}

/// The packet to explain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    /// IP protocol number.
    pub proto: u8,
    /// Source address and port (ICMP: echo identifier of a request).
    pub src: SocketAddrV4,
    /// Destination address and port (ICMP: echo identifier of a reply).
    pub dst: SocketAddrV4,
    /// TCP flags (ignored for UDP and ICMP).
    pub tcp: TcpFlags,
}

/// What happens to the packet in the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Outcome {
    /// Left untouched for the kernel (counted as `passed`).
    Passed,
    /// Rewritten and sent on; `counter` is the counter it adds to.
    Translated {
        /// Source after translation.
        src: SocketAddrV4,
        /// Destination after translation.
        dst: SocketAddrV4,
        /// Counter incremented (`snat_packets`, `reverse_packets`,
        /// `dnat_packets`, `hairpin_packets`).
        counter: &'static str,
    },
    /// Dropped; `counter` is the drop reason.
    Dropped {
        /// Drop counter.
        counter: &'static str,
    },
}

/// One decision on the way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The program (or the kernel) that decides.
    pub program: &'static str,
    /// What it found and did.
    pub detail: String,
}

/// The answer: every step, then the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// Where the packet was taken to be seen first.
    pub direction: Direction,
    /// The decisions, in order.
    pub steps: Vec<Step>,
    /// The outcome.
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(f, "{}. {}: {}", i + 1, s.program, s.detail)?;
        }
        match &self.outcome {
            Outcome::Passed => writeln!(f, "verdict: passed to the kernel untouched (passed)"),
            Outcome::Translated { src, dst, counter } => {
                writeln!(f, "verdict: translated to {src} → {dst} ({counter})")
            }
            Outcome::Dropped { counter } => writeln!(f, "verdict: dropped ({counter})"),
        }
    }
}

/// Point lookups in the hash maps the programs use.
pub trait Lookup {
    /// `CONNTRACK`.
    fn flow(&self, key: &FlowKey) -> Option<FlowValue>;
    /// `NAT_MAPPINGS`.
    fn mapping(&self, inside: &Endpoint) -> Option<MappingValue>;
    /// `NAT_REVERSE`.
    fn reverse(&self, outside: &Endpoint) -> Option<Endpoint>;
}

impl Lookup for NatMaps {
    fn flow(&self, key: &FlowKey) -> Option<FlowValue> {
        self.conntrack.get(key, 0).ok()
    }
    fn mapping(&self, inside: &Endpoint) -> Option<MappingValue> {
        self.mappings.get(inside, 0).ok()
    }
    fn reverse(&self, outside: &Endpoint) -> Option<Endpoint> {
        self.reverse.get(outside, 0).ok()
    }
}

/// In-memory maps (tests).
#[derive(Debug, Default, Clone)]
pub struct MemMaps {
    /// Flows.
    pub flows: HashMap<FlowKey, FlowValue>,
    /// Mappings.
    pub mappings: HashMap<Endpoint, MappingValue>,
    /// Reverse entries.
    pub reverse: HashMap<Endpoint, Endpoint>,
}

impl Lookup for MemMaps {
    fn flow(&self, key: &FlowKey) -> Option<FlowValue> {
        self.flows.get(key).copied()
    }
    fn mapping(&self, inside: &Endpoint) -> Option<MappingValue> {
        self.mappings.get(inside).copied()
    }
    fn reverse(&self, outside: &Endpoint) -> Option<Endpoint> {
        self.reverse.get(outside).copied()
    }
}

/// The rule maps (small, read whole) and how full the hash maps are.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// `MASQ_RULES` entries.
    pub masquerade: Vec<MasqEntry>,
    /// `PUBLISH` entries (blocks).
    pub publish: Vec<PublishEntry>,
    /// `LOCAL_ADDRS`.
    pub local_addrs: Vec<Ipv4Addr>,
    /// Whether `CONNTRACK` is full (a new flow would fail).
    pub conntrack_full: bool,
    /// Whether `NAT_MAPPINGS` is full (a new mapping would fail).
    pub mappings_full: bool,
}

impl Rules {
    /// Reads the rule maps pinned in `dir` and the fill of the hash maps.
    pub fn read(dir: &Path, nat: &NatMaps) -> Result<Self, MapsError> {
        let full = |name: &'static str, entries: usize| -> Result<bool, MapsError> {
            Ok(entries as u64 >= u64::from(maps::capacity(dir, name)?))
        };
        Ok(Self {
            masquerade: maps::read_masquerade(dir)?,
            publish: maps::read_publish(dir)?,
            local_addrs: maps::read_local_addrs(dir)?,
            conntrack_full: full(map_names::CONNTRACK, nat.flows()?.len())?,
            mappings_full: full(map_names::NAT_MAPPINGS, nat.mapping_entries()?.len())?,
        })
    }

    /// The longest masquerade prefix holding `addr` (the trie's lookup).
    pub fn masq(&self, addr: Ipv4Addr) -> Option<&MasqEntry> {
        self.masquerade
            .iter()
            .filter(|e| {
                let bits = e.prefix_len.min(32);
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                u32::from(addr) & mask == u32::from_be_bytes(e.source) & mask
            })
            .max_by_key(|e| e.prefix_len)
    }

    /// A full-length lookup in the published-ports trie.
    fn publish_lookup(&self, p: u8, addr: [u8; 4], port: u16) -> Option<&PublishEntry> {
        let bits = |p: u8, a: [u8; 4], port: u16| -> u64 {
            (u64::from(p) << 48) | (u64::from(u32::from_be_bytes(a)) << 16) | u64::from(port)
        };
        let want = bits(p, addr, port);
        self.publish
            .iter()
            .filter(|e| {
                let len = e.prefix_len.min(PUBLISH_KEY_BITS);
                let shift = PUBLISH_KEY_BITS - len;
                let have = bits(e.key.proto, e.key.addr, u16::from_be_bytes(e.key.port_be));
                len >= PUBLISH_KEY_FIXED_BITS && (have >> shift) == (want >> shift)
            })
            .max_by_key(|e| e.prefix_len)
    }

    /// `nat::published`: a rule bound to `addr`, else a rule for any
    /// address if `addr` is one of the host's; never for 127.0.0.0/8.
    /// Returns the rule and whether it was the any-address one.
    pub fn published(&self, p: u8, addr: Ipv4Addr, port: u16) -> Option<(PublishRule, bool)> {
        if addr.octets()[0] == 127 {
            return None;
        }
        if let Some(e) = self.publish_lookup(p, addr.octets(), port) {
            return Some((e.rule, false));
        }
        if !self.local_addrs.contains(&addr) {
            return None;
        }
        self.publish_lookup(p, [0; 4], port).map(|e| (e.rule, true))
    }
}

/// `nat::published_port`.
fn published_port(rule: &PublishRule, port: u16) -> u16 {
    rule.to_port
        .wrapping_add(port.wrapping_sub(rule.host_port_min))
}

/// `nat::port_range`.
fn port_range(p: u8, port: u16, rule: &MasqRule) -> (u32, u32) {
    if rule.port_min != 0 || rule.port_max != 0 {
        return (u32::from(rule.port_min), u32::from(rule.port_max));
    }
    match p {
        proto::ICMP => (0, 65535),
        _ if port < 1024 => (1, 1023),
        _ => (1024, 65535),
    }
}

fn ep(e: &Endpoint) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(e.addr), e.port)
}

fn sa(addr: [u8; 4], port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(addr), port)
}

fn flow_desc(key: &FlowKey, v: &FlowValue) -> String {
    let state = FlowState::of(key.proto, v.flags).name();
    let how = if v.flags & flow_flags::PUBLISHED != 0 {
        ", to a published port"
    } else if v.flags & flow_flags::OPENED_IN != 0 {
        ", opened from outside"
    } else {
        ""
    };
    format!(
        "flow {} {} ↔ {} (outside {}), {state}{how}",
        proto_name(key.proto),
        sa(key.inside_addr, key.inside_port),
        sa(key.remote_addr, key.remote_port),
        sa(v.outside_addr, v.outside_port),
    )
}

const EGRESS: &str = "netbpf_egress (tc egress of the uplink)";
const INGRESS: &str = "netbpf_ingress (tc ingress of the uplink)";
const INSIDE: &str = "netbpf_inside (tc ingress of the container-side interface)";

/// The result of the outbound (source NAT) lookup.
enum Out {
    /// Not a NAT flow.
    None,
    /// Translate the source to this endpoint.
    To(SocketAddrV4),
    /// Dropped.
    Drop(Counter),
}

/// `nat::outbound`, described.
fn outbound(
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
        if rules.conntrack_full {
            steps.push(Step {
                program,
                detail: "the conntrack table is full: the flow cannot be created".into(),
            });
            return Out::Drop(Counter::DropConntrackFull);
        }
        return Out::To(ep(&mapping.outside));
    }
    let (lo, hi) = port_range(q.proto, sport, &rule.rule);
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
    if rules.conntrack_full {
        steps.push(Step {
            program,
            detail: "the conntrack table is full: the flow cannot be created".into(),
        });
        return Out::Drop(Counter::DropConntrackFull);
    }
    Out::To(choice)
}

/// The result of the inbound (reverse / DNAT) lookup.
enum In {
    None,
    To(SocketAddrV4, bool),
    Drop(Counter),
}

/// `nat::inbound`, described: `src:sport` → the outside endpoint `dst:dport`.
#[allow(clippy::too_many_arguments, reason = "mirrors the kernel's tuple")]
fn inbound(
    rules: &Rules,
    m: &impl Lookup,
    p: u8,
    tcp: TcpFlags,
    (src, sport): (Ipv4Addr, u16),
    (dst, dport): (Ipv4Addr, u16),
    steps: &mut Vec<Step>,
    program: &'static str,
) -> In {
    let outside = Endpoint::new(p, dst.octets(), dport);
    let needs_syn = p == proto::TCP && tcp == TcpFlags::NotSyn;
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
                if rules.conntrack_full {
                    return In::Drop(Counter::DropConntrackFull);
                }
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
    let to_port = published_port(&rule, dport);
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
            "published port {} {host} → {to}; no flow yet: a new one is opened (the container sees the client's address)",
            proto_name(p)
        ),
    });
    if rules.conntrack_full {
        return In::Drop(Counter::DropConntrackFull);
    }
    In::To(to, true)
}

fn span(rule: &PublishRule) -> String {
    if rule.host_port_min == rule.host_port_max {
        rule.host_port_min.to_string()
    } else {
        format!("{}-{}", rule.host_port_min, rule.host_port_max)
    }
}

/// Explains `q` seen first at `direction`.
pub fn explain(rules: &Rules, m: &impl Lookup, q: &Query, direction: Direction) -> Explanation {
    let mut steps = Vec::new();
    let outcome = match direction {
        Direction::Ingress => ingress(rules, m, q, &mut steps),
        Direction::Egress => egress(rules, m, q, &mut steps),
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

/// The ports of the NAT tuple (ICMP: echo id as the source port going out,
/// as the destination port coming in).
fn ports(q: &Query, dir: Direction) -> (u16, u16) {
    match (q.proto, dir) {
        (proto::ICMP, Direction::Ingress) => (0, q.dst.port()),
        (proto::ICMP, _) => (q.src.port(), 0),
        _ => (q.src.port(), q.dst.port()),
    }
}

fn egress(rules: &Rules, m: &impl Lookup, q: &Query, steps: &mut Vec<Step>) -> Outcome {
    let (sport, dport) = ports(q, Direction::Egress);
    match outbound(rules, m, q, sport, dport, steps, EGRESS) {
        Out::None => Outcome::Passed,
        Out::Drop(c) => Outcome::Dropped { counter: c.name() },
        Out::To(to) => Outcome::Translated {
            src: to,
            dst: q.dst,
            counter: Counter::SnatPackets.name(),
        },
    }
}

fn ingress(rules: &Rules, m: &impl Lookup, q: &Query, steps: &mut Vec<Step>) -> Outcome {
    let (sport, dport) = ports(q, Direction::Ingress);
    let result = inbound(
        rules,
        m,
        q.proto,
        q.tcp,
        (*q.src.ip(), sport),
        (*q.dst.ip(), dport),
        steps,
        INGRESS,
    );
    match result {
        In::To(to, published) => Outcome::Translated {
            src: q.src,
            dst: to,
            counter: if published {
                Counter::DnatPackets.name()
            } else {
                Counter::ReversePackets.name()
            },
        },
        In::Drop(c) => Outcome::Dropped { counter: c.name() },
        In::None => {
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
                Outcome::Dropped {
                    counter: Counter::DropDirectToInside.name(),
                }
            } else {
                steps.push(Step {
                    program: INGRESS,
                    detail: "not for a container: left to the host".into(),
                });
                Outcome::Passed
            }
        }
    }
}

/// `hairpin::inside`; `None` when the packet goes on to the kernel.
fn hairpin(rules: &Rules, m: &impl Lookup, q: &Query, steps: &mut Vec<Step>) -> Option<Outcome> {
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
        Out::Drop(c) => return Some(Outcome::Dropped { counter: c.name() }),
        Out::To(from) => from,
    };
    match inbound(
        rules,
        m,
        q.proto,
        q.tcp,
        (*from.ip(), from.port()),
        (*q.dst.ip(), q.dst.port()),
        steps,
        INSIDE,
    ) {
        In::To(to, _) => Some(Outcome::Translated {
            src: from,
            dst: to,
            counter: Counter::HairpinPackets.name(),
        }),
        In::Drop(c) => Some(Outcome::Dropped { counter: c.name() }),
        In::None => None,
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

/// Where a packet is seen first when `--in` is not given: from a container
/// if its source is masqueraded or has a flow, arriving on the uplink if
/// its destination is a host address, an outside endpoint or a container,
/// else leaving the uplink.
pub fn infer_direction(rules: &Rules, m: &impl Lookup, q: &Query) -> Direction {
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
    {
        return Direction::Ingress;
    }
    Direction::Egress
}

#[cfg(test)]
mod tests {
    use super::*;
    use netbpf_common::{PublishKey, flow_flags::*};

    const C1: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
    const UP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
    const OUT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

    fn rules(port_min: u16, port_max: u16) -> Rules {
        let rule = PublishRule {
            to_addr: C1.octets(),
            to_port: 4000,
            host_port_min: 8081,
            host_port_max: 8081,
            _pad: 0,
        };
        Rules {
            masquerade: vec![MasqEntry {
                prefix_len: 24,
                source: [10, 77, 0, 0],
                rule: MasqRule {
                    to_addr: UP.octets(),
                    port_min,
                    port_max,
                },
            }],
            publish: vec![PublishEntry {
                prefix_len: PUBLISH_KEY_BITS,
                key: PublishKey::new(proto::TCP, [0; 4], 8081),
                rule,
            }],
            local_addrs: vec![UP],
            conntrack_full: false,
            mappings_full: false,
        }
    }

    fn q(p: u8, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), tcp: TcpFlags) -> Query {
        Query {
            proto: p,
            src: SocketAddrV4::new(src.0, src.1),
            dst: SocketAddrV4::new(dst.0, dst.1),
            tcp,
        }
    }

    fn translated(e: &Explanation) -> (SocketAddrV4, SocketAddrV4, &'static str) {
        match e.outcome {
            Outcome::Translated { src, dst, counter } => (src, dst, counter),
            ref other => panic!("not translated: {other:?}\n{e}"),
        }
    }

    #[test]
    fn a_new_flow_keeps_its_port_then_uses_the_mapping() {
        let r = rules(0, 0);
        let mut m = MemMaps::default();
        let pkt = q(proto::TCP, (C1, 40000), (OUT, 4000), TcpFlags::Syn);
        assert_eq!(infer_direction(&r, &m, &pkt), Direction::FromContainer);
        let e = explain(&r, &m, &pkt, Direction::FromContainer);
        assert_eq!(
            translated(&e),
            (SocketAddrV4::new(UP, 40000), pkt.dst, "snat_packets")
        );
        assert!(e.to_string().contains("keeps port 40000"), "{e}");
        assert!(
            e.to_string().contains("1024-65535 (class-preserving)"),
            "{e}"
        );
        // Port taken by someone else: a random one.
        let other = Endpoint::new(proto::TCP, [10, 77, 0, 3], 40000);
        m.reverse
            .insert(Endpoint::new(proto::TCP, UP.octets(), 40000), other);
        let e = explain(&r, &m, &pkt, Direction::Egress);
        assert_eq!(translated(&e).0, SocketAddrV4::new(UP, 0));
        assert!(e.to_string().contains("port 40000 is taken"), "{e}");
        // An existing mapping is used for every destination.
        let inside = Endpoint::new(proto::TCP, C1.octets(), 40000);
        let outside = Endpoint::new(proto::TCP, UP.octets(), 50000);
        m.mappings.insert(
            inside,
            MappingValue {
                outside,
                last_used_ns: 0,
            },
        );
        m.reverse.insert(outside, inside);
        let e = explain(&r, &m, &pkt, Direction::Egress);
        assert_eq!(translated(&e).0, SocketAddrV4::new(UP, 50000));
        assert!(e.to_string().contains("existing mapping"), "{e}");
        // Replies come back; an unsolicited ACK from elsewhere does not.
        let reply = q(proto::TCP, (OUT, 4000), (UP, 50000), TcpFlags::NotSyn);
        m.flows.insert(
            FlowKey::new(proto::TCP, C1.octets(), 40000, OUT.octets(), 4000),
            FlowValue {
                outside_addr: UP.octets(),
                outside_port: 50000,
                flags: SEEN_OUT | SYN_OUT,
                ..Default::default()
            },
        );
        assert_eq!(infer_direction(&r, &m, &reply), Direction::Ingress);
        let e = explain(&r, &m, &reply, Direction::Ingress);
        assert_eq!(
            translated(&e),
            (reply.src, SocketAddrV4::new(C1, 40000), "reverse_packets")
        );
        let stranger = q(
            proto::TCP,
            (Ipv4Addr::new(198, 51, 100, 9), 1),
            (UP, 50000),
            TcpFlags::NotSyn,
        );
        let e = explain(&r, &m, &stranger, Direction::Ingress);
        assert_eq!(
            e.outcome,
            Outcome::Dropped {
                counter: "drop_tcp_no_flow"
            }
        );
        let syn = Query {
            tcp: TcpFlags::Syn,
            ..stranger
        };
        let e = explain(&r, &m, &syn, Direction::Ingress);
        assert!(
            e.to_string().contains("endpoint-independent filtering"),
            "{e}"
        );
        assert_eq!(translated(&e).1, SocketAddrV4::new(C1, 40000));
    }

    #[test]
    fn published_ports_and_guards() {
        let r = rules(61000, 61001);
        let m = MemMaps::default();
        let e = explain(
            &r,
            &m,
            &q(proto::TCP, (OUT, 5555), (UP, 8081), TcpFlags::Syn),
            Direction::Ingress,
        );
        assert_eq!(
            translated(&e),
            (
                SocketAddrV4::new(OUT, 5555),
                SocketAddrV4::new(C1, 4000),
                "dnat_packets"
            )
        );
        assert!(e.to_string().contains("*:8081"), "{e}");
        let e = explain(
            &r,
            &m,
            &q(proto::TCP, (OUT, 5555), (UP, 8081), TcpFlags::NotSyn),
            Direction::Ingress,
        );
        assert_eq!(
            e.outcome,
            Outcome::Dropped {
                counter: "drop_tcp_no_flow"
            }
        );
        // UDP is not published on 8081; loopback never.
        let e = explain(
            &r,
            &m,
            &q(proto::UDP, (OUT, 5555), (UP, 8081), TcpFlags::Syn),
            Direction::Ingress,
        );
        assert_eq!(e.outcome, Outcome::Passed);
        let e = explain(
            &r,
            &m,
            &q(
                proto::TCP,
                (OUT, 5555),
                (Ipv4Addr::LOCALHOST, 8081),
                TcpFlags::Syn,
            ),
            Direction::Ingress,
        );
        assert_eq!(e.outcome, Outcome::Passed);
        assert!(e.to_string().contains("127.0.0.0/8"), "{e}");
        let e = explain(
            &r,
            &m,
            &q(proto::TCP, (OUT, 5555), (C1, 4000), TcpFlags::Syn),
            Direction::Ingress,
        );
        assert_eq!(
            e.outcome,
            Outcome::Dropped {
                counter: "drop_direct_to_inside"
            }
        );
        // The range has two ports; both taken: exhausted.
        let mut m = MemMaps::default();
        for port in [61000, 61001] {
            m.reverse.insert(
                Endpoint::new(proto::UDP, UP.octets(), port),
                Endpoint::new(proto::UDP, [10, 77, 0, 9], port),
            );
        }
        let e = explain(
            &r,
            &m,
            &q(proto::UDP, (C1, 5353), (OUT, 53), TcpFlags::Syn),
            Direction::Egress,
        );
        assert_eq!(
            e.outcome,
            Outcome::Dropped {
                counter: "drop_port_exhausted"
            }
        );
        // Not masqueraded: passed.
        let e = explain(
            &r,
            &m,
            &q(proto::UDP, (UP, 5353), (OUT, 53), TcpFlags::Syn),
            Direction::Egress,
        );
        assert_eq!(e.outcome, Outcome::Passed);
    }

    #[test]
    fn hairpin_to_a_published_port() {
        let r = rules(0, 0);
        let m = MemMaps::default();
        let pkt = q(proto::TCP, (C1, 40000), (UP, 8081), TcpFlags::Syn);
        let e = explain(&r, &m, &pkt, Direction::FromContainer);
        let (src, dst, counter) = translated(&e);
        assert_eq!(
            (src, dst, counter),
            (
                SocketAddrV4::new(UP, 40000),
                SocketAddrV4::new(C1, 4000),
                "hairpin_packets"
            )
        );
        // ICMP echo out, and its reply in.
        let ping = q(proto::ICMP, (C1, 7), (OUT, 0), TcpFlags::Syn);
        let e = explain(&r, &m, &ping, Direction::FromContainer);
        assert_eq!(translated(&e).0, SocketAddrV4::new(UP, 7));
        assert!(e.to_string().contains("0-65535"), "{e}");
    }
}
