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

use std::{
    collections::HashMap,
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
};

use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData};
use netbpf_common::{
    ContainerEntry, ContainerIf, Counter, Endpoint, FlowKey, FlowValue, MappingValue, Neighbour,
    PublishKey, PublishRule, RouteUplink, flow_flags, map_names, proto,
};
use serde::Serialize;

use crate::{
    conntrack::FlowState,
    maps::{self, MapsError, MasqEntry, NatMaps, PublishEntry, proto_name},
    neigh::format_mac,
};

/// Interface name of `ifindex`, or `#N` if it has none here.
fn ifname(ifindex: u32) -> String {
    let name = crate::neigh::ifname(ifindex);
    if name.is_empty() {
        format!("#{ifindex}")
    } else {
        name
    }
}

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
    /// Arrives from a routed container on its veth (`netbpf_container`).
    FromRoutedContainer,
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
    /// IP TTL as it arrives (routing forwards only above 1).
    pub ttl: u8,
    /// The interface index it arrives on, when known (`--in`): for a
    /// routed container, which veth (else the one its source sits behind).
    pub iif: Option<u32>,
    /// An ICMP error (`proto` is ICMP, the ports are ignored) and the
    /// packet it quotes.
    pub icmp_error: Option<IcmpError>,
}

/// The default TTL of a query (Linux's).
pub const DEFAULT_TTL: u8 = 64;

/// The ICMP error types the datapath translates (`nat::is_icmp_error`).
pub const ICMP_ERROR_TYPES: [(u8, &str); 3] = [
    (3, "dest-unreach"),
    (11, "time-exceeded"),
    (12, "parameter-problem"),
];

/// An ICMP error and the packet it quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpError {
    /// ICMP type (3, 11 or 12).
    pub icmp_type: u8,
    /// The quoted packet.
    pub quoted: Quoted,
}

/// The header an ICMP error quotes. For ICMP the quoted packet is an echo
/// request and the source port is its identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    /// IP protocol number.
    pub proto: u8,
    /// Source address and port.
    pub src: SocketAddrV4,
    /// Destination address and port.
    pub dst: SocketAddrV4,
}

/// The quoted header after translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QuotedAfter {
    /// Quoted source.
    pub src: SocketAddrV4,
    /// Quoted destination.
    pub dst: SocketAddrV4,
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
        /// `dnat_packets`, `hairpin_packets`, `icmp_errors_translated`).
        counter: &'static str,
        /// ICMP errors: the quoted header after translation.
        #[serde(skip_serializing_if = "Option::is_none")]
        quoted: Option<QuotedAfter>,
    },
    /// Routed: new Ethernet addresses, TTL minus one, redirected to the
    /// egress of `interface`.
    Forwarded {
        /// Output interface.
        interface: String,
        /// Its index.
        ifindex: u32,
        /// Source MAC after the rewrite.
        src_mac: String,
        /// Destination MAC after the rewrite.
        dst_mac: String,
        /// TTL after the decrement.
        ttl: u8,
        /// `routed_in`, `routed_local` or `routed_out`.
        counter: &'static str,
    },
    /// Handed to the kernel unchanged, with a routing counter
    /// (`route_ttl_expired`, `route_no_neighbour`).
    ToKernel {
        /// Counter incremented.
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
            Outcome::Translated {
                src,
                dst,
                counter,
                quoted: None,
            } => writeln!(f, "verdict: translated to {src} → {dst} ({counter})"),
            Outcome::Translated {
                src,
                dst,
                counter,
                quoted: Some(q),
            } => writeln!(
                f,
                "verdict: translated to {src} → {dst}, quoting {} → {} ({counter})",
                q.src, q.dst
            ),
            Outcome::Forwarded {
                interface,
                ifindex,
                src_mac,
                dst_mac,
                ttl,
                counter,
            } => writeln!(
                f,
                "verdict: forwarded out of {interface} (ifindex {ifindex}), {src_mac} → {dst_mac}, TTL {ttl} ({counter})"
            ),
            Outcome::ToKernel { counter } => {
                writeln!(f, "verdict: handed to the kernel unchanged ({counter})")
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
    /// `CONTAINERS` (routed containers by address).
    fn container(&self, addr: Ipv4Addr) -> Option<ContainerEntry>;
    /// `CONTAINER_IFS` (routed containers by veth).
    fn container_if(&self, ifindex: u32) -> Option<ContainerIf>;
    /// `NEIGHBOURS` (next hops on the uplink).
    fn neighbour(&self, addr: Ipv4Addr) -> Option<Neighbour>;
    /// `ROUTE_UPLINK[0]`.
    fn route_uplink(&self) -> Option<RouteUplink>;
    /// The kernel's forwarding decision for `src` → `dst` arriving on
    /// `iif` (what `bpf_fib_lookup` answers; not a map).
    fn fib(&self, src: Ipv4Addr, dst: Ipv4Addr, iif: u32) -> Fib;
}

/// The kernel's forwarding decision for a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fib {
    /// Forwarded out of `ifindex`, to `gateway` (on-link when `None`).
    Via {
        /// Output interface.
        ifindex: u32,
        /// Next hop, if not the destination itself.
        gateway: Option<Ipv4Addr>,
    },
    /// Not forwarded (local, unreachable, blackhole, ...): the kernel's
    /// words.
    NotForwarded(String),
    /// Could not be asked.
    Unknown(String),
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
    fn container(&self, _: Ipv4Addr) -> Option<ContainerEntry> {
        None
    }
    fn container_if(&self, _: u32) -> Option<ContainerIf> {
        None
    }
    fn neighbour(&self, _: Ipv4Addr) -> Option<Neighbour> {
        None
    }
    fn route_uplink(&self) -> Option<RouteUplink> {
        None
    }
    fn fib(&self, _: Ipv4Addr, _: Ipv4Addr, _: u32) -> Fib {
        Fib::Unknown("routing maps not opened".into())
    }
}

/// The live maps pinned by a running daemon: NAT, and routing if pinned.
pub struct LiveMaps {
    /// The NAT maps.
    pub nat: NatMaps,
    containers: Option<BpfHashMap<MapData, [u8; 4], ContainerEntry>>,
    ifs: Option<BpfHashMap<MapData, u32, ContainerIf>>,
    neighbours: Option<BpfHashMap<MapData, [u8; 4], Neighbour>>,
    uplink: Option<RouteUplink>,
}

impl LiveMaps {
    /// Opens the maps pinned in `dir` (routing maps a datapath without
    /// them does not pin are left out: nothing is routed).
    pub fn open_pinned(dir: &Path) -> Result<Self, MapsError> {
        let nat = NatMaps::open_pinned(dir)?;
        let hash = |name: &'static str| maps::open_pinned(dir, name).ok().map(Map::HashMap);
        let uplink = maps::open_pinned(dir, map_names::ROUTE_UPLINK)
            .ok()
            .and_then(|m| Array::<MapData, RouteUplink>::try_from(Map::Array(m)).ok())
            .and_then(|a| a.get(&0, 0).ok());
        Ok(Self {
            nat,
            containers: hash(map_names::CONTAINERS).and_then(|m| BpfHashMap::try_from(m).ok()),
            ifs: hash(map_names::CONTAINER_IFS).and_then(|m| BpfHashMap::try_from(m).ok()),
            neighbours: hash(map_names::NEIGHBOURS).and_then(|m| BpfHashMap::try_from(m).ok()),
            uplink,
        })
    }
}

impl Lookup for LiveMaps {
    fn flow(&self, key: &FlowKey) -> Option<FlowValue> {
        self.nat.flow(key)
    }
    fn mapping(&self, inside: &Endpoint) -> Option<MappingValue> {
        self.nat.mapping(inside)
    }
    fn reverse(&self, outside: &Endpoint) -> Option<Endpoint> {
        self.nat.reverse(outside)
    }
    fn container(&self, addr: Ipv4Addr) -> Option<ContainerEntry> {
        self.containers.as_ref()?.get(&addr.octets(), 0).ok()
    }
    fn container_if(&self, ifindex: u32) -> Option<ContainerIf> {
        self.ifs.as_ref()?.get(&ifindex, 0).ok()
    }
    fn neighbour(&self, addr: Ipv4Addr) -> Option<Neighbour> {
        self.neighbours.as_ref()?.get(&addr.octets(), 0).ok()
    }
    fn route_uplink(&self) -> Option<RouteUplink> {
        self.uplink
    }
    fn fib(&self, src: Ipv4Addr, dst: Ipv4Addr, iif: u32) -> Fib {
        ip_route_get(src, dst, iif)
    }
}

/// Asks the kernel (`ip -4 -o route get DST from SRC iif IFACE`) how it
/// forwards a packet: the same FIB `bpf_fib_lookup` reads, with the input
/// interface's forwarding and reverse-path checks (not the MTU check).
fn ip_route_get(src: Ipv4Addr, dst: Ipv4Addr, iif: u32) -> Fib {
    let iface = ifname(iif);
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "route", "get"])
        .arg(dst.to_string())
        .arg("from")
        .arg(src.to_string())
        .arg("iif")
        .arg(&iface)
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => return Fib::Unknown(format!("running ip route get: {e}")),
    };
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Fib::NotForwarded(err);
    }
    parse_route_get(&text)
}

/// Parses one line of `ip -o route get` output.
pub fn parse_route_get(text: &str) -> Fib {
    let words: Vec<&str> = text.split_whitespace().collect();
    let after = |w: &str| {
        words
            .iter()
            .position(|x| *x == w)
            .and_then(|i| words.get(i + 1))
            .copied()
    };
    if let Some(kind) = words.first()
        && [
            "local",
            "broadcast",
            "multicast",
            "unreachable",
            "blackhole",
            "prohibit",
            "throw",
        ]
        .contains(kind)
    {
        return Fib::NotForwarded(format!("{kind} route: {text}"));
    }
    let Some(dev) = after("dev") else {
        return Fib::Unknown(format!("no output interface in {text:?}"));
    };
    let Ok(ifindex) = crate::netdev::ifindex(dev) else {
        return Fib::Unknown(format!("interface {dev} of {text:?} is gone"));
    };
    Fib::Via {
        ifindex,
        gateway: after("via").and_then(|g| g.parse().ok()),
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
    /// Routed containers.
    pub containers: HashMap<Ipv4Addr, ContainerEntry>,
    /// Routed veths.
    pub container_ifs: HashMap<u32, ContainerIf>,
    /// Neighbours.
    pub neighbours: HashMap<Ipv4Addr, Neighbour>,
    /// The uplink entry.
    pub route_uplink: Option<RouteUplink>,
    /// FIB answers by destination (default: unknown).
    pub fib: HashMap<Ipv4Addr, Fib>,
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
    fn container(&self, addr: Ipv4Addr) -> Option<ContainerEntry> {
        self.containers.get(&addr).copied()
    }
    fn container_if(&self, ifindex: u32) -> Option<ContainerIf> {
        self.container_ifs.get(&ifindex).copied()
    }
    fn neighbour(&self, addr: Ipv4Addr) -> Option<Neighbour> {
        self.neighbours.get(&addr).copied()
    }
    fn route_uplink(&self) -> Option<RouteUplink> {
        self.route_uplink
    }
    fn fib(&self, _: Ipv4Addr, dst: Ipv4Addr, _: u32) -> Fib {
        self.fib
            .get(&dst)
            .cloned()
            .unwrap_or_else(|| Fib::Unknown("no FIB answer in the test".into()))
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
    /// The `[inbound]` policies (`SETTINGS`).
    pub settings: netbpf_common::Settings,
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
            settings: maps::read_settings(dir)?,
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

    /// A full-length lookup in the published-ports trie (the kernel's
    /// longest-prefix match, through the same `PublishKey::covers`).
    fn publish_lookup(&self, p: u8, addr: [u8; 4], port: u16) -> Option<&PublishEntry> {
        let want = PublishKey::new(p, addr, port);
        self.publish
            .iter()
            .filter(|e| e.key.covers(e.prefix_len, &want))
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
const ROUTE_IN: &str = "netbpf_route_in (tc ingress of the uplink, after netbpf_ingress)";
const CONTAINER: &str = "netbpf_container (tc ingress of the routed container's veth)";

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
        if p != proto::ICMP && rules.published(p, dst, dport).is_some() {
            steps.push(Step {
                program,
                detail: format!(
                    "NAT_REVERSE: {} belongs to {}, but {src}:{sport} has no flow with it, and for a new flow a published port wins over a mapping that holds the same port",
                    ep(&outside),
                    ep(&inside)
                ),
            });
            return published_flow(rules, m, p, tcp, (src, sport), (dst, dport), steps, program);
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
    published_flow(rules, m, p, tcp, (src, sport), (dst, dport), steps, program)
}

/// `nat::published_flow`, described: the flow to a published port.
#[allow(clippy::too_many_arguments, reason = "mirrors the kernel's tuple")]
fn published_flow(
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
fn lru_note(rules: &Rules, program: &'static str, steps: &mut Vec<Step>) {
    if rules.conntrack_full {
        steps.push(Step {
            program,
            detail: "the conntrack table is full: the new flow takes the place of the least recently used one (an LRU map)".into(),
        });
    }
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
    if let Some(e) = &q.icmp_error {
        return icmp_out(rules, m, q, e, steps);
    }
    let (sport, dport) = ports(q, Direction::Egress);
    match outbound(rules, m, q, sport, dport, steps, EGRESS) {
        Out::None => Outcome::Passed,
        Out::Drop(c) => Outcome::Dropped { counter: c.name() },
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
fn ingress(rules: &Rules, m: &impl Lookup, q: &Query, steps: &mut Vec<Step>) -> Outcome {
    let nat = nat_ingress(rules, m, q, steps);
    match nat {
        Outcome::Passed => route_in(m, q, steps),
        other => other,
    }
}

/// `nat::reverse_one`.
fn nat_ingress(rules: &Rules, m: &impl Lookup, q: &Query, steps: &mut Vec<Step>) -> Outcome {
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
        return Outcome::Dropped {
            counter: Counter::DropSpoofedFromOutside.name(),
        };
    }
    if let Some(e) = &q.icmp_error {
        return icmp_in(rules, m, q, e, steps);
    }
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
            quoted: None,
        },
        In::Drop(c) => Outcome::Dropped { counter: c.name() },
        In::None => match guard_inside(rules, m, q, steps) {
            Outcome::Passed => unsolicited_syn(rules, q, steps),
            other => other,
        },
    }
}

/// `nat::unsolicited_syn`: an opening SYN to the host's address that no
/// mapping or published port takes is dropped, unless a host socket takes
/// it (the kernel looks that up; explain cannot see host sockets).
fn unsolicited_syn(rules: &Rules, q: &Query, steps: &mut Vec<Step>) -> Outcome {
    if q.proto != proto::TCP || q.tcp != TcpFlags::Syn || !rules.local_addrs.contains(q.dst.ip()) {
        return Outcome::Passed;
    }
    if rules.settings.flags & netbpf_common::settings_flags::PASS_UNSOLICITED_SYN != 0 {
        steps.push(Step {
            program: INGRESS,
            detail: format!(
                "an opening SYN to {} that no mapping or published port takes: handed to the host's stack ([inbound] unsolicited_syn = \"pass\": netfilter DNAT, IPVS or kube-proxy may own it)",
                q.dst
            ),
        });
        return Outcome::Passed;
    }
    steps.push(Step {
        program: INGRESS,
        detail: format!(
            "an opening SYN to {} that no mapping or published port takes: dropped silently (RFC 5382 REQ-4) unless a host socket listens on it (the kernel checks; explain cannot see host sockets)",
            q.dst
        ),
    });
    Outcome::Dropped {
        counter: Counter::DropUnsolicitedSyn.name(),
    }
}

/// `nat::guard_inside`: dropped if addressed into a masquerade CIDR.
fn guard_inside(rules: &Rules, m: &impl Lookup, q: &Query, steps: &mut Vec<Step>) -> Outcome {
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
        return Outcome::Dropped {
            counter: Counter::DropDirectToInside.name(),
        };
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

/// `route::inbound` (`netbpf_route_in`), for a packet `netbpf_ingress`
/// passed on.
fn route_in(m: &impl Lookup, q: &Query, steps: &mut Vec<Step>) -> Outcome {
    let dst = *q.dst.ip();
    let Some(c) = m.container(dst) else {
        // Not a routed container: nothing to add (the program, if
        // attached, passes it without a trace).
        return Outcome::Passed;
    };
    let up = m.route_uplink().unwrap_or_default();
    if up.mac == [0; 6] {
        steps.push(Step {
            program: ROUTE_IN,
            detail: format!(
                "{dst} is in CONTAINERS, but ROUTE_UPLINK has no MAC (routing is off on this uplink): to the kernel"
            ),
        });
        return Outcome::Passed;
    }
    if c.mac == [0; 6] {
        steps.push(Step {
            program: ROUTE_IN,
            detail: format!(
                "{dst} is in CONTAINERS, but its MAC is not known yet: to the kernel, which routes it by the /32 host route to {}",
                ifname(c.ifindex)
            ),
        });
        return Outcome::Passed;
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
fn forward(
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

/// `route::container` (`netbpf_container` at tc ingress of a routed
/// container's veth), for an IPv4 packet.
fn from_routed(rules: &Rules, m: &impl Lookup, q: &Query, steps: &mut Vec<Step>) -> Outcome {
    let src = *q.src.ip();
    let dst = *q.dst.ip();
    let Some(iif) = q.iif.or_else(|| m.container(src).map(|c| c.ifindex)) else {
        steps.push(Step {
            program: CONTAINER,
            detail: format!(
                "{src} is not a routed container and no veth was given (--in): cannot tell where it arrives"
            ),
        });
        return Outcome::Passed;
    };
    let veth = ifname(iif);
    let Some(cif) = m.container_if(iif) else {
        steps.push(Step {
            program: CONTAINER,
            detail: format!(
                "{veth} (ifindex {iif}) is not in CONTAINER_IFS: netbpf_container does not handle it; passed"
            ),
        });
        return Outcome::Passed;
    };
    let own = Ipv4Addr::from(cif.addr);
    if src != own {
        steps.push(Step {
            program: CONTAINER,
            detail: format!(
                "CONTAINER_IFS: {veth} belongs to {own}, but the source is {src}: spoofed"
            ),
        });
        return Outcome::Dropped {
            counter: Counter::DropSpoofed.name(),
        };
    }
    let sent_to = format!(
        "from {own} on {veth}, the frame taken to be addressed to the veth's MAC {} (broadcast and multicast go to the kernel)",
        format_mac(&cif.host_mac)
    );
    if let Some(c) = m.container(dst) {
        if c.mac == [0; 6] {
            steps.push(Step {
                program: CONTAINER,
                detail: format!(
                    "{sent_to}; {dst} is a routed container whose MAC is not known yet: to the kernel, which routes it by its /32 host route"
                ),
            });
            return Outcome::Passed;
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
            steps.push(Step {
                program: CONTAINER,
                detail: format!(
                    "{sent_to}; {dst} is not a routed container and ROUTE_UPLINK is not set: to the kernel, which routes it"
                ),
            });
            return Outcome::Passed;
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
            steps.push(Step {
                program: CONTAINER,
                detail: format!(
                    "{sent_to}; the kernel's route for {dst} (ip route get {dst} from {src} iif {veth}) goes out of {}{via}, not the uplink {uplink}: to the kernel, which forwards it",
                    ifname(ifindex)
                ),
            });
            return Outcome::Passed;
        }
        Fib::NotForwarded(why) => {
            steps.push(Step {
                program: CONTAINER,
                detail: format!(
                    "{sent_to}; the kernel does not forward {src} → {dst} out of the uplink ({why}): to the kernel"
                ),
            });
            return Outcome::Passed;
        }
        Fib::Unknown(why) => {
            steps.push(Step {
                program: CONTAINER,
                detail: format!(
                    "{sent_to}; next hop: the kernel's route for {dst} (not known here: {why}). If it leaves by the uplink {uplink} and its next hop is in NEIGHBOURS, netbpf forwards it (routed_out); otherwise the kernel does"
                ),
            });
            return Outcome::Passed;
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

fn icmp_type_name(t: u8) -> String {
    ICMP_ERROR_TYPES
        .iter()
        .find(|(n, _)| *n == t)
        .map_or_else(|| format!("type {t}"), |(_, name)| (*name).to_owned())
}

fn quoted_desc(e: &IcmpError) -> String {
    let what = if e.quoted.proto == proto::ICMP {
        format!(
            "icmp echo request {} → {} (id {})",
            e.quoted.src.ip(),
            e.quoted.dst.ip(),
            e.quoted.src.port()
        )
    } else {
        format!(
            "{} {} → {}",
            proto_name(e.quoted.proto),
            e.quoted.src,
            e.quoted.dst
        )
    };
    format!("ICMP {} quoting {what}", icmp_type_name(e.icmp_type))
}

fn addr0(a: Ipv4Addr) -> SocketAddrV4 {
    SocketAddrV4::new(a, 0)
}

/// `icmp::error_in` (then `nat::guard_inside` when it passes).
fn icmp_in(
    rules: &Rules,
    m: &impl Lookup,
    q: &Query,
    e: &IcmpError,
    steps: &mut Vec<Step>,
) -> Outcome {
    let qt = &e.quoted;
    let desc = quoted_desc(e);
    let pass = |steps: &mut Vec<Step>, why: String| {
        steps.push(Step {
            program: INGRESS,
            detail: format!("{desc}: {why}: not translated"),
        });
        guard_inside(rules, m, q, steps)
    };
    if q.dst.ip() != qt.src.ip() {
        return pass(
            steps,
            format!(
                "the quoted source {} is not the outer destination {}, so it is not about a packet that left through this NAT",
                qt.src.ip(),
                q.dst.ip()
            ),
        );
    }
    let (sport, dport) = match qt.proto {
        proto::TCP | proto::UDP => (qt.src.port(), qt.dst.port()),
        proto::ICMP => (qt.src.port(), 0),
        p => return pass(steps, format!("quoted protocol {p} is not translated")),
    };
    let outside = Endpoint::new(qt.proto, qt.src.ip().octets(), sport);
    let (inside, how) = match m.reverse(&outside) {
        Some(i) => (
            ep(&i),
            format!("NAT_REVERSE: {} belongs to {}", ep(&outside), ep(&i)),
        ),
        None if qt.proto == proto::ICMP => {
            return pass(
                steps,
                format!("no mapping holds ICMP id {sport} on {}", qt.src.ip()),
            );
        }
        None => match rules.published(qt.proto, *qt.src.ip(), sport) {
            Some((rule, _)) => {
                let to =
                    SocketAddrV4::new(Ipv4Addr::from(rule.to_addr), rule.container_port(sport));
                (
                    to,
                    format!(
                        "published port {} {} → {to}",
                        proto_name(qt.proto),
                        ep(&outside)
                    ),
                )
            }
            None => {
                return pass(
                    steps,
                    format!(
                        "no NAT_REVERSE entry and no published port for {}",
                        ep(&outside)
                    ),
                );
            }
        },
    };
    let key = FlowKey::new(
        qt.proto,
        inside.ip().octets(),
        inside.port(),
        qt.dst.ip().octets(),
        dport,
    );
    let Some(v) = m.flow(&key) else {
        steps.push(Step {
            program: INGRESS,
            detail: format!(
                "{desc}; {how}, but {inside} has no flow with {}: an error never opens one (RFC 5508 REQ-4)",
                SocketAddrV4::new(*qt.dst.ip(), dport)
            ),
        });
        return Outcome::Dropped {
            counter: Counter::DropIcmpNoFlow.name(),
        };
    };
    steps.push(Step {
        program: INGRESS,
        detail: format!(
            "{desc}; {how}; conntrack hit: {}; outer destination and quoted source translated back to {inside} (errors never refresh a flow)",
            flow_desc(&key, &v)
        ),
    });
    Outcome::Translated {
        src: addr0(*q.src.ip()),
        dst: addr0(*inside.ip()),
        counter: Counter::IcmpErrorsTranslated.name(),
        quoted: Some(QuotedAfter {
            src: inside,
            dst: qt.dst,
        }),
    }
}

/// `icmp::error_out`.
fn icmp_out(
    rules: &Rules,
    m: &impl Lookup,
    q: &Query,
    e: &IcmpError,
    steps: &mut Vec<Step>,
) -> Outcome {
    let qt = &e.quoted;
    let desc = quoted_desc(e);
    let src = *q.src.ip();
    // `nat::untranslatable`.
    let untranslatable = |steps: &mut Vec<Step>, why: String| {
        if let Some(r) = rules.masq(src) {
            steps.push(Step {
                program: EGRESS,
                detail: format!(
                    "{desc}: {why}; the sender {src} is in masquerade CIDR {}/{} and must not leave with its private address",
                    Ipv4Addr::from(r.source),
                    r.prefix_len
                ),
            });
            Outcome::Dropped {
                counter: Counter::DropIcmpNoFlow.name(),
            }
        } else {
            steps.push(Step {
                program: EGRESS,
                detail: format!("{desc}: {why}: left alone"),
            });
            Outcome::Passed
        }
    };
    if qt.proto != proto::TCP && qt.proto != proto::UDP {
        return untranslatable(
            steps,
            "going out, only errors about TCP and UDP are translated".into(),
        );
    }
    // The quoted packet went remote → inside.
    let key = FlowKey::new(
        qt.proto,
        qt.dst.ip().octets(),
        qt.dst.port(),
        qt.src.ip().octets(),
        qt.src.port(),
    );
    let Some(v) = m.flow(&key) else {
        return untranslatable(
            steps,
            format!(
                "no flow {} ↔ {} (the quoted packet is remote → inside)",
                qt.dst, qt.src
            ),
        );
    };
    let from_container = src == *qt.dst.ip();
    if !from_container && let Some(r) = rules.masq(src) {
        steps.push(Step {
            program: EGRESS,
            detail: format!(
                "{desc}; conntrack hit: {}; but the error comes from {src}, another inside host (masquerade CIDR {}/{}), not the flow's container",
                flow_desc(&key, &v),
                Ipv4Addr::from(r.source),
                r.prefix_len
            ),
        });
        return Outcome::Dropped {
            counter: Counter::DropIcmpNoFlow.name(),
        };
    }
    let outside = sa(v.outside_addr, v.outside_port);
    let outer = if from_container {
        format!(", and the outer source {src} → {}", outside.ip())
    } else {
        format!(" (the outer source {src} is not the container: kept)")
    };
    steps.push(Step {
        program: EGRESS,
        detail: format!(
            "{desc}; conntrack hit from the quoted packet: {}; quoted destination → {outside}{outer}",
            flow_desc(&key, &v)
        ),
    });
    Outcome::Translated {
        src: addr0(if from_container { *outside.ip() } else { src }),
        dst: addr0(*q.dst.ip()),
        counter: Counter::IcmpErrorsTranslated.name(),
        quoted: Some(QuotedAfter {
            src: qt.src,
            dst: outside,
        }),
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
            quoted: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use netbpf_common::{MasqRule, PUBLISH_KEY_BITS, flow_flags::*};

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
            settings: netbpf_common::Settings::default(),
        }
    }

    fn q(p: u8, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), tcp: TcpFlags) -> Query {
        Query {
            proto: p,
            src: SocketAddrV4::new(src.0, src.1),
            dst: SocketAddrV4::new(dst.0, dst.1),
            tcp,
            ttl: DEFAULT_TTL,
            iif: None,
            icmp_error: None,
        }
    }

    fn translated(e: &Explanation) -> (SocketAddrV4, SocketAddrV4, &'static str) {
        match e.outcome {
            Outcome::Translated {
                src, dst, counter, ..
            } => (src, dst, counter),
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
    fn explain_follows_the_inbound_policies() {
        let mut r = rules(61000, 61001);
        let m = MemMaps::default();
        let syn = q(proto::TCP, (OUT, 5555), (UP, 22), TcpFlags::Syn);
        let e = explain(&r, &m, &syn, Direction::Ingress);
        assert_eq!(
            e.outcome,
            Outcome::Dropped {
                counter: "drop_unsolicited_syn"
            }
        );
        // [inbound] unsolicited_syn = "pass", as the kernel reads it.
        r.settings.flags = netbpf_common::settings_flags::PASS_UNSOLICITED_SYN;
        let e = explain(&r, &m, &syn, Direction::Ingress);
        assert_eq!(e.outcome, Outcome::Passed);
        assert!(e.to_string().contains("unsolicited_syn = \"pass\""), "{e}");
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

    const R1: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 101);
    const R2: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 102);
    const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
    const GW: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 254);
    const UPLINK_IF: u32 = 2;
    const R1_IF: u32 = 11;
    const R2_IF: u32 = 12;
    const UPLINK_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];
    const R1_MAC: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 0x65];
    const R1_HOST_MAC: [u8; 6] = [0x02, 0xdd, 0, 0, 0, 0x65];
    const R2_MAC: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 0x66];
    const R2_HOST_MAC: [u8; 6] = [0x02, 0xdd, 0, 0, 0, 0x66];
    const PEER_MAC: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 2];

    /// Two routed containers (R1, R2) and the uplink's routing entry.
    fn routed() -> MemMaps {
        let mut m = MemMaps {
            route_uplink: Some(RouteUplink {
                ifindex: UPLINK_IF,
                mac: UPLINK_MAC,
                _pad: [0; 2],
            }),
            ..Default::default()
        };
        for (addr, ifindex, mac, host_mac) in [
            (R1, R1_IF, R1_MAC, R1_HOST_MAC),
            (R2, R2_IF, R2_MAC, R2_HOST_MAC),
        ] {
            m.containers.insert(
                addr,
                ContainerEntry {
                    ifindex,
                    host_mac,
                    mac,
                },
            );
            m.container_ifs.insert(
                ifindex,
                ContainerIf {
                    addr: addr.octets(),
                    host_mac,
                    flags: 0,
                },
            );
        }
        m
    }

    fn forwarded(e: &Explanation) -> (u32, String, String, u8, &'static str) {
        match &e.outcome {
            Outcome::Forwarded {
                ifindex,
                src_mac,
                dst_mac,
                ttl,
                counter,
                ..
            } => (*ifindex, src_mac.clone(), dst_mac.clone(), *ttl, *counter),
            other => panic!("not forwarded: {other:?}\n{e}"),
        }
    }

    #[test]
    fn from_outside_to_a_routed_container() {
        let r = rules(0, 0);
        let mut m = routed();
        let pkt = q(proto::TCP, (PEER, 5555), (R1, 4000), TcpFlags::Syn);
        assert_eq!(infer_direction(&r, &m, &pkt), Direction::Ingress);
        let e = explain(&r, &m, &pkt, Direction::Ingress);
        assert_eq!(
            forwarded(&e),
            (
                R1_IF,
                format_mac(&R1_HOST_MAC),
                format_mac(&R1_MAC),
                63,
                "routed_in"
            )
        );
        // The NAT program looked first and passed it on.
        assert_eq!(e.steps[1].program, INGRESS, "{e}");
        assert!(e.steps[1].detail.contains("passed on"), "{e}");
        assert_eq!(e.steps[2].program, ROUTE_IN, "{e}");
        assert!(e.to_string().contains("#11"), "{e}");
        assert!(e.to_string().contains("02:aa:00:00:00:01"), "{e}");
        // TTL 1: the kernel's (time exceeded).
        let expiring = Query { ttl: 1, ..pkt };
        let e = explain(&r, &m, &expiring, Direction::Ingress);
        assert_eq!(
            e.outcome,
            Outcome::ToKernel {
                counter: "route_ttl_expired"
            }
        );
        // The container's MAC not known yet: the kernel routes it.
        if let Some(c) = m.containers.get_mut(&R1) {
            c.mac = [0; 6];
        }
        let e = explain(&r, &m, &pkt, Direction::Ingress);
        assert_eq!(e.outcome, Outcome::Passed);
        assert!(e.to_string().contains("MAC is not known yet"), "{e}");
        // Not a routed container: the host's, with no routing step. A TCP
        // SYN no host socket takes is dropped (RFC 5382 REQ-4); UDP passes.
        let e = explain(
            &r,
            &m,
            &q(proto::TCP, (PEER, 5555), (UP, 22), TcpFlags::Syn),
            Direction::Ingress,
        );
        assert_eq!(
            e.outcome,
            Outcome::Dropped {
                counter: "drop_unsolicited_syn"
            }
        );
        assert!(e.to_string().contains("unless a host socket"), "{e}");
        let e = explain(
            &r,
            &m,
            &q(proto::UDP, (PEER, 5555), (UP, 53), TcpFlags::NotSyn),
            Direction::Ingress,
        );
        assert_eq!(e.outcome, Outcome::Passed);
        assert!(e.steps.iter().all(|s| s.program != ROUTE_IN), "{e}");
        // A masqueraded source arriving from outside is spoofed.
        let e = explain(
            &r,
            &m,
            &q(proto::TCP, (C1, 5555), (R1, 4000), TcpFlags::Syn),
            Direction::Ingress,
        );
        assert_eq!(
            e.outcome,
            Outcome::Dropped {
                counter: "drop_spoofed_from_outside"
            }
        );
    }

    #[test]
    fn from_a_routed_container() {
        let r = rules(0, 0);
        let mut m = routed();
        let out = q(proto::TCP, (R1, 40000), (OUT, 4000), TcpFlags::Syn);
        assert_eq!(
            infer_direction(&r, &m, &out),
            Direction::FromRoutedContainer
        );
        // Spoofed: a source that is not the veth's container.
        let spoofed = Query {
            iif: Some(R1_IF),
            ..q(proto::UDP, (R2, 1), (OUT, 53), TcpFlags::Syn)
        };
        assert_eq!(
            infer_direction(&r, &m, &spoofed),
            Direction::FromRoutedContainer
        );
        let e = explain(&r, &m, &spoofed, Direction::FromRoutedContainer);
        assert_eq!(
            e.outcome,
            Outcome::Dropped {
                counter: "drop_spoofed"
            }
        );
        // To another routed container here: straight to its veth.
        let local = q(proto::TCP, (R1, 40000), (R2, 4000), TcpFlags::Syn);
        let e = explain(&r, &m, &local, Direction::FromRoutedContainer);
        assert_eq!(
            forwarded(&e),
            (
                R2_IF,
                format_mac(&R2_HOST_MAC),
                format_mac(&R2_MAC),
                63,
                "routed_local"
            )
        );
        // Out of the uplink via a gateway the neighbour map knows.
        m.fib.insert(
            OUT,
            Fib::Via {
                ifindex: UPLINK_IF,
                gateway: Some(GW),
            },
        );
        let e = explain(&r, &m, &out, Direction::FromRoutedContainer);
        assert_eq!(
            e.outcome,
            Outcome::ToKernel {
                counter: "route_no_neighbour"
            }
        );
        assert!(e.to_string().contains("next hop 203.0.113.254"), "{e}");
        m.neighbours.insert(
            GW,
            Neighbour {
                mac: PEER_MAC,
                state: 2,
                ifindex: UPLINK_IF,
            },
        );
        let e = explain(&r, &m, &out, Direction::FromRoutedContainer);
        assert_eq!(
            forwarded(&e),
            (
                UPLINK_IF,
                format_mac(&UPLINK_MAC),
                format_mac(&PEER_MAC),
                63,
                "routed_out"
            )
        );
        // netbpf_egress sees it on the way out, and passes it.
        let last = e.steps.last().expect("steps");
        assert_eq!(last.program, EGRESS, "{e}");
        assert!(last.detail.contains("not a NAT flow"), "{e}");
        // On-link: the destination is the next hop.
        m.fib.insert(
            PEER,
            Fib::Via {
                ifindex: UPLINK_IF,
                gateway: None,
            },
        );
        let e = explain(
            &r,
            &m,
            &q(proto::UDP, (R1, 1), (PEER, 53), TcpFlags::Syn),
            Direction::FromRoutedContainer,
        );
        assert_eq!(
            e.outcome,
            Outcome::ToKernel {
                counter: "route_no_neighbour"
            }
        );
        assert!(e.to_string().contains("on-link: next hop 10.0.1.2"), "{e}");
        // Another interface, or not forwarded, or unknown: the kernel's.
        for fib in [
            Fib::Via {
                ifindex: 99,
                gateway: None,
            },
            Fib::NotForwarded("local route".into()),
        ] {
            m.fib.insert(OUT, fib);
            let e = explain(&r, &m, &out, Direction::FromRoutedContainer);
            assert_eq!(e.outcome, Outcome::Passed, "{e}");
        }
        m.fib.clear();
        let e = explain(&r, &m, &out, Direction::FromRoutedContainer);
        assert_eq!(e.outcome, Outcome::Passed, "{e}");
        assert!(
            e.to_string().contains("next hop: the kernel's route"),
            "{e}"
        );
        // A veth that is not a routed container's.
        let other = Query {
            iif: Some(42),
            ..out
        };
        let e = explain(&r, &m, &other, Direction::FromRoutedContainer);
        assert_eq!(e.outcome, Outcome::Passed);
        assert!(e.to_string().contains("not in CONTAINER_IFS"), "{e}");
    }

    #[test]
    fn route_get_output_is_parsed() {
        assert!(matches!(
            parse_route_get("local 10.0.1.1 from 10.0.1.101 dev lo table local"),
            Fib::NotForwarded(_)
        ));
        let lo = parse_route_get("1.2.3.4 from 10.0.1.101 via 10.0.1.254 dev lo cache iif x");
        assert_eq!(
            lo,
            Fib::Via {
                ifindex: 1,
                gateway: Some(Ipv4Addr::new(10, 0, 1, 254)),
            }
        );
        assert!(matches!(
            parse_route_get("10.0.1.2 from 10.0.1.101 dev no-such-if0"),
            Fib::Unknown(_)
        ));
    }

    fn icmp_error(outer: (Ipv4Addr, Ipv4Addr), t: u8, quoted: Quoted) -> Query {
        Query {
            icmp_error: Some(IcmpError {
                icmp_type: t,
                quoted,
            }),
            ..q(proto::ICMP, (outer.0, 0), (outer.1, 0), TcpFlags::NotSyn)
        }
    }

    fn quoted(p: u8, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Quoted {
        Quoted {
            proto: p,
            src: SocketAddrV4::new(src.0, src.1),
            dst: SocketAddrV4::new(dst.0, dst.1),
        }
    }

    /// C1:40000 → OUT:4000 mapped to UP:50000, with its flow.
    fn mapped() -> MemMaps {
        let mut m = MemMaps::default();
        let inside = Endpoint::new(proto::UDP, C1.octets(), 40000);
        let outside = Endpoint::new(proto::UDP, UP.octets(), 50000);
        m.mappings.insert(
            inside,
            MappingValue {
                outside,
                last_used_ns: 0,
            },
        );
        m.reverse.insert(outside, inside);
        m.flows.insert(
            FlowKey::new(proto::UDP, C1.octets(), 40000, OUT.octets(), 4000),
            FlowValue {
                outside_addr: UP.octets(),
                outside_port: 50000,
                flags: SEEN_OUT,
                ..Default::default()
            },
        );
        m
    }

    #[test]
    fn icmp_errors_coming_in() {
        let r = rules(0, 0);
        let mut m = mapped();
        let router = Ipv4Addr::new(198, 51, 100, 1);
        // Time exceeded from a router about C1's packet as it left.
        let pkt = icmp_error(
            (router, UP),
            11,
            quoted(proto::UDP, (UP, 50000), (OUT, 4000)),
        );
        assert_eq!(infer_direction(&r, &m, &pkt), Direction::Ingress);
        let e = explain(&r, &m, &pkt, Direction::Ingress);
        assert_eq!(
            e.outcome,
            Outcome::Translated {
                src: SocketAddrV4::new(router, 0),
                dst: SocketAddrV4::new(C1, 0),
                counter: "icmp_errors_translated",
                quoted: Some(QuotedAfter {
                    src: SocketAddrV4::new(C1, 40000),
                    dst: SocketAddrV4::new(OUT, 4000),
                }),
            }
        );
        assert!(e.to_string().contains("quoting 10.77.0.2:40000"), "{e}");
        // The outer destination must be the quoted source.
        let elsewhere = icmp_error(
            (router, Ipv4Addr::new(203, 0, 113, 9)),
            3,
            quoted(proto::UDP, (UP, 50000), (OUT, 4000)),
        );
        let e = explain(&r, &m, &elsewhere, Direction::Ingress);
        assert_eq!(e.outcome, Outcome::Passed, "{e}");
        assert!(
            e.to_string().contains("is not the outer destination"),
            "{e}"
        );
        // About a destination the mapping has no flow with: dropped.
        let stranger = icmp_error(
            (router, UP),
            3,
            quoted(proto::UDP, (UP, 50000), (Ipv4Addr::new(192, 0, 2, 7), 53)),
        );
        let e = explain(&r, &m, &stranger, Direction::Ingress);
        assert_eq!(
            e.outcome,
            Outcome::Dropped {
                counter: "drop_icmp_no_flow"
            }
        );
        // Through a published port (the reply left as UP:8081).
        let client = SocketAddrV4::new(OUT, 5555);
        m.flows.insert(
            FlowKey::new(proto::TCP, C1.octets(), 4000, OUT.octets(), 5555),
            FlowValue {
                outside_addr: UP.octets(),
                outside_port: 8081,
                flags: PUBLISHED | OPENED_IN,
                ..Default::default()
            },
        );
        let e = explain(
            &r,
            &m,
            &icmp_error(
                (router, UP),
                3,
                quoted(proto::TCP, (UP, 8081), (*client.ip(), client.port())),
            ),
            Direction::Ingress,
        );
        assert_eq!(translated(&e).1, SocketAddrV4::new(C1, 0), "{e}");
        assert!(e.to_string().contains("published port tcp"), "{e}");
        // A quoted echo request: the identifier's mapping, else the host's.
        let echo = icmp_error((router, UP), 11, quoted(proto::ICMP, (UP, 7), (OUT, 0)));
        let e = explain(&r, &m, &echo, Direction::Ingress);
        assert_eq!(e.outcome, Outcome::Passed);
        assert!(e.to_string().contains("no mapping holds ICMP id 7"), "{e}");
        let inside = Endpoint::new(proto::ICMP, C1.octets(), 7);
        let outside = Endpoint::new(proto::ICMP, UP.octets(), 7);
        m.reverse.insert(outside, inside);
        m.flows.insert(
            FlowKey::new(proto::ICMP, C1.octets(), 7, OUT.octets(), 0),
            FlowValue {
                outside_addr: UP.octets(),
                outside_port: 7,
                ..Default::default()
            },
        );
        let e = explain(&r, &m, &echo, Direction::Ingress);
        assert_eq!(translated(&e).2, "icmp_errors_translated", "{e}");
    }

    #[test]
    fn icmp_errors_going_out() {
        let r = rules(0, 0);
        let mut m = MemMaps::default();
        // OUT:5555 reached C1:4000 through the published port 8081; C1
        // answers port unreachable.
        m.flows.insert(
            FlowKey::new(proto::UDP, C1.octets(), 4000, OUT.octets(), 5555),
            FlowValue {
                outside_addr: UP.octets(),
                outside_port: 8081,
                flags: PUBLISHED | OPENED_IN,
                ..Default::default()
            },
        );
        let about = quoted(proto::UDP, (OUT, 5555), (C1, 4000));
        let pkt = icmp_error((C1, OUT), 3, about);
        assert_eq!(infer_direction(&r, &m, &pkt), Direction::FromContainer);
        let e = explain(&r, &m, &pkt, Direction::FromContainer);
        assert_eq!(
            e.outcome,
            Outcome::Translated {
                src: SocketAddrV4::new(UP, 0),
                dst: SocketAddrV4::new(OUT, 0),
                counter: "icmp_errors_translated",
                quoted: Some(QuotedAfter {
                    src: SocketAddrV4::new(OUT, 5555),
                    dst: SocketAddrV4::new(UP, 8081),
                }),
            },
            "{e}"
        );
        // This host (forwarding to C1) reports on it: the outer source stays.
        let host = icmp_error((UP, OUT), 3, about);
        let e = explain(&r, &m, &host, Direction::Egress);
        assert_eq!(translated(&e).0, SocketAddrV4::new(UP, 0), "{e}");
        assert!(e.to_string().contains("is not the container: kept"), "{e}");
        // Another inside host reporting on C1's flow: dropped.
        let other = icmp_error((Ipv4Addr::new(10, 77, 0, 3), OUT), 3, about);
        let e = explain(&r, &m, &other, Direction::Egress);
        assert_eq!(
            e.outcome,
            Outcome::Dropped {
                counter: "drop_icmp_no_flow"
            }
        );
        // No flow: dropped from a masqueraded sender, else left alone.
        let unknown = quoted(proto::UDP, (OUT, 5556), (C1, 4000));
        let e = explain(
            &r,
            &m,
            &icmp_error((C1, OUT), 3, unknown),
            Direction::Egress,
        );
        assert_eq!(
            e.outcome,
            Outcome::Dropped {
                counter: "drop_icmp_no_flow"
            }
        );
        let e = explain(
            &r,
            &m,
            &icmp_error((UP, OUT), 3, unknown),
            Direction::Egress,
        );
        assert_eq!(e.outcome, Outcome::Passed);
        // Going out, only TCP and UDP quotes are translated.
        let echo = quoted(proto::ICMP, (OUT, 9), (C1, 0));
        let e = explain(&r, &m, &icmp_error((C1, OUT), 11, echo), Direction::Egress);
        assert_eq!(
            e.outcome,
            Outcome::Dropped {
                counter: "drop_icmp_no_flow"
            }
        );
        // JSON carries the quoted header.
        let json =
            serde_json::to_value(explain(&r, &m, &pkt, Direction::FromContainer)).expect("json");
        assert_eq!(json["quoted"]["dst"], "203.0.113.1:8081", "{json}");
        assert_eq!(json["verdict"], "translated");
    }
}
