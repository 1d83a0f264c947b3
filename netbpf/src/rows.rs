//! The rule maps as the list commands show them: one row per rule (a
//! published range's trie blocks merged back), and the counters.

use std::{net::Ipv4Addr, path::Path};

use serde::Serialize;

use crate::maps::*;

/// A masquerade rule, ready to print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MasqRow {
    /// Source CIDR, e.g. `10.77.0.0/24`.
    pub source: String,
    /// Address the source is translated to.
    pub to_addr: Ipv4Addr,
    /// `"range"` when a port range is set, else `"class-preserving"`
    /// (keep the port if free, else one of the same class: 1–1023 or
    /// 1024–65535).
    pub port_mode: &'static str,
    /// First port of the SNAT range (`null` when class-preserving).
    pub port_min: Option<u16>,
    /// Last port of the SNAT range (`null` when class-preserving).
    pub port_max: Option<u16>,
    /// Who added it: `config`, `docker:network:<name>`, `live` (see
    /// [`crate::owners`]).
    pub origin: String,
}

impl MasqRow {
    /// Table header matching [`MasqRow::cells`].
    pub const HEADER: [&'static str; 4] = ["SOURCE", "TO", "PORTS", "ORIGIN"];

    /// Builds the row of one trie entry.
    pub fn new(e: &MasqEntry) -> Self {
        let class = e.rule.port_min == 0 && e.rule.port_max == 0;
        Self {
            source: format!("{}/{}", Ipv4Addr::from(e.source), e.prefix_len),
            to_addr: Ipv4Addr::from(e.rule.to_addr),
            port_mode: if class { "class-preserving" } else { "range" },
            port_min: (!class).then_some(e.rule.port_min),
            port_max: (!class).then_some(e.rule.port_max),
            origin: crate::owners::LIVE_ORIGIN.to_owned(),
        }
    }

    /// The row as table cells.
    pub fn cells(&self) -> Vec<String> {
        let ports = match (self.port_min, self.port_max) {
            (Some(a), Some(b)) => port_span(a, b),
            _ => self.port_mode.to_owned(),
        };
        vec![
            self.source.clone(),
            self.to_addr.to_string(),
            ports,
            self.origin.clone(),
        ]
    }
}

/// A published port or port range, ready to print: the blocks of one rule
/// merged back into one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishRow {
    /// `"tcp"` or `"udp"`.
    pub proto: String,
    /// Host address the port answers on; `0.0.0.0` = any of the host's
    /// addresses (printed as `*`).
    pub host_addr: Ipv4Addr,
    /// Whether `host_addr` means any of the host's addresses.
    pub any_host_addr: bool,
    /// First host port.
    pub host_port_min: u16,
    /// Last host port (equal to `host_port_min` for a single port).
    pub host_port_max: u16,
    /// Container address.
    pub to_addr: Ipv4Addr,
    /// Container port of `host_port_min`.
    pub to_port_min: u16,
    /// Container port of `host_port_max` (ranges map 1:1).
    pub to_port_max: u16,
    /// Trie entries (prefix-aligned port blocks) the datapath holds for it.
    pub trie_entries: usize,
    /// Whether the blocks cover exactly the range the rule was written
    /// with. `false` means the map holds only part of a rule (it was
    /// changed by hand, or is being written): the row shows what the
    /// datapath would translate.
    pub complete: bool,
    /// Who added it: `config`, `docker:<container>`, `live`.
    pub origin: String,
}

impl PublishRow {
    /// Table header matching [`PublishRow::cells`].
    pub const HEADER: [&'static str; 4] = ["PROTO", "HOST", "CONTAINER", "ORIGIN"];

    /// The row as table cells.
    pub fn cells(&self) -> Vec<String> {
        let host = if self.any_host_addr {
            "*".to_owned()
        } else {
            self.host_addr.to_string()
        };
        let mut to = format!(
            "{}:{}",
            self.to_addr,
            port_span(self.to_port_min, self.to_port_max)
        );
        if !self.complete {
            to.push_str("  (incomplete: part of the rule's range is missing)");
        }
        vec![
            self.proto.clone(),
            format!(
                "{host}:{}",
                port_span(self.host_port_min, self.host_port_max)
            ),
            to,
            self.origin.clone(),
        ]
    }
}

pub(crate) fn port_span(a: u16, b: u16) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

/// Sorts masquerade entries by source network, then prefix length, and
/// turns them into rows.
pub fn masquerade_rows(entries: &[MasqEntry]) -> Vec<MasqRow> {
    let mut sorted = entries.to_vec();
    sorted.sort_by_key(|e| (u32::from_be_bytes(e.source), e.prefix_len));
    sorted.iter().map(MasqRow::new).collect()
}

/// Merges the prefix blocks of each published rule back into rows: blocks
/// with the same protocol, host address and rule value that touch each
/// other make one row. Sorted by protocol name, host address (any first),
/// first host port.
pub fn publish_rows(entries: &[PublishEntry]) -> Vec<PublishRow> {
    type Group = (u8, [u8; 4], [u8; 4], u16, u16, u16);
    let mut blocks: Vec<(Group, u16, u16)> = entries
        .iter()
        .map(|e| {
            let r = &e.rule;
            let group = (
                e.key.proto,
                e.key.addr,
                r.to_addr,
                r.to_port,
                r.host_port_min,
                r.host_port_max,
            );
            let (lo, hi) = e.ports();
            (group, lo, hi)
        })
        .collect();
    blocks.sort();
    let mut rows: Vec<PublishRow> = Vec::new();
    let mut open: Option<(Group, u16, u16, usize)> = None;
    let flush = |run: (Group, u16, u16, usize), rows: &mut Vec<PublishRow>| {
        let ((proto, addr, to_addr, to_port, min, max), lo, hi, n) = run;
        let to_of = |p: u16| to_port.wrapping_add(p.wrapping_sub(min));
        rows.push(PublishRow {
            proto: proto_name(proto),
            host_addr: Ipv4Addr::from(addr),
            any_host_addr: addr == [0; 4],
            host_port_min: lo,
            host_port_max: hi,
            to_addr: Ipv4Addr::from(to_addr),
            to_port_min: to_of(lo),
            to_port_max: to_of(hi),
            trie_entries: n,
            complete: lo == min && hi == max,
            origin: crate::owners::LIVE_ORIGIN.to_owned(),
        });
    };
    for (group, lo, hi) in blocks {
        open = match open {
            Some((g, a, b, n)) if g == group && u32::from(b) + 1 >= u32::from(lo) => {
                Some((g, a, b.max(hi), n + 1))
            }
            Some(run) => {
                flush(run, &mut rows);
                Some((group, lo, hi, 1))
            }
            None => Some((group, lo, hi, 1)),
        };
    }
    if let Some(run) = open {
        flush(run, &mut rows);
    }
    rows.sort_by(|a, b| {
        (&a.proto, u32::from(a.host_addr), a.host_port_min).cmp(&(
            &b.proto,
            u32::from(b.host_addr),
            b.host_port_min,
        ))
    });
    rows
}

/// What `netbpf nat list` shows: the NAT rules as the datapath holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NatRules {
    /// Masquerade (source NAT) rules.
    pub masquerade: Vec<MasqRow>,
    /// Published ports (DNAT).
    pub publish: Vec<PublishRow>,
    /// The host addresses a published port with host address `*` answers
    /// on (read by the daemon at start).
    pub local_addrs: Vec<Ipv4Addr>,
}

impl NatRules {
    /// Reads the rules pinned in `dir`, every origin `live`
    /// ([`crate::origins::nat_rules`] reads them with their origins).
    pub fn read(dir: &Path) -> Result<Self, MapsError> {
        Ok(Self {
            masquerade: masquerade_rows(&read_masquerade(dir)?),
            publish: publish_rows(&read_publish(dir)?),
            local_addrs: read_local_addrs(dir)?,
        })
    }

    /// The human-readable listing: two tables and a legend.
    pub fn render(&self) -> String {
        let mut out = String::from("masquerade (source NAT):\n");
        if self.masquerade.is_empty() {
            out.push_str("  none\n");
        } else {
            let cells: Vec<Vec<String>> = self.masquerade.iter().map(MasqRow::cells).collect();
            out.push_str(&indent(&crate::table::render(&MasqRow::HEADER, &cells)));
        }
        out.push_str("published ports (DNAT):\n");
        if self.publish.is_empty() {
            out.push_str("  none\n");
        } else {
            let cells: Vec<Vec<String>> = self.publish.iter().map(PublishRow::cells).collect();
            out.push_str(&indent(&crate::table::render(&PublishRow::HEADER, &cells)));
            let addrs: Vec<String> = self.local_addrs.iter().map(|a| a.to_string()).collect();
            out.push_str(&format!(
                "  * = any of the host's addresses: {}\n",
                or_none(&addrs, ", ")
            ));
        }
        out
    }
}

/// `items` joined by `sep`, or `none`.
fn or_none(items: &[String], sep: &str) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(sep)
    }
}

/// Indents every line of `text` by two spaces.
pub(crate) fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

impl Stats {
    /// The human-readable counters: one row per counter, then the
    /// port-probe histogram on one line.
    pub fn render(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .counters
            .iter()
            .map(|(k, v)| vec![(*k).to_owned(), v.to_string()])
            .collect();
        let mut out = crate::table::render(&["COUNTER", "VALUE"], &rows);
        let probes: Vec<String> = self
            .port_probes
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| format!("{i}:{n}"))
            .collect();
        out.push_str(&format!(
            "port allocations by probes needed (last bucket = failed): {}\n",
            or_none(&probes, " ")
        ));
        out
    }

    /// The JSON form: `{"counters": {name: value, ...}, "port_probes": [...]}`.
    pub fn to_json(&self) -> serde_json::Value {
        let counters: serde_json::Map<String, serde_json::Value> = self
            .counters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).into()))
            .collect();
        serde_json::json!({ "counters": counters, "port_probes": self.port_probes })
    }
}

#[cfg(test)]
mod tests;
