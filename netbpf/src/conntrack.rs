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
    maps::{MapsError, NatMaps},
};

/// How long a mapping without flows is kept after a flow last started
/// using it: covers a flow being created while a collection pass runs.
pub const MAPPING_GRACE: Duration = Duration::from_secs(10);

/// The state of a flow, as derived from its [`flow_flags`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FlowState {
    /// TCP: opening SYN seen from one side only.
    SynSent,
    /// TCP: opened from outside, no answer from inside yet.
    SynRecv,
    /// TCP: both sides opened (or a picked-up flow seen both ways).
    Established,
    /// TCP: one side sent FIN.
    FinWait,
    /// TCP: both sides sent FIN.
    Closing,
    /// TCP: reset.
    Reset,
    /// UDP mapping.
    Udp,
    /// ICMP query (echo) session.
    Icmp,
}

impl FlowState {
    /// Derives the state of a flow of protocol `proto` from its flags.
    pub fn of(proto_num: u8, flags: u64) -> FlowState {
        use flow_flags::*;
        match proto_num {
            proto::UDP => return FlowState::Udp,
            proto::ICMP => return FlowState::Icmp,
            _ => {}
        }
        let has = |bit| flags & bit != 0;
        if has(RST) {
            FlowState::Reset
        } else if has(FIN_OUT) && has(FIN_IN) {
            FlowState::Closing
        } else if has(FIN_OUT) || has(FIN_IN) {
            FlowState::FinWait
        } else if has(SEEN_OUT) && has(SEEN_IN) && has(SYN_OUT) == has(SYN_IN) {
            FlowState::Established
        } else if has(OPENED_IN) {
            FlowState::SynRecv
        } else {
            FlowState::SynSent
        }
    }

    /// The idle timeout for a flow in this state (RFC 5382 §5: established
    /// vs. transitory; RFC 6146-style FIN handling: one FIN keeps the
    /// established timeout, both FINs or a RST make it transitory).
    pub fn timeout(self, t: &Timeouts) -> Duration {
        match self {
            FlowState::Udp => t.udp,
            FlowState::Icmp => t.icmp,
            FlowState::Established | FlowState::FinWait => t.tcp_established,
            FlowState::SynSent | FlowState::SynRecv | FlowState::Closing | FlowState::Reset => {
                t.tcp_transitory
            }
        }
    }

    /// Upper-case name as printed by `conntrack list`.
    pub fn name(self) -> &'static str {
        match self {
            FlowState::SynSent => "SYN_SENT",
            FlowState::SynRecv => "SYN_RECV",
            FlowState::Established => "ESTABLISHED",
            FlowState::FinWait => "FIN_WAIT",
            FlowState::Closing => "CLOSING",
            FlowState::Reset => "RESET",
            FlowState::Udp => "UDP",
            FlowState::Icmp => "ICMP",
        }
    }
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

/// Protocol name.
pub fn proto_name(p: u8) -> String {
    match p {
        proto::TCP => "tcp".into(),
        proto::UDP => "udp".into(),
        proto::ICMP => "icmp".into(),
        other => other.to_string(),
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
    pub state: FlowState,
    /// Seconds since the flow was created.
    pub age_secs: u64,
    /// Seconds since its last packet.
    pub idle_secs: u64,
    /// Seconds until it expires if idle.
    pub expires_in_secs: u64,
    /// Whether it was opened from outside.
    pub opened_inbound: bool,
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
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    /// Flows expired.
    pub flows: usize,
    /// Mappings (with their reverse entries) released.
    pub mappings: usize,
}

/// Whether a flow idle since `last_seen_ns` has expired at `now_ns`.
fn expired(key: &FlowKey, value: &FlowValue, now_ns: u64, timeouts: &Timeouts) -> bool {
    let timeout = FlowState::of(key.proto, value.flags).timeout(timeouts);
    now_ns.saturating_sub(value.last_seen_ns) > timeout.as_nanos() as u64
}

/// One expiry pass over the conntrack and mapping tables at time `now_ns`.
pub fn collect_garbage(
    maps: &mut NatMaps,
    timeouts: &Timeouts,
    now_ns: u64,
) -> Result<GcReport, MapsError> {
    let mut report = GcReport::default();
    let mut live = HashSet::new();
    for (key, value) in maps.flows()? {
        if !expired(&key, &value, now_ns, timeouts) {
            live.insert(Endpoint::new(key.proto, key.inside_addr, key.inside_port));
            continue;
        }
        // Re-read just before deleting: a packet since the scan revives it.
        match maps.conntrack.get(&key, 0) {
            Ok(current) if current.last_seen_ns == value.last_seen_ns => {
                match maps.conntrack.remove(&key) {
                    Ok(()) => report.flows += 1,
                    Err(aya::maps::MapError::KeyNotFound) => {}
                    Err(source) => {
                        return Err(MapsError::Map {
                            name: netbpf_common::map_names::CONNTRACK,
                            source,
                        });
                    }
                }
            }
            _ => {
                live.insert(Endpoint::new(key.proto, key.inside_addr, key.inside_port));
            }
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
    }
    // Reverse entries whose mapping is gone (a lost race in the kernel, or
    // a mapping removed above while its port was re-read): release them.
    for (outside, inside) in maps.reverse_entries()? {
        match maps.mappings.get(&inside, 0) {
            Ok(m) if m.outside == outside => {}
            Ok(_) | Err(aya::maps::MapError::KeyNotFound) => {
                if !live.contains(&inside) {
                    let _ = maps.reverse.remove(&outside);
                }
            }
            Err(_) => {}
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netbpf_common::flow_flags::*;

    #[test]
    fn tcp_states_follow_the_flags() {
        let s = |f| FlowState::of(proto::TCP, f);
        assert_eq!(s(SEEN_OUT | SYN_OUT), FlowState::SynSent);
        assert_eq!(s(SEEN_IN | SYN_IN | OPENED_IN), FlowState::SynRecv);
        assert_eq!(
            s(SEEN_OUT | SYN_OUT | SEEN_IN | SYN_IN),
            FlowState::Established
        );
        // Picked up mid-stream, seen both ways: established.
        assert_eq!(s(SEEN_OUT | SEEN_IN), FlowState::Established);
        // SYN out answered by a bare ACK: not established.
        assert_eq!(s(SEEN_OUT | SYN_OUT | SEEN_IN), FlowState::SynSent);
        assert_eq!(
            s(SEEN_OUT | SYN_OUT | SEEN_IN | SYN_IN | FIN_OUT),
            FlowState::FinWait
        );
        assert_eq!(
            s(SEEN_OUT | SYN_OUT | SEEN_IN | SYN_IN | FIN_OUT | FIN_IN),
            FlowState::Closing
        );
        assert_eq!(s(SEEN_OUT | SYN_OUT | RST), FlowState::Reset);
        assert_eq!(FlowState::of(proto::UDP, SEEN_OUT), FlowState::Udp);
        assert_eq!(FlowState::of(proto::ICMP, SEEN_OUT), FlowState::Icmp);
    }

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
