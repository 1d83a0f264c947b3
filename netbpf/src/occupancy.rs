//! How full the datapath is: table fill, outside ports in use per rule,
//! flows by state (for `netbpf stats`, metrics and explain).

use std::{net::Ipv4Addr, path::Path};

use netbpf_common::{Endpoint, FlowKey, FlowValue, MasqRule, map_names, proto};
use serde::Serialize;

use crate::{maps::*, rows::*};

// ---------------------------------------------------------------------------
// Table fill and port use: `netbpf stats`, metrics
// ---------------------------------------------------------------------------

/// How full one of the datapath's hash maps is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableFill {
    /// Pinned map name, e.g. `CONNTRACK`.
    pub table: &'static str,
    /// Entries it holds now.
    pub entries: u64,
    /// Entries it can hold (`max_entries`, from the kernel's map info).
    pub capacity: u32,
}

impl TableFill {
    /// Percentage of the capacity in use.
    pub fn percent(&self) -> f64 {
        if self.capacity == 0 {
            0.0
        } else {
            self.entries as f64 * 100.0 / f64::from(self.capacity)
        }
    }
}

/// How many outside ports (or ICMP identifiers) of one outside address and
/// protocol are held by NAT mappings, out of how many the masquerade rules
/// allow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortUse {
    /// Outside address (a masquerade rule's `to` address).
    pub addr: Ipv4Addr,
    /// `"tcp"`, `"udp"` or `"icmp"`.
    pub proto: String,
    /// Ports held (entries of `NAT_REVERSE`).
    pub used: u64,
    /// Ports the rules for this address allow (the union of their ranges;
    /// published ports inside it are not subtracted).
    pub available: u64,
    /// The ranges, e.g. `61000-65535`, or `class-preserving` (1–65535,
    /// ICMP identifiers 0–65535).
    pub ranges: String,
}

/// Flows of one protocol in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateCount {
    /// `"tcp"`, `"udp"` or `"icmp"`.
    pub proto: String,
    /// The derived state, as `conntrack list` prints it.
    pub state: &'static str,
    /// How many flows.
    pub flows: u64,
}

/// Table fill, port use and flows by state, read at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Occupancy {
    /// `CONNTRACK`, `NAT_MAPPINGS`, `NAT_REVERSE`.
    pub tables: Vec<TableFill>,
    /// One row per outside address and protocol.
    pub ports: Vec<PortUse>,
    /// Flows by protocol and state, sorted.
    pub flow_states: Vec<StateCount>,
}

impl Occupancy {
    /// Reads the maps pinned in `dir`.
    pub fn read(dir: &Path) -> Result<Self, MapsError> {
        let nat = NatMaps::open_pinned(dir)?;
        let flows = nat.flows()?;
        let mappings = nat.mapping_entries()?.len() as u64;
        let reverse = nat.reverse_entries()?;
        let fill = |table: &'static str, entries: u64| -> Result<TableFill, MapsError> {
            Ok(TableFill {
                table,
                entries,
                capacity: capacity(dir, table)?,
            })
        };
        let tables = vec![
            fill(map_names::CONNTRACK, flows.len() as u64)?,
            fill(map_names::NAT_MAPPINGS, mappings)?,
            fill(map_names::NAT_REVERSE, reverse.len() as u64)?,
        ];
        let masq = read_masquerade(dir)?;
        Ok(Self {
            tables,
            ports: port_use(&masq, &reverse),
            flow_states: flow_states(&flows),
        })
    }

    /// The human-readable form: table fill, then port use per address.
    pub fn render(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .tables
            .iter()
            .map(|t| {
                vec![
                    t.table.to_owned(),
                    t.entries.to_string(),
                    t.capacity.to_string(),
                    format!("{:.1}%", t.percent()),
                ]
            })
            .collect();
        let mut out = crate::table::render(&["TABLE", "ENTRIES", "CAPACITY", "USE"], &rows);
        out.push('\n');
        if self.ports.is_empty() {
            out.push_str("outside ports: no masquerade rules\n");
        } else {
            let rows: Vec<Vec<String>> = self
                .ports
                .iter()
                .map(|p| {
                    let pct = if p.available == 0 {
                        0.0
                    } else {
                        p.used as f64 * 100.0 / p.available as f64
                    };
                    vec![
                        p.addr.to_string(),
                        p.proto.clone(),
                        p.used.to_string(),
                        p.available.to_string(),
                        format!("{pct:.1}%"),
                        p.ranges.clone(),
                    ]
                })
                .collect();
            out.push_str(&crate::table::render(
                &[
                    "OUTSIDE",
                    "PROTO",
                    "PORTS USED",
                    "AVAILABLE",
                    "USE",
                    "RANGE",
                ],
                &rows,
            ));
        }
        out
    }
}

/// The port ranges a masquerade rule allows for `proto`, inclusive.
fn rule_ranges(rule: &MasqRule, p: u8) -> Vec<(u32, u32)> {
    if rule.port_min != 0 || rule.port_max != 0 {
        return vec![(u32::from(rule.port_min), u32::from(rule.port_max))];
    }
    match p {
        proto::ICMP => vec![(0, 65535)],
        // 1-1023 for privileged source ports, 1024-65535 for the rest.
        _ => vec![(1, 65535)],
    }
}

/// Size of the union of inclusive ranges.
fn union_size(mut ranges: Vec<(u32, u32)>) -> u64 {
    ranges.retain(|(a, b)| a <= b);
    ranges.sort();
    let mut total = 0u64;
    let mut open: Option<(u32, u32)> = None;
    for (a, b) in ranges {
        open = match open {
            Some((x, y)) if a <= y.saturating_add(1) => Some((x, y.max(b))),
            Some((x, y)) => {
                total += u64::from(y - x) + 1;
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    if let Some((x, y)) = open {
        total += u64::from(y - x) + 1;
    }
    total
}

/// Port use per outside address and protocol: every address a masquerade
/// rule translates to gets a row for TCP, UDP and ICMP; an address that
/// holds ports without a rule (rules changed by hand) gets rows too.
pub fn port_use(masq: &[MasqEntry], reverse: &[(Endpoint, Endpoint)]) -> Vec<PortUse> {
    use std::collections::BTreeMap;
    let protos = [proto::TCP, proto::UDP, proto::ICMP];
    /// Ports held, the rules' ranges, the ranges as written.
    type Row = (u64, Vec<(u32, u32)>, Vec<String>);
    let mut rows: BTreeMap<(u32, u8), Row> = BTreeMap::new();
    for e in masq {
        let addr = u32::from_be_bytes(e.rule.to_addr);
        let class = e.rule.port_min == 0 && e.rule.port_max == 0;
        let label = if class {
            "class-preserving".to_owned()
        } else {
            port_span(e.rule.port_min, e.rule.port_max)
        };
        for p in protos {
            let row = rows.entry((addr, p)).or_default();
            row.1.extend(rule_ranges(&e.rule, p));
            if !row.2.contains(&label) {
                row.2.push(label.clone());
            }
        }
    }
    for (outside, _) in reverse {
        let addr = u32::from_be_bytes(outside.addr);
        rows.entry((addr, outside.proto)).or_default().0 += 1;
    }
    let order = |p: u8| protos.iter().position(|q| *q == p).unwrap_or(protos.len());
    let mut out: Vec<PortUse> = rows
        .into_iter()
        .map(|((addr, p), (used, ranges, labels))| PortUse {
            addr: Ipv4Addr::from(addr),
            proto: proto_name(p),
            used,
            available: union_size(ranges),
            ranges: if labels.is_empty() {
                "none (no rule)".to_owned()
            } else {
                labels.join(",")
            },
        })
        .collect();
    out.sort_by_key(|r| {
        (
            u32::from(r.addr),
            order(match r.proto.as_str() {
                "tcp" => proto::TCP,
                "udp" => proto::UDP,
                "icmp" => proto::ICMP,
                _ => 0,
            }),
        )
    });
    out
}

/// Flows counted by protocol and derived state, sorted.
pub fn flow_states(flows: &[(FlowKey, FlowValue)]) -> Vec<StateCount> {
    use std::collections::BTreeMap;
    let mut counts: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
    for (k, v) in flows {
        let state = netbpf_common::FlowState::of(k.proto, v.flags).name();
        *counts.entry((proto_name(k.proto), state)).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((proto, state), flows)| StateCount {
            proto,
            state,
            flows,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use netbpf_common::proto;

    #[test]
    fn port_use_counts_held_ports_against_the_rule_ranges() {
        let to = [203, 0, 113, 1];
        let masq = [
            MasqEntry {
                prefix_len: 24,
                source: [10, 77, 0, 0],
                rule: MasqRule {
                    to_addr: to,
                    port_min: 61000,
                    port_max: 61999,
                },
            },
            MasqEntry {
                prefix_len: 24,
                source: [10, 78, 0, 0],
                rule: MasqRule {
                    to_addr: to,
                    port_min: 61500,
                    port_max: 62499,
                },
            },
            MasqEntry {
                prefix_len: 16,
                source: [10, 79, 0, 0],
                rule: MasqRule {
                    to_addr: [198, 51, 100, 1],
                    port_min: 0,
                    port_max: 0,
                },
            },
        ];
        let inside = Endpoint::new(proto::TCP, [10, 77, 0, 2], 1);
        let reverse = vec![
            (Endpoint::new(proto::TCP, to, 61000), inside),
            (Endpoint::new(proto::TCP, to, 61001), inside),
            (Endpoint::new(proto::UDP, to, 61002), inside),
            (Endpoint::new(proto::ICMP, [198, 51, 100, 1], 7), inside),
        ];
        let rows = port_use(&masq, &reverse);
        let text: Vec<(String, &str, u64, u64, &str)> = rows
            .iter()
            .map(|r| {
                (
                    r.addr.to_string(),
                    r.proto.as_str(),
                    r.used,
                    r.available,
                    r.ranges.as_str(),
                )
            })
            .collect();
        assert_eq!(
            text,
            vec![
                ("198.51.100.1".into(), "tcp", 0, 65535, "class-preserving"),
                ("198.51.100.1".into(), "udp", 0, 65535, "class-preserving"),
                ("198.51.100.1".into(), "icmp", 1, 65536, "class-preserving"),
                (
                    "203.0.113.1".into(),
                    "tcp",
                    2,
                    1500,
                    "61000-61999,61500-62499"
                ),
                (
                    "203.0.113.1".into(),
                    "udp",
                    1,
                    1500,
                    "61000-61999,61500-62499"
                ),
                (
                    "203.0.113.1".into(),
                    "icmp",
                    0,
                    1500,
                    "61000-61999,61500-62499"
                ),
            ]
        );
    }

    #[test]
    fn flow_states_count_by_proto_and_state() {
        use netbpf_common::flow_flags::*;
        let flow = |p, flags| {
            (
                FlowKey::new(p, [10, 77, 0, 2], 1, [1, 1, 1, 1], 2),
                FlowValue {
                    flags,
                    ..Default::default()
                },
            )
        };
        let counts = flow_states(&[
            flow(proto::TCP, SEEN_OUT | SYN_OUT | SEEN_IN | SYN_IN | ACK_OUT),
            flow(proto::TCP, SEEN_OUT | SYN_OUT),
            flow(proto::TCP, SEEN_OUT | SYN_OUT | SEEN_IN | SYN_IN | ACK_OUT),
            flow(proto::UDP, SEEN_OUT),
        ]);
        let text: Vec<(&str, &str, u64)> = counts
            .iter()
            .map(|c| (c.proto.as_str(), c.state, c.flows))
            .collect();
        assert_eq!(
            text,
            vec![
                ("tcp", "ESTABLISHED", 2),
                ("tcp", "SYN_SENT", 1),
                ("udp", "UDP", 1)
            ]
        );
    }
}
