//! What explain talks about: the query, the steps and the outcome, and the
//! small formatting helpers every path shares.

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
};

use netbpf_common::{Counter, Endpoint, FlowKey, FlowValue, PublishRule, flow_flags, proto};
use serde::Serialize;

use crate::{conntrack::FlowState, maps::proto_name};

/// Interface name of `ifindex`, or `#N` if it has none here.
pub(super) fn ifname(ifindex: u32) -> String {
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

impl Outcome {
    /// Dropped, under `counter`'s name.
    pub(super) fn dropped(counter: Counter) -> Self {
        Outcome::Dropped {
            counter: counter.name(),
        }
    }
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

/// Adds `program`'s step to `steps`: why it leaves the packet to the
/// kernel untouched.
pub(super) fn pass(steps: &mut Vec<Step>, program: &'static str, detail: String) -> Outcome {
    steps.push(Step { program, detail });
    Outcome::Passed
}

pub(super) fn ep(e: &Endpoint) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(e.addr), e.port)
}

pub(super) fn sa(addr: [u8; 4], port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(addr), port)
}

pub(super) fn flow_desc(key: &FlowKey, v: &FlowValue) -> String {
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

pub(super) const EGRESS: &str = "netbpf_egress (tc egress of the uplink)";
pub(super) const INGRESS: &str = "netbpf_ingress (tc ingress of the uplink)";
pub(super) const INSIDE: &str = "netbpf_inside (tc ingress of the container-side interface)";
pub(super) const ROUTE_IN: &str =
    "netbpf_route_in (tc ingress of the uplink, after netbpf_ingress)";
pub(super) const CONTAINER: &str = "netbpf_container (tc ingress of the routed container's veth)";

pub(super) fn span(rule: &PublishRule) -> String {
    if rule.host_port_min == rule.host_port_max {
        rule.host_port_min.to_string()
    } else {
        format!("{}-{}", rule.host_port_min, rule.host_port_max)
    }
}

/// The ports of the NAT tuple (ICMP: echo id as the source port going out,
/// as the destination port coming in).
pub(super) fn ports(q: &Query, dir: Direction) -> (u16, u16) {
    match (q.proto, dir) {
        (proto::ICMP, Direction::Ingress) => (0, q.dst.port()),
        (proto::ICMP, _) => (q.src.port(), 0),
        _ => (q.src.port(), q.dst.port()),
    }
}

pub(super) fn addr0(a: Ipv4Addr) -> SocketAddrV4 {
    SocketAddrV4::new(a, 0)
}
