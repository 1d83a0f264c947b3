//! Conntrack as userspace sees it: flow states derived from the bits the
//! kernel records, per-state timeouts, the rows `netbpf conntrack list`
//! prints, and expiry.
//!
//! Expiry is done here, not in the kernel, so timeouts can change without
//! reloading the programs. It cannot kill a flow that is still in use: a
//! flow is deleted only if its `last_seen_ns` is unchanged between the read
//! that found it expired and the moment just before the delete (the way
//! Calico's conntrack GC does it), and a mapping is deleted only when no
//! flow uses it and no flow started using it for [`MAPPING_GRACE`].

use std::{collections::HashSet, net::Ipv4Addr, time::Duration};

use netbpf_common::{Endpoint, FlowKey, FlowValue, flow_flags, proto};
use serde::Serialize;

use crate::{
    config::Timeouts,
    maps::{MapsError, NatMaps, proto_name},
};

/// How long a mapping without flows is kept after a flow last started
/// using it: covers a flow being created while a collection pass runs.
pub const MAPPING_GRACE: Duration = Duration::from_secs(10);

pub use netbpf_common::FlowState;

/// The idle timeout of a flow state (RFC 5382 §5: established vs.
/// transitory; RFC 6146-style FIN handling: one FIN keeps the established
/// timeout, both FINs or a RST make it transitory).
pub trait StateTimeout {
    /// The configured timeout for this state.
    fn timeout(self, t: &Timeouts) -> Duration;
}

impl StateTimeout for FlowState {
    fn timeout(self, t: &Timeouts) -> Duration {
        match self {
            FlowState::Udp => t.udp,
            FlowState::Icmp => t.icmp,
            s if s.is_transitory() => t.tcp_transitory,
            _ => t.tcp_established,
        }
    }
}

/// Serializes a state by its name (`"ESTABLISHED"`).
fn state_name<S: serde::Serializer>(state: &FlowState, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state.name())
}

/// Current CLOCK_MONOTONIC time in nanoseconds, the clock the kernel side
/// stamps flows with (`bpf_ktime_get_ns`).
pub fn monotonic_now_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => (ts.tv_sec() as u64) * 1_000_000_000 + ts.tv_nsec() as u64,
        // CLOCK_MONOTONIC cannot fail on Linux; 0 makes every age 0.
        Err(_) => 0,
    }
}

/// One flow, ready to print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowRow {
    /// "tcp", "udp" or "icmp".
    pub proto: String,
    /// Inside (container) address.
    pub inside_addr: Ipv4Addr,
    /// Inside port or ICMP echo id.
    pub inside_port: u16,
    /// Outside (translated) address.
    pub outside_addr: Ipv4Addr,
    /// Outside port or ICMP echo id.
    pub outside_port: u16,
    /// Remote address.
    pub remote_addr: Ipv4Addr,
    /// Remote port (0 for ICMP).
    pub remote_port: u16,
    /// Derived state.
    #[serde(serialize_with = "state_name")]
    pub state: FlowState,
    /// Seconds since the flow was created.
    pub age_secs: u64,
    /// Seconds since its last packet.
    pub idle_secs: u64,
    /// Seconds until it expires if idle.
    pub expires_in_secs: u64,
    /// Whether it was opened from outside.
    pub opened_inbound: bool,
    /// Whether it goes to a published port (DNAT).
    pub published: bool,
    /// Whether a packet went out (inside → remote).
    pub seen_out: bool,
    /// Whether a packet came in (remote → inside).
    pub seen_in: bool,
    /// Packets inside → remote.
    pub packets_out: u64,
    /// Bytes inside → remote.
    pub bytes_out: u64,
    /// Packets remote → inside.
    pub packets_in: u64,
    /// Bytes remote → inside.
    pub bytes_in: u64,
}

impl FlowRow {
    /// Builds a row from a map entry at time `now_ns`.
    pub fn new(key: &FlowKey, value: &FlowValue, now_ns: u64, timeouts: &Timeouts) -> Self {
        let state = FlowState::of(key.proto, value.flags);
        let secs = |ns: u64| now_ns.saturating_sub(ns) / 1_000_000_000;
        let idle = secs(value.last_seen_ns);
        Self {
            proto: proto_name(key.proto),
            inside_addr: Ipv4Addr::from(key.inside_addr),
            inside_port: key.inside_port,
            outside_addr: Ipv4Addr::from(value.outside_addr),
            outside_port: value.outside_port,
            remote_addr: Ipv4Addr::from(key.remote_addr),
            remote_port: key.remote_port,
            state,
            age_secs: secs(value.created_ns),
            idle_secs: idle,
            expires_in_secs: state.timeout(timeouts).as_secs().saturating_sub(idle),
            opened_inbound: value.flags & flow_flags::OPENED_IN != 0,
            published: value.flags & flow_flags::PUBLISHED != 0,
            seen_out: value.flags & flow_flags::SEEN_OUT != 0,
            seen_in: value.flags & flow_flags::SEEN_IN != 0,
            packets_out: value.packets_out,
            bytes_out: value.bytes_out,
            packets_in: value.packets_in,
            bytes_in: value.bytes_in,
        }
    }

    /// Table header matching [`FlowRow::cells`].
    pub const HEADER: [&'static str; 10] = [
        "PROTO",
        "INSIDE",
        "OUTSIDE",
        "REMOTE",
        "STATE",
        "AGE",
        "IDLE",
        "EXPIRES",
        "PKTS OUT/IN",
        "BYTES OUT/IN",
    ];

    /// The row as table cells.
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.proto.clone(),
            format!("{}:{}", self.inside_addr, self.inside_port),
            format!("{}:{}", self.outside_addr, self.outside_port),
            format!("{}:{}", self.remote_addr, self.remote_port),
            self.state.name().to_owned(),
            format!("{}s", self.age_secs),
            format!("{}s", self.idle_secs),
            format!("{}s", self.expires_in_secs),
            format!("{}/{}", self.packets_out, self.packets_in),
            format!("{}/{}", self.bytes_out, self.bytes_in),
        ]
    }
}

impl FlowRow {
    /// The flow as one line shaped like `conntrack -L` prints it:
    /// protocol name and number, seconds to expiry, the TCP state, the
    /// original tuple (as the opening packet travelled), `[UNREPLIED]` if
    /// nothing came back, the reply tuple (as the answer travels, so its
    /// destination is the translated endpoint), `[ASSURED]` once traffic
    /// went both ways, `mark=0 use=1`.
    pub fn conntrack_line(&self) -> String {
        let num = match self.proto.as_str() {
            "tcp" => proto::TCP,
            "udp" => proto::UDP,
            "icmp" => proto::ICMP,
            other => other.parse().unwrap_or(0),
        };
        let mut line = format!("{:<8} {} {} ", self.proto, num, self.expires_in_secs);
        if let Some(state) = self.state.conntrack_name() {
            line.push_str(state);
            line.push(' ');
        }
        let inside = (self.inside_addr, self.inside_port);
        let outside = (self.outside_addr, self.outside_port);
        let remote = (self.remote_addr, self.remote_port);
        // (src, dst) of the original and reply directions.
        let (orig, reply, replied) = if self.opened_inbound {
            // The remote opened it to the outside endpoint; the container
            // answers the remote.
            ((remote, outside), (inside, remote), self.seen_out)
        } else {
            ((inside, remote), (remote, outside), self.seen_in)
        };
        let tuple = |(src, dst): ((Ipv4Addr, u16), (Ipv4Addr, u16)), request: bool| {
            let ports = if num == proto::ICMP {
                // The echo identifier is the inside or outside port; the
                // remote side has none.
                let id = if src.0 == self.remote_addr {
                    dst.1
                } else {
                    src.1
                };
                format!("type={} code=0 id={id}", if request { 8 } else { 0 })
            } else {
                format!("sport={} dport={}", src.1, dst.1)
            };
            format!("src={} dst={} {ports} ", src.0, dst.0)
        };
        line.push_str(&tuple(orig, true));
        if !replied {
            line.push_str("[UNREPLIED] ");
        }
        line.push_str(&tuple(reply, false));
        if self.seen_in && self.seen_out {
            line.push_str("[ASSURED] ");
        }
        line.push_str("mark=0 use=1");
        line
    }
}

/// Which flows `conntrack list` shows; `None` matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowFilter {
    /// Protocol number.
    pub proto: Option<u8>,
    /// An address of the flow: inside, outside or remote.
    pub addr: Option<Ipv4Addr>,
    /// A port of the flow: inside, outside or remote (ICMP: the echo id).
    pub port: Option<u16>,
    /// The derived state.
    pub state: Option<FlowState>,
}

impl FlowFilter {
    /// Whether `row` passes every filter set.
    pub fn matches(&self, row: &FlowRow) -> bool {
        self.proto.is_none_or(|p| row.proto == proto_name(p))
            && self.addr.is_none_or(|a| {
                row.inside_addr == a || row.outside_addr == a || row.remote_addr == a
            })
            && self.port.is_none_or(|p| {
                row.inside_port == p || row.outside_port == p || row.remote_port == p
            })
            && self.state.is_none_or(|s| row.state == s)
    }
}

/// The protocol number of `tcp`, `udp` or `icmp` (any case), or a number.
pub fn parse_proto(name: &str) -> Option<u8> {
    match name.trim().to_ascii_lowercase().as_str() {
        "tcp" => Some(proto::TCP),
        "udp" => Some(proto::UDP),
        "icmp" => Some(proto::ICMP),
        other => other.parse().ok(),
    }
}

/// One line of `netbpf conntrack top`: how many outside ports one inside
/// address holds towards one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopRow {
    /// "tcp", "udp" or "icmp".
    pub proto: String,
    /// Destination address.
    pub remote_addr: Ipv4Addr,
    /// Destination port (0 for ICMP).
    pub remote_port: u16,
    /// The inside (container) address.
    pub inside_addr: Ipv4Addr,
    /// Distinct outside endpoints (address and port) its flows to this
    /// destination use.
    pub outside_ports: u64,
    /// Its flows to this destination.
    pub flows: u64,
}

impl TopRow {
    /// Table header matching [`TopRow::cells`].
    pub const HEADER: [&'static str; 5] = ["PROTO", "DESTINATION", "INSIDE", "PORTS", "FLOWS"];

    /// The row as table cells.
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.proto.clone(),
            format!("{}:{}", self.remote_addr, self.remote_port),
            self.inside_addr.to_string(),
            self.outside_ports.to_string(),
            self.flows.to_string(),
        ]
    }
}

/// Which inside addresses hold the most outside ports per destination:
/// masqueraded flows (published ones hold no port of their own) grouped by
/// protocol, destination and inside address, most ports first, at most
/// `limit` rows.
pub fn top(rows: &[FlowRow], limit: usize) -> Vec<TopRow> {
    use std::collections::{BTreeMap, BTreeSet};
    type Group = (String, Ipv4Addr, u16, Ipv4Addr);
    let mut groups: BTreeMap<Group, (BTreeSet<(Ipv4Addr, u16)>, u64)> = BTreeMap::new();
    for r in rows.iter().filter(|r| !r.published) {
        let g = groups
            .entry((r.proto.clone(), r.remote_addr, r.remote_port, r.inside_addr))
            .or_default();
        g.0.insert((r.outside_addr, r.outside_port));
        g.1 += 1;
    }
    let mut out: Vec<TopRow> = groups
        .into_iter()
        .map(
            |((proto, remote_addr, remote_port, inside_addr), (ports, flows))| TopRow {
                proto,
                remote_addr,
                remote_port,
                inside_addr,
                outside_ports: ports.len() as u64,
                flows,
            },
        )
        .collect();
    // Most ports first; ties in a stable order.
    out.sort_by(|a, b| {
        b.outside_ports
            .cmp(&a.outside_ports)
            .then(b.flows.cmp(&a.flows))
    });
    out.truncate(limit);
    out
}

/// Reads every flow as printable rows, sorted by protocol, inside and
/// remote endpoint.
pub fn list(maps: &NatMaps, timeouts: &Timeouts) -> Result<Vec<FlowRow>, MapsError> {
    let now = monotonic_now_ns();
    let mut rows: Vec<FlowRow> = maps
        .flows()?
        .iter()
        .map(|(k, v)| FlowRow::new(k, v, now, timeouts))
        .collect();
    rows.sort_by(|a, b| {
        (
            &a.proto,
            a.inside_addr,
            a.inside_port,
            a.remote_addr,
            a.remote_port,
        )
            .cmp(&(
                &b.proto,
                b.inside_addr,
                b.inside_port,
                b.remote_addr,
                b.remote_port,
            ))
    });
    Ok(rows)
}

/// What one collection pass removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Flows expired.
    pub flows: usize,
    /// Mappings (with their reverse entries) released.
    pub mappings: usize,
    /// The mappings released: (inside, outside), for session events.
    pub released: Vec<(Endpoint, Endpoint)>,
    /// The TCP flows removed after they had closed (FIN both ways or RST).
    pub closed: Vec<(FlowKey, FlowValue)>,
}

/// Whether a live flow keeps its mapping alive: a flow opened from outside
/// does so only once the inside has answered with something other than a
/// RST (an ICMP error does not touch a flow at all). RFC 7857 §7: a RST or
/// ICMP error sent in response to an inbound packet must not refresh the
/// mapping, or an outside sender could hold a container's port forever.
pub fn keeps_mapping_alive(flags: u64) -> bool {
    flags & flow_flags::OPENED_IN == 0 || flags & flow_flags::SEEN_OUT != 0
}

/// Whether a flow idle since `last_seen_ns` has expired at `now_ns`.
fn expired(key: &FlowKey, value: &FlowValue, now_ns: u64, timeouts: &Timeouts) -> bool {
    let timeout = FlowState::of(key.proto, value.flags).timeout(timeouts);
    now_ns.saturating_sub(value.last_seen_ns) > timeout.as_nanos() as u64
}

/// Reverse entries (outside → inside) seen without their mapping.
pub type Orphans = HashSet<(Endpoint, Endpoint)>;

/// Which of this pass's orphaned reverse entries to release: only those
/// that were orphaned in the previous pass too. A reverse entry is the
/// kernel's lock on a port and is inserted a moment before its mapping, so
/// one seen alone once may be an allocation in progress; releasing it
/// would let a second inside endpoint take the same port (overloading).
/// Returns the entries to release; `previous` becomes this pass's orphans.
pub fn orphans_to_release(previous: &mut Orphans, seen: Orphans) -> Vec<(Endpoint, Endpoint)> {
    let release = seen.intersection(previous).copied().collect();
    *previous = seen;
    release
}

/// One expiry pass over the conntrack and mapping tables at time `now_ns`.
/// `orphans` carries the orphaned reverse entries from one pass to the
/// next (see [`orphans_to_release`]).
pub fn collect_garbage(
    maps: &mut NatMaps,
    timeouts: &Timeouts,
    now_ns: u64,
    orphans: &mut Orphans,
) -> Result<GcReport, MapsError> {
    let mut report = GcReport::default();
    let mut live = HashSet::new();
    for (key, value) in maps.flows()? {
        if !expired(&key, &value, now_ns, timeouts) {
            if keeps_mapping_alive(value.flags) {
                live.insert(Endpoint::new(key.proto, key.inside_addr, key.inside_port));
            }
            continue;
        }
        // Re-read (both halves) just before deleting: a packet since the
        // scan revives it.
        match maps.flow(&key) {
            Some(current) if current.last_seen_ns == value.last_seen_ns => {
                if maps.remove_flow(&key, &value)? {
                    report.flows += 1;
                    if matches!(
                        FlowState::of(key.proto, value.flags),
                        FlowState::Closing | FlowState::Reset
                    ) {
                        report.closed.push((key, value));
                    }
                }
            }
            _ => {
                live.insert(Endpoint::new(key.proto, key.inside_addr, key.inside_port));
            }
        }
    }
    // Reply halves whose flow is gone: they would still translate inbound
    // packets to an endpoint that no longer holds the port. Before any
    // mapping is released below: the kernel relies on no half pointing to
    // a released port's old owner (a new flow does not look for one).
    for reply in maps.orphan_replies()? {
        if maps.is_orphan_reply(&reply) {
            maps.remove_reply(&reply)?;
        }
    }
    let grace = MAPPING_GRACE.as_nanos() as u64;
    for (inside, mapping) in maps.mapping_entries()? {
        if live.contains(&inside) || now_ns.saturating_sub(mapping.last_used_ns) <= grace {
            continue;
        }
        // Mapping first, so no new flow can pick it up; then its port.
        match maps.mappings.get(&inside, 0) {
            Ok(current) if current.last_used_ns == mapping.last_used_ns => {}
            _ => continue,
        }
        if maps.mappings.remove(&inside).is_err() {
            continue;
        }
        if let Ok(owner) = maps.reverse.get(&mapping.outside, 0)
            && owner == inside
        {
            let _ = maps.reverse.remove(&mapping.outside);
        }
        report.mappings += 1;
        report.released.push((inside, mapping.outside));
    }
    // Reverse entries whose mapping is gone (a lost race in the kernel, or
    // a mapping removed above while its port was re-read): release them
    // once they have been seen alone in two passes.
    let mut seen = Orphans::new();
    for (outside, inside) in maps.reverse_entries()? {
        match maps.mappings.get(&inside, 0) {
            Ok(m) if m.outside == outside => {}
            Ok(_) | Err(aya::maps::MapError::KeyNotFound) => {
                if !live.contains(&inside) {
                    seen.insert((outside, inside));
                }
            }
            Err(_) => {}
        }
    }
    for (outside, inside) in orphans_to_release(orphans, seen) {
        // Still the same owner, still without its mapping.
        let still_orphaned = matches!(maps.reverse.get(&outside, 0), Ok(owner) if owner == inside)
            && matches!(
                maps.mappings.get(&inside, 0),
                Err(aya::maps::MapError::KeyNotFound)
            );
        if still_orphaned {
            let _ = maps.reverse.remove(&outside);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netbpf_common::flow_flags::*;

    #[test]
    fn timeouts_meet_the_rfc_defaults() {
        let t = Timeouts::default();
        assert!(FlowState::Udp.timeout(&t) >= Duration::from_secs(120));
        assert!(FlowState::Icmp.timeout(&t) >= Duration::from_secs(60));
        assert!(FlowState::Established.timeout(&t) >= Duration::from_secs(7440));
        assert!(FlowState::FinWait.timeout(&t) >= Duration::from_secs(7440));
        for s in [FlowState::SynSent, FlowState::Closing, FlowState::Reset] {
            assert!(s.timeout(&t) >= Duration::from_secs(240));
        }
    }

    fn row(
        p: u8,
        flags: u64,
        inside: ([u8; 4], u16),
        outside: ([u8; 4], u16),
        remote: ([u8; 4], u16),
    ) -> FlowRow {
        let key = FlowKey::new(p, inside.0, inside.1, remote.0, remote.1);
        let value = FlowValue {
            outside_addr: outside.0,
            outside_port: outside.1,
            flags,
            created_ns: 1_000_000_000,
            last_seen_ns: 1_000_000_000,
            ..Default::default()
        };
        FlowRow::new(&key, &value, 1_000_000_000, &Timeouts::default())
    }

    const C1: [u8; 4] = [10, 77, 0, 2];
    const C2: [u8; 4] = [10, 77, 0, 3];
    const UP: [u8; 4] = [203, 0, 113, 1];
    const OUT: [u8; 4] = [203, 0, 113, 2];

    #[test]
    fn conntrack_lines_look_like_conntrack_tools() {
        let est = SEEN_OUT | SYN_OUT | SEEN_IN | SYN_IN | ACK_OUT;
        let r = row(proto::TCP, est, (C1, 40000), (UP, 40000), (OUT, 4000));
        assert_eq!(
            r.conntrack_line(),
            "tcp      6 7440 ESTABLISHED src=10.77.0.2 dst=203.0.113.2 sport=40000 dport=4000 \
             src=203.0.113.2 dst=203.0.113.1 sport=4000 dport=40000 [ASSURED] mark=0 use=1"
        );
        let r = row(proto::UDP, SEEN_OUT, (C1, 5353), (UP, 5353), (OUT, 53));
        assert_eq!(
            r.conntrack_line(),
            "udp      17 300 src=10.77.0.2 dst=203.0.113.2 sport=5353 dport=53 [UNREPLIED] \
             src=203.0.113.2 dst=203.0.113.1 sport=53 dport=5353 mark=0 use=1"
        );
        let r = row(proto::ICMP, SEEN_OUT | SEEN_IN, (C1, 7), (UP, 9), (OUT, 0));
        assert_eq!(
            r.conntrack_line(),
            "icmp     1 60 src=10.77.0.2 dst=203.0.113.2 type=8 code=0 id=7 \
             src=203.0.113.2 dst=203.0.113.1 type=0 code=0 id=9 [ASSURED] mark=0 use=1"
        );
        // A published port: the client opened it to the host's port.
        let r = row(
            proto::TCP,
            OPENED_IN | PUBLISHED | SEEN_IN | SYN_IN,
            (C1, 4000),
            (UP, 8081),
            (OUT, 38252),
        );
        assert_eq!(
            r.conntrack_line(),
            "tcp      6 240 SYN_RECV src=203.0.113.2 dst=203.0.113.1 sport=38252 dport=8081 [UNREPLIED] \
             src=10.77.0.2 dst=203.0.113.2 sport=4000 dport=38252 mark=0 use=1"
        );
    }

    #[test]
    fn filters_match_any_side() {
        let est = SEEN_OUT | SYN_OUT | SEEN_IN | SYN_IN | ACK_OUT;
        let r = row(proto::TCP, est, (C1, 40000), (UP, 40001), (OUT, 4000));
        let f = |proto, addr, port, state| FlowFilter {
            proto,
            addr,
            port,
            state,
        };
        assert!(f(None, None, None, None).matches(&r));
        assert!(f(Some(proto::TCP), None, None, None).matches(&r));
        assert!(!f(Some(proto::UDP), None, None, None).matches(&r));
        for a in [C1, UP, OUT] {
            assert!(f(None, Some(Ipv4Addr::from(a)), None, None).matches(&r));
        }
        assert!(!f(None, Some(Ipv4Addr::from(C2)), None, None).matches(&r));
        for p in [40000, 40001, 4000] {
            assert!(f(None, None, Some(p), None).matches(&r));
        }
        assert!(!f(None, None, Some(80), None).matches(&r));
        assert!(f(None, None, None, FlowState::parse("established")).matches(&r));
        assert!(!f(None, None, None, FlowState::parse("SYN_SENT")).matches(&r));
        assert_eq!(FlowState::parse("bogus"), None);
        assert_eq!(parse_proto("UDP"), Some(proto::UDP));
    }

    #[test]
    fn top_ranks_inside_addresses_by_ports_per_destination() {
        let mut rows = Vec::new();
        for i in 0..3 {
            rows.push(row(
                proto::TCP,
                SEEN_OUT,
                (C1, 1000 + i),
                (UP, 2000 + i),
                (OUT, 443),
            ));
        }
        rows.push(row(
            proto::TCP,
            SEEN_OUT,
            (C2, 1000),
            (UP, 3000),
            (OUT, 443),
        ));
        rows.push(row(proto::UDP, SEEN_OUT, (C2, 53), (UP, 53), (OUT, 53)));
        rows.push(row(
            proto::UDP,
            SEEN_OUT,
            (C2, 53),
            (UP, 53),
            ([1, 1, 1, 1], 53),
        ));
        // Published flows hold no port of their own.
        for i in 0..5 {
            rows.push(row(
                proto::TCP,
                OPENED_IN | PUBLISHED | SEEN_IN,
                (C2, 4000),
                (UP, 8081),
                (OUT, 5000 + i),
            ));
        }
        let top = top(&rows, 10);
        let text: Vec<Vec<String>> = top.iter().map(TopRow::cells).collect();
        assert_eq!(
            text,
            vec![
                vec!["tcp", "203.0.113.2:443", "10.77.0.2", "3", "3"],
                vec!["tcp", "203.0.113.2:443", "10.77.0.3", "1", "1"],
                vec!["udp", "1.1.1.1:53", "10.77.0.3", "1", "1"],
                vec!["udp", "203.0.113.2:53", "10.77.0.3", "1", "1"],
            ]
        );
        assert_eq!(super::top(&rows, 1).len(), 1);
    }

    #[test]
    fn an_orphaned_reverse_entry_is_released_only_on_its_second_sighting() {
        let e = |port| Endpoint::new(proto::UDP, [203, 0, 113, 1], port);
        let i = |port| Endpoint::new(proto::UDP, [10, 77, 0, 2], port);
        let mut orphans = Orphans::new();
        // First sighting: maybe an allocation in progress.
        let first: Orphans = [(e(1), i(1)), (e(2), i(2))].into();
        assert!(orphans_to_release(&mut orphans, first).is_empty());
        // (e(2), i(2)) got its mapping meanwhile; (e(1), i(1)) did not.
        let second: Orphans = [(e(1), i(1)), (e(3), i(3))].into();
        assert_eq!(orphans_to_release(&mut orphans, second), vec![(e(1), i(1))]);
        // The same port now locked for another inside endpoint is new.
        let third: Orphans = [(e(3), i(4))].into();
        assert!(orphans_to_release(&mut orphans, third).is_empty());
    }

    #[test]
    fn only_an_answered_flow_keeps_its_mapping_alive() {
        assert!(keeps_mapping_alive(SEEN_OUT), "the container's own flow");
        assert!(
            keeps_mapping_alive(OPENED_IN | SEEN_IN | SEEN_OUT),
            "answered"
        );
        assert!(!keeps_mapping_alive(OPENED_IN | SEEN_IN), "unanswered");
        assert!(
            !keeps_mapping_alive(OPENED_IN | SEEN_IN | SYN_IN | RST),
            "answered only with a RST"
        );
    }

    #[test]
    fn expiry_uses_the_state_timeout() {
        let t = Timeouts::default();
        let key = FlowKey::new(proto::UDP, [10, 0, 0, 2], 1000, [1, 1, 1, 1], 53);
        let value = FlowValue {
            last_seen_ns: 1_000_000_000,
            flags: SEEN_OUT,
            ..Default::default()
        };
        let udp = t.udp.as_nanos() as u64;
        assert!(!expired(&key, &value, 1_000_000_000 + udp, &t));
        assert!(expired(&key, &value, 1_000_000_001 + udp, &t));
    }
}
